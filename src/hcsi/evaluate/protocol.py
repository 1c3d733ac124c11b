"""The paper's video-level protocol (Section IV, "Performance Scoring", after SBI): N evenly spaced frames, every
face detected and cropped with the test-time rule, each crop scored, max over faces within a frame, mean over frames.

Split in two so that the CPU part (decode, detect, crop) can run in worker processes while the model scores:
`extract_test_faces` (CPU) and `score_crops` / `aggregate_video` (model).
"""
from __future__ import annotations

import dataclasses
import queue
import threading
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..faces import FaceDetector, MediaError, keep_large_faces, sample_frames, sbi_test_crop_box
from ..faces.persons import FaceDescriber, group_persons
from ..normalization import image_to_tensor

STATUS_OK = "ok"
STATUS_NO_FACE = "no_face"  # readable, but no face in any sampled frame
STATUS_UNREADABLE = "unreadable"  # missing, not a video, or no frame decoded
STATUS_ERROR = "error"  # anything else that went wrong with this input (detector, crop, model); the reason says what


@dataclass
class PersonFaces:
    """Every face of one person (`hcsi.faces.persons`): where it was seen and which of its faces were scored."""

    id: int  # 1, 2, ... in order of first appearance
    positions: list[int] = field(default_factory=list)  # sampled-frame positions (in `frame_indices`) where seen
    boxes: list[list[int]] = field(default_factory=list)  # its face box there, in pixels of the frame as decoded
    crops: list[int] = field(default_factory=list)  # index of the face's crop in VideoFaces.crops, -1: not scored
    identity: str = ""  # "appearance" (descriptors confirmed the grouping) or "position" (overlap alone)
    thumbnail: np.ndarray | None = None  # THUMBNAIL_PX square RGB cut of its largest face (test crop)


@dataclass
class VideoFaces:
    """Test-time face crops of one video: crop k belongs to sampled frame `crop_frame[k]` (a position in
    `frame_indices`); `persons` hold every face found, scored or not."""

    frame_indices: list[int] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)  # S×S×3 uint8, resized as the model expects
    crop_frame: list[int] = field(default_factory=list)
    crop_face: list[int] = field(default_factory=list)  # index of the crop's face among its frame's detections
    boxes: list[list[float]] = field(default_factory=list)  # crop boxes in frame pixels
    status: str = STATUS_OK
    reason: str = ""
    full_frames: bool = False  # boxes refer to the frames at their own size, not shrunk by `detection_frame`
    frame_times: list[float] = field(default_factory=list)  # seconds from the start, per sampled frame
    persons: list[PersonFaces] = field(default_factory=list)
    overview: np.ndarray | None = None  # a small copy of the sampled frame showing the most persons (reports)
    overview_position: int = -1  # its position in frame_indices; persons' boxes × overview_scale fall on it
    overview_scale: float = 1.0
    frame_size: tuple[int, int] = (0, 0)  # width, height of the decoded frames
    person_labels: dict[int, int] = field(default_factory=dict)  # evaluation: person id -> 1 manipulated, 0 not


MAX_DETECTION_SIDE = 1920  # frames with a longer side are shrunk before detection (bounded memory and time)
PROGRESS_FRAMES = 4  # with a progress callback, faces are found this many frames at a time
THUMBNAIL_PX = 96  # side of a person's thumbnail
OVERVIEW_SIDE = 640  # longer side of the overview frame kept for reports


