"""Face-region masks for self-blended images (SBI, Shiohara & Yamasaki, CVPR 2022) and the mirror of a landmark set.

Landmarks are (N, 2) arrays of (x, y) in pixel coordinates with N = 68 (iBUG-68 order) or N = 81 (iBUG-68 followed
by 13 forehead points in contour order, from the side of jaw point 0 to the side of jaw point 16).
"right" and "left" are the subject's sides: points 0-8 and the right eye 36-41 lie on the image's left.
"""
from __future__ import annotations

import cv2
import numpy as np

HULL_TYPES: tuple[str, ...] = ("dfl_full", "extended", "components", "facehull")
LANDMARK_COUNTS: tuple[int, ...] = (68, 81)  # iBUG-68, and iBUG-68 + 13 forehead points

# Sub-pixel precision of the polygon fills: 4 fractional bits, so vertices sit within 1/16 pixel of the landmark.
_FILL_SHIFT = 4

# The eight facial components of the `components` and `extended` hulls (iBUG-68 indices). Jaw point 8 (the chin) joins
# the brow and eye components, so each of them spans the face from the brow down to the chin.
FACE_COMPONENTS: dict[str, tuple[int, ...]] = {
    "right_jaw": (*range(9), 17),
    "left_jaw": (*range(8, 17), 26),
    "right_cheek": (17, 18, 19, 8),
    "left_cheek": (24, 25, 26, 8),
    "nose_ridge": (*range(19, 25), 8),
    "right_eye": (*range(17, 22), 27, *range(31, 36), 8),
    "left_eye": (*range(22, 27), 27, *range(31, 36), 8),
    "nose": (*range(27, 31), *range(31, 36)),
}

# The three regions of the `dfl_full` hull: jaw line + mouth, nose bridge + nostrils, brows + eyes.
DFL_FULL_REGIONS: dict[str, tuple[int, ...]] = {
    "jaw_and_mouth": (*range(17), *range(48, 68)),
    "nose_bridge": tuple(range(27, 36)),
    "brows_and_eyes": (*range(17, 27), *range(36, 48)),
}

_RIGHT_BROW, _LEFT_BROW = slice(17, 22), slice(22, 27)
_RIGHT_EYE, _LEFT_EYE = slice(36, 42), slice(42, 48)
_BROW_LIFT = 0.5  # `extended`: each brow moves away from its eye by half the eye-brow distance


def _mirror_permutation_68() -> np.ndarray:
    """Index map of the iBUG-68 mirror: new point i is old point perm[i]."""
    jaw = list(range(16, -1, -1))
    brows = list(range(26, 16, -1))
    nose_bridge = list(range(27, 31))
    nostrils = list(range(35, 30, -1))
    # Each eye takes the other eye's points, reversed so that the contour keeps its orientation.
    right_eye = [45, 44, 43, 42, 47, 46]
    left_eye = [39, 38, 37, 36, 41, 40]
    outer_lip = list(range(54, 47, -1)) + list(range(59, 54, -1))
    inner_lip = list(range(64, 59, -1)) + list(range(67, 64, -1))
    return np.array(jaw + brows + nose_bridge + nostrils + right_eye + left_eye + outer_lip + inner_lip)


FLIP_PERMUTATION_68: np.ndarray = _mirror_permutation_68()
FLIP_PERMUTATION_68.flags.writeable = False


def flip_permutation(n_points: int) -> np.ndarray:
    """Index map that relabels a horizontally mirrored landmark set: `mirrored = flipped_coords[perm]`.

    Args:
        n_points: 68, or 81 (the 13 forehead points 68-80 run from one side to the other, so they are reversed).
    """
    if n_points == 68:
        return FLIP_PERMUTATION_68.copy()
    if n_points == 81:
        return np.concatenate([FLIP_PERMUTATION_68, np.arange(80, 67, -1)])
    raise ValueError(f"flip_permutation: expected 68 or 81 landmarks, got {n_points}")


def flip_landmarks(landmarks: np.ndarray, width: float) -> np.ndarray:
    """Landmarks of the horizontally flipped image (`cv2.flip(image, 1)` or `image[:, ::-1]`), relabelled.

    x' = width - x, as the SBI reference does. The exact mirror of pixel centres would be width - 1 - x; the reference's
    convention shifts every point by one pixel, which the mask blurs and the random affine dwarf.
    """
    flipped = np.asarray(landmarks, dtype=np.float32).copy()
    flipped[:, 0] = width - flipped[:, 0]
    return flipped[flip_permutation(len(flipped))]


