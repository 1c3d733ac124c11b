"""Persons (`hcsi.faces.persons`): its thresholds measured on real faces, and what grouping adds to a video's time.

Usage: python benchmarks/bench_persons.py [--frames 32]
Writes benchmarks/results/persons-cpu.json; `python benchmarks/report.py` renders the tables.

1. Linking: IoU of the largest face's boxes in consecutive sampled frames, over the single-person clips of
   ../shared/data (else the fixtures): how low it goes for one person (LINK_IOU must stay below).
2. Identity: dlib descriptor distances between two faces (SPLIT_DISTANCE compares single faces) and between the means
   of two faces (JOIN_DISTANCE compares a piece's two end faces): of one person (pairs within a clip's sampled
   frames) and of two people (faces of different clips and photos; 200 random two-face means per clip, 50 per pair
   of clips, seed 0), with the share of each on the wrong side of the threshold. obama.jpg/biden.jpg and
   two_people.jpg show the same two men in other photos (same, across photos).
3. Smallest face: each person's first face shrunk (whole frame, INTER_AREA) until the face box's shorter side is s
   pixels; the distance to the person's mean descriptor at full size and to every other person's: where one
   person's distance to itself passes JOIN_DISTANCE is MIN_DESCRIPTOR_FACE_PX.
4. Cost: decode + faces of a 1080p clip, then the grouping (`faces_in_frames` with and without persons), on the
   DFDC clip (one person, 1920×1080), a two-person and a twelve-person 1080p clip built from the fixture photos;
   median of 3 runs, with the number of descriptors computed.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # the fixtures' people (tests/media.py)
from common import RESULTS, SHARED_DATA, provenance, write_results  # noqa: E402
from media import FIXTURES, person_patch, write_people_video  # noqa: E402

from hcsi.evaluate.protocol import faces_in_frames  # noqa: E402
from hcsi.faces import create_face_detector, sample_frames  # noqa: E402
from hcsi.faces.persons import (  # noqa: E402
    JOIN_DISTANCE,
    LINK_IOU,
    MIN_DESCRIPTOR_FACE_PX,
    SPLIT_DISTANCE,
    FaceDescriber,
    box_iou,
    face_side,
)

CLIPS = ["liveportrait/d0.mp4", "liveportrait/d3.mp4", "liveportrait/d6.mp4", "liveportrait/d11.mp4",
         "liveportrait/d12.mp4", "liveportrait/d18.mp4", "liveportrait/d19.mp4", "liveportrait/d20.mp4",
         "liveportrait/s18.mp4", "liveportrait/s32.mp4", "ghost/dance.mp4", "ffpp/519.mp4"]
PHOTOS = {"obama": "face_recognition/obama.jpg", "biden": "face_recognition/biden.jpg",
          "beckham": "ghost/beckham.jpg", "astronaut": "skimage/astronaut.png"}
SIDES = (20, 24, 28, 32, 40, 48, 64)


def media(relative: str) -> Path | None:
    for root in (SHARED_DATA, FIXTURES):
        if (root / relative).is_file():
            return root / relative
    return None


class Faces:
    """The largest face of each sampled frame of one clip or photo, with its frame."""

    def __init__(self, path: Path, frames: int, detector) -> None:
        sampled = sample_frames(path, frames)
        self.frames, self.faces = [], []
        for frame in sampled.frames:
            found = detector.detect(frame)
            if found:
                self.frames.append(frame)
                self.faces.append(max(found, key=lambda f: f.area))


def scaled(frame: np.ndarray, face, side: float):
    """The frame shrunk so that the face's shorter side is `side`, and the face's geometry with it."""
    from dataclasses import replace

    factor = side / face_side(face)
    small = cv2.resize(frame, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    return small, replace(face, box=face.box * factor, detector_box=face.detector_box * factor,
                          landmarks=face.landmarks * factor)


def measure_thresholds(frames: int) -> dict:
    detector, describer = create_face_detector(), FaceDescriber()
    people: dict[str, Faces] = {}
    for relative in CLIPS:
        path = media(relative)
        if path is not None:
            people[Path(relative).stem] = Faces(path, frames, detector)
    for name, relative in PHOTOS.items():
        path = media(relative)
        if path is not None:
            people[name] = Faces(path, 1, detector)
    ious = [box_iou(a.box, b.box) for p in people.values() for a, b in zip(p.faces, p.faces[1:])]
    descriptors = {name: [d for d in (describer.describe(f, face) for f, face in zip(p.frames, p.faces))
                          if d is not None] for name, p in people.items()}
    same = [float(np.linalg.norm(a - b)) for ds in descriptors.values() for i, a in enumerate(ds) for b in ds[i + 1:]]
    different = [float(np.linalg.norm(a - b)) for x, y in itertools.combinations(descriptors, 2)
                 for a in descriptors[x][::4] for b in descriptors[y][::4]]
    means = {name: np.mean(ds, axis=0) for name, ds in descriptors.items() if ds}
    names = sorted(means)
    closest = min((float(np.linalg.norm(means[a] - means[b])), a, b) for i, a in enumerate(names)
                  for b in names[i + 1:])
    same_means, different_means = two_face_means(descriptors)
    two = people.get("two_people") or Faces(media("face_recognition/two_people.jpg"), 1, detector)
    across_photos = []
    frame = two.frames[0]
    for face in detector.detect(frame):  # Obama and Biden again, in another photo
        d = describer.describe(frame, face)
        across_photos.append(min(float(np.linalg.norm(d - means[n])) for n in ("obama", "biden") if n in means))
    small = {}
    for side in SIDES:
        same_at, different_at = [], []
        for name, p in people.items():
            if not p.faces or face_side(p.faces[0]) < side or name not in means:
                continue
            image, face = scaled(p.frames[0], p.faces[0], side)
            face_descriptor = describer.describe(image, face) if side >= MIN_DESCRIPTOR_FACE_PX else None
            if face_descriptor is None:  # below the limit describe() refuses: measure the network itself
                face_descriptor = _describe_anyway(describer, image, face)
            same_at.append(float(np.linalg.norm(face_descriptor - means[name])))
            different_at += [float(np.linalg.norm(face_descriptor - means[o])) for o in means if o != name]
        small[side] = {"same_max": max(same_at), "same_share_below": float(np.mean(np.array(same_at)
                                                                                  < JOIN_DISTANCE)),
                       "different_min": min(different_at),
                       "different_share_above": float(np.mean(np.array(different_at) >= JOIN_DISTANCE)),
                       "people": len(same_at)}
    return {"people": {name: len(p.faces) for name, p in people.items()},
            "link_iou": {"n": len(ious), "min": min(ious), "p01": float(np.percentile(ious, 1)),
                         "p05": float(np.percentile(ious, 5)), "median": float(np.median(ious))},
            "split": {**separation(same, different, SPLIT_DISTANCE), "same_across_photos": across_photos},
            "join": {**separation(same_means, different_means, JOIN_DISTANCE), "closest_people": closest},
            "face_side": small, "thresholds": {"LINK_IOU": LINK_IOU, "SPLIT_DISTANCE": SPLIT_DISTANCE,
                                              "JOIN_DISTANCE": JOIN_DISTANCE,
                                              "MIN_DESCRIPTOR_FACE_PX": MIN_DESCRIPTOR_FACE_PX}}


def two_face_means(descriptors: dict[str, list]) -> tuple[list[float], list[float]]:
    """Distances between means of two faces: within one person's faces, and between two people's."""
    rng = np.random.default_rng(0)
    clips = {name: np.array(ds) for name, ds in descriptors.items() if len(ds) >= 4}
    same = []
    for ds in clips.values():
        for _ in range(200):
            i = rng.choice(len(ds), 4, replace=False)
            same.append(float(np.linalg.norm(ds[i[:2]].mean(0) - ds[i[2:]].mean(0))))
    different = []
    for a, b in itertools.combinations(clips, 2):
        for _ in range(50):
            i, j = rng.choice(len(clips[a]), 2, replace=False), rng.choice(len(clips[b]), 2, replace=False)
            different.append(float(np.linalg.norm(clips[a][i].mean(0) - clips[b][j].mean(0))))
    return same, different


def separation(same: list[float], different: list[float], threshold: float) -> dict:
    """How a distance threshold separates one person's pairs from two people's."""
    same, different = np.array(same), np.array(different)
    return {"threshold": threshold, "same_n": len(same), "same_max": float(same.max()),
            "same_p99": float(np.percentile(same, 99)), "same_median": float(np.median(same)),
            "same_above": float(np.mean(same >= threshold)), "different_n": len(different),
            "different_min": float(different.min()), "different_p01": float(np.percentile(different, 1)),
            "different_below": float(np.mean(different < threshold)),
            "rates_by_threshold": {f"{t:.2f}": [float(np.mean(same >= t)), float(np.mean(different < t))]
                                   for t in (0.4, 0.45, 0.5, 0.55, 0.6)}}


def _describe_anyway(describer: FaceDescriber, image: np.ndarray, face) -> np.ndarray:
    import hcsi.faces.persons as persons

    limit, persons.MIN_DESCRIPTOR_FACE_PX = persons.MIN_DESCRIPTOR_FACE_PX, 0
    try:
        return describer.describe(image, face)
    finally:
        persons.MIN_DESCRIPTOR_FACE_PX = limit


def built_clips(folder: Path, frames: int) -> dict[str, Path]:
    """1080p clips of the fixture people: two side by side, and twelve in a grid."""
    a, b = (cv2.resize(person_patch(n), None, fx=2.2, fy=2.2) for n in ("obama", "beckham"))
    two = folder / "two-1080p.mp4"
    write_people_video(two, [[(a, 200 + 6 * k, 300), (b, 1300 - 6 * k, 320)] for k in range(frames)],
                       size=(1920, 1080))
    heads = [person_patch(n) for n in ("obama", "beckham", "biden")]
    crowd = folder / "twelve-1080p.mp4"
    write_people_video(crowd, [[(heads[i % 3], 60 + 300 * (i % 6) + k, 120 + 420 * (i // 6)) for i in range(12)]
                               for k in range(frames)], size=(1920, 1080))
    clips = {"two people (built)": two, "twelve people (built)": crowd}
    dfdc = media("dfdc/abofeumbvv.mp4")
    if dfdc is not None:
        clips = {"DFDC abofeumbvv (one person)": dfdc, **clips}
    return clips


def measure_cost(frames: int, runs: int = 3) -> list[dict]:
    detector = create_face_detector()
    calls = {"n": 0}
    original = FaceDescriber.describe

    def counted(self, frame, face):
        calls["n"] += 1
        return original(self, frame, face)

    FaceDescriber.describe = counted
    records = []
    with tempfile.TemporaryDirectory() as folder:
        for name, path in built_clips(Path(folder), frames).items():
            timings = {"decode": [], "faces": [], "faces_and_persons": []}
            for _ in range(runs):
                start = time.perf_counter()
                sampled = sample_frames(path, frames)
                timings["decode"].append(time.perf_counter() - start)
                start = time.perf_counter()
                faces_in_frames(sampled.frames, sampled.indices, detector, 224, persons=False)
                timings["faces"].append(time.perf_counter() - start)
                calls["n"] = 0
                start = time.perf_counter()
                grouped = faces_in_frames(sampled.frames, sampled.indices, detector, 224, persons=True)
                timings["faces_and_persons"].append(time.perf_counter() - start)
            median = {k: statistics.median(v) for k, v in timings.items()}
            records.append({"clip": name, "size": f"{sampled.frames[0].shape[1]}×{sampled.frames[0].shape[0]}",
                            "frames": len(sampled.frames), "persons": len(grouped.persons),
                            "faces": sum(len(p.positions) for p in grouped.persons), "descriptors": calls["n"],
                            "decode_s": median["decode"], "faces_s": median["faces"],
                            "persons_s": median["faces_and_persons"] - median["faces"],
                            "share_of_video": (median["faces_and_persons"] - median["faces"])
                            / (median["decode"] + median["faces_and_persons"])})
            print(records[-1], flush=True)
    FaceDescriber.describe = original
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    result = {"device": "cpu", "frames": args.frames, **provenance("python benchmarks/bench_persons.py"),
              "cores": len(__import__("os").sched_getaffinity(0))}
    result["thresholds"] = measure_thresholds(args.frames)
    print(result["thresholds"], flush=True)
    result["cost"] = measure_cost(args.frames)
    print("wrote", write_results("persons-cpu", [result], RESULTS))


if __name__ == "__main__":
    main()
