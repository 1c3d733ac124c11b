"""Preprocessing: sampled frames → detected faces → context crops on disk, one folder per video, resumable.

Layout of the output folder:
    videos/<video_id>/meta.json            what was sampled and found (written last; its presence = done)
    videos/<video_id>/<frame:05d>_<face>.png  context crop of each face (SBI's blending region + room for the
                                           widest training crop), with the coordinates to map it back, and
                                           the face's RetinaFace box (`retina_box`) when the store keeps them
    index.json                             every finished video: split, status, frames with a face
    store.json                             the options the store was made with (a rerun with others is refused)
    failures.json                          videos that could not be read this run (retried by the next run)
A video is built in .partial/ and moved into videos/ by one rename, so a killed run never leaves a half-written
video that looks finished.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..checks import require_at_least
from ..faces.crops import cut_stored_crop, matching_retina_box
from ..faces.detect import (
    DEFAULT_FACE_DETECTOR,
    FaceDetector,
    RetinaFaceDetector,
    create_face_detector,
    require_face_detector,
    retinaface_detectors,
)
from ..files import options_to_continue, settings_mismatch, write_json_atomic
from ..faces.frames import MediaError, sample_frames
from .sources import SourceVideo

STORE_VERSION = 1


@dataclass(frozen=True)
class PreprocessOptions:
    frames: int = 32  # evenly spaced frames per video (SBI: 32)
    detector: str = DEFAULT_FACE_DETECTOR  # face detector backend with landmarks (hcsi.faces.FACE_DETECTORS)
    # RetinaFace finder whose box is stored beside each face, as SBI's crop_retina_ff.py stores them (training crops
    # by it); "auto": sbi-retinaface when its weights are installed, else the shipped retinaface; None: no boxes
    retinaface: str | None = "auto"

    def __post_init__(self) -> None:
        require_at_least("frames", self.frames, 1)
        if self.detector in retinaface_detectors():
            raise ValueError(f"preprocess needs landmarks, which {self.detector!r} does not give: choose a "
                             f"dlib-based detector (default {DEFAULT_FACE_DETECTOR}); RetinaFace boxes are stored "
                             "beside its faces (the retinaface option, --retinaface-boxes)")
        if self.retinaface not in (None, "auto", *retinaface_detectors()):
            raise ValueError(f"retinaface boxes: expected one of auto, {', '.join(retinaface_detectors())} or none, "
                             f"got {self.retinaface!r}")

    def resolved_retinaface(self) -> str | None:
        """The RetinaFace finder "auto" stands for on this machine."""
        if self.retinaface != "auto":
            return self.retinaface
        from ..faces.retinaface import sbi_weights_installed  # the rule of the CUDA default, without reading them

        return "sbi-retinaface" if sbi_weights_installed() else "retinaface"


def _round(array: np.ndarray) -> list:
    return np.round(np.asarray(array, dtype=np.float64), 2).tolist()


def preprocess_video(source: SourceVideo, out: Path, options: PreprocessOptions, detector: FaceDetector,
                     retinaface: RetinaFaceDetector | None = None) -> dict:
    """Process one video into out/videos/<video_id>; returns its index entry (status "ok", "no_faces" or "failed").

    "failed" means the file could not be read: nothing is written, and the next run tries again. With `retinaface`,
    each face also gets the RetinaFace box SBI would crop it by (`matching_retina_box`; null when none overlaps).
    """
    final = out / "videos" / source.video_id
    try:
        sampled = sample_frames(source.path, options.frames)
    except MediaError as error:
        return {"video_id": source.video_id, "split": source.split, "status": "failed", "reason": str(error)}
    work = out / ".partial" / uuid.uuid4().hex
    work.mkdir(parents=True)
    frames, failures = [], []
    if sampled.failure:
        failures.append({"frame": None, "reason": sampled.failure})
    retina_faces = [None] * len(sampled.frames)
    if retinaface is not None:
        try:  # one batched call over the video's frames
            retina_faces = [[f.box for f in faces] for faces in retinaface.detect_many(sampled.frames)]
        except Exception as error:  # the boxes are missing for this video, its landmarks are still stored
            failures.append({"frame": None, "reason": f"RetinaFace failed: {type(error).__name__}: {error}"})
    for image, index, retina_boxes in zip(sampled.frames, sampled.indices, retina_faces):
        height, width = image.shape[:2]
        try:
            faces = detector.detect(image)
        except Exception as error:  # a detector crash on one frame must not lose the video
            failures.append({"frame": index, "reason": f"face detection failed: {error}"})
            continue
        if not faces:
            failures.append({"frame": index, "reason": "no face found"})
        records = []
        for j, face in enumerate(faces):
            retina_box = None if retina_boxes is None else matching_retina_box(face.landmarks, retina_boxes)
            crop = cut_stored_crop(image, face, retina_box)
            name = f"{index:05d}_{j}.png"
            if not cv2.imwrite(str(work / name), cv2.cvtColor(crop.image, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {work / name}")
            records.append({
                "file": name,
                "origin": list(crop.origin),  # crop pixel (0, 0) is frame pixel origin
                "box": _round(crop.box.reshape(2, 2)),
                "detector_box": _round(crop.detector_box.reshape(2, 2)),
                "landmarks": _round(crop.landmarks),
                "score": round(face.score, 4),
                "found_by": face.found_by,
                **({} if retinaface is None else
                   {"retina_box": None if crop.retina_box is None else _round(crop.retina_box.reshape(2, 2))}),
            })
        frames.append({"index": index, "size": [width, height], "faces": records})
    with_face = sum(1 for f in frames if f["faces"])
    status = "ok" if with_face else "no_faces"
    meta = {
        "version": STORE_VERSION, "video_id": source.video_id, "source": str(source.path), "split": source.split,
        "status": status, "frame_count": sampled.frame_count, "sampled_indices": sampled.indices,
        "detector": detector.name, "retinaface": None if retinaface is None else retinaface.name,
        "frames": frames, "failures": failures,
    }
    write_json_atomic(work / "meta.json", meta)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # another run finished it meanwhile
        shutil.rmtree(work)
    else:
        os.replace(work, final)
    return {"video_id": source.video_id, "split": source.split, "status": status, "frames_with_face": with_face,
            "frames_sampled": len(sampled.indices)}


_worker_detector: FaceDetector | None = None
_worker_retinaface: RetinaFaceDetector | None = None


def _init_worker(detector_name: str, retinaface: str | None) -> None:
    global _worker_detector, _worker_retinaface
    cv2.setNumThreads(1)
    _worker_detector = create_face_detector(detector_name)
    _worker_retinaface = None if retinaface is None else create_face_detector(retinaface)


def _run_in_worker(job: tuple[SourceVideo, Path, PreprocessOptions]) -> dict:
    source, out, options = job
    try:
        return preprocess_video(source, out, options, _worker_detector, _worker_retinaface)
    except Exception as error:  # keep the batch going; the video is reported and retried next run
        return {"video_id": source.video_id, "split": source.split, "status": "failed",
                "reason": f"{source.path}: {type(error).__name__}: {error}"}


def load_index(out: Path) -> dict[str, dict]:
    """Index entries of every finished video, read from their meta.json files (the source of truth)."""
    entries = {}
    for meta_path in sorted((out / "videos").rglob("meta.json")):
        meta = json.loads(meta_path.read_text())
        with_face = sum(1 for f in meta["frames"] if f["faces"])
        entries[meta["video_id"]] = {"video_id": meta["video_id"], "split": meta["split"], "status": meta["status"],
                                     "frames_with_face": with_face, "frames_sampled": len(meta["sampled_indices"])}
    return entries


def claim_store(out: Path, options: PreprocessOptions, retinaface: str | None) -> None:
    """Record the options in out/store.json, or check that the store was made with the same ones (a rerun skips
    finished videos, so other options would leave a store whose videos were made in two ways). `retinaface`: the
    finder of the stored RetinaFace boxes (options.retinaface resolved)."""
    path = out / "store.json"
    settings = {"version": STORE_VERSION, "frames": options.frames, "detector": options.detector,
                "retinaface": retinaface}
    changed = settings_mismatch(path, settings)
    if changed:
        raise ValueError(f"{out} was made with " + ", ".join(f"{k}={old!r}" for k, (old, _) in changed.items())
                         + " (" + ", ".join(f"now {k}={new!r}" for k, (_, new) in changed.items()) + f"; see {path}): "
                         "finish it with the same options (" + (options_to_continue(changed) or "see above") + "), or write "
                         "to another folder")
    if not path.is_file():
        write_json_atomic(path, settings, indent=1)


def preprocess(sources: list[SourceVideo], out: str | Path, options: PreprocessOptions = PreprocessOptions(),
               workers: int = 1, progress: bool = True) -> dict:
    """Preprocess `sources` into `out`, skipping videos already finished there; returns a summary.

    Args:
        workers: processes working on different videos at once (each loads its own detector).
    """
    require_at_least("workers", workers, 1)
    out = Path(out)
    retinaface = options.resolved_retinaface()
    if retinaface is not None:
        require_face_detector(retinaface)  # missing weights stop here, before any video is read
    out.mkdir(parents=True, exist_ok=True)
    claim_store(out, options, retinaface)
    shutil.rmtree(out / ".partial", ignore_errors=True)  # leftovers of a killed run
    todo = [s for s in sources if not (out / "videos" / s.video_id / "meta.json").is_file()]
    jobs = [(s, out, options) for s in todo]
    results: list[dict] = []
    bar = tqdm(total=len(jobs), desc="preprocess", unit="video", disable=not progress)
    if workers <= 1:
        _init_worker(options.detector, retinaface)
        for job in jobs:
            results.append(_run_in_worker(job))
            bar.update()
    else:
        # spawn, not fork: a fork of a process whose threads (torch, PyAV) hold locks can deadlock in the child
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=(options.detector, retinaface)) as pool:
            for result in pool.map(_run_in_worker, jobs):
                results.append(result)
                bar.update()
    bar.close()
    shutil.rmtree(out / ".partial", ignore_errors=True)
    failed = [r for r in results if r["status"] == "failed"]
    index = load_index(out)
    write_json_atomic(out / "index.json", {"version": STORE_VERSION, "videos": index})
    write_json_atomic(out / "failures.json", failed)
    return {"videos": len(sources), "skipped_done": len(sources) - len(todo), "processed": len(results) - len(failed),
            "failed": len(failed), "no_faces": sum(1 for v in index.values() if v["status"] == "no_faces"),
            "out": str(out)}
