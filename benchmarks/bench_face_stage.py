"""What a video costs before the model, stage by stage: decode, face finding (per finder), landmarks, crop, and the
model beside it; how much decoding the protocol needs; and whether another face detector keeps the faces.

Usage: python benchmarks/bench_face_stage.py [--device cpu] [--detectors hog540+blazeface-every-frame blazeface ...]
           [--frames 32] [--data ../shared/data] [--suffix -retinaface]
Writes benchmarks/results/face-stage-<device><suffix>.json; `python benchmarks/report.py` renders the tables.

1. Decoding, per clip: today's `sample_frames` (PyAV, threaded, one pass, only the kept frames converted) against
   PyAV without threads and OpenCV's reader (grab every frame, convert the kept ones); the share of the clip that
   must be decoded for the sampled frames, sequentially and with seeks to the keyframe before each.
2. Stages per clip and detector, one process: decode, each finder's time (HOG, BlazeFace), dlib's landmarks (and per
   face), the test-time crop, and the model (ms per crop measured once, times the clip's crops). CPU stages run on
   one thread (a worker's share), the model on the torch threads given.
3. Faces against the first detector, on every frame: faces found (every face, not only the largest), frames with a
   face, faces kept by the test-time rule, and the IoU of the test-time crop boxes of the faces both found.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_DATA, device_slug, provenance, write_results  # noqa: E402

from hcsi.evaluate.protocol import crop_test_faces, detection_frame, score_crops  # noqa: E402
from hcsi.faces import (  # noqa: E402
    FACE_DETECTORS,
    create_face_detector,
    keep_large_faces,
    sample_frames,
    sbi_test_crop_box,
)
from hcsi.faces.detect import box_iou  # noqa: E402
from hcsi.faces.frames import count_video_frames, sample_frame_indices  # noqa: E402
from hcsi.models import build_model  # noqa: E402

CLIPS = ("dfdc/abofeumbvv.mp4", "liveportrait/s18.mp4", "liveportrait/s32.mp4", "ffpp/519.mp4",
         "ffpp/519_515.mp4", "face_recognition/short_hamilton_clip.mp4")
BEFORE = "hog540+blazeface-every-frame"


def seconds(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def pyav_unthreaded(path: Path, wanted: list[int]) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        kept = 0
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                frame.to_ndarray(format="rgb24")
                kept += 1
                if kept == len(wanted):
                    break
    return kept


def opencv_reader(path: Path, wanted: list[int]) -> int:
    capture, kept = cv2.VideoCapture(str(path)), 0
    for index in range(max(wanted) + 1):
        if not capture.grab():
            break
        if index in wanted:
            cv2.cvtColor(capture.retrieve()[1], cv2.COLOR_BGR2RGB)
            kept += 1
    capture.release()
    return kept


def decode_share(path: Path, wanted: list[int], frame_count: int) -> dict:
    """Frames to decode for `wanted`: sequentially (up to the last wanted one), and decoding each wanted frame from
    the keyframe before it (each frame once)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keyframes = [i for i, packet in enumerate(p for p in container.demux(stream) if p.size > 0)
                     if packet.is_keyframe]
    needed = set()
    for index in wanted:
        start = max(k for k in keyframes if k <= index)
        needed.update(range(start, index + 1))
    return {"frames": frame_count, "keyframes": len(keyframes), "sequential": round((max(wanted) + 1) / frame_count, 3),
            "with_seeks": round(len(needed) / frame_count, 3)}


def decoding(path: Path, frames: int, repeats: int = 3) -> dict:
    frame_count = count_video_frames(path)
    wanted = sample_frame_indices(frame_count, frames)
    times = {}
    for name, function in (("pyav_threaded", lambda: sample_frames(path, frames)),
                           ("pyav_one_thread", lambda: pyav_unthreaded(path, wanted)),
                           ("opencv", lambda: opencv_reader(path, wanted))):
        times[name] = round(min(seconds(function)[1] for _ in range(repeats)), 3)
    return {"s_per_video": times, "decoded_share": decode_share(path, wanted, frame_count)}


class StageTimer:
    """Wraps a DlibFaceDetector's finder and landmark steps to add up their seconds (a RetinaFace detector: its whole
    search counts as one finder, it fits no landmarks)."""

    def __init__(self, detector) -> None:
        self.detector, self.finders, self.landmarks, self.faces = detector, {}, 0.0, 0
        if not hasattr(detector, "_find_many"):
            detect_many = detector.detect_many

            def timed_detect_many(images):
                result, spent = seconds(detect_many, images)
                self.finders[detector.name] = self.finders.get(detector.name, 0.0) + spent
                self.faces += sum(map(len, result))
                return result

            detector.detect_many = timed_detect_many
            return
        find_many, faces = detector._find_many, detector._faces

        def timed_find_many(finder, images):
            result, spent = seconds(find_many, finder, images)
            self.finders[finder] = self.finders.get(finder, 0.0) + spent
            return result

        def timed_faces(image, found):
            result, spent = seconds(faces, image, found)
            self.landmarks += spent
            self.faces += len(result)
            return result

        detector._find_many, detector._faces = timed_find_many, timed_faces