def faces_in_frames(frames: list[np.ndarray], frame_indices: list[int], detector: FaceDetector,
                    input_size: int, progress: Callable[[int, int], None] | None = None,
                    frame_times: list[float] | None = None, persons: bool = True) -> VideoFaces:
    """Detect every face of each frame, keep those at least half the largest's area, crop each with SBI's test crop
    (12.5 % margins) and resize to input_size (bilinear). Frames longer than MAX_DETECTION_SIDE are shrunk first
    (boxes refer to the shrunk frame), except for a detector that wants full frames (sbi-retinaface, which resizes
    them itself as SBI does). `progress(frames_searched, frames_total)` is told after every
    PROGRESS_FRAMES frames; without it a batched finder sees every frame in one call. Every face found is grouped
    into persons (`hcsi.faces.persons`; `persons=False`: by position only, no descriptors)."""
    full_frames = getattr(detector, "full_frames", False)
    shown = frames if full_frames else [detection_frame(frame) for frame in frames]
    detect_many = getattr(detector, "detect_many", None)  # batched finders see a whole chunk in one call
    chunk = PROGRESS_FRAMES if progress else max(1, len(shown))
    found = []
    for start in range(0, len(shown), chunk):
        part = shown[start:start + chunk]
        found += detect_many(part) if detect_many else [detector.detect(frame) for frame in part]
        if progress:
            progress(len(found), len(shown))
    grouping_failed = ""
    try:
        tracks = group_persons(shown, found, FaceDescriber() if persons else None)
    except Exception as error:  # the video is still scored; its persons come from box overlap alone, said so
        tracks = group_persons(shown, found, None)
        grouping_failed = f"persons grouped by position only (face descriptors failed: {type(error).__name__}: {error})"
    result = crop_test_faces(list(zip(shown, found)), frame_indices, input_size)
    result.reason = "; ".join(filter(None, [result.reason, grouping_failed]))
    result.full_frames = full_frames
    result.frame_times = list(frame_times) if frame_times is not None else [0.0] * len(frames)
    scales = [frame.shape[1] / seen.shape[1] for frame, seen in zip(frames, shown)]
    if frames:
        result.frame_size = (frames[0].shape[1], frames[0].shape[0])
    _attach_persons(result, tracks, shown, found, scales)
    return result


def _attach_persons(result: VideoFaces, tracks: list, shown: list[np.ndarray], found: list[list],
                    scales: list[float]) -> None:
    """Record the persons in `result`: each face's box in decoded-frame pixels, its crop if it was scored, a
    thumbnail of its largest face, and a small overview frame (the one where the most persons are seen)."""
    crop_of = {key: k for k, key in enumerate(zip(result.crop_frame, result.crop_face))}  # the face's crop
    for track in tracks:
        person = PersonFaces(track.id, identity=track.identity)
        largest = max(track.faces, key=lambda key: found[key[0]][key[1]].area)
        for position, index in track.faces:
            face = found[position][index]
            person.positions.append(position)
            person.boxes.append([int(round(float(v) * scales[position])) for v in face.box])
            person.crops.append(crop_of.get((position, index), -1))
        person.thumbnail = _thumbnail(shown[largest[0]], found[largest[0]][largest[1]])
        result.persons.append(person)
    if tracks:
        counts = [len({t.id for t in tracks if any(p == position for p, _ in t.faces)}) for position in
                  range(len(shown))]
        position = int(np.argmax(counts))
        frame = shown[position]
        scale = min(1.0, OVERVIEW_SIDE / max(frame.shape[:2]))
        result.overview = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        result.overview_position, result.overview_scale = position, scale / scales[position]


def _thumbnail(frame: np.ndarray, face) -> np.ndarray | None:
    """The face's test crop at THUMBNAIL_PX (None when no crop fits in the frame)."""
    try:
        x0, y0, x1, y1 = sbi_test_crop_box(face.box, frame.shape[1], frame.shape[0])
    except ValueError:
        return None
    return cv2.resize(frame[y0:y1, x0:x1], (THUMBNAIL_PX, THUMBNAIL_PX), interpolation=cv2.INTER_AREA)


