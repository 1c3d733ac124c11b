"""Self-blended image (SBI) synthesis: a real face blended with a transformed copy of itself.

Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images", CVPR 2022. The steps and their parameters follow
the reference implementation's training data pipeline; docs/protocol.md (SBI synthesis) lists where and why this one differs.

The input is a stored *context crop* (face plus margin), its landmarks and its face box, all in crop pixel coordinates.
Every random draw comes from the `np.random.Generator` passed in, so a seed fixes the output byte for byte.
One generator instance must not be shared between threads: its albumentations pipelines hold per-call random state.

Only the final crop reaches the output, so each step computes just the *window* of pixels the output depends on: the
final crop, grown to whole JPEG coding units for the post-augmentation; for the face donor, the box where the blend
mask is non-zero; for the elastic deformation of the mask, the pixels that the blend mask's first resize reads. The
blend mask itself is computed on the whole context crop, whose size sets its random resize. Each restricted image
step gives exactly the pixels it gives on the whole crop (tests/test_sbi.py compares the outputs byte for byte), and
the elastic field, smoothed only where it is read, equals the whole-crop field there up to float32 rounding.
docs/protocol.md (SBI synthesis) gives the argument for each step.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import albumentations as A
import cv2
import numpy as np

from hcsi.faces.crops import TEST_MARGIN_FACTOR, face_crop_box, train_margin_factors
from hcsi.sbi.blend import blend, blend_mask_size, blend_ratio, resize_taps, soft_mask
from hcsi.sbi.config import SBIConfig
from hcsi.sbi.masks import LANDMARK_COUNTS, flip_landmarks, hull_mask, hull_window

Box = tuple[float, float, float, float]
Window = tuple[int, int, int, int]  # (x0, y0, x1, y1) in context-crop pixels, x1 and y1 exclusive

# OpenCV writes 4:2:0 JPEGs, coded in 16×16-pixel units counted from the image origin. Units are coded independently;
# only the decoder's chroma upsampling reads across their edges, 1 pixel deep (JPEG_REACH keeps 2). The margin around
# a window leaves room beyond that.
JPEG_UNIT = 16
JPEG_REACH = 2
JPEG_MARGIN = 8
# OpenCV's vectorised colour conversions run through each row in blocks of its vector width and finish it with a
# scalar loop that rounds differently (HSV→RGB: one level on some pixels). Windows that get colour transforms are
# therefore chosen so that every pixel takes the code path it takes in the whole crop (`column_blocks`). 64 covers
# vector widths up to AVX-512.
COLUMN_BLOCK = 64


@dataclass
class BlendStage:
    """The pipeline up to the blend, before post-augmentation and the final crop.

    The images and the mask cover `window` of the (possibly flipped) context crop, at its resolution.
    """

    window: Window  # what the arrays below cover: crop_box grown to whole JPEG units (train) and colour blocks
    crop_box: Window  # the final crop, inside window
    blend_box: Window  # the blend mask's non-zero box, inside window: the only place the source is computed
    source: np.ndarray  # uint8: the face donor after its transforms and the random affine, inside blend_box (else 0)
    target: np.ndarray  # uint8: the image that receives the face; it becomes the real sample
    fake: np.ndarray  # uint8: mask · source + (1 − mask) · target
    mask: np.ndarray  # float32: the blend mask, already scaled by blend_ratio
    landmarks: np.ndarray  # float32 (68 or 81, 2): the points the hull was built from (after flip and truncation)
    box: Box  # face box after the flip
    hull_type: str  # one of HULL_TYPES
    transformed: Literal["source", "target"]  # which image got the source transforms
    flipped: bool  # whether the context crop was mirrored first
    blend_ratio: float  # the gain the mask was scaled by


@dataclass
class SBISample:
    """One real/fake training pair, cropped around the face box and resized to image_size."""

    real: np.ndarray  # uint8 (S, S, 3)
    fake: np.ndarray  # uint8 (S, S, 3)
    mask: np.ndarray  # float32 (S, S): the blend mask after the same crop and resize, in [0, blend_ratio]
    hull_type: str
    transformed: Literal["source", "target"]
    flipped: bool
    blend_ratio: float
    landmark_count: int  # 81 when the hull could use the forehead points, else 68
    crop_box: Window  # cut from the (possibly flipped) context crop


@contextmanager
def step_timer(timings: dict[str, float] | None, step: str) -> Iterator[None]:
    """Add the wall time of the block to timings[step] (seconds); does nothing when timings is None."""
    if timings is None:
        yield
        return
    start = time.perf_counter()
    yield
    timings[step] = timings.get(step, 0.0) + time.perf_counter() - start


def validate_inputs(image: np.ndarray, landmarks: np.ndarray, box: Box) -> tuple[np.ndarray, Box]:
    """Check a context crop, its landmarks and face box; return the landmarks as float32 and the box as floats."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        found = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got a {found}; pass the decoded 8-bit crop")
    points = np.asarray(landmarks, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) not in LANDMARK_COUNTS:
        raise ValueError(f"landmarks must have shape (68, 2) or (81, 2) (iBUG-68, optionally + 13 forehead points), "
                         f"got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("landmarks contain NaN or infinite values")
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ValueError(f"box must be 4 finite numbers (x0, y0, x1, y1), got {box}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box is empty: (x0, y0, x1, y1) = {box} needs x1 > x0 and y1 > y0")
    height, width = image.shape[:2]
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise ValueError(f"box {box} lies outside the {width}×{height} image; box and image must share coordinates")
    return points, (x0, y0, x1, y1)


def flip_box(box: Box, width: float) -> Box:
    """The face box of the horizontally flipped image, with x' = width − x as for the landmarks."""
    x0, y0, x1, y1 = box
    return (width - x1, y0, width - x0, y1)


def clip_window(x0: int, y0: int, x1: int, y1: int, shape_hw: tuple[int, int]) -> Window:
    """The part of (x0, y0, x1, y1) inside an image of shape `shape_hw`; empty (x1 == x0 or y1 == y0) if none."""
    height, width = shape_hw
    x0, y0 = min(max(0, int(x0)), width), min(max(0, int(y0)), height)
    return (x0, y0, max(x0, min(width, int(x1))), max(y0, min(height, int(y1))))


def grow_window(window: Window, margin: int, shape_hw: tuple[int, int]) -> Window:
    """`window` grown by `margin` pixels on every side, clipped to the image."""
    x0, y0, x1, y1 = window
    return clip_window(x0 - margin, y0 - margin, x1 + margin, y1 + margin, shape_hw)


def jpeg_window(window: Window, shape_hw: tuple[int, int], margin: int = JPEG_MARGIN) -> Window:
    """`window` grown by `margin` and out to whole JPEG coding units of the image, clipped to the image.

    A JPEG round trip of this window gives exactly the pixels of a round trip of the whole image inside `window`:
    both code the same units from the same pixels, and nothing inside `window` reads beyond the margin.
    """
    x0, y0, x1, y1 = window
    unit = JPEG_UNIT
    return clip_window((x0 - margin) // unit * unit, (y0 - margin) // unit * unit,
                       -(-(x1 + margin) // unit) * unit, -(-(y1 + margin) // unit) * unit, shape_hw)


def intersect(window: Window, other: Window) -> Window:
    """The part of `window` inside `other`; empty (x1 == x0 or y1 == y0) if none."""
    x0, y0 = max(window[0], other[0]), max(window[1], other[1])
    return (x0, y0, max(x0, min(window[2], other[2])), max(y0, min(window[3], other[3])))


def column_blocks(window: Window, shape_hw: tuple[int, int], within: Window | None = None) -> Window:
    """`window` widened (inside `within`, default the image) so that each of its pixels takes the code path of OpenCV's
    colour conversions that it takes in the whole image: there, only the last W mod COLUMN_BLOCK columns fall to
    the scalar loop. A width that is a multiple of COLUMN_BLOCK away from that tail keeps every pixel vectorised;
    otherwise whole column blocks counted from the image's left edge, up to its right edge, give the image's split.
    `within` must itself be such a window; its 16-pixel alignment (JPEG) is kept.
    """
    x0, y0, x1, y1 = window
    width = shape_hw[1]
    low, high = (0, width) if within is None else (within[0], within[2])
    tail = width - width % COLUMN_BLOCK
    span = -(-(x1 - x0) // COLUMN_BLOCK) * COLUMN_BLOCK
    if x1 <= tail and x0 + span <= min(high, tail):
        return (x0, y0, x0 + span, y1)
    if x1 <= tail and x1 - span >= low:
        return (x1 - span, y0, x1, y1)
    if within is not None:
        return (within[0], y0, within[2], y1)
    return clip_window(x0 // COLUMN_BLOCK * COLUMN_BLOCK, y0, -(-x1 // COLUMN_BLOCK) * COLUMN_BLOCK, y1, shape_hw)


def window_slices(window: Window, origin: Window | None = None) -> tuple[slice, slice]:
    """Index of `window` in an array that covers `origin` (default: the whole context crop)."""
    ox, oy = (origin[0], origin[1]) if origin is not None else (0, 0)
    x0, y0, x1, y1 = window
    return np.s_[y0 - oy:y1 - oy, x0 - ox:x1 - ox]


def affine_maps(shape_hw: tuple[int, int], scale: tuple[float, float],
                shift: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Source x of every output column and source y of every output row (float32) of SBI's random affine.

    The affine scales by `scale` = (sx, sy) about the image centre ((W − 1) / 2, (H − 1) / 2), then shifts by
    `shift` = (tx, ty) pixels: albumentations 1.x's Affine without rotation or shear, the one SBI used. Without
    rotation each output column samples one source column, so two 1-D maps describe the whole warp.
    """
    maps = []
    for size, s, t in zip(shape_hw[::-1], scale, shift):
        centre = size / 2 - 0.5
        maps.append(((np.arange(size) - centre - t) / s + centre).astype(np.float32))
    return maps[0], maps[1]


def warp(image: np.ndarray, maps: tuple[np.ndarray, np.ndarray], window: Window, interpolation: int,
         image_window: Window | None = None) -> np.ndarray:
    """`window` of an image warped by `maps` (from `affine_maps`), with zeros where the source lies outside the image.

    `image` holds `image_window` of the source (default: all of it); it must hold every pixel the window reads
    (see `source_window`) unless that pixel is zero. Each output pixel is computed from its own map entries alone, so
    any window gives exactly the pixels of the whole warped image. (cv2.warpAffine with the matrix shifted to the
    window rounds its fixed-point coordinates differently and changes about 1 pixel in 10,000 by one level.)
    INTER_LINEAR goes through cv2.remap. INTER_NEAREST picks rows and columns: the affine has no rotation, so that is
    cv2.remap's result (np.rint rounds ties to even as it does) without building its two-dimensional maps.
    """
    x0, y0, x1, y1 = window
    ox, oy = image_window[:2] if image_window is not None else (0, 0)
    if x1 == x0 or y1 == y0:
        return np.zeros((y1 - y0, x1 - x0, *image.shape[2:]), dtype=image.dtype)
    if interpolation == cv2.INTER_NEAREST:
        rows = np.rint(maps[1][y0:y1]).astype(np.int64) - oy
        cols = np.rint(maps[0][x0:x1]).astype(np.int64) - ox
        inside_rows = (rows >= 0) & (rows < image.shape[0])
        inside_cols = (cols >= 0) & (cols < image.shape[1])
        warped = np.take(np.take(image, np.clip(rows, 0, image.shape[0] - 1), axis=0),
                         np.clip(cols, 0, image.shape[1] - 1), axis=1)
        warped[~inside_rows] = 0
        warped[:, ~inside_cols] = 0
        return warped
    # Whole-image coordinates first, then an exact shift by an integer: the same float32 values as without a window.
    grid_x = np.broadcast_to(maps[0][x0:x1], (y1 - y0, x1 - x0)) - np.float32(ox)
    grid_y = np.broadcast_to(maps[1][y0:y1, None], (y1 - y0, x1 - x0)) - np.float32(oy)
    return cv2.remap(image, grid_x, grid_y, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def source_window(maps: tuple[np.ndarray, np.ndarray], window: Window, shape_hw: tuple[int, int]) -> Window:
    """The source pixels that bilinear `warp(image, maps, window)` reads, plus one pixel of slack, clipped."""
    x0, y0, x1, y1 = window
    if x1 == x0 or y1 == y0:
        return (x0, y0, x0, y0)
    xs, ys = maps[0][x0:x1], maps[1][y0:y1]
    return grow_window((math.floor(xs.min()), math.floor(ys.min()),
                        math.floor(xs.max()) + 2, math.floor(ys.max()) + 2), 1, shape_hw)


def output_window(maps: tuple[np.ndarray, np.ndarray], window: Window, shape_hw: tuple[int, int]) -> Window:
    """The output pixels whose nearest-neighbour source under `maps` can lie in `window` (the maps increase)."""
    x0, y0, x1, y1 = window
    map_x, map_y = maps
    return clip_window(np.searchsorted(map_x, x0 - 1), np.searchsorted(map_y, y0 - 1),
                       np.searchsorted(map_x, x1, side="right"), np.searchsorted(map_y, y1, side="right"), shape_hw)


def nonzero_window(mask: np.ndarray, origin: Window | None = None) -> Window:
    """Bounding box of the mask's non-zero pixels, in the coordinates of `origin` (the window `mask` covers)."""
    ox, oy = (origin[0], origin[1]) if origin is not None else (0, 0)
    x, y, width, height = cv2.boundingRect(cv2.compare(mask, 0, cv2.CMP_GT))
    return (ox + x, oy + y, ox + x + width, oy + y + height)


def downscale(image: np.ndarray, factor: int, out: np.ndarray | None = None) -> np.ndarray:
    """Down-up scale: shrink by `factor` with nearest neighbour, enlarge back with bilinear interpolation.

    albumentations' Downscale draws a continuous scale and defaults to nearest both ways, so SBI's version is kept.
    `out` (same shape and type as `image`, may be `image` itself) receives the result.
    """
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_NEAREST)
    return cv2.resize(small, (width, height), dst=out, interpolation=cv2.INTER_LINEAR)


def elastic_reach(alpha: float) -> int:
    """How far an elastic deformation of gain `alpha` can move a nearest-neighbour sample: each displacement is at
    most alpha pixels per axis (the smoothed noise stays within [-1, 1]), +1 for rounding."""
    return math.ceil(alpha) + 1


def _noise_to_maps(blurred: np.ndarray, alpha: float, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """alpha · (2·blurred − 1) + (x, y), in place, for blurred uniform noise in [0, 1) at rows × cols. The Gaussian's
    weights sum to 1, so this equals blurring the noise 2u − 1 in [-1, 1], with one pass over the few sampled pixels."""
    blurred *= np.float32(2 * alpha)
    blurred -= np.float32(alpha)
    blurred[..., 0] += cols.astype(np.float32)[None, :]
    blurred[..., 1] += rows.astype(np.float32)[:, None]
    return blurred


def elastic_maps(shape_hw: tuple[int, int], alpha: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Sampling map of a random elastic deformation: float32 (H, W, 2), the absolute (x, y) each output pixel samples
    (cv2.remap's map1 form).

    Uniform noise in [-1, 1] per pixel and axis, smoothed by a Gaussian of `sigma` truncated at 4 sigma with mirrored
    borders, then scaled by `alpha`: albumentations 1.x's exact (non-approximate) ElasticTransform, which SBI used
    (2.x defaults to normalised Gaussian noise, which would change the deformation's strength).
    Each displacement is at most `alpha` pixels per axis, since the smoothed noise stays within [-1, 1].
    """
    height, width = shape_hw
    side = 2 * math.ceil(4 * sigma) + 1
    noise = rng.random((height, width, 2), dtype=np.float32)
    cv2.GaussianBlur(noise, (side, side), sigma, dst=noise, borderType=cv2.BORDER_REFLECT)
    return _noise_to_maps(noise, alpha, np.arange(height), np.arange(width))


def gaussian_blur_at(fields: np.ndarray, sigma: float, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """`cv2.GaussianBlur(fields, (k, k), sigma, borderType=cv2.BORDER_REFLECT)[np.ix_(rows, cols)]` for float32
    (H, W, C) fields, k = 2·ceil(4 sigma) + 1, computed only at those rows and columns.

    The blur is separable: across every row, keep the wanted columns, then down those columns, keep the wanted rows.
    For a kernel this long cv2.filter2D works through the DFT, faster than GaussianBlur's direct sums; the values equal
    the blur's up to float32 rounding (about 1e-6 of the noise's range).
    """
    kernel = cv2.getGaussianKernel(2 * math.ceil(4 * sigma) + 1, sigma, cv2.CV_32F)
    # np.take copies whole pixels; indexing with [:, cols] takes a path about 20 times slower here.
    across = np.take(cv2.filter2D(fields, -1, kernel.T, borderType=cv2.BORDER_REFLECT), cols, axis=1)
    return np.take(cv2.filter2D(across, -1, kernel, borderType=cv2.BORDER_REFLECT), rows, axis=0)


def elastic_maps_at(shape_hw: tuple[int, int], alpha: float, sigma: float, rng: np.random.Generator,
                    rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """`elastic_maps(shape_hw, alpha, sigma, rng)[np.ix_(rows, cols)]`: the same noise, smoothed only where needed
    (`gaussian_blur_at`), so the same map up to float32 rounding."""
    noise = rng.random((*shape_hw, 2), dtype=np.float32)
    return _noise_to_maps(gaussian_blur_at(noise, sigma, rows, cols), alpha, rows, cols)


def elastic_deform_window(part: np.ndarray, window: Window, shape_hw: tuple[int, int], alpha: float, sigma: float,
                          rng: np.random.Generator, rows: np.ndarray | None = None,
                          cols: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SBI's elastic deformation (nearest-neighbour sampling, mirrored borders) of a mask that is zero outside
    `window`, where `part` holds it, in an image of shape `shape_hw`, computed at the given rows × cols (sorted image
    indices; default: all). Returns (values, rows, cols): the deformed mask at the rows and columns where it can be
    non-zero (elsewhere it is zero).

    The result can be non-zero only within `elastic_reach` of the mask's non-zero box: the field is drawn there, plus
    the blur's reach, so that it is exactly what a whole-image field would be there, and the mask is read up to the
    reach further out (no copy when `window` holds all of that). Everything else samples zeros, so the result has
    the whole-image distribution at a fraction of the cost.
    """
    nonzero = nonzero_window(part, window)
    reach = elastic_reach(alpha)
    x0, y0, x1, y1 = out = grow_window(nonzero, reach, shape_hw)
    rows = np.arange(y0, y1) if rows is None else rows[(rows >= y0) & (rows < y1)]
    cols = np.arange(x0, x1) if cols is None else cols[(cols >= x0) & (cols < x1)]
    if nonzero[2] == nonzero[0] or len(rows) == 0 or len(cols) == 0:
        return np.zeros((0, 0), dtype=part.dtype), rows[:0], cols[:0]
    field = grow_window(out, math.ceil(4 * sigma), shape_hw)
    reads = grow_window(out, reach, shape_hw)  # clipped only at the image's edges, where the mirrored border applies
    if intersect(reads, window) == reads:
        source = part[window_slices(reads, window)]
    else:
        source = np.zeros((reads[3] - reads[1], reads[2] - reads[0]), dtype=part.dtype)
        source[window_slices(nonzero, reads)] = part[window_slices(nonzero, window)]
    maps = elastic_maps_at((field[3] - field[1], field[2] - field[0]), alpha, sigma, rng,
                           rows - field[1], cols - field[0])
    maps += np.array([field[0] - reads[0], field[1] - reads[1]], dtype=np.float32)
    return cv2.remap(source, maps, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101), rows, cols


def elastic_deform_mask(mask: np.ndarray, alpha: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """`mask` (a whole image) deformed by a random elastic field; see `elastic_deform_window`."""
    height, width = mask.shape
    values, rows, cols = elastic_deform_window(mask, (0, 0, width, height), mask.shape, alpha, sigma, rng)
    deformed = np.zeros_like(mask)
    deformed[np.ix_(rows, cols)] = values
    return deformed


def seed_pipeline(pipeline: A.Compose, seed: int) -> None:
    """Give an albumentations pipeline its own random stream.

    Compose.set_random_seed would hand each transform of the pipeline its own generator with the same seed, so the
    transforms' "apply with probability p" draws would coincide (the three p=0.3 post-augmentations all on or off).
    """
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))


class _Scratch:
    """Arrays reused from sample to sample. A fresh array of a few megabytes costs more in page faults (several µs per
    4 KiB page on virtual machines) than the work done on it. Not pickled: each worker process grows its own."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def __call__(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        """An array of `shape`, valid until the next request for `name`: zeros when new, else what was left in it."""
        array = self._arrays.get(name)
        if array is None or array.dtype != dtype or any(a < s for a, s in zip(array.shape, shape)):
            grown = shape if array is None else tuple(max(a, s) for a, s in zip(array.shape, shape))
            array = self._arrays[name] = np.zeros(grown, dtype=dtype)
        return array[tuple(slice(0, s) for s in shape)]

    def __getstate__(self) -> dict:
        return {"_arrays": {}}


class SelfBlendedImageGenerator:
    """Turns one real context crop into a (real, fake) pair by blending the face with a transformed copy of itself.

    Args:
        config: every parameter of the pipeline; the SBI reference's values by default.

    Example:
        >>> generator = SelfBlendedImageGenerator()
        >>> sample = generator(image, landmarks, box, np.random.default_rng(0), train=True)
        >>> sample.real.shape, sample.fake.shape, sample.mask.shape
        ((224, 224, 3), (224, 224, 3), (224, 224))
    """

    def __init__(self, config: SBIConfig | None = None) -> None:
        self.config = config = config or SBIConfig()
        rgb, hsv = config.source_rgb_shift, config.source_hsv_shift
        self._source_colour = A.Compose([
            A.RGBShift(rgb, rgb, rgb, p=config.source_rgb_shift_p),
            A.HueSaturationValue(hsv, hsv, hsv, p=1.0),
            A.RandomBrightnessContrast(config.source_brightness, config.source_contrast, p=1.0),
        ])
        self._sharpen = A.Compose([A.Sharpen(alpha=config.sharpen_alpha, lightness=config.sharpen_lightness, p=1.0)])
        rgb, hsv, bc = config.post_rgb_shift, config.post_hsv_shift, config.post_brightness_contrast
        # Real and fake go through it one after the other from the same seed, so both get identical parameters.
        self._post = A.Compose([
            A.RGBShift(rgb, rgb, rgb, p=config.post_rgb_shift_p),
            A.HueSaturationValue(hsv, hsv, hsv, p=config.post_hsv_p),
            A.RandomBrightnessContrast(bc, bc, p=config.post_brightness_contrast_p),
            A.ImageCompression(quality_range=config.jpeg_quality, p=config.jpeg_p),
        ])
        self._scratch = _Scratch()

    def _window(self, window: Window, shape_hw: tuple[int, int]) -> Window:
        """The window a step computes, given the one its output is needed in: that same window.

        Every step gives the same pixels there whatever larger window it computes, so a subclass that returns the
        whole crop (shape_hw) makes the reference's full-image computation with identical outputs; the tests use this.
        """
        return window

    def source_transforms(self, image: np.ndarray, window: Window, rng: np.random.Generator) -> np.ndarray:
        """SBI's source transforms of `image` (colour jitter, then a down-up scale or a sharpen), for `window` only;
        every random parameter comes from `rng`.

        The colour jitter is pixel-wise, so it runs on the window grown by what the last step reads around a pixel
        (1 pixel for the 3×3 sharpen, 2·factor + 2 for the down-up scale) and widened by `column_blocks`. The down-up
        scale then runs on a canvas of the whole image's shape holding that grown window (zeros elsewhere), because
        its sampling grid depends on the image size. Returns the transformed window, uint8.
        """
        config = self.config
        for pipeline in (self._source_colour, self._sharpen):
            seed_pipeline(pipeline, int(rng.integers(2**63)))
        factor = int(rng.choice(config.downscale_factors)) if rng.random() < config.downscale_p else 0
        x0, y0, x1, y1 = window
        if x1 == x0 or y1 == y0:
            return image[window_slices(window)].copy()
        grown = column_blocks(grow_window(window, 2 * factor + 2 if factor else 1, image.shape[:2]), image.shape[:2])
        coloured = self._source_colour(image=image[window_slices(grown)])["image"]
        if not factor:
            return np.ascontiguousarray(self._sharpen(image=coloured)["image"][window_slices(window, grown)])
        canvas = self._scratch("downscale", image.shape, np.uint8)
        canvas[...] = 0
        canvas[window_slices(grown)] = coloured
        return downscale(canvas, factor, out=canvas)[window_slices(window)].copy()

    def _random_affine(self, shape_hw: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Maps of SBI's random affine: x and y scales drawn separately, a shift of up to ±3% / ±1.5% of the size."""
        config = self.config
        scale = rng.uniform(*config.affine_scale, size=2)
        limits = np.array(config.affine_translate)
        shift = rng.uniform(-limits, limits) * np.array(shape_hw[::-1])
        return affine_maps(shape_hw, (float(scale[0]), float(scale[1])), (float(shift[0]), float(shift[1])))

    def blend_stage(self, image: np.ndarray, landmarks: np.ndarray, box: Box, rng: np.random.Generator,
                    train: bool = True, timings: dict[str, float] | None = None) -> BlendStage:
        """Run the pipeline up to the blend (flip, hull, crop, warp, blend mask, source transforms, blend).

        `__call__` starts with exactly this, so the same seed gives the same stage in both.
        Args are those of `__call__`.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
        points, box = validate_inputs(image, landmarks, box)
        config = self.config
        shape = image.shape[:2]
        with step_timer(timings, "flip"):
            flipped = train and rng.random() < config.hflip_p
            if flipped:
                image = cv2.flip(image, 1, dst=self._scratch("flipped", image.shape, np.uint8))
                points, box = flip_landmarks(points, shape[1]), flip_box(box, shape[1])
        with step_timer(timings, "mask"):
            if rng.random() < config.drop_forehead_p:
                points = points[:68]
            hull_type = config.hull_types[int(rng.integers(len(config.hull_types)))]
            hull_part = self._window(hull_window(shape, points), shape)
            hull = hull_mask(shape, points, hull_type, hull_part)
        with step_timer(timings, "crop_resize"):
            # The final crop is drawn first: it bounds every image step below. Train mode JPEG-compresses the window.
            factors = train_margin_factors(rng) if train else (TEST_MARGIN_FACTOR,) * 4
            crop_box = tuple(int(v) for v in face_crop_box(box, shape[1], shape[0], factors))
            window = self._window(column_blocks(jpeg_window(crop_box, shape) if train else crop_box, shape), shape)
        transformed = "source" if rng.random() < config.transform_source_p else "target"
        with step_timer(timings, "affine"):
            maps = self._random_affine(shape, rng)
            # Grown by twice the elastic reach: all that the deformation below reads, so it reads this in place.
            warped_part = grow_window(output_window(maps, nonzero_window(hull, hull_part), shape),
                                      2 * elastic_reach(config.elastic_alpha), shape)
            warped_part = self._window(warped_part, shape)
            warped = warp(hull, maps, warped_part, cv2.INTER_NEAREST, hull_part)
        with step_timer(timings, "elastic"):
            # The deformed mask only feeds the blend mask's first resize, which reads a fraction of its pixels, so the
            # resize's random size is drawn first and the deformation computed only there. (The reference also
            # deforms the source image and discards it.)
            size = blend_mask_size(rng, config)
            values, rows, cols = elastic_deform_window(warped, warped_part, shape, config.elastic_alpha,
                                                       config.elastic_sigma, rng, resize_taps(shape[0], size[0]),
                                                       resize_taps(shape[1], size[1]))
        with step_timer(timings, "blend_mask"):
            # The random resize needs the whole image's shape: a reused canvas takes the deformed mask. It is all
            # zeros: new, and every row written here is zeroed again below.
            canvas = self._scratch("mask", shape, np.float32)
            sampled_rows = np.zeros((len(rows), shape[1]), dtype=np.float32)
            sampled_rows[:, cols] = values  # two one-axis scatters: far faster than one two-axis scatter
            canvas[rows] = sampled_rows
            try:
                soft = soft_mask(canvas, rng, config, size, out=self._scratch("soft", shape, np.float32))
            finally:
                canvas[rows] = 0
            ratio = blend_ratio(rng, config)
            mask = soft[window_slices(window)] * np.float32(ratio)
            # The source is used only where the mask is non-zero.
            blended = intersect(self._window(nonzero_window(mask, window), shape), window)
            reads = self._window(source_window(maps, blended, shape), shape)
        with step_timer(timings, "source_transforms"):
            if transformed == "target":
                target = self.source_transforms(image, window, rng)
                source_part = image[window_slices(reads)]
            else:
                target = image[window_slices(window)].copy()
                source_part = self.source_transforms(image, reads, rng)
        with step_timer(timings, "affine"):
            source = np.zeros_like(target)
            source[window_slices(blended, window)] = warp(source_part, maps, blended, cv2.INTER_LINEAR, reads)
        with step_timer(timings, "blend"):
            fake = blend(source, target, mask)
        return BlendStage(window=window, crop_box=crop_box, blend_box=blended, source=source, target=target,
                          fake=fake, mask=mask, landmarks=points, box=box, hull_type=hull_type,
                          transformed=transformed, flipped=flipped, blend_ratio=ratio)

    def _post_augment(self, stage: BlendStage, shape_hw: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
        """SBI's joint post-augmentation of (real, fake) over the stage's window, the same parameters for both.

        The fake equals the real outside the blend mask's box, and every step gives equal pixels for equal pixels
        (JPEG within each coding unit, whose decoding reads JPEG_REACH pixels beyond it). So the fake is augmented
        only over the coding units around that box, in a window grown as the crop's is, and is the real elsewhere.
        """
        window, blended = stage.window, stage.blend_box
        seed_pipeline(self._post, seed)
        real = self._post(image=stage.target)["image"]
        fake = real.copy()
        if blended[2] > blended[0] and blended[3] > blended[1]:
            units = jpeg_window(blended, shape_hw, margin=0)
            differs = intersect(grow_window(units, JPEG_REACH, shape_hw), window)
            part = intersect(jpeg_window(differs, shape_hw), window)
            part = intersect(self._window(column_blocks(part, shape_hw, within=window), shape_hw), window)
            seed_pipeline(self._post, seed)
            augmented = self._post(image=stage.fake[window_slices(part, window)])["image"]
            fake[window_slices(differs, window)] = augmented[window_slices(differs, part)]
        return real, fake

    def __call__(self, image: np.ndarray, landmarks: np.ndarray, box: Box, rng: np.random.Generator,
                 train: bool = True, timings: dict[str, float] | None = None) -> SBISample:
        """Make one real/fake pair from a context crop.

        Args:
            image: uint8 (H, W, 3) RGB context crop.
            landmarks: (68, 2) or (81, 2) float points in crop pixels (iBUG-68, then 13 forehead points in contour
                order from the side of jaw point 0 to the side of jaw point 16).
            box: face box (x0, y0, x1, y1) in crop pixels, forehead to chin (RetinaFace-like).
            rng: source of every random draw; the same seed gives byte-identical outputs.
            train: True adds the flip, the joint post-augmentation and random crop margins; False gives the fixed
                12.5% margin and no flip or post-augmentation (the blend itself stays random, as in SBI validation).
            timings: if given, the seconds spent in each step are added to it under the step's name.
        """
        stage = self.blend_stage(image, landmarks, box, rng, train, timings)
        real, fake = stage.target, stage.fake
        if train:
            with step_timer(timings, "post_aug"):
                real, fake = self._post_augment(stage, image.shape[:2], int(rng.integers(2**63)))
        with step_timer(timings, "crop_resize"):
            crop = window_slices(stage.crop_box, stage.window)
            size = (self.config.image_size, self.config.image_size)
            real, fake, mask = (cv2.resize(a[crop], size, interpolation=cv2.INTER_LINEAR)
                                for a in (real, fake, stage.mask))
        return SBISample(real=real, fake=fake, mask=mask, hull_type=stage.hull_type, transformed=stage.transformed,
                         flipped=stage.flipped, blend_ratio=stage.blend_ratio,
                         landmark_count=len(stage.landmarks), crop_box=stage.crop_box)
