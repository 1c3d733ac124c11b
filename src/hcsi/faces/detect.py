"""Face detection with 68 iBUG landmarks plus 13 synthesised forehead points, offline.

Landmarks come from dlib's 68-point shape predictor (the model ships inside the `face-recognition-models`
package); face boxes from dlib's HOG detector and from MediaPipe's short-range BlazeFace (`hcsi.faces.blazeface`),
both on every frame and merged by overlap in the default backend "hog540+blazeface-every-frame" (HOG on a copy with
a 540-px shorter side; "hog+blazeface-every-frame" gives HOG the full frame, "hog+blazeface" runs BlazeFace only
where HOG finds nothing). SBI used codeniko's 81-point model
(68 + 13 forehead points fitted with a 3D morphable model), which cannot be installed here; `synthesize_forehead`
places 13 points on an arc above the brows instead (docs/protocol.md says how that differs).

RetinaFace (`hcsi.faces.retinaface`) gives the test-time finders "sbi-retinaface" (SBI's face stage exactly, with the
ResNet-50 weights a user installs), "retinaface" (the shipped MobileNet-0.25) and "retinaface-r50"; they return its
box and five keypoints, no dlib landmarks (test-time crops need only the box).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import cv2
import numpy as np

NUM_LANDMARKS = 81  # 68 iBUG points + 13 forehead points, SBI's layout
FOREHEAD_POINTS = 13
FOREHEAD_HEIGHT = 0.8  # forehead arc height above the brows, in units of the brow-to-nose-base distance


@dataclass
class Face:
    """One detected face, in the pixel coordinates of the image it was found in.

    Attributes:
        box: (x0, y0, x1, y1), the face box used for crops. dlib-based finders: detector box ∪ landmark box, its
            top raised halfway to the forehead arc (SBI crops with RetinaFace boxes, which include the lower
            forehead); RetinaFace finders: RetinaFace's box itself, unclipped, as SBI crops by it.
        detector_box: the box the finder returned (HOG and BlazeFace: in HOG's box convention).
        score: finder confidence (HOG: SVM margin, > 0 means detected at the default threshold; BlazeFace and
            RetinaFace: probability).
        landmarks: dlib-based finders: 81×2 float32, iBUG-68 points, then 13 forehead points in contour order from
            the side of jaw point 0 to the side of jaw point 16; RetinaFace finders: its 5 keypoints (5×2: eyes,
            nose tip, mouth corners).
        found_by: the finder that found it ("hog", "blazeface" or "retinaface").
    """

    box: np.ndarray
    detector_box: np.ndarray
    score: float
    landmarks: np.ndarray
    found_by: str = "hog"

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
    """Faces with dlib's 68-point landmarks (+ 13 forehead points); boxes from one or more finders in turn.

    Finders: "hog" is dlib's HOG detector (SBI's detector family); "blazeface" is MediaPipe's short-range
    BlazeFace over a tile pyramid (`hcsi.faces.blazeface`), which finds dark, low-contrast and turned faces that
    HOG misses. With every_frame=False each finder runs only when the previous ones found nothing in the image;
    with every_frame=True all run on every image and a later finder's face is added when it overlaps no face found
    before (IoU < MERGE_IOU), so a frame with one face HOG sees and one it misses gives both. BlazeFace boxes are mapped
    to HOG's box convention (BLAZEFACE_TO_HOG) before landmarks are fitted, since dlib's shape predictor was trained
    on HOG boxes.

    Args:
        finders: the finders to try, in order.
        upsample: times the HOG detector upsamples the image (0: faces ≳ 80 px; 1 finds smaller faces at 4× the
            cost and gave false positives on our test photos).
        min_hog_score: HOG SVM margin a detection must exceed.
        blazeface_model: BlazeFace .tflite file (default: found or fetched by `blazeface_model_path`).
        min_blazeface_score: BlazeFace probability a detection must exceed.
        every_frame: run every finder on every image and merge (True), or a finder only where the previous ones
            found nothing (False).
        hog_short_side: when set, HOG searches a copy of the image shrunk so that its shorter side is at most this
            many pixels (HOG's cost grows with the pixel count); its boxes are scaled back and the landmarks are
            fitted on the full image. Faces below ~80 px in the shrunk copy are then left to BlazeFace.
        blazeface_device: None runs BlazeFace through LiteRT on the CPU, one tile at a time (the reference); a
            torch device ("cpu", "cuda", ...) runs the same network in torch (`BatchedBlazeFace`), every tile of
            every frame given to `detect_many` in batched calls on that device.
    """

    def __init__(self, finders: tuple[str, ...] = ("hog", "blazeface"), upsample: int = 0,
                 min_hog_score: float = 0.0, blazeface_model: str | None = None,
                 min_blazeface_score: float = 0.75, every_frame: bool = False,
                 hog_short_side: int | None = None, blazeface_device: str | None = None) -> None:
        import dlib

        unknown = set(finders) - set(FINDERS)
        if unknown or not finders:
            raise ValueError(f"unknown face finders {sorted(unknown)}; choose from {FINDERS}")
        self.finders = tuple(finders)
        self.every_frame = every_frame
        if hog_short_side is not None and hog_short_side < 80:
            raise ValueError(f"hog_short_side must be at least 80 pixels (HOG's smallest face), got {hog_short_side}")
        self.hog_short_side = hog_short_side
        labels = [f"hog{hog_short_side}" if f == "hog" and hog_short_side else f for f in self.finders]
        labels = [f"{f}-torch" if f == "blazeface" and blazeface_device is not None else f for f in labels]
        self.name = "+".join(labels) + ("-every-frame" if every_frame else "")
        self.upsample = upsample
        self.min_hog_score = min_hog_score
        self._dlib = dlib
        self._hog = dlib.get_frontal_face_detector() if "hog" in finders else None
        self._blazeface = None
        if "blazeface" in finders and blazeface_device is None:
            from .blazeface import BlazeFace

            self._blazeface = BlazeFace(blazeface_model, min_score=min_blazeface_score)
        elif "blazeface" in finders:
            from .blazeface_torch import BatchedBlazeFace

            self._blazeface = BatchedBlazeFace(blazeface_model, device=blazeface_device,
                                               min_score=min_blazeface_score)
        with warnings.catch_warnings():  # face_recognition_models imports the deprecated pkg_resources
            warnings.simplefilter("ignore")
            import face_recognition_models

        self._predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())

    def _find_many(self, finder: str, images: list[np.ndarray]) -> list[tuple[list[np.ndarray], list[float]]]:
        """For each image: boxes (x0, y0, x1, y1) in HOG's convention and scores of one finder."""
        if finder == "hog":
            return [self._hog_boxes(image) for image in images]
        if hasattr(self._blazeface, "detect_many"):  # torch: all frames and tiles in batched calls
            found = self._blazeface.detect_many(images)
        else:
            found = [self._blazeface.detect(image) for image in images]
        return [([blazeface_to_hog_box(box) for box in boxes], [float(s) for s in scores]) for boxes, scores in found]

    def _hog_boxes(self, image: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        scale = 1.0
        if self.hog_short_side is not None and min(image.shape[:2]) > self.hog_short_side:
            scale = self.hog_short_side / min(image.shape[:2])
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        rects, scores, _ = self._hog.run(image, self.upsample, self.min_hog_score)
        return [np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float32) / scale
                for r in rects], scores

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.detect_many([image])[0]

    def detect_many(self, images: list[np.ndarray]) -> list[list[Face]]:
        """The faces of each image (as `detect`), the batched finders run once over all of them."""
        for image in images:
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"expected an RGB uint8 H×W×3 image, got {image.dtype} {image.shape}")
        images = [np.ascontiguousarray(image) for image in images]
        found: list[list[tuple[np.ndarray, float, str]]] = [[] for _ in images]
        for finder in self.finders:
            todo = [k for k in range(len(images)) if self.every_frame or not found[k]]
            if not todo:
                break
            for k, (boxes, scores) in zip(todo, self._find_many(finder, [images[k] for k in todo])):
                earlier = [box for box, _, _ in found[k]]
                found[k] += [(box, score, finder) for box, score in zip(boxes, scores)
                             if all(box_iou(box, other) < MERGE_IOU for other in earlier)]
        return [self._faces(image, faces) for image, faces in zip(images, found)]

    def _faces(self, image: np.ndarray, found: list[tuple[np.ndarray, float, str]]) -> list[Face]:
        faces = []
        for box, score, finder in found:
            rect = self._dlib.rectangle(*(int(round(v)) for v in (box[0], box[1], box[2] - 1, box[3] - 1)))
            shape = self._predictor(image, rect)
            lm68 = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
            landmarks = np.concatenate([lm68, synthesize_forehead(lm68)])
            faces.append(Face(face_box(box, landmarks), box, float(score), landmarks, finder))
        return sorted(faces, key=lambda f: f.area, reverse=True)


