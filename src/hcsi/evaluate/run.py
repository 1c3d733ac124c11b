"""`evaluate(...)`: the video-level protocol over a test list, resumable, with CPU workers feeding the model, and
sharded over processes under torchrun.

Output folder:
    settings.json       what the cached scores depend on (weights digest, model config, frames, face detector, amp);
                        a rerun with other settings into the same folder is refused instead of mixing scores
    cache/<hash>.json   one finished video (written atomically as it finishes; a rerun skips it)
    videos.csv          dataset, video_id, label, score, frames_used, faces_found, status, reason, source, path, crop,
                        provenance (the state of the file's Content Credentials, C2PA, no trust list: hcsi.provenance)
    crops/<hash>.jpg    each scored video's deciding face crop (its highest-scoring face), for `hcsi gallery`
    roc.png, roc.svg    the video-level ROC curve
    reliability.png/.svg  the reliability diagram (fraction of fakes against the score, 15 bins; calibrated too)
    frames.csv          dataset, video_id, label, frame_index, score, faces
    persons.csv         dataset, video_id, video_label, person, score, label (1: its face is the manipulated one,
                        from FFIW's masks or a folder CSV's fake_boxes; 0 in real videos; empty: unknown), frames,
                        faces_scored
    summary.json        auc, ap, eer, acc, frame_auc (fractions) with 95 % bootstrap intervals (auc_ci95, ...), TPR at
                        FPR 0.1/1/5 %, ECE and Brier (raw; calibrated with --calibration), AUC per FF++
                        manipulation or folder group, n_videos, n_failed, policy, checkpoint, config, commit;
                        `aggregate` (paper or persons: how video scores were made); with labelled persons, person-level
                        AUC and the share of fake videos whose highest-scoring person is the manipulated one
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import multiprocessing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..checks import require_at_least, require_in_unit_interval
from ..distributed import Distributed
from ..faces import DEFAULT_FACE_DETECTOR, create_face_detector, require_face_detector, sample_frames
from ..files import atomic_path, options_to_continue, settings_mismatch, write_json_atomic
from ..provenance import read_provenance
from .calibration import Calibration, video_sha256
from .datasets import TestVideo
from .figures import evaluation_roc, reliability_diagram
from .metrics import bootstrap_intervals, brier_score, detection_metrics, expected_calibration_error, tpr_at_fpr
from .persons import AGGREGATES, aggregate_persons, person_labels_from_boxes, person_labels_from_masks, person_results
from .protocol import (
    STATUS_ERROR,
    STATUS_OK,
    STATUS_UNREADABLE,
    aggregate_video,
    default_batch_size,
    engine_name,
    extract_test_faces,
    failure_reason,
    score_in_batches,
)

VIDEO_FIELDS = ["dataset", "video_id", "label", "score", "frames_used", "faces_found", "status", "reason", "source",
                "path", "crop", "provenance"]
CROP_SIDE = 160  # side of the stored deciding face crop (crops/<key>.jpg), for `hcsi gallery`
FRAME_FIELDS = ["dataset", "video_id", "label", "frame_index", "score", "faces"]
PERSON_FIELDS = ["dataset", "video_id", "video_label", "person", "score", "label", "frames", "faces_scored"]


@dataclass
class ScoringOptions:
    """How videos are scored, shared by evaluation and the robustness benchmark."""

    frames: int = 32  # evenly spaced frames per video (paper and SBI: 32)
    batch_size: int | None = None  # face crops per forward pass; None: default_batch_size of the device
    workers: int = 2  # processes that decode (and perturb) and detect (0: in the main process)
    failure_score: float | None = 0.5  # score of a video without any face or unreadable (SBI: 0.5); None: leave
    # such videos out of the metrics (they are still listed and counted)
    detector: str = DEFAULT_FACE_DETECTOR
    amp: bool = False  # bf16 autocast on CUDA
    aggregate: str = "paper"  # a video's score: the paper's protocol, or "persons" (the highest person score)

    def __post_init__(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate {self.aggregate!r}: expected one of {', '.join(AGGREGATES)}")
        require_at_least("frames", self.frames, 1)
        if self.batch_size is not None:
            require_at_least("batch_size", self.batch_size, 1)
        require_at_least("workers", self.workers, 0)
        if self.failure_score is not None:
            require_in_unit_interval("failure_score", self.failure_score)


@dataclass
class EvaluationOptions(ScoringOptions):
    retry_failed: bool = False  # score again the cached videos whose status is error or unreadable


_worker_detector = None


def _init_worker(detector_name: str, device: str | None = None, worker_process: bool = True) -> None:
    global _worker_detector
    if worker_process:  # several workers share the cores; never in the main process (it runs the model)
        torch.set_num_threads(1)
        cv2.setNumThreads(1)  # perturbations, resizes and colour conversions run in the workers
    _worker_detector = create_face_detector(detector_name, device=device)  # torch finders: on the model's device


def worker_detector():
    """The face detector of this worker process (or of the main process with workers=0)."""
    return _worker_detector


def map_in_workers(function, jobs: list, workers: int, detector_name: str, device: str | None = None):
    """`function` over `jobs`, results in order, in `workers` spawned processes that each hold a face detector
    (`worker_detector()`), or here with workers=0. A torch-backed detector (e.g. blazeface-torch) runs on `device`:
    with a CUDA device each worker decodes on the CPU and finds faces on the GPU, a whole video's frames per call."""
    require_face_detector(detector_name)  # missing weights stop here, not in a worker's initializer
    if workers <= 0:
        _init_worker(detector_name, device, worker_process=False)
        yield from map(function, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, (detector_name, device)) as pool:
        yield from pool.imap(function, jobs)