def crop_test_faces(detected: list[tuple[np.ndarray, list]], frame_indices: list[int],
                    input_size: int) -> VideoFaces:
    """The test-time crops of (frame, its faces) pairs: faces at least half the largest's area, each cut with
    SBI's test crop (`sbi_test_crop_box`) and resized to input_size (bilinear). A crop error on one face skips that
    frame (as SBI does), named in the reason; the other frames still count."""
    result = VideoFaces(frame_indices=list(frame_indices))
    skipped = []
    for position, (frame, faces) in enumerate(detected):
        height, width = frame.shape[:2]
        large = {id(face) for face in keep_large_faces(faces)}
        kept = [(index, face) for index, face in enumerate(faces) if id(face) in large]
        try:
            boxes = [(index, sbi_test_crop_box(face.box, width, height)) for index, face in kept]
        except ValueError as error:
            skipped.append(f"frame {frame_indices[position]} skipped: {error}")
            continue
        for index, (x0, y0, x1, y1) in boxes:
            crop = cv2.resize(frame[y0:y1, x0:x1], (input_size, input_size), interpolation=cv2.INTER_LINEAR)
            result.crops.append(crop)
            result.crop_frame.append(position)
            result.crop_face.append(index)
            result.boxes.append([int(x0), int(y0), int(x1), int(y1)])
    if not result.crops:
        result.status, result.reason = STATUS_NO_FACE, f"no face found in {len(detected)} frame(s)"
    if skipped:
        result.reason = "; ".join(filter(None, [result.reason, *skipped]))
    return result


def detection_frame(frame: np.ndarray) -> np.ndarray:
    """The frame as detection sees it: shrunk so that its longer side is at most MAX_DETECTION_SIDE."""
    scale = MAX_DETECTION_SIDE / max(frame.shape[:2])
    return cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else frame


def crops_at(frames: list[np.ndarray], faces: VideoFaces, input_size: int) -> VideoFaces:
    """The crops of `faces` (found in other frames of the same size) cut from `frames` at the same boxes."""
    result = dataclasses.replace(faces, crops=[])
    for position, box in zip(faces.crop_frame, faces.boxes):
        x0, y0, x1, y1 = (int(v) for v in box)
        frame = frames[position] if faces.full_frames else detection_frame(frames[position])
        result.crops.append(cv2.resize(frame[y0:y1, x0:x1], (input_size, input_size), interpolation=cv2.INTER_LINEAR))
    return result


def failure_reason(where: str | Path, step: str, error: Exception) -> str:
    """Why one input failed at one step: "<where>: <step> failed: <type>: <message>"."""
    return f"{where}: {step} failed: {type(error).__name__}: {error}"


def decoding_failure(path: str | Path, error: Exception) -> VideoFaces:
    """The result of an input that could not be decoded: unreadable for media and file errors (their message names
    the file), an error for anything else."""
    if isinstance(error, (MediaError, OSError, ValueError)):
        return VideoFaces(status=STATUS_UNREADABLE, reason=str(error))
    return VideoFaces(status=STATUS_ERROR, reason=failure_reason(path, "decoding", error))


def extract_test_faces(path: str | Path, detector: FaceDetector, frames: int, input_size: int,
                       progress: Callable[[int, int], None] | None = None) -> VideoFaces:
    """`faces_in_frames` of `frames` evenly spaced frames of a file (`progress` as there). Failures of this input
    (unreadable, detector or crop errors) become a status with a reason that names the file, never an exception."""
    path = Path(path)
    if not path.is_file():
        return VideoFaces(status=STATUS_UNREADABLE, reason=f"{path}: file not found")
    try:
        sampled = sample_frames(path, frames)
    except Exception as error:  # this input fails, the batch goes on
        return decoding_failure(path, error)
    try:
        result = faces_in_frames(sampled.frames, sampled.indices, detector, input_size, progress, sampled.times)
    except Exception as error:
        return VideoFaces(frame_indices=list(sampled.indices), status=STATUS_ERROR,
                          reason=failure_reason(path, "face detection or cropping", error))
    if result.status == STATUS_NO_FACE:
        result.reason = f"{path}: {result.reason}"
    elif sampled.failure:
        result.reason = "; ".join(filter(None, [f"only {len(sampled.frames)} frames decoded: {sampled.failure}",
                                                 result.reason]))
    return result


# Face crops per forward pass by default. On the CPU large batches are slower per crop (ONNX Runtime, 2 cores: SBI's
# B4 3.0 s per 32 crops in batches of 8, 3.3 of 16, 3.9 of 32, 7.2 of 64; HCSI-Net 11.3, 10.2, 11.9, 16.3;
# docs/benchmarks.md "ONNX Runtime by batch size"); a GPU wants them full.
CPU_BATCH_SIZE = 16
GPU_BATCH_SIZE = 64