def stages(path: Path, detector, frames: int, input_size: int, model_ms_per_crop: float) -> tuple[dict, list]:
    timer = StageTimer(detector)
    sampled, decode = seconds(sample_frames, path, frames)
    shown = sampled.frames if getattr(detector, "full_frames", False) else \
        [detection_frame(frame) for frame in sampled.frames]
    found, detect = seconds(detector.detect_many, shown)
    faces, crop = seconds(crop_test_faces, list(zip(shown, found)), sampled.indices, input_size)
    finding = sum(timer.finders.values())
    record = {"decode": decode, **{f"find_{name}": s for name, s in timer.finders.items()},
              "landmarks": timer.landmarks, "other": detect - finding - timer.landmarks, "crop": crop,
              "model": len(faces.crops) * model_ms_per_crop / 1000}
    record = {k: round(v, 4) for k, v in record.items()}
    record["cpu_before_model"] = round(sum(v for k, v in record.items() if k != "model"), 4)
    record.update(faces=timer.faces, crops=len(faces.crops),
                  landmarks_ms_per_face=round(1000 * timer.landmarks / max(timer.faces, 1), 2))
    return record, [(frame.shape[:2], frame_faces) for frame, frame_faces in zip(shown, found)]


def compare_faces(reference: list, other: list) -> dict:
    """Every face (and the test-time kept faces) of `other` against `reference`, frame by frame."""
    counts = dict.fromkeys(("frames", "frames_with_face_reference", "frames_with_face", "faces_reference", "faces",
                            "kept_reference", "kept", "kept_matched"), 0)
    ious = []
    for ((height, width), ref_faces), (_, faces) in zip(reference, other):
        counts["frames"] += 1
        counts["frames_with_face_reference"] += bool(ref_faces)
        counts["frames_with_face"] += bool(faces)
        counts["faces_reference"] += len(ref_faces)
        counts["faces"] += len(faces)
        ref_kept, kept = keep_large_faces(ref_faces), keep_large_faces(faces)
        counts["kept_reference"] += len(ref_kept)
        counts["kept"] += len(kept)
        boxes = [sbi_test_crop_box(f.box, width, height).astype(float) for f in kept]
        for face in ref_kept:
            box = sbi_test_crop_box(face.box, width, height).astype(float)
            best = max((box_iou(box, b) for b in boxes), default=0.0)
            if best > 0.3:
                ious.append(best)
    counts["kept_matched"] = len(ious)
    counts["crop_box_iou_mean"] = round(float(np.mean(ious)), 4) if ious else None
    counts["crop_box_iou_min"] = round(float(np.min(ious)), 4) if ious else None
    counts["crop_boxes_identical"] = round(float(np.mean(np.array(ious) == 1.0)), 4) if ious else None
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--device", default="cpu", help="where torch-backed detectors and the model run")
    parser.add_argument("--detectors", nargs="+", default=[BEFORE, "blazeface", "blazeface-torch"],
                        choices=sorted(FACE_DETECTORS))
    parser.add_argument("--clips", nargs="+", default=list(CLIPS))
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--model", default="hcsi_net")
    parser.add_argument("--suffix", default="", help="appended to the result file's name")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    device = torch.device(args.device)
    model = build_model(args.model, pretrained=False).to(device).eval()
    side = model.config.input_size
    crops = [np.zeros((side, side, 3), np.uint8)] * 32
    score_crops(model, crops[:4], device, 32, amp=device.type == "cuda")  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    _, spent = seconds(score_crops, model, crops, device, 32, device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.synchronize()
    model_ms_per_crop = 1000 * spent / len(crops)
    clips = [args.data / clip for clip in args.clips]
    record = {**provenance("python benchmarks/bench_face_stage.py " + " ".join(sys.argv[1:])),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "model": args.model, "model_ms_per_crop": round(model_ms_per_crop, 2), "frames": args.frames,
              "torch_threads": torch.get_num_threads(), "decoding": {}, "stages": {}, "faces": {}}
    for path in clips:
        width, height = sample_frames(path, 1).frames[0].shape[1::-1]
        record["decoding"][path.relative_to(args.data).as_posix()] = {"size": f"{width}x{height}",
                                                                      **decoding(path, args.frames)}
        print(path.name, record["decoding"][path.relative_to(args.data).as_posix()], flush=True)
    found = {}
    for name in args.detectors:
        detector = create_face_detector(name, device=args.device)
        detector.detect_many([np.zeros((64, 64, 3), np.uint8)])  # warm-up
        record["stages"][name], found[name] = {}, []
        for path in clips:
            clip = path.relative_to(args.data).as_posix()
            record["stages"][name][clip], clip_faces = stages(path, detector, args.frames, side, model_ms_per_crop)
            found[name] += clip_faces
            print(name, clip, record["stages"][name][clip], flush=True)
    for name in args.detectors[1:]:
        record["faces"][name] = {"against": args.detectors[0], **compare_faces(found[args.detectors[0]], found[name])}
        print(name, record["faces"][name], flush=True)
    name = f"face-stage-{device_slug(args.device)}{args.suffix}"
    print("wrote", write_results(name, [record], out_dir=args.out_dir or RESULTS))


if __name__ == "__main__":
    main()
