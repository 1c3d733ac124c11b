"""Soft blending masks and alpha blending for self-blended images (SBI, Shiohara & Yamasaki, CVPR 2022)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # the config lives with the pipeline that owns it; this module only reads its fields
    from hcsi.sbi.synthesis import SBIConfig


def _odd_kernel(rng: np.random.Generator, kernel_range: tuple[int, int]) -> int:
    """A Gaussian kernel side drawn uniformly from the odd integers in `kernel_range` (inclusive)."""
    low, high = kernel_range
    return int(rng.choice(np.arange(low, high + 1, 2)))


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
        (float32 (H, W) mask in [0, ratio], ratio).
    """
    if not mask.any():
        raise ValueError("blend_mask: the hull mask is empty; are the landmarks inside the image?")
    height, width = mask.shape
    low, high = config.blend_resize_range
    size_h, size_w = (int(s) for s in rng.integers(low, high + 1, size=2))
    soft = cv2.resize(mask.astype(np.float32), (size_w, size_h), interpolation=cv2.INTER_LINEAR)

    k1 = _odd_kernel(rng, config.blend_kernel_range)
    soft = cv2.GaussianBlur(soft, (k1, k1), 0)
    soft /= soft.max()
    soft[soft < 1] = 0

    k2 = _odd_kernel(rng, config.blend_kernel_range)
    sigma = int(rng.integers(config.blend_sigma_range[0], config.blend_sigma_range[1] + 1))
    soft = cv2.GaussianBlur(soft, (k2, k2), sigma)
    soft /= soft.max()
    soft = cv2.resize(soft, (width, height), interpolation=cv2.INTER_LINEAR)

    ratio = float(rng.choice(config.blend_ratios))
    return soft * np.float32(ratio), ratio


def blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """fake = mask · source + (1 − mask) · target, truncated to uint8 as the reference does.

    Only the box around the mask's non-zero pixels is computed; elsewhere the formula gives the target unchanged.

    Args:
        source: uint8 (H, W, 3) image whose face is pasted.
        target: uint8 (H, W, 3) image that receives it.
        mask: float32 (H, W) weights in [0, 1].
    """
    fake = target.copy()
    x, y, width, height = cv2.boundingRect(cv2.compare(mask, 0, cv2.CMP_GT))
    region = np.s_[y:y + height, x:x + width]
    weights = mask[region][..., None]
    fake[region] = (weights * source[region] + (1.0 - weights) * target[region]).astype(np.uint8)
    return fake