class RetinaFaceDetector:
    """Faces found by RetinaFace (`hcsi.faces.retinaface`), batched over the frames given to `detect_many`.

    Each Face's `box` and `detector_box` are RetinaFace's box, unclipped (SBI crops by it), its `landmarks` the five
    RetinaFace keypoints (eyes, nose tip, mouth corners), not dlib's 81 points: test-time crops need only the box.

    Args:
        weights: "sbi" (the ResNet-50 weights a user installed: `resnet50_weights`), "resnet50" (the same file at
            this finder's practical settings) or "mobilenet0.25" (shipped with hcsi).
        device: where the network runs (the model's device).
        longest_side, upscale, levels, min_score, nms_iou, rounding, amp: as `BatchedRetinaFace`.
        full_frames: whether the evaluation protocol gives it frames at their own size (SBI's stage) rather than
            shrunk to MAX_DETECTION_SIDE first.
    """

    def __init__(self, weights: str = "mobilenet0.25", device: str | None = None, longest_side: int | None = 2048,
                 upscale: bool = True, levels: int = 1, min_score: float = 0.7, nms_iou: float = 0.4,
                 rounding: int | None = 2, amp: str | None = None, full_frames: bool = False,
                 name: str = "retinaface") -> None:
        from .blazeface import ModelUnavailable
        from .retinaface import BatchedRetinaFace, resnet50_weights, shipped_weights

        loaded = shipped_weights() if weights == "mobilenet0.25" else resnet50_weights()
        if weights == "sbi" and loaded.layout != "sbi":
            raise ModelUnavailable(f"sbi-retinaface needs retinaface_pytorch's weights (SBI's), but the installed "
                                   f"ResNet-50 file {loaded.path} has the {loaded.layout} layout; use retinaface-r50 "
                                   "with it")
        self.finder = BatchedRetinaFace(loaded, device or "cpu", longest_side, upscale, levels, min_score, nms_iou,
                                        rounding, amp)
        self.name = name
        self.full_frames = full_frames

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.detect_many([image])[0]

    def detect_many(self, images: list[np.ndarray]) -> list[list[Face]]:
        faces = []
        for found in self.finder.detect_many(images):
            faces.append(sorted((Face(box, box.copy(), float(score), marks, "retinaface")
                                 for box, score, marks in zip(found.boxes, found.scores, found.landmarks)),
                                key=lambda f: f.area, reverse=True))
        return faces