def _fill_hull(canvas: np.ndarray, points: np.ndarray, line_type: int, origin: tuple[int, int]) -> None:
    """Fill the convex hull of `points` into `canvas` (uint8, whose pixel (0, 0) is the image's `origin`) with 255,
    at sub-pixel precision. The fixed-point vertices move by whole pixels, so the fill is the image's, shifted."""
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2)
    fixed = np.round(hull * (1 << _FILL_SHIFT)).astype(np.int32) - np.array(origin, dtype=np.int32) * (1 << _FILL_SHIFT)
    cv2.fillConvexPoly(canvas, fixed, 255, lineType=line_type, shift=_FILL_SHIFT)


def _lift_brows(landmarks: np.ndarray) -> np.ndarray:
    """Copy of the first 68 points with each brow moved away from its eye by `_BROW_LIFT` × the eye-brow distance.

    The distance is taken between the brow's centre and the eye's centre, and the move follows that direction, so a
    tilted face gets its brows lifted along the face's own vertical rather than the image's.
    """
    lifted = landmarks[:68].copy()
    for brow, eye in ((_RIGHT_BROW, _RIGHT_EYE), (_LEFT_BROW, _LEFT_EYE)):
        lifted[brow] += _BROW_LIFT * (landmarks[brow].mean(axis=0) - landmarks[eye].mean(axis=0))
    return lifted


def hull_window(shape_hw: tuple[int, int], landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), end-exclusive: a part of the image that holds every hull type of `landmarks` with two pixels
    of zeros around it (the anti-aliased edge reaches one pixel out), clipped to the image."""
    landmarks = np.asarray(landmarks, dtype=np.float32)
    points = np.concatenate([landmarks, _lift_brows(landmarks)])
    (x0, y0), (x1, y1) = np.floor(points.min(axis=0)) - 2, np.ceil(points.max(axis=0)) + 3
    height, width = shape_hw
    x0, y0 = min(max(0, int(x0)), width), min(max(0, int(y0)), height)
    return x0, y0, max(x0, min(width, int(x1))), max(y0, min(height, int(y1)))


def hull_mask(shape_hw: tuple[int, int], landmarks: np.ndarray, hull_type: str,
              window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The face-region mask of one SBI hull type, as float32 in [0, 1] of shape `shape_hw`.

    Args:
        shape_hw: (height, width) of the image the landmarks belong to.
        landmarks: (68, 2) or (81, 2) points in pixel coordinates.
        hull_type: one of HULL_TYPES.
            - "dfl_full": union of the hulls of jaw + mouth, nose bridge + nostrils, brows + eyes (points 0-67).
            - "extended": the eight FACE_COMPONENTS with the brows lifted by half the eye-brow distance (0-67).
            - "components": union of the eight FACE_COMPONENTS hulls (points 0-67).
            - "facehull": one anti-aliased hull of all points, so the forehead is inside only with 81 points.
            The first three are 0/1 masks, "facehull" has soft edges, as in the reference.
        window: (x0, y0, x1, y1) inside the image, e.g. from `hull_window`: draw only that part. It equals the same
            part of the whole mask wherever the hulls do not cross the window's inner edges (hull_window's never do).
    """
    landmarks = np.asarray(landmarks, dtype=np.float32)
    if landmarks.ndim != 2 or landmarks.shape[1] != 2 or len(landmarks) not in LANDMARK_COUNTS:
        raise ValueError(f"hull_mask: landmarks must have shape (68, 2) or (81, 2), got {landmarks.shape}")
    x0, y0, x1, y1 = window if window is not None else (0, 0, shape_hw[1], shape_hw[0])
    canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    if hull_type not in HULL_TYPES:
        raise ValueError(f"hull_mask: unknown hull type {hull_type!r}; expected one of {HULL_TYPES}")
    if canvas.size == 0:
        pass
    elif hull_type == "facehull":
        _fill_hull(canvas, landmarks, cv2.LINE_AA, (x0, y0))
    elif hull_type == "dfl_full":
        for indices in DFL_FULL_REGIONS.values():
            _fill_hull(canvas, landmarks[list(indices)], cv2.LINE_8, (x0, y0))
    elif hull_type in ("components", "extended"):
        points = _lift_brows(landmarks) if hull_type == "extended" else landmarks
        for indices in FACE_COMPONENTS.values():
            _fill_hull(canvas, points[list(indices)], cv2.LINE_8, (x0, y0))
    return np.divide(canvas, np.float32(255), dtype=np.float32)
