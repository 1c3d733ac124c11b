"""SBI's crop rules: the context crop that blending works on, and the final face crop with its margins."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONTEXT_MARGINS = (0.5, 1.0, 0.5, 0.4)  # left, top, right, bottom, in landmark-box widths/heights (SBI)
FACE_MARGIN_BASE = 0.25  # final crop: w/4 or h/4 per side, times the factors below (SBI)
TRAIN_MARGIN_FACTOR = (0.2, 0.8)  # per side, uniform: 5-20 % margins at training time
TEST_MARGIN_FACTOR = 0.5  # fixed 12.5 % margins at validation and test time
MIN_FACE_AREA_RATIO = 0.5  # at test time, faces smaller than this fraction of the largest face are dropped


def clip_box(box, width: int, height: int) -> np.ndarray:
    """Integer (x0, y0, x1, y1) inside a width×height image; raises if nothing of the box is inside."""
    x0, y0, x1, y1 = box
    clipped = np.array([max(0, int(np.floor(x0))), max(0, int(np.floor(y0))),
                        min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))])
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise ValueError(f"box {tuple(np.round(box, 1))} lies outside the {width}×{height} image")
    return clipped


def context_crop_box(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """SBI's context crop: the box of the 68 iBUG points widened by CONTEXT_MARGINS, clipped to the image."""
    lm = landmarks[:68]
    x0, y0 = lm.min(axis=0)
    x1, y1 = lm.max(axis=0)
    w, h = x1 - x0, y1 - y0
    left, top, right, bottom = CONTEXT_MARGINS
    return clip_box((x0 - left * w, y0 - top * h, x1 + right * w, y1 + bottom * h), width, height)


def face_crop_box(box, width: int, height: int, factors=(TEST_MARGIN_FACTOR,) * 4) -> np.ndarray:
    """The final crop: `box` widened by FACE_MARGIN_BASE × factor of its width/height on each side (left, top,
    right, bottom), clipped to the image."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    fl, ft, fr, fb = (FACE_MARGIN_BASE * f for f in factors)
    return clip_box((x0 - fl * w, y0 - ft * h, x1 + fr * w, y1 + fb * h), width, height)


def sbi_test_crop_box(box, width: int, height: int) -> np.ndarray:
    """SBI's test-time crop, edge for edge: with margins m = FACE_MARGIN_BASE × TEST_MARGIN_FACTOR (12.5 %) of the
    box's width (height) per side, the edges are int(x0 − m) and int(x1 + m) + 1 (`int` truncates towards zero),
    clipped to the image, as SBI's `crop_face(..., phase='test')` computes them. Raises if nothing is left."""
    x0, y0, x1, y1 = (float(v) for v in box)
    margin_x = (x1 - x0) * FACE_MARGIN_BASE * TEST_MARGIN_FACTOR
    margin_y = (y1 - y0) * FACE_MARGIN_BASE * TEST_MARGIN_FACTOR
    edges = np.array([max(0, int(x0 - margin_x)), max(0, int(y0 - margin_y)),
                      min(width, int(x1 + margin_x) + 1), min(height, int(y1 + margin_y) + 1)])
    if edges[2] <= edges[0] or edges[3] <= edges[1]:
        raise ValueError(f"face box {tuple(round(v, 1) for v in (x0, y0, x1, y1))} leaves no test crop inside the "
                         f"{width}×{height} frame")
    return edges


def stored_crop_box(face, width: int, height: int, retina_box=None) -> np.ndarray:
    """What preprocessing stores: SBI's context crop, widened where needed to hold the widest training crop
    around the face box (and around `retina_box`, the face's RetinaFace box, when given)."""
    boxes = [context_crop_box(face.landmarks, width, height)]
    for box in (face.box, retina_box):
        if box is not None:
            boxes.append(face_crop_box(box, width, height, (TRAIN_MARGIN_FACTOR[1],) * 4))
    boxes = np.array(boxes)
    return clip_box((*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0)), width, height)


def iou_inclusive(a, b) -> float:
    """IoU of two (x0, y0, x1, y1) boxes whose corners are both inside (+1 pixel per side), as SBI's
    `IoUfrom2bboxes` computes it."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = width * height
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return float(inter / (area_a + area_b - inter))


def matching_retina_box(landmarks: np.ndarray, retina_boxes: list) -> np.ndarray | None:
    """SBI's choice of a face's RetinaFace box (`sbi.py`): among the two largest RetinaFace boxes of the frame
    (`retina_boxes`, largest first), the one with the highest `iou_inclusive` against the box of all the face's
    landmarks. None when none overlaps it (SBI would take the first box then; hcsi does not crop an unrelated face)."""
    points = np.asarray(landmarks, dtype=np.float64)
    landmark_box = (*points.min(axis=0), *points.max(axis=0))
    best, best_iou = None, 0.0
    for box in retina_boxes[:2]:
        iou = iou_inclusive(landmark_box, box)
        if iou > best_iou:
            best, best_iou = np.asarray(box, dtype=np.float64), iou
    return best


@dataclass
class FaceCrop:
    """A face's stored crop and its geometry in crop pixels; crop pixel (0, 0) is frame pixel `origin`."""

    image: np.ndarray  # RGB uint8, contiguous
    origin: tuple[int, int]
    box: np.ndarray  # (x0, y0, x1, y1)
    detector_box: np.ndarray
    landmarks: np.ndarray  # 81×2
    retina_box: np.ndarray | None = None  # the face's RetinaFace box (SBI crops training faces by it), if stored


def cut_stored_crop(image: np.ndarray, face, retina_box=None) -> FaceCrop:
    """Cut `stored_crop_box` of `face` (and its RetinaFace box, when given) out of the frame and move its geometry
    into crop coordinates."""
    x0, y0, x1, y1 = (int(v) for v in stored_crop_box(face, image.shape[1], image.shape[0], retina_box))
    shift = np.array([x0, y0, x0, y0], dtype=np.float32)
    return FaceCrop(np.ascontiguousarray(image[y0:y1, x0:x1]), (x0, y0), face.box - shift,
                    face.detector_box - shift, face.landmarks - shift[:2],
                    None if retina_box is None else np.asarray(retina_box, np.float64) - shift)


def train_margin_factors(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """Independent per-side factors of SBI's training crop."""
    return tuple(float(f) for f in rng.uniform(*TRAIN_MARGIN_FACTOR, size=4))


def keep_large_faces(faces: list, ratio: float = MIN_FACE_AREA_RATIO) -> list:
    """Faces whose box area is at least `ratio` of the largest one's (SBI's test-time rule)."""
    if not faces:
        return []
    largest = max(f.area for f in faces)
    return [f for f in faces if f.area >= ratio * largest]