FINDERS = ("hog", "blazeface")
MERGE_IOU = 0.3  # a later finder's box overlapping an earlier one's this much is the same face


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0
# BlazeFace box → HOG-like box: median relation over 138 frames of ../shared/data where both found the one face
# (HOG centre = BlazeFace centre + (-0.014, -0.026) × BlazeFace width, HOG side = 0.951 × BlazeFace width).
BLAZEFACE_TO_HOG = (-0.014, -0.026, 0.951)


def blazeface_to_hog_box(box: np.ndarray) -> np.ndarray:
    """A BlazeFace box moved and scaled to where dlib's HOG detector would put the same face's box."""
    dx, dy, scale = BLAZEFACE_TO_HOG
    width = box[2] - box[0]
    cx = (box[0] + box[2]) / 2 + dx * width
    cy = (box[1] + box[3]) / 2 + dy * width
    half = scale * width / 2
    return np.array([cx - half, cy - half, cx + half, cy + half], np.float32)


# `retinaface` (the shipped MobileNet-0.25): frames shrunk (never enlarged) to a 640-px longer side, then searched
# again at half that size (the network, trained on 300-px images, misses faces that fill a frame), faces above 0.8.
# Chosen on the shared media and the fixtures against the default finder (docs/benchmarks.md, "RetinaFace").
RETINAFACE_SIDE = 640
RETINAFACE_LEVELS = 2
RETINAFACE_MIN_SCORE = 0.8
# `retinaface-r50`: SBI's threshold, frames shrunk to a 1280-px longer side at most (SBI enlarges them to 2048);
# its quality is not measured here (SBI's trained weights cannot be downloaded on our machines).
RETINAFACE_R50_SIDE = 1280