def _extract(job: tuple[TestVideo, int, int]):
    video, frames, input_size = job
    faces = extract_test_faces(video.path, worker_detector(), frames, input_size)  # never raises
    label_persons(video, faces, frames)
    return video, faces


def label_persons(video: TestVideo, faces, frames: int) -> None:
    """Which persons of a video are manipulated (faces.person_labels): none in a real video; in a fake one, those
    its mask video (FFIW) or fake boxes (folder CSV) cover; unknown otherwise. A mask that cannot be read leaves
    them unknown, with the reason added to the video's."""
    if video.label == 0:
        faces.person_labels = {person.id: 0 for person in faces.persons}
    elif video.face_mask is not None and faces.persons:
        try:
            masks = sample_frames(video.face_mask, frames).frames
            faces.person_labels = person_labels_from_masks(faces, masks)
        except Exception as error:  # the video is still scored; its persons stay unlabelled
            faces.reason = "; ".join(filter(None, [faces.reason, failure_reason(video.face_mask, "person labels",
                                                                                  error)]))
    elif video.fake_boxes:
        faces.person_labels = person_labels_from_boxes(faces, video.fake_boxes)


def cache_path(out_dir: Path, video: TestVideo) -> Path:
    return out_dir / "cache" / f"{hashlib.sha1(video.key.encode()).hexdigest()[:20]}.json"


def _extracted(videos: list[TestVideo], options: EvaluationOptions, input_size: int, device: torch.device):
    """(video, faces) in order, computed in a pool of worker processes (or here with workers=0)."""
    jobs = [(v, options.frames, input_size) for v in videos]
    yield from map_in_workers(_extract, jobs, options.workers, options.detector, str(device))


