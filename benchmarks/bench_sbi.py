"""SBI samples per second on one CPU core: this pipeline vs an emulation of the reference's data path.

Usage: NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/bench_sbi.py [--samples 150] [--sizes 224 380] [--out-dir DIR]
Writes <out-dir>/sbi-cpu.json (default benchmarks/results).

Input: the two FF++ face crops of ../shared/data/ffpp_crops, enlarged FRAME_SCALE× and padded by reflection to a
1920×1080 frame (real image content everywhere, so PNG decoding costs what a real frame costs). From that frame the
reference's context crop (landmark box + w/2 left and right, 1.0·h above, 0.4·h below) is cut once and stored as a
PNG, as preprocessing stores it. Variants, all in train mode:
- ours+crop_read (the headline): per sample, read the stored context-crop PNG with the training loader's own
  `read_crop`, then SelfBlendedImageGenerator;
- ours: the same with the crop already in memory (the same two crops every time, so caches stay warm: optimistic);
- reference_emulation: per sample what the reference does (its §1 and §8): decode the full-frame PNG, flip the frame
  (p=0.5), cut the context crop, then every step on the whole crop: the source transforms, albumentations' Affine on
  source and mask, the elastic field drawn for the whole crop and applied to the warped source as well (result thrown
  away), the blend mask, the blend, the joint post-augmentation, and the final crop. It uses this project's hull
  masks, blend mask and albumentations 2.x transforms, so it isolates the data-path choices only.
Each variant runs in its own process pinned to the same core and draws from its own generator seeded 0; they take
turns in blocks of BLOCK samples, so that a slow spell of the machine hits all of them alike. The file also records
what reading the stored crop costs with other decoders.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, provenance, write_results

from hcsi.data.sbi_dataset import read_crop
from hcsi.faces.crops import face_crop_box, train_margin_factors
from hcsi.sbi import (
    SBIAugmentations,
    SBIConfig,
    SelfBlendedImageGenerator,
    blend,
    blend_mask,
    downscale,
    elastic_maps,
    flip_box,
    flip_landmarks,
    hull_mask,
)
from hcsi.sbi.synthesis import step_timer

CROPS = SHARED_DATA / "ffpp_crops"
FACE_NAMES = ("000_0000.png", "001_0000.png")
FACE_BOX = (56.0, 76.0, 252.0, 291.0)  # RetinaFace-like box of both crops (see tests/test_sbi.py)
FRAME_HW = (1080, 1920)
FRAME_SCALE = 2.0  # face about 390 px wide in the frame, as in close-up 1080p FF++ videos
WARMUP = 5
BLOCK = 10  # samples a variant runs before the next one takes its turn
READ_REPEATS = 30


class ReferenceEmulation:
    """The reference's per-sample data path, from the frame PNG to the resized pair (see the module docstring)."""

    def __init__(self, config: SBIConfig) -> None:
        self.config = config
        self.augmentations = SBIAugmentations.from_config(config)  # seeded per sample
        tx, ty = config.affine_translate
        self.affine = A.Compose([A.Affine(translate_percent={"x": (-tx, tx), "y": (-ty, ty)},
                                          scale=config.affine_scale, fit_output=False, p=1.0)])

    def source_transforms(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        image = self.augmentations.source_colour(image=image)["image"]
        if rng.random() < self.config.downscale_p:
            return downscale(image, int(rng.choice(self.config.downscale_factors)))
        return self.augmentations.sharpen(image=image)["image"]

    def __call__(self, face: dict, rng: np.random.Generator, timings: dict[str, float] | None) -> None:
        config = self.config
        for pipeline in (self.augmentations.source_colour, self.augmentations.sharpen, self.affine):
            pipeline.set_random_state(*random_state(int(rng.integers(2**63))))
        with step_timer(timings, "decode"):
            frame = cv2.cvtColor(cv2.imread(face["frame_png"]), cv2.COLOR_BGR2RGB)
        landmarks, box = face["frame_landmarks"], face["frame_box"]
        with step_timer(timings, "flip"):  # SBI mirrors the whole frame before cropping
            if rng.random() < config.hflip_p:
                frame = cv2.flip(frame, 1)
                landmarks, box = flip_landmarks(landmarks, FRAME_HW[1]), flip_box(box, FRAME_HW[1])
        with step_timer(timings, "context_crop"):
            x0, y0, x1, y1 = context_crop_coordinates(landmarks, FRAME_HW)
            image = np.ascontiguousarray(frame[y0:y1, x0:x1])
            landmarks = landmarks - np.array([x0, y0], dtype=np.float32)
            box = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
        with step_timer(timings, "mask"):
            if rng.random() < config.drop_forehead_p:
                landmarks = landmarks[:68]
            hull_type = config.hull_types[int(rng.integers(len(config.hull_types)))]
            mask = hull_mask(image.shape[:2], landmarks, hull_type)
        with step_timer(timings, "source_transforms"):
            source, target = image.copy(), image
            if rng.random() < config.transform_source_p:
                source = self.source_transforms(source, rng)
            else:
                target = self.source_transforms(target, rng)
        with step_timer(timings, "affine"):
            warped = self.affine(image=source, mask=mask)
            source, mask = warped["image"], warped["mask"]
        with step_timer(timings, "elastic"):
            maps = elastic_maps(mask.shape, config.elastic_alpha, config.elastic_sigma, rng)
            cv2.remap(source, maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)  # thrown away
            mask = cv2.remap(mask, maps, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
        with step_timer(timings, "blend_mask"):
            mask, _ = blend_mask(mask, rng, config)
        with step_timer(timings, "blend"):
            fake = blend(source, target, mask)
        with step_timer(timings, "post_aug"):  # the same parameters for both, as albumentations' additional_targets
            seed = int(rng.integers(2**63))
            augmented = []
            for a in (target, fake):
                self.augmentations.post.set_random_state(*random_state(seed))
                augmented.append(self.augmentations.post(image=a)["image"])
        with step_timer(timings, "crop_resize"):
            height, width = image.shape[:2]
            x0, y0, x1, y1 = face_crop_box(box, width, height, train_margin_factors(rng))
            size = (config.image_size, config.image_size)
            for a in (*augmented, mask):
                cv2.resize(a[y0:y1, x0:x1], size, interpolation=cv2.INTER_LINEAR)


def random_state(seed: int) -> tuple[np.random.Generator, random.Random]:
    """The two random streams an albumentations pipeline draws from, both seeded with `seed`."""
    return np.random.default_rng(seed), random.Random(seed)


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
        cv2.imwrite(str(frame_png), frame)  # default PNG settings, as hcsi.data.preprocess writes crops
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
                timings: dict[str, float] | None, read: bool) -> None:
    """One sample from the stored context crop (in memory, or read from its PNG with the loader's `read_crop`)."""
    if read:
        with step_timer(timings, "decode"):
            image = read_crop(Path(face["crop_png"]))
    else:
        image = face["context_rgb"]
    generator(image, face["crop_landmarks"], face["crop_box"], rng, train=True, timings=timings)


VARIANTS = ("ours+crop_read", "ours", "reference_emulation")


def variant_worker(variant: str, image_size: int, faces: list[dict], connection) -> None:
    """One variant in its own process, as a DataLoader worker runs one pipeline: a process that ran another variant
    keeps a different heap, and on virtual machines page faults cost enough to change the figures. Answers each
    request for n samples with (seconds, per-step seconds, page faults)."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    config = SBIConfig(image_size=image_size)
    if variant == "reference_emulation":
        emulation = ReferenceEmulation(config)

        def run(face: dict, rng: np.random.Generator, timings: dict[str, float] | None) -> None:
            emulation(face, rng, timings)
    else:
        generator = SelfBlendedImageGenerator(config)

        def run(face: dict, rng: np.random.Generator, timings: dict[str, float] | None) -> None:
            sample_ours(generator, face, rng, timings, read=variant == "ours+crop_read")

    rng = np.random.default_rng(0)
    for i in range(WARMUP):
        run(faces[i % len(faces)], rng, None)
    done = 0
    while (count := connection.recv()) is not None:
        timings: dict[str, float] = {}
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for i in range(done, done + count):
            run(faces[i % len(faces)], rng, timings)
        seconds = time.perf_counter() - start
        connection.send((seconds, timings, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
        done += count


def measure(image_size: int, faces: list[dict], samples: int) -> list[dict]:
    """Time every variant at one output size. Each runs in its own process (see `variant_worker`), all on the same
    core; they take turns in blocks of BLOCK samples, so that a slow spell of the machine hits all of them alike."""
    context = multiprocessing.get_context("fork")
    workers = {}
    for variant in VARIANTS:
        parent, child = context.Pipe()
        process = context.Process(target=variant_worker, args=(variant, image_size, faces, child))
        process.start()
        workers[variant] = (process, parent)
    elapsed = dict.fromkeys(VARIANTS, 0.0)
    faults = dict.fromkeys(VARIANTS, 0)
    timings: dict[str, dict[str, float]] = {variant: {} for variant in VARIANTS}
    try:
        for start in range(0, samples, BLOCK):
            for variant, (process, connection) in workers.items():
                connection.send(min(BLOCK, samples - start))
                while not connection.poll(1.0):
                    if not process.is_alive():
                        raise RuntimeError(f"the {variant} worker died (exit code {process.exitcode}); its traceback "
                                           "is printed above")
                seconds, steps, new_faults = connection.recv()
                elapsed[variant] += seconds
                faults[variant] += new_faults
                for step, t in steps.items():
                    timings[variant][step] = timings[variant].get(step, 0.0) + t
        for _, connection in workers.values():
            connection.send(None)
    finally:
        for process, _ in workers.values():
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    return [{"variant": variant, "image_size": image_size, "samples": samples,
             "samples_per_s": round(samples / elapsed[variant], 2),
             "ms_per_sample": round(1000 * elapsed[variant] / samples, 2),
             "page_faults_per_sample": round(faults[variant] / samples),
             "step_ms": {step: round(1000 * t / samples, 3)
                         for step, t in sorted(timings[variant].items(), key=lambda kv: -kv[1])}}
            for variant in VARIANTS]


def crop_read_ms(faces: list[dict]) -> dict[str, float]:
    """Milliseconds to get the stored crop as RGB by several routes (the storage format is preprocessing's PNG)."""
    paths = [face["crop_png"] for face in faces]
    routes = {
        "read_crop (cv2.imread + cvtColor)": lambda p: read_crop(Path(p)),
        "cv2.imread IMREAD_COLOR_RGB": lambda p: cv2.imread(p, cv2.IMREAD_COLOR_RGB),
        "cv2.imdecode of the file bytes": lambda p: cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_COLOR_RGB),
        "PIL open + convert RGB": lambda p: np.asarray(Image.open(p).convert("RGB")),
        "file bytes only": lambda p: Path(p).read_bytes(),
    }
    result = {}
    for name, route in routes.items():
        route(paths[0])
        start = time.perf_counter()
        for i in range(READ_REPEATS):
            route(paths[i % len(paths)])
        result[name] = round(1000 * (time.perf_counter() - start) / READ_REPEATS, 2)
    return result


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=150, help="timed samples per variant and size")
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
        read_ms = crop_read_ms(faces)
    speedups = {}
    for size in args.sizes:
        rate = {r["variant"]: r["samples_per_s"] for r in records if r["image_size"] == size}
        speedups[str(size)] = {
            "ours+crop_read_vs_reference": round(rate["ours+crop_read"] / rate["reference_emulation"], 2),
            "ours_vs_reference": round(rate["ours"] / rate["reference_emulation"], 2)}
    command = "NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/bench_sbi.py " + " ".join(sys.argv[1:])
    result = {**provenance(command.strip()), "device": "cpu", "threads": 1, "cpu": _cpu_name(),
              "frame_hw": list(FRAME_HW), "frame_scale": FRAME_SCALE,
              "context_crop_hw": list(faces[0]["context_rgb"].shape[:2]),
              "speedup": speedups, "crop_read_ms": read_ms, "records": records}
    path = write_results("sbi-cpu", [result], args.out_dir)
    print(json.dumps({"speedup": speedups, "crop_read_ms": read_ms, "records": records}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
