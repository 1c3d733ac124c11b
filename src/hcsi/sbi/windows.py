"""Windows: the rectangles of a context crop that the fast SBI generator computes, and their geometry.

A window is (x0, y0, x1, y1) in context-crop pixels, x1 and y1 exclusive. `hcsi.sbi.synthesis` explains why each step
may be restricted to a window and which window it needs.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

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


def nonzero_window(mask: np.ndarray, origin: Window | None = None) -> Window:
    """Bounding box of the mask's non-zero pixels, in the coordinates of `origin` (the window `mask` covers)."""
    ox, oy = (origin[0], origin[1]) if origin is not None else (0, 0)
    x, y, width, height = cv2.boundingRect(cv2.compare(mask, 0, cv2.CMP_GT))
    return (ox + x, oy + y, ox + x + width, oy + y + height)


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