def score_videos(model, videos: list[TestVideo], out_dir: Path, options: EvaluationOptions,
                 device: torch.device, progress: bool = True) -> int:
    """Score the videos that have no cache entry yet (with options.retry_failed, also those cached as failed),
    writing one per video as it finishes; returns how many. `model`: the PyTorch model or its ONNX Runtime
    export."""
    todo = [v for v in videos if _needs_scoring(cache_path(out_dir, v), options.retry_failed)]
    bar = tqdm(total=len(videos), initial=len(videos) - len(todo), desc="evaluate", unit="video", disable=not progress,
               dynamic_ncols=True)
    extracted = _extracted(todo, options, model.config.input_size, device)
    batch_size = options.batch_size or default_batch_size(device)
    for video, faces, crop_scores in score_in_batches(model, extracted, device, batch_size, options.amp):
        status, reason = faces.status, faces.reason
        crop = ""
        try:
            if isinstance(crop_scores, Exception):
                raise crop_scores
            score, frames = aggregate_video(faces, crop_scores)
            if len(crop_scores):
                crop = _store_deciding_crop(out_dir, video, faces.crops[int(np.argmax(crop_scores))])
        except Exception as error:  # this video fails (listed with the reason), the evaluation goes on
            score, frames = None, []
            status, reason = STATUS_ERROR, failure_reason(video.path, "scoring", error)
        persons = person_results(faces, None if score is None else crop_scores, 0)
        record = {"key": video.key, "dataset": video.dataset, "source": video.source, "group": video.group,
                  "video_id": video.video_id,
                  "path": str(video.path), "label": video.label, "status": status, "reason": reason,
                  "score": score, "frames_used": len(frames), "faces_found": len(faces.crops),
                  "frames_sampled": len(faces.frame_indices), "frames": frames, "crop": crop,
                  "backend": engine_name(model),
                  "provenance": read_provenance(video.path).state,  # beside the score, never in it
                  "persons_score": aggregate_persons(persons),
                  "persons": [{"id": p.id, "score": p.score, "label": faces.person_labels.get(p.id),
                               "frames": len(p.frame_indices), "faces_scored": p.faces_scored} for p in persons]}
        write_json_atomic(cache_path(out_dir, video), record)
        bar.update(1)
    bar.close()
    return len(todo)


def _needs_scoring(cached: Path, retry_failed: bool) -> bool:
    if not cached.is_file():
        return True
    return retry_failed and json.loads(cached.read_text())["status"] in (STATUS_ERROR, STATUS_UNREADABLE)