FACE_DETECTORS = {
    # default: both finders on every frame, merged (every face of a multi-face frame), HOG on a copy shrunk to a
    # 540-px shorter side (its cost, the detector's main one, grows with the pixels); the same faces on the shared
    # media at half the time on 1080p frames (docs/benchmarks.md, "End-to-end evaluation")
    "hog540+blazeface-every-frame": partial(DlibFaceDetector, finders=("hog", "blazeface"), every_frame=True,
                                            hog_short_side=540),
    "hog+blazeface-every-frame": partial(DlibFaceDetector, finders=("hog", "blazeface"), every_frame=True),
    "hog+blazeface": partial(DlibFaceDetector, finders=("hog", "blazeface")),  # BlazeFace only where HOG finds none
    "hog": partial(DlibFaceDetector, finders=("hog",)),
    "blazeface": partial(DlibFaceDetector, finders=("blazeface",)),
    # the same BlazeFace network in torch, batched over a video's frames and tiles on the model's device (`--device`):
    # the default's faces with BlazeFace on the GPU (HOG and landmarks stay on the CPU), and BlazeFace alone
    "hog540+blazeface-torch-every-frame": partial(DlibFaceDetector, finders=("hog", "blazeface"), every_frame=True,
                                                  hog_short_side=540, blazeface_device="cpu"),
    "blazeface-torch": partial(DlibFaceDetector, finders=("blazeface",), blazeface_device="cpu"),
    # SBI's face stage exactly (retinaface_pytorch 0.0.8's predict_jsons: frames resized to a 2048-px longer side,
    # score > 0.7, NMS 0.4, boxes rounded to 2 decimals), with SBI's ResNet-50 weights, which a user installs
    "sbi-retinaface": partial(RetinaFaceDetector, weights="sbi", longest_side=2048, full_frames=True,
                              name="sbi-retinaface"),
    # practical finders on any device: the shipped MobileNet-0.25 at measured sizes, and the installed ResNet-50
    "retinaface": partial(RetinaFaceDetector, weights="mobilenet0.25", longest_side=RETINAFACE_SIDE, upscale=False,
                          levels=RETINAFACE_LEVELS, min_score=RETINAFACE_MIN_SCORE, name="retinaface"),
    "retinaface-r50": partial(RetinaFaceDetector, weights="resnet50", longest_side=RETINAFACE_R50_SIDE,
                              upscale=False, min_score=0.7, name="retinaface-r50"),
}
# Defaults per device (docs/protocol.md, "Faces: a default per device"): the same faces on both. BlazeFace alone
# found 197 of the 199 test-time faces of the shared media (HOG adds two background faces), so HOG stays.
DEFAULT_FACE_DETECTOR = "hog540+blazeface-every-frame"  # on the CPU, and for preprocessing
DEFAULT_GPU_FACE_DETECTOR = "hog540+blazeface-torch-every-frame"  # evaluation and detection on a CUDA device
# On a CUDA device with SBI's RetinaFace weights installed: SBI's own face stage, so that scores compare with SBI's.
# Without them the GPU default stays: the shipped MobileNet-0.25 (`retinaface`) found 63 of the default's 81 faces
# on the shared media, none of DFDC's, and false finds besides (docs/benchmarks.md, "RetinaFace").
SBI_GPU_FACE_DETECTOR = "sbi-retinaface"


def default_face_detector(device: str | None = None) -> str:
    """The default backend for scoring on `device` (docs/protocol.md, "Faces", says how each was chosen)."""
    if device is None or not str(device).startswith("cuda"):
        return DEFAULT_FACE_DETECTOR
    from .retinaface import sbi_weights_installed

    return SBI_GPU_FACE_DETECTOR if sbi_weights_installed() else DEFAULT_GPU_FACE_DETECTOR


def retinaface_detectors() -> tuple[str, ...]:
    """The FACE_DETECTORS names that find faces with RetinaFace (its box and 5 keypoints, no dlib landmarks)."""
    return tuple(name for name, factory in FACE_DETECTORS.items() if factory.func is RetinaFaceDetector)


def require_face_detector(name: str) -> None:
    """Stop before any video is read when `name`'s model files are missing or unreadable (RetinaFace weights are
    read and checked here, in the calling process, not first in a worker process)."""
    if name not in FACE_DETECTORS:
        raise KeyError(f"unknown face detector {name!r}; available: {', '.join(sorted(FACE_DETECTORS))}")
    factory = FACE_DETECTORS[name]
    if factory.func is RetinaFaceDetector:
        from .retinaface import resnet50_weights, shipped_weights

        shipped_weights() if factory.keywords["weights"] == "mobilenet0.25" else resnet50_weights()


def create_face_detector(name: str = DEFAULT_FACE_DETECTOR, device: str | None = None, **options) -> FaceDetector:
    """A face detector backend by name (see FACE_DETECTORS); `device` places the torch-backed ones."""
    if name not in FACE_DETECTORS:
        raise KeyError(f"unknown face detector {name!r}; available: {', '.join(sorted(FACE_DETECTORS))}")
    factory = FACE_DETECTORS[name]
    if device is not None and "blazeface_device" in factory.keywords:
        options.setdefault("blazeface_device", str(device))
    if device is not None and factory.func is RetinaFaceDetector:
        options.setdefault("device", str(device))
    return factory(**options)