def default_batch_size(device: torch.device | str) -> int:
    return CPU_BATCH_SIZE if str(device).startswith("cpu") else GPU_BATCH_SIZE


@torch.no_grad()
def score_crops(model: torch.nn.Module, crops: list[np.ndarray], device: torch.device, batch_size: int = 64,
                amp: bool = False) -> np.ndarray:
    """Probability of "fake" (softmax index 1) for each crop."""
    if not crops:
        return np.zeros(0, dtype=np.float64)
    config = model.config
    scores = []
    for start in range(0, len(crops), batch_size):
        batch = torch.stack([image_to_tensor(c, config.mean, config.std) for c in crops[start:start + batch_size]])
        batch = batch.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            logits = model(batch)
        scores.append(logits.float().softmax(dim=1)[:, 1].cpu().numpy())
    return np.concatenate(scores).astype(np.float64)


def engine_name(model) -> str:
    """"torch" or "onnxruntime": which engine runs `model` (a PyTorch module, or an ONNX Runtime export of one)."""
    return "torch" if isinstance(model, torch.nn.Module) else "onnxruntime"


def read_ahead(items: Iterable, depth: int = 1) -> Iterator:
    """The items of `items`, in order, made by a background thread that stays up to `depth` finished items ahead of
    the consumer: decoding and finding faces of the next inputs (mostly native code that releases the GIL) overlap
    the network scoring the current ones. An exception raised by `items` is raised here in its place; closing this
    iterator stops the thread after the item it is making."""
    done = object()
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> None:
        while not stop.is_set():  # never blocked for good on a consumer that went away
            try:
                slots.put(entry, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                put((item, None))
        except BaseException as error:  # handed to the consumer, raised there
            put((None, error))
        else:
            put((done, None))

    threading.Thread(target=produce, name="hcsi-read-ahead", daemon=True).start()
    try:
        while True:
            item, error = slots.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()


def score_in_batches(model: torch.nn.Module, items: Iterable[tuple[Any, VideoFaces]], device: torch.device,
                     batch_size: int = 64, amp: bool = False) -> Iterator[tuple[Any, VideoFaces, np.ndarray | Exception]]:
    """Score the crops of consecutive videos together, so that the model sees full batches rather than one video's
    crops at a time: videos are pooled until they hold `batch_size` crops, then scored in one `score_crops` call.
    Yields (key, faces, crop scores) in input order; when a pooled call fails, each of its videos is scored alone,
    and the one that fails again is yielded with its exception instead of scores (only it fails)."""
    pending: list[tuple[Any, VideoFaces]] = []
    crops = 0
    for key, faces in items:
        pending.append((key, faces))
        crops += len(faces.crops)
        if crops >= batch_size:
            yield from _score_pooled(model, pending, device, batch_size, amp)
            pending, crops = [], 0
    yield from _score_pooled(model, pending, device, batch_size, amp)


def _score_pooled(model, pending: list, device: torch.device, batch_size: int, amp: bool):
    try:
        scores = score_crops(model, [crop for _, faces in pending for crop in faces.crops], device, batch_size, amp)
    except Exception:  # one video's crops broke the pooled call: find it by scoring each alone
        for key, faces in pending:
            try:
                yield key, faces, score_crops(model, faces.crops, device, batch_size, amp)
            except Exception as error:
                yield key, faces, error
        return
    start = 0
    for key, faces in pending:
        yield key, faces, scores[start:start + len(faces.crops)]
        start += len(faces.crops)


def aggregate_video(faces: VideoFaces, crop_scores: np.ndarray) -> tuple[float | None, list[tuple[int, float, int]]]:
    """(video score, [(frame index, frame score, faces in frame)]): max over a frame's faces, mean over the frames
    that have a face. The video score is None when no frame has a face."""
    per_frame: dict[int, list[float]] = {}
    for position, score in zip(faces.crop_frame, crop_scores):
        per_frame.setdefault(position, []).append(float(score))
    frames = [(faces.frame_indices[p], max(s), len(s)) for p, s in sorted(per_frame.items())]
    if not frames:
        return None, []
    return float(np.mean([score for _, score, _ in frames])), frames