def _store_deciding_crop(out_dir: Path, video: TestVideo, crop: np.ndarray) -> str:
    """The face crop with the highest score (the face that counted in the video's highest-scoring frame), as a
    small JPEG in crops/, so that `hcsi gallery` needs no second decode; returns its path inside out_dir."""
    relative = Path("crops") / (cache_path(out_dir, video).stem + ".jpg")
    small = cv2.resize(crop, (CROP_SIDE, CROP_SIDE), interpolation=cv2.INTER_AREA)
    with atomic_path(out_dir / relative) as tmp:
        cv2.imwrite(tmp, cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return str(relative)


def video_score(record: dict, policy: float | None, aggregate: str = "paper") -> float | None:
    """A cached video's score by `aggregate` (the paper's, or its highest person's); `policy` for a failed video."""
    if record["status"] != STATUS_OK:
        return policy
    if aggregate == "persons":
        if "persons" not in record:
            raise ValueError(f"{record['key']}: scored before hcsi grouped faces into persons, so it has no persons "
                             "score: evaluate into a new output folder to use --aggregate persons")
        return record["persons_score"] if record["persons_score"] is not None else policy
    return record["score"]


def summarize(videos: list[TestVideo], out_dir: Path, options: EvaluationOptions, about: dict[str, Any],
              calibration: Calibration | None = None) -> dict:
    """Read every video's cache entry, write videos.csv, frames.csv, summary.json, roc and reliability figures;
    returns the summary."""
    records = []
    for video in videos:
        path = cache_path(out_dir, video)
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing for {video.key}: the evaluation has not finished; rerun it")
        records.append(json.loads(path.read_text()))
    policy = options.failure_score

    def score_of(record: dict) -> float | None:
        return video_score(record, policy, options.aggregate)

    scored = [(r["label"], score_of(r)) for r in records if score_of(r) is not None]
    frame_pairs = [(r["label"], s) for r in records if r["status"] == STATUS_OK for _, s, _ in r["frames"]]
    video_metrics = detection_metrics([label for label, _ in scored], [s for _, s in scored])
    frame_metrics = detection_metrics([label for label, _ in frame_pairs], [s for _, s in frame_pairs])
    trust = trust_metrics([label for label, _ in scored], [s for _, s in scored], calibration,
                          [video_key(r) for r in records if score_of(r) is not None])
    subsets = subset_aucs([(r, score_of(r)) for r in records if score_of(r) is not None])
    failed: dict[str, int] = {}
    for r in records:
        if r["status"] != STATUS_OK:
            failed[r["status"]] = failed.get(r["status"], 0) + 1
    summary = {
        **video_metrics,
        **trust,
        **subsets,
        **person_metrics(records),
        "aggregate": options.aggregate,
        "backends": sorted({r.get("backend", "torch") for r in records}),  # the engines that scored (within 1e-4)
        "frame_auc": frame_metrics["auc"],
        "n_videos": len(records),
        "n_scored": len(scored),
        "n_failed": sum(failed.values()),
        "failed_by_status": failed,
        "n_real": sum(1 for r in records if r["label"] == 0),
        "n_fake": sum(1 for r in records if r["label"] == 1),
        "frames_without_face": sum(r["frames_sampled"] - r["frames_used"] for r in records if r["status"] == STATUS_OK),
        "failure_policy": (f"score {policy}" if policy is not None else "excluded from the metrics"),
        "options": dataclasses.asdict(options),
        **about,
    }
    with atomic_path(out_dir / "videos.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, VIDEO_FIELDS)
        writer.writeheader()
        for r in records:
            score = score_of(r)
            writer.writerow({**{k: r.get(k, "") for k in VIDEO_FIELDS if k != "score"},
                             "score": "" if score is None else f"{score:.6f}"})
    with atomic_path(out_dir / "frames.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FRAME_FIELDS)
        for r in records:
            for index, score, faces in r["frames"]:
                writer.writerow([r["dataset"], r["video_id"], r["label"], index, f"{score:.6f}", faces])
    with atomic_path(out_dir / "persons.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(PERSON_FIELDS)
        for r in records:
            for p in r.get("persons", []):
                writer.writerow([r["dataset"], r["video_id"], r["label"], p["id"],
                                 "" if p["score"] is None else f"{p['score']:.6f}",
                                 "" if p["label"] is None else p["label"], p["frames"], p["faces_scored"]])
    write_json_atomic(out_dir / "summary.json", summary, indent=1)
    if video_metrics["auc"] is not None:
        evaluation_roc(out_dir, summary.get("dataset", ""))
    if scored:
        reliability_diagram([label for label, _ in scored], [s for _, s in scored], out_dir / "reliability",
                            calibration, summary.get("dataset", ""))
    return summary


def person_metrics(records: list[dict]) -> dict:
    """Where persons are labelled (FFIW's masks, a folder CSV's fake_boxes; every person of a real video is 0):
    the AUC over persons with a score, and the share of the fake videos with a scored manipulated person whose
    highest-scoring person is a manipulated one. Empty when no fake video has labelled persons."""
    persons = [p for r in records if r["status"] == STATUS_OK for p in r.get("persons", [])
               if p["score"] is not None and p["label"] is not None]
    located = []  # per fake video with a scored manipulated person: is its top person a manipulated one?
    for r in records:
        scored = [p for p in r.get("persons", []) if p["score"] is not None and p["label"] is not None]
        if r["label"] == 1 and r["status"] == STATUS_OK and any(p["label"] == 1 for p in scored):
            located.append(max(scored, key=lambda p: p["score"])["label"] == 1)
    if not located:
        return {}
    labels = [p["label"] for p in persons]
    return {"person_auc": detection_metrics(labels, [p["score"] for p in persons])["auc"],
            "n_persons_labelled": len(persons), "n_persons_manipulated": sum(labels),
            "top_person_is_manipulated": float(np.mean(located)), "n_fake_videos_with_labelled_persons": len(located)}


TPR_AT_FPRS = (0.001, 0.01, 0.05)


def video_key(record: dict) -> str:
    """A video's key across evaluations and calibrations: dataset/source/video_id."""
    return f"{record['dataset']}/{record['source']}/{record['video_id']}"


def tpr_at_fprs(labels: list[int], scores: list[float]) -> tuple[dict, dict]:
    """TPR at each of TPR_AT_FPRS where the real videos can measure it (at least one real video may be a false
    positive: n_real ≥ 1 / FPR), else None with the reason: ({fpr: tpr}, {fpr: why not measured})."""
    n_real = sum(1 for label in labels if label == 0)
    both = len(set(labels)) == 2
    rates, unmeasured = {}, {}
    for fpr in TPR_AT_FPRS:
        key = f"{fpr:g}"
        if not both:
            rates[key], unmeasured[key] = None, "needs real and fake videos"
        elif n_real * fpr < 1 - 1e-9:
            rates[key] = None
            unmeasured[key] = (f"needs at least {round(1 / fpr):,} real videos to measure a false-positive rate of "
                               f"{fpr:g} (got {n_real}; below that it would be the TPR at FPR 0)")
        else:
            rates[key] = tpr_at_fpr(labels, scores, fpr)
    return rates, unmeasured


def trust_metrics(labels: list[int], scores: list[float], calibration: Calibration | None = None,
                  keys: list[str] | None = None) -> dict:
    """How far the numbers can be trusted: bootstrap 95 % intervals of AUC, AP and EER (1,000 stratified video
    resamples, seed 0), TPR at FPR 0.1 %, 1 % and 5 % (where measurable), ECE (15 bins) and Brier score of the raw
    scores read as probabilities and, with a calibration, of its probabilities; `keys` (video_key of each score)
    show whether the calibration was fitted on these same videos (then its ECE is in-sample, and a warning says
    so)."""
    both = len(set(labels)) == 2
    intervals = bootstrap_intervals(labels, scores) if both else {"auc": None, "ap": None, "eer": None}
    result = {f"{name}_ci95": interval for name, interval in intervals.items()}
    result["tpr_at_fpr"], result["tpr_at_fpr_unmeasured"] = tpr_at_fprs(labels, scores)
    result["ece"] = expected_calibration_error(labels, scores)
    result["brier"] = brier_score(labels, scores) if labels else None
    if calibration is not None:
        probabilities = calibration.probability(scores)
        fitted = set(calibration.fitted_on.get("video_sha256s", []))
        overlap = sum(video_sha256(key) in fitted for key in keys or [])
        if overlap:
            warnings.warn(f"{overlap} of these {len(keys)} videos were among the {len(fitted)} the calibration was "
                          "fitted on: its ECE and Brier score here are in-sample, not what new videos will see",
                          stacklevel=2)
        result["calibrated"] = {"calibration": calibration.source, "method": calibration.method,
                                "ece": expected_calibration_error(labels, probabilities),
                                "brier": brier_score(labels, probabilities) if labels else None,
                                "videos_in_calibration_set": overlap}
    return result


def subset_aucs(scored: list[tuple[dict, float]]) -> dict:
    """AUC per FF++ manipulation (its fakes against all real videos) and per `group` of a folder CSV (within the
    group when it holds both classes, else its videos against all videos of the other class)."""
    result = {}
    reals = [s for r, s in scored if r["label"] == 0]
    fakes = [s for r, s in scored if r["label"] == 1]

    def auc(group_rows):
        labels = [r["label"] for r, _ in group_rows]
        scores = [s for _, s in group_rows]
        if len(set(labels)) < 2:  # one class: against every video of the other
            other = reals if labels and labels[0] == 1 else fakes
            labels, scores = labels + [1 - labels[0]] * len(other), scores + other
        return detection_metrics(labels, scores)["auc"] if labels else None

    if any(r["dataset"] == "ff++" for r, _ in scored):
        methods = sorted({r["source"] for r, _ in scored if r["label"] == 1})
        result["auc_by_manipulation"] = {m: auc([(r, s) for r, s in scored if r["label"] == 1 and r["source"] == m])
                                         for m in methods}
    groups = sorted({r.get("group", "") for r, _ in scored} - {""})
    if groups:
        result["auc_by_group"] = {g: auc([(r, s) for r, s in scored if r.get("group", "") == g]) for g in groups}
    return result


def scoring_settings(model: torch.nn.Module, options: EvaluationOptions) -> dict:
    """What a cached video score depends on: the weights (SHA-1 over every state_dict tensor's bytes), the model
    config and the protocol options that change scores (not batch size, workers or the failure policy)."""
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    config = getattr(model, "config", None)
    settings = {"weights_sha1": digest.hexdigest(), "model_config": None if config is None else vars(config),
                "frames": options.frames, "detector": options.detector, "amp": options.amp}
    return json.loads(json.dumps(settings, default=str))  # as it reads back from settings.json


def calibration_settings(model: torch.nn.Module, options: EvaluationOptions) -> dict:
    """The settings a calibration records and is checked against (`Calibration.require_settings`)."""
    return {"frames": options.frames, "face_detector": options.detector, "input_size": model.config.input_size,
            "amp": options.amp, "aggregate": options.aggregate}


def claim_out_dir(out_dir: Path, settings: dict, ctx: Distributed) -> None:
    """Record `settings` in out_dir/settings.json, or check that the folder's earlier run used the same ones."""
    path = out_dir / "settings.json"
    changed = settings_mismatch(path, settings)
    if changed:
        options = options_to_continue(changed)
        hint = f" (it used {options}: pass that to continue it)" if options else ""
        raise ValueError(f"{out_dir} holds an evaluation made with other settings ({', '.join(changed)} differ; "
                         f"see {path}); its cached scores cannot be mixed with these: choose another output folder "
                         f"or delete this one{hint}")
    ctx.barrier()
    if ctx.is_main and not path.is_file():
        write_json_atomic(path, settings, indent=1)
    ctx.barrier()


def evaluate(model: torch.nn.Module, videos: list[TestVideo], out_dir: str | Path,
             options: EvaluationOptions | None = None, ctx: Distributed | None = None, about: dict | None = None,
             progress: bool = True, calibration: Calibration | None = None, scorer=None) -> dict | None:
    """Score `videos` (every rank its share: video i goes to rank i mod world size), then rank 0 writes the outputs
    and returns the summary (other ranks return None). `scorer`: what runs the network when not `model` (an ONNX
    Runtime export of it, `hcsi.detect.backends`); each video records which engine scored it."""
    options = options or EvaluationOptions()
    ctx = ctx or Distributed()
    if calibration is not None:  # before any video is scored
        calibration.require_settings(calibration_settings(model, options), "this evaluation")
    out_dir = Path(out_dir)
    (out_dir / "cache").mkdir(parents=True, exist_ok=True)
    claim_out_dir(out_dir, scoring_settings(model, options), ctx)
    model = model.to(ctx.device).eval()
    score_videos(model if scorer is None else scorer, videos[ctx.rank::ctx.world_size], out_dir, options,
                 device=ctx.device, progress=progress and ctx.is_main)
    ctx.barrier()
    if not ctx.is_main:
        return None
    return summarize(videos, out_dir, options, about or {}, calibration)
