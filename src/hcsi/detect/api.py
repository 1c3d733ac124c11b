"""`Detector`: score a video, an image or an RGB array with a trained HCSI-Net, the same way `hcsi evaluate` does.

    detector = Detector.from_checkpoint("runs/hcsi_net/checkpoints/best.safetensors")
    result = detector.score("clip.mp4")            # result.score, result.frame_scores, result.faces, result.status
    for result in detector.score_many(paths): ...
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..checks import require_at_least
from ..distributed import resolve_device
from ..evaluate.calibration import (
    CANNOT_JUDGE_MEANING,
    UNCALIBRATED,
    Calibration,
    CalibrationError,
    Decision,
    calibration_path_for,
)
from ..evaluate.persons import AGGREGATE_MEANING, AGGREGATES, PersonResult, aggregate_persons, person_results
from ..evaluate.protocol import (
    STATUS_ERROR,
    STATUS_NO_FACE,
    STATUS_OK,
    STATUS_UNREADABLE,
    VideoFaces,
    aggregate_video,
    default_batch_size,
    engine_name,
    extract_test_faces,
    faces_in_frames,
    failure_reason,
    read_ahead,
    score_crops,
    score_in_batches,
)
from ..faces import create_face_detector, default_face_detector
from ..files import file_sha256
from ..models.builder import model_from_checkpoint
from ..normalization import image_to_tensor
from ..provenance import Provenance, read_provenance
from .backends import onnx_scorer
from .gradcam import grad_cam_maps

PROGRESS_CROPS = 8  # crops per forward pass while someone follows the progress (the service's live view)


@dataclass
class FaceResult:
    frame_index: int
    box: list[float]  # crop box (x0, y0, x1, y1) in frame pixels (of the frame as shrunk for detection)
    score: float  # probability of "fake"


@dataclass
class DetectionResult:
    """What `Detector.score` found for one input."""

    source: str
    status: str  # ok | no_face | unreadable | error
    reason: str = ""
    score: float | None = None  # the video's score by `aggregate`; None unless status is ok
    aggregate: str = "paper"  # how `score` was made (AGGREGATE_MEANING); `paper_score` is always the paper's
    paper_score: float | None = None  # mean over frames of the max over faces (the paper's protocol)
    frame_indices: list[int] = field(default_factory=list)  # frames with a face
    frame_scores: list[float] = field(default_factory=list)
    faces: list[FaceResult] = field(default_factory=list)
    frames_sampled: int = 0
    # explain=True: {index in `faces`: {"crop", "cnn": [H×W per stage], "vit": [...], "gradcam"}} for the faces the
    # strips show (`strip_faces` and each person's top face), computed by the PyTorch model
    gates: dict[int, dict] | None = None
    provenance: Provenance | None = None  # the file's Content Credentials (C2PA), beside the verdict, never in it
    calibration: str = UNCALIBRATED  # the calibration file applied, or "uncalibrated"
    probability: float | None = None  # calibrated probability of "fake" (None without a calibration)
    decision: Decision = field(default_factory=Decision)  # tiers at operating points, or a raw-score threshold
    cannot_judge: list[dict] = field(default_factory=list)  # {"code", "message"}: why no verdict can be given
    persons: list[PersonResult] = field(default_factory=list)  # every face found, grouped into people
    overview: np.ndarray | None = None  # a small copy of the sampled frame showing the most persons (reports)
    overview_frame: int | None = None  # its frame index; person boxes × overview_scale fall on it
    overview_scale: float = 1.0

    @property
    def label(self) -> str | None:
        """fake/real by the raw-score threshold, only without a calibration (None with one: the verdict decides,
        and None when the input cannot be judged)."""
        return None if self.cannot_judge else self.decision.label(self.score)

    @property
    def verdict(self) -> str | None:
        """cannot_judge (calibrated or not, with `cannot_judge` saying why); with a calibration manipulated /
        inconclusive / no_evidence; None otherwise."""
        return "cannot_judge" if self.cannot_judge else self.decision.verdict(self.score)

    def meaning(self) -> str | None:
        if self.cannot_judge:
            return CANNOT_JUDGE_MEANING.format(reasons="; ".join(r["message"] for r in self.cannot_judge))
        return self.decision.meaning(self.score)

    def to_dict(self) -> dict:
        return {"path": self.source, "score": self.score, "aggregate": self.aggregate,
                "aggregate_meaning": AGGREGATE_MEANING[self.aggregate], "paper_score": self.paper_score,
                "label": self.label, "status": self.status,
                "calibration": self.calibration, "probability": self.probability, "verdict": self.verdict,
                "verdict_meaning": self.meaning(), "decided_by": self.decision.to_dict(),
                "cannot_judge": self.cannot_judge,
                "reason": self.reason, "frames_used": len(self.frame_indices), "faces_found": len(self.faces),
                "frames_sampled": self.frames_sampled, "frame_indices": self.frame_indices,
                "frame_scores": self.frame_scores,
                "faces": [{"frame_index": f.frame_index, "box": f.box, "score": f.score} for f in self.faces],
                "persons": [p.to_dict() for p in self.persons],
                "provenance": None if self.provenance is None else self.provenance.to_dict()}


class Detector:
    """A trained model plus the test-time protocol.

    Args:
        model: an HCSINet (its config gives input size and normalisation).
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        frames: evenly spaced frames per video (paper: 32).
        batch_size: face crops per forward pass (default: 16 on the CPU, where larger batches are slower per crop,
            64 on a GPU; `default_batch_size`)
        face_detector: a FACE_DETECTORS name; default: `default_face_detector(device)` (torch-backed ones run on
            the model's device).
        calibration: turns scores into probabilities and tiers (`hcsi calibrate`); it must have been fitted with
            this detector's frames, face detector and input size.
        strict_fpr, lenient_fpr: the calibration's operating points of the tiers (default: its lowest and highest
            target FPR).
        threshold: the raw-score threshold of the fake/real label, only without a calibration.
        aggregate: "paper" (the video score of the paper's protocol) or "persons" (the highest person score).
        provenance: read each file's Content Credentials (C2PA) into `DetectionResult.provenance`.
        trust_anchors: PEM text of the CA certificates a C2PA signer must chain to for `trusted` (None: no trust
            list; `hcsi.provenance.read_trust_anchors` reads a file).
        scorer: what computes the scores when not `model` itself (an `OnnxRuntimeModel` of it: `from_checkpoint`'s
            default on the CPU, within 1e-4 of it); with `explain`, the faces the strips show also go through
            `model`, for their gates and Grad-CAM.
    """

    def __init__(self, model: torch.nn.Module, device: str = "auto", frames: int = 32, batch_size: int | None = None,
                 face_detector: str | None = None, calibration: Calibration | None = None,
                 strict_fpr: float | None = None, lenient_fpr: float | None = None,
                 threshold: float | None = None, aggregate: str = "paper", scorer=None, provenance: bool = True,
                 trust_anchors: str | None = None) -> None:
        require_at_least("frames", frames, 1)
        if batch_size is not None:
            require_at_least("batch_size", batch_size, 1)
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate {aggregate!r}: expected one of {', '.join(AGGREGATES)}")
        self.aggregate = aggregate
        self.provenance, self.trust_anchors = provenance, trust_anchors
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.scorer = model if scorer is None else scorer
        self.backend = engine_name(self.scorer)
        self.frames = frames
        self.batch_size = batch_size or default_batch_size(self.device)
        self.face_detector = create_face_detector(face_detector or default_face_detector(self.device),
                                                  device=str(self.device))
        self.calibration = calibration
        if calibration is None:
            if strict_fpr is not None or lenient_fpr is not None:
                raise CalibrationError("operating points need a calibration (`hcsi calibrate`, then --calibration)")
            self.decision = Decision(threshold=0.5 if threshold is None else threshold)
        else:
            if threshold is not None:
                raise CalibrationError("with a calibration the verdict comes from its operating points (strict and "
                                       "lenient FPR), not from a raw-score threshold; drop the threshold, or score "
                                       "without the calibration to use one")
            calibration.require_settings(self.scoring_settings(frames), "this detector")
            self.decision = calibration.decision(strict_fpr, lenient_fpr)
        self.checkpoint_path: Path | None = None  # set by from_checkpoint (reports, the service's deduplication)
        self._checkpoint_sha256: str | None = None

    def scoring_settings(self, frames: int | None = None) -> dict:
        """What a score depends on besides the model: the settings a calibration is fitted with and checked by."""
        return {"frames": frames or self.frames, "face_detector": self.face_detector.name,
                "input_size": self.model.config.input_size, "amp": False, "aggregate": self.aggregate}

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", calibration: str | Path | None = None,
                        backend: str = "auto", **options) -> Detector:
        """A detector for an hcsi checkpoint, with the calibration given or found beside it (`<checkpoint>
        .calibration.json`; "none": no calibration); a calibration made for another checkpoint is refused.
        `backend`: "auto" (ONNX Runtime on the CPU from a cached export, `hcsi.detect.backends`; PyTorch on a GPU),
        "torch" or "onnxruntime". An export that fails is said once and PyTorch scores instead."""
        beside = calibration_path_for(path)
        digest = None
        if str(calibration) == "none":
            calibration, beside = None, Path()  # no file is looked for
        if calibration is not None or beside.is_file():
            digest = file_sha256(path)
            options["calibration"] = Calibration.load(calibration or beside, digest)
        model = model_from_checkpoint(path)
        scorer = onnx_scorer(model, path, backend, resolve_device(device), digest)
        detector = cls(model, device=device, scorer=scorer, **options)
        detector.checkpoint_path = Path(path)
        detector._checkpoint_sha256 = digest or getattr(scorer, "checkpoint_sha256", None)  # else hashed when asked
        return detector

    @property
    def checkpoint_sha256(self) -> str | None:
        """SHA-256 of the checkpoint file (None for a model given directly), hashed on first use."""
        if self._checkpoint_sha256 is None and self.checkpoint_path is not None:
            self._checkpoint_sha256 = file_sha256(self.checkpoint_path)
        return self._checkpoint_sha256

    @classmethod
    def from_onnx(cls, path: str | Path, calibration: str | Path | None = None, **options) -> Detector:
        """Score with an exported ONNX file through onnxruntime (no PyTorch model code; no gate heatmaps). A
        calibration applies when it was made for the checkpoint the file was exported from (its SHA-256 is in the
        file's metadata since `hcsi export` records it)."""
        from .export import OnnxRuntimeModel

        model = OnnxRuntimeModel(path)
        if calibration is not None and str(calibration) != "none":
            if not model.checkpoint_sha256:
                raise CalibrationError(f"{path} does not say which checkpoint it was exported from (exported before "
                                       "hcsi recorded it): export it again with `hcsi export` to use a calibration")
            options["calibration"] = Calibration.load(calibration, model.checkpoint_sha256)
        detector = cls(model, device="cpu", **options)
        detector._checkpoint_sha256, detector.backend = model.checkpoint_sha256, "onnxruntime"
        return detector

    def _score_crops(self, crops: list[np.ndarray], scored: Callable[[int], None] | None = None) -> np.ndarray:
        """Scores of crops through the scorer (the backend), a model batch at a time; `scored(n)` is told after each
        batch how many crops are scored (then batches hold at most PROGRESS_CROPS crops)."""
        scores = []
        batch_size = min(self.batch_size, PROGRESS_CROPS) if scored else self.batch_size
        for start in range(0, len(crops), batch_size):
            chunk = crops[start:start + batch_size]  # the evaluation protocol's own scoring: detect and evaluate
            scores.append(score_crops(self.scorer, chunk, self.device, batch_size))  # cannot drift apart
            if scored:
                scored(start + len(chunk))
        return np.concatenate(scores) if scores else np.zeros(0)

    @torch.no_grad()
    def _explain_crops(self, crops: list[np.ndarray]) -> list[dict]:
        """The gates of both streams at every stage and the CNN stream's Grad-CAM of each crop, from the PyTorch
        model (whichever backend scored them)."""
        if not crops:
            return []
        config = self.model.config
        x = torch.stack([image_to_tensor(c, config.mean, config.std) for c in crops]).to(self.device)
        _, stage_gates = self.model(x, return_gates=True)
        cams = grad_cam_maps(self.model, x) if getattr(self.model, "cnn", None) is not None else None
        return [{"crop": crop, "cnn": [g[i, 0].float().cpu().numpy() for g in stage_gates.cnn],
                 "vit": [_token_gate_grid(g[i]) for g in stage_gates.vit],
                 "gradcam": cams[i] if cams is not None else None} for i, crop in enumerate(crops)]

    def _result(self, source: str, faces: VideoFaces, explain: bool,
                crop_scores: np.ndarray | Exception | None = None, progress=None) -> DetectionResult:
        """The result of one input from its faces; `crop_scores` when they were scored already (or the exception
        scoring them raised). `progress("scoring faces", frames_done, frames_with_a_face)` follows the scoring."""
        result = DetectionResult(source, faces.status, faces.reason, frames_sampled=len(faces.frame_indices),
                                 decision=self.decision, aggregate=self.aggregate, overview=faces.overview,
                                 overview_scale=faces.overview_scale)
        if self.provenance and Path(source).is_file():  # never changes the verdict: shown beside it
            result.provenance = read_provenance(source, self.trust_anchors)
        if 0 <= faces.overview_position < len(faces.frame_indices):
            result.overview_frame = faces.frame_indices[faces.overview_position]
        if faces.status != STATUS_OK:
            result.cannot_judge = judgeability(result, faces)
            result.persons = self._judged_persons(faces, None)
            return result
        try:
            if isinstance(crop_scores, Exception):
                raise crop_scores
            if crop_scores is None:
                crop_scores = self._score_crops(faces.crops, _frames_scored(faces, progress))
        except Exception as error:  # this input fails with the reason; the next one is scored
            return self._failed(result, faces, failure_reason(source, "scoring", error))
        result.paper_score, frames = aggregate_video(faces, crop_scores)
        result.persons = self._judged_persons(faces, crop_scores)
        score = result.paper_score if self.aggregate == "paper" else aggregate_persons(result.persons)
        result.score = score
        if self.calibration is not None and score is not None:
            result.calibration = self.calibration.source
            result.probability = float(self.calibration.probability([score])[0])
        result.cannot_judge = judgeability(result, faces)
        result.frame_indices = [index for index, _, _ in frames]
        result.frame_scores = [s for _, s, _ in frames]
        result.faces = [FaceResult(faces.frame_indices[p], box, float(s))
                        for p, box, s in zip(faces.crop_frame, faces.boxes, crop_scores)]
        if explain:  # only the faces the strips show: each frame's top face (up to STRIP_ROWS) and each person's
            shown = sorted(set(strip_faces(result.faces)) | {p.best_face for p in result.persons
                                                              if p.best_face is not None})
            try:
                result.gates = dict(zip(shown, self._explain_crops([faces.crops[i] for i in shown])))
            except Exception as error:
                return self._failed(result, faces, failure_reason(source, "gate heatmaps", error))
        return result

    def _failed(self, result: DetectionResult, faces: VideoFaces, reason: str) -> DetectionResult:
        """`result` as an input that failed for `reason` (listed with it; the next input is scored)."""
        result.status, result.reason = STATUS_ERROR, reason
        result.score = result.paper_score = result.probability = None
        result.faces, result.frame_indices, result.frame_scores = [], [], []
        result.cannot_judge = judgeability(result, faces)
        result.persons = self._judged_persons(faces, None)
        return result

    def _judged_persons(self, faces: VideoFaces, crop_scores: np.ndarray | None) -> list[PersonResult]:
        """The persons of an input with their scores and, with a calibration, probabilities and verdicts (the
        calibration's scale is the video score's: with one person the two are the same number)."""
        persons = person_results(faces, crop_scores, MIN_FACE_CROP_PX)
        for person in persons:
            if self.calibration is not None and person.score is not None:
                person.probability = float(self.calibration.probability([person.score])[0])
            person.verdict = "cannot_judge" if person.cannot_judge else self.decision.verdict(person.score)
        return persons

    def score(self, source: str | Path | np.ndarray, explain: bool = False, frames: int | None = None,
              progress=None) -> DetectionResult:
        """Score a video or image file, or an RGB uint8 H×W×3 array (one frame). Problems with the input are
        reported in the result's status and reason, not raised. `frames` overrides the detector's frame count;
        `progress(stage, frames_done, frames_total)` is told when faces are being found and when they are scored."""
        if frames is not None:
            require_at_least("frames", frames, 1)
            if self.calibration is not None:
                self.calibration.require_settings(self.scoring_settings(frames), "this analysis")
        if isinstance(source, np.ndarray):
            if source.dtype != np.uint8 or source.ndim != 3 or source.shape[2] != 3:
                return DetectionResult("<array>", STATUS_UNREADABLE,
                                       f"expected an RGB uint8 H×W×3 array, got {source.dtype} {source.shape}")
            try:
                faces = faces_in_frames([source], [0], self.face_detector, self.model.config.input_size)
            except Exception as error:
                faces = VideoFaces(frame_indices=[0], status=STATUS_ERROR,
                                   reason=failure_reason("<array>", "face detection or cropping", error))
            return self._result("<array>", faces, explain)
        total = frames or self.frames
        if progress:
            progress("finding faces", 0, total)
        faces = extract_test_faces(source, self.face_detector, total, self.model.config.input_size,
                                   partial(progress, "finding faces") if progress else None)
        return self._result(str(source), faces, explain, progress=progress)

    def score_face_crop(self, crop: np.ndarray, name: str = "<crop>", explain: bool = False) -> DetectionResult:
        """Score an image that already is a face crop of the model's input size (no detection), as a one-frame
        input with one face, e.g. an SBI sample."""
        size = self.model.config.input_size
        if crop.shape != (size, size, 3) or crop.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 {size}×{size}×3 face crop, got {crop.dtype} {crop.shape}")
        faces = VideoFaces(frame_indices=[0], crops=[crop], crop_frame=[0], boxes=[[0, 0, size, size]])
        return self._result(name, faces, explain)

    def score_many(self, sources: Iterable[str | Path], explain: bool = False,
                   overlap: bool = True) -> Iterator[DetectionResult]:
        """Score files in order, lazily. With `overlap`, a background thread decodes the next files and finds their
        faces while the network scores the current ones (`read_ahead`; the same results, docs/benchmarks.md "hcsi
        detect on the CPU" for what it saves). The crops of consecutive files are pooled into full model batches
        (`score_in_batches`: a file whose crops break a batch fails alone)."""
        size = self.model.config.input_size
        extracted = ((str(s), extract_test_faces(s, self.face_detector, self.frames, size)) for s in sources)
        if overlap:
            extracted = read_ahead(extracted)
        for source, faces, crop_scores in score_in_batches(self.scorer, extracted, self.device, self.batch_size):
            yield self._result(source, faces, explain, crop_scores)


STRIP_ROWS = 8  # frames in a gate strip


def strip_faces(faces: list[FaceResult], max_rows: int = STRIP_ROWS) -> list[int]:
    """The faces (indices in `faces`) a gate strip shows: each frame's highest-scoring face, in up to `max_rows`
    frames evenly chosen."""
    best: dict[int, int] = {}
    for i, face in enumerate(faces):
        if face.frame_index not in best or face.score > faces[best[face.frame_index]].score:
            best[face.frame_index] = i
    frames = sorted(best)
    if not frames:
        return []
    keep = np.unique(np.linspace(0, len(frames) - 1, min(max_rows, len(frames))).round().astype(int))
    return [best[frames[k]] for k in keep]


MIN_FACE_CROP_PX = 64  # provisional (docs/protocol.md, "Cannot judge"): a crop upsampled more than 3.5× to 224 px
MAX_FACES_PER_FRAME = 8  # provisional: a crowd, where the max over faces is decided by whoever scores highest


def judgeability(result: DetectionResult, faces: VideoFaces) -> list[dict]:
    """Why no verdict can be given for this input ({"code", "message"} each), or [] when one can."""
    if result.status == STATUS_UNREADABLE:
        return [{"code": "unreadable", "message": f"the file could not be read ({result.reason})"}]
    if result.status == STATUS_NO_FACE:
        return [{"code": "no_face", "message": f"no face was found ({result.reason})"}]
    if result.status != STATUS_OK:
        return [{"code": "error", "message": f"the analysis failed ({result.reason})"}]
    reasons = []
    per_frame: dict[int, list[float]] = {}
    for frame, box in zip(faces.crop_frame, faces.boxes):
        per_frame.setdefault(frame, []).append(min(box[2] - box[0], box[3] - box[1]))
    largest = float(np.median([max(sides) for sides in per_frame.values()]))
    if largest < MIN_FACE_CROP_PX:
        reasons.append({"code": "face_too_small", "message": f"the largest face is about {largest:.0f} px (median "
                        f"over frames of its crop's side), below {MIN_FACE_CROP_PX} px: too few pixels for the "
                        "blending traces the detector looks for"})
    crowd = int(np.median([len(sides) for sides in per_frame.values()]))
    if crowd > MAX_FACES_PER_FRAME:
        reasons.append({"code": "too_many_faces", "message": f"{crowd} faces per frame (median), more than "
                        f"{MAX_FACES_PER_FRAME}: the video score is the highest face's, and one face among many "
                        "decides it"})
    return reasons


def _frames_scored(faces: VideoFaces, progress) -> Callable[[int], None] | None:
    """A `scored(n)` callback that tells `progress` how many frames with a face have every crop scored once n
    crops are (crops are in frame order)."""
    if progress is None:
        return None
    frames_with_face = len(set(faces.crop_frame))
    progress("scoring faces", 0, frames_with_face)

    def scored(n: int) -> None:
        done = len(set(faces.crop_frame[:n]))
        if 0 < n < len(faces.crop_frame) and faces.crop_frame[n] == faces.crop_frame[n - 1]:
            done -= 1  # that frame has crops still to score
        progress("scoring faces", done, frames_with_face)
    return scored


def _token_gate_grid(gate: torch.Tensor) -> np.ndarray:
    """A transformer gate N×1 as its √N×√N token grid."""
    n = gate.shape[0]
    side = int(round(n ** 0.5))
    return gate[:, 0].float().cpu().numpy().reshape(side, side)
