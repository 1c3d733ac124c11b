"""Face detector recall and speed on the real media of ../shared/data (32 sampled frames per clip).

Usage: python benchmarks/bench_faces.py [--frames 32] [--detector NAME (see hcsi.faces.FACE_DETECTORS)] [--data DIR]
Writes benchmarks/results/faces-cpu-<detector>.json; `python benchmarks/report.py` renders the table.
Recall of a file = share of its sampled frames in which at least the expected number of faces was found
(2 for two_people.jpg, else 1). Target: ≥ 90 % for every photo and talking-head clip; the Hamilton clip cuts to
the audience and is reported without a target.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, provenance, write_results  # noqa: E402

from hcsi.faces import DEFAULT_FACE_DETECTOR, FACE_DETECTORS, create_face_detector, sample_frames  # noqa: E402

EXPECTED_FACES = {"face_recognition/two_people.jpg": 2}
NO_TARGET = {"face_recognition/short_hamilton_clip.mp4": "cuts to the audience and stage shots"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--detector", default=DEFAULT_FACE_DETECTOR, choices=sorted(FACE_DETECTORS))
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    detector = create_face_detector(args.detector)
    records = []
    with open(args.data / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        name = row["file"]
        start = time.perf_counter()
        sampled = sample_frames(args.data / name, args.frames)
        decode_s = time.perf_counter() - start
        expected = EXPECTED_FACES.get(name, 1)
        found, by_blazeface, detect_s = [], 0, 0.0
        for frame in sampled.frames:
            start = time.perf_counter()
            faces = detector.detect(frame)
            detect_s += time.perf_counter() - start
            found.append(len(faces))
            by_blazeface += any(face.found_by == "blazeface" for face in faces)
        frames = len(sampled.frames)
        recall = sum(n >= expected for n in found) / frames
        record = {"file": name, "label": row["label"], "size": f"{row['width']}×{row['height']}", "frames": frames,
                  "expected_faces": expected, "recall": round(recall, 4),
                  "frames_with_extra_faces": sum(n > expected for n in found),
                  "frames_found_by_blazeface": by_blazeface,
                  "faces_found": sum(found), "faces_expected": expected * frames,
                  "detect_ms_per_frame": round(1000 * detect_s / frames, 1),
                  "decode_ms_per_frame": round(1000 * decode_s / frames, 1),
                  "target": None if name in NO_TARGET else 0.9, "note": NO_TARGET.get(name, row["note"])}
        print(record, flush=True)
        records.append(record)
    result = {**provenance("python benchmarks/bench_faces.py " + " ".join(sys.argv[1:])),
              "detector": args.detector, "records": records}
    print("wrote", write_results(f"faces-cpu-{args.detector.replace('+', '-')}", [result]))


if __name__ == "__main__":
    main()
