"""The image operations of SBI synthesis, each usable on a whole context crop or on a window of it.

`hcsi.sbi.reference` composes them on whole images (the specification); `hcsi.sbi.synthesis` on windows.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from hcsi.sbi.masks import LANDMARK_COUNTS
from hcsi.sbi.windows import Window, grow_window, intersect, nonzero_window, window_slices

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) face box in context-crop pixels


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
    maps = elastic_maps_at((field[3] - field[1], field[2] - field[0]), alpha=alpha, sigma=sigma, rng=rng,
                           rows=rows - field[1], cols=cols - field[0])
    maps += np.array([field[0] - reads[0], field[1] - reads[1]], dtype=np.float32)
    return cv2.remap(source, maps, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101), rows, cols


def elastic_deform_mask(mask: np.ndarray, alpha: float, sigma: float, rng: np.random.Generator,
                        rows: np.ndarray | None = None, cols: np.ndarray | None = None) -> np.ndarray:
    """`mask` (a whole image) deformed by a random elastic field, evaluated at rows × cols (sorted indices; default:
    every pixel) and zero elsewhere; see `elastic_deform_window` for the field and where it is drawn."""
    height, width = mask.shape
    values, rows, cols = elastic_deform_window(mask, (0, 0, width, height), mask.shape, alpha=alpha, sigma=sigma,
                                               rng=rng, rows=rows, cols=cols)
    deformed = np.zeros_like(mask)
    deformed[np.ix_(rows, cols)] = values
    return deformed
