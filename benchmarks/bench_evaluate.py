"""End-to-end evaluation speed: videos per minute of `hcsi evaluate` over the shared clips, where the time goes, and
whether a faster face detector keeps the faces.

Usage: python benchmarks/bench_evaluate.py [--device cpu|cuda] [--model hcsi_net] [--frames 32] [--workers 0 2]
           [--detectors hog+blazeface-every-frame hog540+blazeface-every-frame] [--data ../shared/data]
Writes benchmarks/results/evaluate-<device>.json; `python benchmarks/report.py` renders the tables.

Input: every video of ../shared/data/manifest.csv (talking heads at 480-512 px, 464×560 swaps, FF++ at 640×480,
two 1280×720 clips, one 1920×1080 DFDC clip, a 640×360 stage clip). The model has random weights (timing only).
1. Stages, per detector: each clip in one process (CPU stages on one thread): decode (`sample_frames`), detect (the
   detector on each frame as evaluation sees it), crop (test-time crop + resize), model (`score_crops`). Seconds per
   video and the share of each stage; `cpu_side_s_per_video` is what one worker spends before the model.
2. Detection quality of each detector against the first (HOG on the full frame): frames with at least one face, faces found,
   and for the faces both found, the IoU of the test-time crop boxes.
3. End to end, per detector and worker count: `hcsi.evaluate.run.evaluate` into a fresh folder; videos/min, and the
   model's busy share (time inside `score_crops`, CUDA synchronised, over the wall time). On a GPU, a busy share
   well below 1 means the model waits for the CPU side. On CUDA the model runs in bf16 (`hcsi evaluate --amp`).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_DATA, device_slug, provenance, write_results  # noqa: E402

import hcsi.evaluate.protocol as evaluation_protocol  # noqa: E402
import hcsi.evaluate.run as evaluation_run  # noqa: E402
from hcsi.distributed import Distributed  # noqa: E402
from hcsi.evaluate.datasets import TestVideo  # noqa: E402
from hcsi.evaluate.protocol import faces_in_frames, score_crops  # noqa: E402
from hcsi.faces import FACE_DETECTORS, create_face_detector, sample_frames  # noqa: E402
from hcsi.faces.detect import box_iou  # noqa: E402
from hcsi.models import build_model  # noqa: E402

FULL_FRAME_HOG = "hog+blazeface-every-frame"  # the reference: HOG on the full frame
SHRUNK_HOG = "hog540+blazeface-every-frame"  # the default since this benchmark: HOG on a 540-px copy


def shared_videos(data: Path, clips: list[str] | None = None, copies: int = 1) -> list[TestVideo]:
    """The manifest's videos (or only `clips`), each listed `copies` times under its own key (a DFDC-sized run from
    the one DFDC clip: same file, separate cache entries)."""
    with open(data / "manifest.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["file"].endswith(".mp4") and (not clips or r["file"] in clips)]
    return [TestVideo("shared", r["file"].split("/")[0], r["file"] + (f"#{copy}" if copies > 1 else ""),
                      data / r["file"], int(r["label"] == "fake"))
            for copy in range(copies) for r in rows]


class GpuSampler:
    """GPU utilisation (%) sampled by nvidia-smi every 200 ms while the `with` block runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def __enter__(self):
        import subprocess
        import threading

        self._process = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "200"], stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        for line in self._process.stdout:
            try:
                self.samples.append(float(line.split(",")[0]))
            except ValueError:
                pass

    def __exit__(self, *exc) -> None:
        self._process.terminate()
        self._process.wait()

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_util_median": None, "gpu_util_samples": 0}
        return {"gpu_util_mean": round(float(np.mean(self.samples)), 1),
                "gpu_util_median": round(float(np.median(self.samples)), 1), "gpu_util_samples": len(self.samples)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TimedDetector:
    """A face detector that adds up the seconds spent in `detect`."""

    def __init__(self, detector) -> None:
        self.detector, self.seconds = detector, 0.0

    def detect(self, image: np.ndarray):
        return self.detect_many([image])[0]

    def detect_many(self, images: list[np.ndarray]):
        start = time.perf_counter()
        faces = self.detector.detect_many(images)
        self.seconds += time.perf_counter() - start
        return faces


def profile_stages(videos: list[TestVideo], detector_name: str, model, device: torch.device, frames: int,
                   batch_size: int) -> tuple[dict, dict]:
    """Per-stage seconds over all videos in one process, and every video's test-time crop boxes per frame. Detection
    and cropping run through evaluation's own `faces_in_frames`; crop time is its time minus the detector's."""
    detector = TimedDetector(create_face_detector(detector_name, device=str(device)))
    seconds = {"decode": 0.0, "detect": 0.0, "crop": 0.0, "model": 0.0}
    boxes: dict[str, list[list[list[float]]]] = {}
    crops_total = 0
    for video in videos:
        start = time.perf_counter()
        sampled = sample_frames(video.path, frames)
        seconds["decode"] += time.perf_counter() - start
        detect_before, start = detector.seconds, time.perf_counter()
        faces = faces_in_frames(sampled.frames, sampled.indices, detector, model.config.input_size)
        detect = detector.seconds - detect_before
        seconds["detect"] += detect
        seconds["crop"] += time.perf_counter() - start - detect
        synchronize(device)
        start = time.perf_counter()
        score_crops(model, faces.crops, device, batch_size, amp=device.type == "cuda")  # bf16 on CUDA: `--amp`
        synchronize(device)
        seconds["model"] += time.perf_counter() - start
        boxes[video.video_id] = [[b for b, f in zip(faces.boxes, faces.crop_frame) if f == position]
                                 for position in range(len(sampled.frames))]
        crops_total += len(faces.crops)
    total = sum(seconds.values())
    n = len(videos)
    result = {"detector": detector_name, "videos": n, "crops": crops_total,
              "s_per_video": {k: round(v / n, 3) for k, v in seconds.items()},
              "share": {k: round(v / total, 3) for k, v in seconds.items()},
              "cpu_side_s_per_video": round((seconds["decode"] + seconds["detect"] + seconds["crop"]) / n, 3),
              "model_ms_per_crop": round(1000 * seconds["model"] / max(crops_total, 1), 2)}
    return result, boxes


def compare_boxes(reference: dict, other: dict) -> dict:
    """Frames with ≥ 1 face and faces found by each; IoU of the faces both found (greedy best match per frame)."""
    frames = with_face_ref = with_face_other = faces_ref = faces_other = 0
    ious = []
    for key, ref_frames in reference.items():
        for ref_boxes, other_boxes in zip(ref_frames, other[key]):
            frames += 1
            with_face_ref += bool(ref_boxes)
            with_face_other += bool(other_boxes)
            faces_ref += len(ref_boxes)
            faces_other += len(other_boxes)
            for box in ref_boxes:
                best = max((box_iou(np.array(box, float), np.array(b, float)) for b in other_boxes), default=0.0)
                if best > 0.3:
                    ious.append(best)
    return {"frames": frames, "frames_with_face_reference": with_face_ref, "frames_with_face": with_face_other,
            "faces_reference": faces_ref, "faces": faces_other, "matched_faces": len(ious),
            "crop_box_iou_mean": round(float(np.mean(ious)), 4) if ious else None,
            "crop_box_iou_min": round(float(np.min(ious)), 4) if ious else None}


def end_to_end(model, videos: list[TestVideo], device: torch.device, detector: str, workers: int, frames: int,
               batch_size: int) -> dict:
    """`evaluate` over all videos into a fresh folder: wall time and the time spent inside score_crops."""
    busy = {"s": 0.0}
    original = evaluation_protocol.score_crops  # what score_in_batches calls

    def timed_score_crops(*args, **kwargs):
        synchronize(device)
        start = time.perf_counter()
        scores = original(*args, **kwargs)
        synchronize(device)
        busy["s"] += time.perf_counter() - start
        return scores

    options = evaluation_run.EvaluationOptions(frames=frames, batch_size=batch_size, workers=workers,
                                               detector=detector, amp=device.type == "cuda")
    evaluation_protocol.score_crops = timed_score_crops
    sampler = GpuSampler() if device.type == "cuda" else contextlib.nullcontext()
    try:
        with tempfile.TemporaryDirectory() as out, sampler:
            start = time.perf_counter()
            summary = evaluation_run.evaluate(model, videos, out, options, ctx=Distributed(device=device),
                                              progress=False)
            wall = time.perf_counter() - start
    finally:
        evaluation_protocol.score_crops = original
    gpu = sampler.summary() if isinstance(sampler, GpuSampler) else {}
    return {"detector": detector, "workers": workers, "videos": len(videos), "wall_s": round(wall, 2),
            "videos_per_min": round(60 * len(videos) / wall, 2), "model_busy_s": round(busy["s"], 2),
            "model_busy_share": round(busy["s"] / wall, 3), "failed": summary["n_failed"], **gpu}


def bounding_stage(stage: dict, workers: int) -> dict:
    """Videos per second each stage could sustain (CPU stages over `workers` processes, the model alone) and the
    slowest, from one process's per-video stage times: what bounds an end-to-end run."""
    per_video = stage["s_per_video"]
    capacity = {"decode": workers / max(per_video["decode"], 1e-9),
                "faces": workers / max(per_video["detect"] + per_video["crop"], 1e-9),
                "model": 1 / max(per_video["model"], 1e-9)}
    return {"videos_per_s": {k: round(v, 2) for k, v in capacity.items()}, "bound": min(capacity, key=capacity.get)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="hcsi_net")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--detectors", nargs="+", default=[FULL_FRAME_HOG, SHRUNK_HOG],
                        choices=sorted(FACE_DETECTORS))
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--clips", nargs="+", help="only these manifest files (e.g. dfdc/abofeumbvv.mp4)")
    parser.add_argument("--copies", type=int, default=1, help="list each clip this many times (a larger run)")
    parser.add_argument("--suffix", default="", help="appended to the result file's name")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    device = torch.device(args.device)
    model = build_model(args.model, pretrained=False).to(device).eval()
    videos = shared_videos(args.data, args.clips, args.copies)
    side = model.config.input_size
    score_crops(model, [np.zeros((side, side, 3), np.uint8)] * args.batch_size, device, args.batch_size,
                amp=device.type == "cuda")  # warm-up
    stages, boxes = [], {}
    distinct = list({v.path: v for v in videos}.values())  # stage times per distinct clip
    for name in args.detectors:
        record, boxes[name] = profile_stages(distinct, name, model, device, args.frames, args.batch_size)
        print(record, flush=True)
        stages.append(record)
    reference = args.detectors[0]
    quality = [{"detector": name, "against": reference, **compare_boxes(boxes[reference], boxes[name])}
               for name in args.detectors[1:]]
    print(quality, flush=True)
    runs = []
    if not args.skip_end_to_end:
        for name in args.detectors:
            for workers in args.workers:
                runs.append(end_to_end(model, videos, device, name, workers, args.frames, args.batch_size))
                stage = next(r for r in stages if r["detector"] == name)
                runs[-1]["estimate"] = bounding_stage(stage, max(workers, 1))
                print(runs[-1], flush=True)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {**provenance("python benchmarks/bench_evaluate.py " + " ".join(sys.argv[1:])),
              "device": device_name, "model": args.model, "frames": args.frames, "batch_size": args.batch_size,
              "torch_threads": torch.get_num_threads(), "videos": [v.video_id for v in videos],
              "stages": stages, "detection_quality": quality, "end_to_end": runs}
    name = f"evaluate-{device_slug(args.device)}{args.suffix}"
    print("wrote", write_results(name, [result], out_dir=args.out_dir or RESULTS))


if __name__ == "__main__":
    main()
