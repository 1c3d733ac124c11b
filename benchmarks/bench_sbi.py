"""SBI samples per second on one CPU core: this pipeline vs an emulation of the reference's data path.

Usage: NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/bench_sbi.py [--samples 100] [--sizes 224 380] [--out-dir DIR]
Writes <out-dir>/sbi-cpu.json (default benchmarks/results).

Input: the two FF++ face crops of ../shared/data/ffpp_crops, enlarged FRAME_SCALE× and padded by reflection to a
1920×1080 frame (real image content everywhere, so PNG decoding costs what a real frame costs). From that frame the
reference's context crop (landmark box + w/2 left and right, 1.0·h above, 0.4·h below) is cut once. Variants:
- ours: the stored context crop, already in memory, through SelfBlendedImageGenerator (train mode);
- ours+crop_decode: the same, decoding the context crop from a PNG on disk each sample;
- reference_emulation: per sample, decode the full-frame PNG, flip the frame (p=0.5), cut the context crop, then the
  same generator with the elastic deformation run on the source image too (result discarded), as SBI does.
The emulation keeps our albumentations 2.x transforms and hull code, so it isolates the data-path choices only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import provenance, write_results

from hcsi.sbi import SBIConfig, SelfBlendedImageGenerator, elastic_maps, flip_box, flip_landmarks
from hcsi.sbi.synthesis import step_timer

CROPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ffpp_crops"
FACE_NAMES = ("000_0000.png", "001_0000.png")
FACE_BOX = (56.0, 76.0, 252.0, 291.0)  # RetinaFace-like box of both crops (see tests/test_sbi.py)
FRAME_HW = (1080, 1920)
FRAME_SCALE = 2.0  # face about 390 px wide in the frame, as in close-up 1080p FF++ videos
WARMUP = 3


class ReferenceEmulation(SelfBlendedImageGenerator):
    """The generator with SBI's extra elastic pass: the source image is deformed too and the result thrown away."""

    def _warp(self, source: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
              timings: dict[str, float] | None) -> tuple[np.ndarray, np.ndarray]:
        with step_timer(timings, "affine"):
            warped = self._affine(image=source, mask=mask)
        with step_timer(timings, "elastic"):
            map_x, map_y = elastic_maps(mask.shape, self.config.elastic_alpha, self.config.elastic_sigma, rng)
            deformed = cv2.remap(warped["mask"], map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
            cv2.remap(warped["image"], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        return warped["image"], deformed


def context_crop_coordinates(landmarks: np.ndarray, shape_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """SBI's context crop: box of points 0-67 plus w/2 left and right, 1.0·h above, 0.4·h below, clipped."""
    (x0, y0), (x1, y1) = landmarks[:68].min(axis=0), landmarks[:68].max(axis=0)
    w, h = x1 - x0, y1 - y0
    return (max(0, int(x0 - w / 2)), max(0, int(y0 - h)),
            min(shape_hw[1], int(x1 + w / 2)), min(shape_hw[0], int(y1 + 0.4 * h)))


def make_frames(tmp: Path) -> list[dict]:
    """Per face: the frame PNG, the stored context-crop PNG and array, and landmarks/box in both coordinate systems."""
    all_landmarks = json.loads((CROPS / "precomuted_landmarks.json").read_text())
    faces = []
    for name in FACE_NAMES:
        crop = cv2.imread(str(CROPS / name))
        big = cv2.resize(crop, None, fx=FRAME_SCALE, fy=FRAME_SCALE, interpolation=cv2.INTER_LINEAR)
        top, left = (FRAME_HW[0] - big.shape[0]) // 2, (FRAME_HW[1] - big.shape[1]) // 2
        frame = cv2.copyMakeBorder(big, top, FRAME_HW[0] - big.shape[0] - top, left,
                                   FRAME_HW[1] - big.shape[1] - left, cv2.BORDER_REFLECT_101)
        offset = np.array([left, top], dtype=np.float32)
        landmarks = np.asarray(all_landmarks[name], dtype=np.float32) * FRAME_SCALE + offset
        box = tuple((np.array(FACE_BOX).reshape(2, 2) * FRAME_SCALE + offset).ravel().tolist())
        cx0, cy0, cx1, cy1 = context_crop_coordinates(landmarks, FRAME_HW)
        context = np.ascontiguousarray(frame[cy0:cy1, cx0:cx1])
        frame_png, crop_png = tmp / f"frame_{name}", tmp / f"context_{name}"
        cv2.imwrite(str(frame_png), frame)
        cv2.imwrite(str(crop_png), context)
        shift = np.array([cx0, cy0], dtype=np.float32)
        faces.append({
            "frame_png": str(frame_png), "crop_png": str(crop_png),
            "context_rgb": cv2.cvtColor(context, cv2.COLOR_BGR2RGB),
            "frame_landmarks": landmarks, "frame_box": box,
            "crop_landmarks": landmarks - shift, "crop_box": (box[0] - cx0, box[1] - cy0, box[2] - cx0, box[3] - cy0),
        })
    return faces


def sample_ours(generator: SelfBlendedImageGenerator, face: dict, rng: np.random.Generator,
                timings: dict[str, float] | None, decode: bool) -> None:
    """One sample from the stored context crop (in memory, or decoded from its PNG when `decode`)."""
    if decode:
        with step_timer(timings, "decode"):
            image = cv2.cvtColor(cv2.imread(face["crop_png"]), cv2.COLOR_BGR2RGB)
    else:
        image = face["context_rgb"]
    generator(image, face["crop_landmarks"], face["crop_box"], rng, train=True, timings=timings)


def sample_reference(generator: ReferenceEmulation, face: dict, rng: np.random.Generator,
                     flip_rng: np.random.Generator, timings: dict[str, float] | None) -> None:
    """One sample the reference's way: decode the frame, maybe mirror it, cut the context crop, synthesise."""
    with step_timer(timings, "decode"):
        frame = cv2.cvtColor(cv2.imread(face["frame_png"]), cv2.COLOR_BGR2RGB)
    landmarks, box = face["frame_landmarks"], face["frame_box"]
    with step_timer(timings, "flip"):  # SBI mirrors the whole frame before cropping
        if flip_rng.random() < 0.5:
            frame = cv2.flip(frame, 1)
            landmarks, box = flip_landmarks(landmarks, FRAME_HW[1]), flip_box(box, FRAME_HW[1])
    with step_timer(timings, "context_crop"):
        x0, y0, x1, y1 = context_crop_coordinates(landmarks, FRAME_HW)
        crop = np.ascontiguousarray(frame[y0:y1, x0:x1])
        landmarks = landmarks - np.array([x0, y0], dtype=np.float32)
        box = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
    generator(crop, landmarks, box, rng, train=True, timings=timings)


VARIANTS = ("ours", "ours+crop_decode", "reference_emulation")


def measure(image_size: int, faces: list[dict], samples: int) -> list[dict]:
    """Time every variant at one output size. The variants take turns sample by sample, so that a slow spell of the
    machine hits all of them alike. Each has its own generator seeded 0 (the emulation's frame flips draw from a
    second one), so all variants draw the same hull types, transforms and blend masks."""
    generators = {
        "ours": SelfBlendedImageGenerator(SBIConfig(image_size=image_size)),
        "ours+crop_decode": SelfBlendedImageGenerator(SBIConfig(image_size=image_size)),
        "reference_emulation": ReferenceEmulation(SBIConfig(image_size=image_size, hflip_p=0.0)),  # flips the frame
    }

    def run(variant: str, face: dict, rng: np.random.Generator, timings: dict[str, float] | None) -> None:
        if variant == "reference_emulation":
            sample_reference(generators[variant], face, rng, frame_flip_rng, timings)
        else:
            sample_ours(generators[variant], face, rng, timings, decode=variant == "ours+crop_decode")

    rngs = {variant: np.random.default_rng(0) for variant in VARIANTS}
    frame_flip_rng = np.random.default_rng(1)
    for i in range(WARMUP):
        for variant in VARIANTS:
            run(variant, faces[i % len(faces)], rngs[variant], None)
    timings: dict[str, dict[str, float]] = {variant: {} for variant in VARIANTS}
    elapsed = dict.fromkeys(VARIANTS, 0.0)
    for i in range(samples):
        for variant in VARIANTS:
            start = time.perf_counter()
            run(variant, faces[i % len(faces)], rngs[variant], timings[variant])
            elapsed[variant] += time.perf_counter() - start
    return [{"variant": variant, "image_size": image_size, "samples": samples,
             "samples_per_s": round(samples / elapsed[variant], 2),
             "ms_per_sample": round(1000 * elapsed[variant] / samples, 2),
             "step_ms": {step: round(1000 * t / samples, 3)
                         for step, t in sorted(timings[variant].items(), key=lambda kv: -kv[1])}}
            for variant in VARIANTS]


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100, help="timed samples per variant and size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 380])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    # One core: the loader runs one sample per worker process, so per-core throughput is what scales.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        faces = make_frames(Path(tmp))
        records = [record for size in args.sizes for record in measure(size, faces, args.samples)]
    speedups = {}
    for size in args.sizes:
        rate = {r["variant"]: r["samples_per_s"] for r in records if r["image_size"] == size}
        speedups[str(size)] = {"ours_vs_reference": round(rate["ours"] / rate["reference_emulation"], 2),
                               "ours+crop_decode_vs_reference":
                                   round(rate["ours+crop_decode"] / rate["reference_emulation"], 2)}
    command = "NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/bench_sbi.py " + " ".join(sys.argv[1:])
    result = {**provenance(command.strip()), "device": "cpu", "threads": 1, "cpu": _cpu_name(),
              "frame_hw": list(FRAME_HW), "frame_scale": FRAME_SCALE,
              "context_crop_hw": list(faces[0]["context_rgb"].shape[:2]),
              "speedup": speedups, "records": records}
    path = write_results("sbi-cpu", [result], args.out_dir)
    print(json.dumps({"speedup": speedups, "records": records}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
