"""Soft blending masks and alpha blending for self-blended images (SBI, Shiohara & Yamasaki, CVPR 2022)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # the config lives with the pipeline that owns it; this module only reads its fields
    from hcsi.sbi.config import SBIConfig


def _odd_kernel(rng: np.random.Generator, kernel_range: tuple[int, int]) -> int:
    """A Gaussian kernel side drawn uniformly from the odd integers in `kernel_range` (inclusive)."""
    low, high = kernel_range
    return int(rng.choice(np.arange(low, high + 1, 2)))


def blend_mask_size(rng: np.random.Generator, config: SBIConfig) -> tuple[int, int]:
    """The random (height, width) that `blend_mask` first resizes the hull mask to, each in `blend_resize_range`."""
    low, high = config.blend_resize_range
    size_h, size_w = (int(s) for s in rng.integers(low, high + 1, size=2))
    return size_h, size_w


def resize_taps(size: int, small: int) -> np.ndarray:
    """Sorted indices of the pixels that cv2.resize with INTER_LINEAR reads along an axis of `size` pixels when it
    makes `small` of them: each output pixel interpolates the two neighbours of its source position. A position within
    1e-3 of a pixel centre adds the pixel before it as well, so float rounding cannot make the set too small."""
    position = (np.arange(small) + 0.5) * (size / small) - 0.5
    read = np.zeros(size + 1, dtype=bool)
    for first in (np.floor(position - 1e-3).astype(np.int64), np.floor(position + 1e-3).astype(np.int64)):
        read[np.clip(first, 0, size - 1)] = True
        read[np.clip(first + 1, 0, size - 1)] = True
    return np.flatnonzero(read)


def soft_mask(mask: np.ndarray, rng: np.random.Generator, config: SBIConfig, size: tuple[int, int] | None = None,
              out: np.ndarray | None = None) -> np.ndarray:
    """Steps 1-5 of `blend_mask`, without the blend ratio: float32 (H, W) in [0, 1].

    Args:
        mask, rng, config: as for `blend_mask`.
        size: step 1's (height, width) if already drawn with `blend_mask_size`. Step 1 reads only the pixels at
            `resize_taps` of each axis, so the mask need only be right there.
        out: float32 (H, W) array to write the result into; it may be `mask` itself.
    """
    height, width = mask.shape
    size_h, size_w = size if size is not None else blend_mask_size(rng, config)
    soft = cv2.resize(np.asarray(mask, dtype=np.float32), (size_w, size_h), interpolation=cv2.INTER_LINEAR)
    if not soft.any():
        raise ValueError("blend_mask: the hull mask is empty; are the landmarks inside the image?")

    k1 = _odd_kernel(rng, config.blend_kernel_range)
    soft = cv2.GaussianBlur(soft, (k1, k1), 0)
    soft /= soft.max()
    soft[soft < 1] = 0

    k2 = _odd_kernel(rng, config.blend_kernel_range)
    sigma = int(rng.integers(config.blend_sigma_range[0], config.blend_sigma_range[1] + 1))
    soft = cv2.GaussianBlur(soft, (k2, k2), sigma)
    soft /= soft.max()
    return cv2.resize(soft, (width, height), dst=out, interpolation=cv2.INTER_LINEAR)


def blend_ratio(rng: np.random.Generator, config: SBIConfig) -> float:
    """The gain of the blend mask, drawn uniformly from `blend_ratios`."""
    return float(rng.choice(config.blend_ratios))


def blend_mask(mask: np.ndarray, rng: np.random.Generator, config: SBIConfig) -> tuple[np.ndarray, float]:
    """Soften a hull mask into a random blending mask and scale it by a random blend ratio.

    Steps (SBI's `get_blend_mask` + `dynamic_blend`, drawn from `config`):
    1. resize to a random size (h, w each in `blend_resize_range`), which varies the blur's reach relative to the face;
    2. Gaussian blur with an odd kernel from `blend_kernel_range` (sigma derived from the kernel by OpenCV);
    3. divide by the maximum and zero every value below 1: only pixels whose whole kernel lay inside the mask
       survive, so this erodes the mask by about half a kernel;
    4. Gaussian blur with another odd kernel and sigma from `blend_sigma_range`, divide by the maximum;
    5. resize back to the input size, then multiply by a ratio drawn from `blend_ratios`.

    Args:
        mask: float32 (H, W) hull mask in [0, 1].
        rng: source of every random draw.
        config: an SBIConfig.

    Returns:
        (float32 (H, W) mask in [0, ratio], ratio). An empty mask (or one the resize misses) raises ValueError.
    """
    soft = soft_mask(mask, rng, config)
    ratio = blend_ratio(rng, config)
    soft *= np.float32(ratio)
    return soft, ratio


def blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """fake = mask · source + (1 − mask) · target, truncated to uint8 as the reference does.

    Only the box around the mask's non-zero pixels is computed; elsewhere the formula gives the target unchanged.
    The float32 operations are those of the formula written out with numpy broadcasting, in the same order, so the
    result is the same to the bit; working on a 3-channel copy of the mask in place avoids broadcasting's slow path.

    Args:
        source: uint8 (H, W, 3) image whose face is pasted.
        target: uint8 (H, W, 3) image that receives it.
        mask: float32 (H, W) weights in [0, 1].
    """
    fake = target.copy()
    x, y, width, height = cv2.boundingRect(cv2.compare(mask, 0, cv2.CMP_GT))
    if width == 0:
        return fake
    region = np.s_[y:y + height, x:x + width]
    weights = cv2.merge([np.ascontiguousarray(mask[region])] * 3)
    blended = source[region].astype(np.float32)
    blended *= weights
    np.subtract(np.float32(1), weights, out=weights)
    weights *= target[region]
    blended += weights
    fake[region] = blended  # float → uint8 assignment truncates, as astype does
    return fake
