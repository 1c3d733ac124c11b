"""Face detection with 68 iBUG landmarks plus 13 synthesised forehead points, offline.

The default backend is dlib's HOG detector and its 68-point shape predictor (the model ships inside the
`face-recognition-models` package). SBI used codeniko's 81-point model (68 + 13 forehead points fitted with a 3D
morphable model), which cannot be installed here; `synthesize_forehead` places 13 points on an arc above the brows
instead (docs/protocol.md says how that differs).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

NUM_LANDMARKS = 81  # 68 iBUG points + 13 forehead points, SBI's layout
FOREHEAD_POINTS = 13
ENHANCED_MAX_SIDE = 1920  # longest side of the enlarged copy the low-light second pass searches
FOREHEAD_HEIGHT = 0.8  # forehead arc height above the brows, in units of the brow-to-nose-base distance


@dataclass
class Face:
    """One detected face, in the pixel coordinates of the image it was found in.

    Attributes:
        box: (x0, y0, x1, y1), the face box used for crops: detector box ∪ landmark box, its top raised halfway
            to the forehead arc (SBI crops with RetinaFace boxes, which include the lower forehead).
        detector_box: the box the detector returned.
        score: detector confidence (dlib HOG: SVM margin, > 0 means detected at the default threshold).
        landmarks: 81×2 float32: iBUG-68 points, then 13 forehead points in contour order from the side of jaw
            point 0 to the side of jaw point 16.
        enhanced: found only after low-light enhancement (second pass).
    """

    box: np.ndarray
    detector_box: np.ndarray
    score: float
    landmarks: np.ndarray
    enhanced: bool = False

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


class FaceDetector(Protocol):
    """What every backend provides: all faces of an RGB uint8 image, largest box first."""

    name: str

    def detect(self, image: np.ndarray) -> list[Face]: ...


def synthesize_forehead(landmarks68: np.ndarray) -> np.ndarray:
    """13 forehead points on a half-ellipse over the face: from temple (jaw point 0) to temple (jaw point 16).

    The ellipse is centred between jaw points 0 and 16, its horizontal semi-axis reaches them, and its vertical
    semi-axis reaches FOREHEAD_HEIGHT brow-to-nose-base distances above the highest brow point, along the face's
    up direction (so tilted faces get a tilted forehead). The end points themselves are left out.
    """
    p = landmarks68.astype(np.float64)
    left, right = p[0], p[16]
    center = (left + right) / 2
    half_width = np.linalg.norm(right - left) / 2
    across = (right - left) / max(2 * half_width, 1e-6)
    up = np.array([across[1], -across[0]])  # across rotated by -90°: image y grows downwards
    if np.dot(up, p[27] - p[8]) < 0:  # must point from chin to nose bridge
        up = -up
    brow_top = max(np.dot(p[17:27] - center, up))
    brow_to_nose_base = abs(np.dot(p[17:27].mean(axis=0) - p[33], up))
    height = max(brow_top, 0.0) + FOREHEAD_HEIGHT * brow_to_nose_base
    angles = np.linspace(np.pi, 0, FOREHEAD_POINTS + 2)[1:-1]
    points = center + np.outer(np.cos(angles), across) * half_width + np.outer(np.sin(angles), up) * height
    return points.astype(np.float32)


def face_box(detector_box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Detector box ∪ 68-landmark box, with the top raised halfway to the highest forehead point."""
    lm68 = landmarks[:68]
    x0 = min(detector_box[0], lm68[:, 0].min())
    y0 = min(detector_box[1], lm68[:, 1].min())
    x1 = max(detector_box[2], lm68[:, 0].max())
    y1 = max(detector_box[3], lm68[:, 1].max())
    forehead_top = landmarks[68:, 1].min() if len(landmarks) > 68 else y0
    y0 = min(y0, (y0 + forehead_top) / 2)
    return np.array([x0, y0, x1, y1], dtype=np.float32)


class DlibFaceDetector:
    """dlib HOG detector + 68-point shape predictor, with a low-light second pass.

    Args:
        upsample: times dlib upsamples the image before the first pass (0: faces ≳ 80 px; 1 finds smaller faces
            at 4× the cost and gave false positives on our test photos).
        enhance_if_none: when the first pass finds nothing, retry once on a brightened (gamma 0.4) and
            CLAHE-equalised copy enlarged to twice its size, at most ENHANCED_MAX_SIDE pixels (dark or small
            faces); such faces are marked `enhanced`.
        min_score: HOG SVM margin a detection must exceed.
    """

    name = "dlib"

    def __init__(self, upsample: int = 0, enhance_if_none: bool = True, min_score: float = 0.0) -> None:
        import dlib

        with warnings.catch_warnings():  # face_recognition_models imports the deprecated pkg_resources
            warnings.simplefilter("ignore")
            import face_recognition_models

        self.upsample = upsample
        self.enhance_if_none = enhance_if_none
        self.min_score = min_score
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
        self._clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
        self._gamma_lut = (np.linspace(0, 1, 256) ** 0.4 * 255).astype(np.uint8)

    def _enhanced_pass(self, image: np.ndarray):
        """Detections on a brightened, equalised, enlarged copy, as rectangles of the original image."""
        bright = cv2.LUT(image, self._gamma_lut)
        lab = cv2.cvtColor(bright, cv2.COLOR_RGB2LAB)
        lab[..., 0] = self._clahe.apply(lab[..., 0])
        scale = min(2.0, ENHANCED_MAX_SIDE / max(image.shape[:2]))
        enlarged = cv2.resize(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), None, fx=scale, fy=scale,
                              interpolation=cv2.INTER_LINEAR)
        rects, scores, _ = self._detector.run(enlarged, self.upsample, self.min_score)
        dlib = self._dlib
        rects = [dlib.rectangle(round(r.left() / scale), round(r.top() / scale), round(r.right() / scale),
                                round(r.bottom() / scale)) for r in rects]
        return rects, scores

    def detect(self, image: np.ndarray) -> list[Face]:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 H×W×3 image, got {image.dtype} {image.shape}")
        image = np.ascontiguousarray(image)
        rects, scores, _ = self._detector.run(image, self.upsample, self.min_score)
        enhanced = False
        if not rects and self.enhance_if_none:
            rects, scores = self._enhanced_pass(image)
            enhanced = True
        faces = []
        for rect, score in zip(rects, scores):
            shape = self._predictor(image, rect)
            lm68 = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
            landmarks = np.concatenate([lm68, synthesize_forehead(lm68)])
            detector_box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], np.float32)
            faces.append(Face(face_box(detector_box, landmarks), detector_box, float(score), landmarks, enhanced))
        return sorted(faces, key=lambda f: f.area, reverse=True)


FACE_DETECTORS = {"dlib": DlibFaceDetector}


def create_face_detector(name: str = "dlib", **options) -> FaceDetector:
    """A face detector backend by name (see FACE_DETECTORS)."""
    if name not in FACE_DETECTORS:
        raise KeyError(f"unknown face detector {name!r}; available: {', '.join(sorted(FACE_DETECTORS))}")
    return FACE_DETECTORS[name](**options)
