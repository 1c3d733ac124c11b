"""RetinaFace: which settings the practical finder gets, what SBI's face stage costs, how far retinaface_pytorch 0.0.7's
arithmetic moves the crops, and (where its wheel is at hand) that hcsi's path gives the reference package's boxes.

Usage: python benchmarks/bench_retinaface.py [--device cpu] [--frames 8] [--data ../shared/data]
           [--parts sweep timing versions reference] [--amp fp16 bf16]
Writes benchmarks/results/retinaface-<device>.json; `python benchmarks/report.py` renders the tables.

1. sweep: the shipped MobileNet-0.25 at each longer side (frames shrunk to it, never enlarged), with and without a
   second search at half that size, and each score threshold, on `--frames` frames of every shared clip and photo
   and of the test fixtures, against today's default finder: faces found, faces the default found that it finds too
   (IoU of the test-time crop boxes > 0.3; the others per file), faces only it finds (false finds or faces the
   default misses; for the chosen settings the frames are saved with their boxes for a look), crop-box IoU, CPU time
   per frame.
2. timing: ms per frame of `sbi-retinaface`'s network path (ResNet-50 at a 2048-px longer side; random weights that
   give a few boxes per frame, as real footage does) and of the practical finders, per frame size, in batches of
   `--batch` frames; on CUDA also fp16 / bf16 autocast on the shared frames and the largest box difference against
   fp32 (random weights whose class head favours faces, so that hundreds of boxes are compared).
3. versions: retinaface_pytorch 0.0.7 padded the resized frame to a 2048 square (priors for the square) and cast
   boxes to int; 0.0.8 (SBI's Dockerfile) does neither. Both arithmetics on the same trained network (the shipped
   MobileNet-0.25: SBI's ResNet-50 weights cannot be downloaded here), on real faces: how far the test-time crops
   move (IoU, pixels).
4. reference: with ../shared/reference/retinaface_pytorch-0.0.8-*.whl unpacked on sys.path (never a dependency),
   random ResNet-50 weights whose class head favours faces, `predict_jsons` against hcsi's `sbi-retinaface` path:
   boxes per frame, largest box and score difference.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_DATA, device_slug, provenance, write_results  # noqa: E402

from hcsi.evaluate.protocol import detection_frame  # noqa: E402
from hcsi.faces import create_face_detector, read_image, sample_frames, sbi_test_crop_box  # noqa: E402
from hcsi.faces.detect import (  # noqa: E402
    DEFAULT_FACE_DETECTOR,
    RETINAFACE_LEVELS,
    RETINAFACE_MIN_SCORE,
    RETINAFACE_R50_SIDE,
    RETINAFACE_SIDE,
    box_iou,
)
from hcsi.faces.retinaface import (  # noqa: E402
    MIN_SIZES,
    BatchedRetinaFace,
    RetinaFaceNet,
    RetinaFaceWeights,
    decode_boxes,
    prior_boxes,
    shipped_weights,
)

CLIPS = ("dfdc/abofeumbvv.mp4", "liveportrait/s18.mp4", "liveportrait/s32.mp4", "ffpp/519.mp4", "ffpp/519_515.mp4",
         "face_recognition/short_hamilton_clip.mp4", "ghost/dance.mp4", "liveportrait/d3.mp4", "liveportrait/d12.mp4")
PHOTOS = ("face_recognition/two_people.jpg", "face_recognition/obama.jpg", "face_recognition/biden.jpg",
          "ghost/beckham.jpg", "skimage/astronaut.png")
SIDES = (480, 640, 960, 1280)
THRESHOLDS = (0.7, 0.8, 0.9, 0.95)
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
REFERENCE_WHEEL = "retinaface_pytorch-0.0.8-py2.py3-none-any.whl"


def media_frames(data: Path, frames: int) -> list[tuple[str, np.ndarray]]:
    found = []
    for clip in CLIPS:
        found += [(clip, f) for f in sample_frames(data / clip, frames).frames]
    return found + [(photo, read_image(data / photo)) for photo in PHOTOS]


def fixture_frames(frames: int) -> list[tuple[str, np.ndarray]]:
    """The repository's test fixtures (small clips, photos, the dim room)."""
    found = []
    for path in sorted(FIXTURES.rglob("*")):
        name = path.relative_to(FIXTURES).as_posix()
        if path.suffix == ".mp4":
            found += [(name, f) for f in sample_frames(path, frames).frames]
        elif path.suffix == ".jpg":
            found.append((name, read_image(path)))
    return found


def sweep(sets: dict[str, list], out_dir: Path) -> list[dict]:
    """Every (longer side, levels, threshold) of the shipped MobileNet-0.25 on each set of frames."""
    default = create_face_detector(DEFAULT_FACE_DETECTOR)
    weights, rows = shipped_weights(), []
    for set_name, frames in sets.items():
        shown = [detection_frame(frame) for _, frame in frames]
        reference = [default.detect(frame) for frame in shown]
        for side, levels in [(side, levels) for side in SIDES for levels in (1, 2)]:
            finder = BatchedRetinaFace(weights, longest_side=side, upscale=False, levels=levels,
                                       min_score=min(THRESHOLDS))
            start = time.perf_counter()
            found = [finder.detect_many([frame])[0] for frame in shown]
            ms_per_frame = 1000 * (time.perf_counter() - start) / len(shown)
            for threshold in THRESHOLDS:
                counts = dict.fromkeys(("faces", "default_faces", "default_found", "only_retinaface"), 0)
                ious, extra_frames, missed = [], [], {}
                for (name, _), frame, ref_faces, boxes in zip(frames, shown, reference, found):
                    mine = boxes.boxes[boxes.scores > threshold]
                    counts["faces"] += len(mine)
                    counts["default_faces"] += len(ref_faces)
                    height, width = frame.shape[:2]
                    mine_crops = [sbi_test_crop_box(b, width, height).astype(float) for b in mine]
                    ref_crops = [sbi_test_crop_box(f.box, width, height).astype(float) for f in ref_faces]
                    for box in ref_crops:
                        best = max((box_iou(box, b) for b in mine_crops), default=0.0)
                        if best > 0.3:
                            counts["default_found"] += 1
                            ious.append(best)
                        else:
                            missed[name] = missed.get(name, 0) + 1
                    extra = [b for b, crop in zip(mine, mine_crops)
                             if max((box_iou(crop, r) for r in ref_crops), default=0.0) <= 0.3]
                    counts["only_retinaface"] += len(extra)
                    if extra:
                        extra_frames.append((name, frame, extra, ref_crops))
                rows.append({"set": set_name, "longest_side": side, "levels": levels, "min_score": threshold,
                             **counts, "missed": missed,
                             "crop_iou_mean": round(float(np.mean(ious)), 4) if ious else None,
                             "ms_per_frame": round(ms_per_frame, 1)})
                print(rows[-1], flush=True)
                if (side, levels, threshold) == (RETINAFACE_SIDE, RETINAFACE_LEVELS, RETINAFACE_MIN_SCORE) \
                        and extra_frames:
                    save_extra_finds(extra_frames, out_dir / f"retinaface-only-finds-{set_name}.png")
    return rows


def save_extra_finds(extra_frames, path: Path) -> None:
    """The frames with faces only RetinaFace found (red) beside the default's crops (green), for a look."""
    tiles = []
    for name, frame, extra, ref_crops in extra_frames[:12]:
        shown = frame.copy()
        for box in ref_crops:
            cv2.rectangle(shown, tuple(int(v) for v in box[:2]), tuple(int(v) for v in box[2:]), (0, 200, 0), 3)
        for box in extra:
            cv2.rectangle(shown, tuple(int(v) for v in box[:2]), tuple(int(v) for v in box[2:]), (230, 0, 0), 3)
        cv2.putText(shown, name, (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 0), 2)
        tiles.append(cv2.resize(shown, (480, round(480 * frame.shape[0] / frame.shape[1]))))
    height = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in tiles]
    rows = [np.concatenate(tiles[i:i + 4] + [np.zeros_like(tiles[0])] * (4 - len(tiles[i:i + 4])), axis=1)
            for i in range(0, len(tiles), 4)]
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR))


def random_resnet50(face_bias: float = 2.0) -> dict:
    torch.manual_seed(0)
    state = RetinaFaceNet("resnet50").state_dict()
    for level in range(3):
        state[f"ClassHead.{level}.conv1x1.bias"][1::2] += face_bias
    return state


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timing(device: torch.device, batch: int, amps: list[str], frames) -> list[dict]:
    """ms per frame of each finder's network path on frames of DFDC's (1920×1080), 720p and FF++'s (640×480) size.
    Random R50 weights whose class head rarely says "face" (as on real footage: a few boxes per frame, so NMS costs
    what it costs in use); on CUDA, fp16 / bf16 autocast against fp32 on the real `frames` with weights whose class
    head favours faces (hundreds of boxes per frame to compare)."""
    quiet = RetinaFaceWeights(random_resnet50(face_bias=-3.0), "resnet50", "sbi", MIN_SIZES, Path("random"), "random")
    finders = {"sbi-retinaface (R50, 2048)": dict(weights=quiet, longest_side=2048, min_score=0.7),
               "retinaface-r50 (R50, 1280)": dict(weights=quiet, longest_side=RETINAFACE_R50_SIDE, upscale=False,
                                                  min_score=0.7),
               "retinaface (MobileNet-0.25, 640 + 320)": dict(weights=shipped_weights(), longest_side=RETINAFACE_SIDE,
                                                              upscale=False, levels=RETINAFACE_LEVELS,
                                                              min_score=RETINAFACE_MIN_SCORE)}
    rng = np.random.default_rng(0)
    rows = []
    for size in ((1080, 1920), (720, 1280), (480, 640)):
        noise = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(batch)]
        for name, settings in finders.items():
            finder = BatchedRetinaFace(**settings, device=device, rounding=None, pixels_per_batch=batch * 2048 * 1152)
            finder.detect_many(noise[:1])  # warm-up
            synchronize(device)
            repeats = 1 if device.type == "cpu" and "R50" in name else 3
            start = time.perf_counter()
            for _ in range(repeats):
                found = finder.detect_many(noise)
            synchronize(device)
            rows.append({"finder": name, "frame": f"{size[1]}x{size[0]}", "amp": "fp32", "batch": batch,
                         "ms_per_frame": round(1000 * (time.perf_counter() - start) / repeats / batch, 1),
                         "boxes_per_frame": round(float(np.mean([len(f.boxes) for f in found])), 1)})
            print(rows[-1], flush=True)
    if device.type == "cuda":
        busy = RetinaFaceWeights(random_resnet50(face_bias=-1.0), "resnet50", "sbi", MIN_SIZES, Path("random"),
                                 "random")
        real = [frame for _, frame in frames]
        fp32 = BatchedRetinaFace(busy, device=device, longest_side=2048, rounding=None).detect_many(real)
        for amp in amps:
            finder = BatchedRetinaFace(busy, device=device, longest_side=2048, rounding=None, amp=amp,
                                       pixels_per_batch=batch * 2048 * 1152)
            finder.detect_many(real[:1])
            synchronize(device)
            start = time.perf_counter()
            found = finder.detect_many(real)
            synchronize(device)
            rows.append({"finder": "sbi-retinaface (R50, 2048)", "frame": f"{len(real)} shared frames", "amp": amp,
                         "batch": batch, "ms_per_frame": round(1000 * (time.perf_counter() - start) / len(real), 1),
                         "boxes_per_frame": round(float(np.mean([len(f.boxes) for f in found])), 1),
                         "box_difference_px": box_difference(fp32, found)})
            print(rows[-1], flush=True)
    return rows


def box_difference(expected, found) -> dict:
    """Largest distance of each fp32 box to its nearest box under autocast, and how many boxes each found."""
    worst, counts = 0.0, [0, 0]
    for a, b in zip(expected, found):
        counts[0] += len(a.boxes)
        counts[1] += len(b.boxes)
        if len(a.boxes) and len(b.boxes):
            worst = max(worst, float(np.abs(a.boxes[:, None] - b.boxes[None]).max(axis=2).min(axis=1).max()))
    return {"max_px": round(worst, 3), "boxes_fp32": counts[0], "boxes_amp": counts[1]}


def boxes_0_0_7(finder: BatchedRetinaFace, frame: np.ndarray, longest: int = 2048) -> np.ndarray:
    """retinaface_pytorch 0.0.7's arithmetic on hcsi's network: the resized frame padded (centred, zeros after
    normalisation) to a longest×longest square, priors of the square, NMS, boxes cast to int in the square, the pads
    taken off, scaled by max(original side) / longest and cast to int again."""
    from torchvision.ops import nms

    inputs = finder.network_input([frame])
    height, width = inputs.shape[2:]
    top, left = (longest - height) // 2, (longest - width) // 2
    padded = torch.nn.functional.pad(inputs, (left, longest - width - left, top, longest - height - top))
    offsets, logits, _ = finder._forward(padded)
    scores = torch.softmax(logits, dim=-1)[0, :, 1]
    boxes = decode_boxes(offsets[0], prior_boxes(longest, longest, finder.weights.min_sizes).to(finder.device))
    boxes = boxes * longest
    valid = scores > finder.min_score
    boxes, scores = boxes[valid], scores[valid]
    keep = nms(boxes, scores, finder.nms_iou)
    boxes = boxes[keep].int().cpu().numpy() - np.array([left, top, left, top])
    return (boxes * (max(frame.shape[:2]) / longest)).astype(int)


def test_crop(box, width: int, height: int) -> np.ndarray | None:
    try:
        return sbi_test_crop_box(box, width, height).astype(float)
    except ValueError:
        return None


def versions(frames, device: torch.device) -> dict:
    finder = BatchedRetinaFace(shipped_weights(), device=device, longest_side=2048, min_score=0.9)
    ious, shifts, faces = [], [], 0
    for _, frame in frames:
        height, width = frame.shape[:2]
        new = finder.detect_many([frame])[0].boxes
        old = boxes_0_0_7(finder, frame)
        olds = [crop for crop in (test_crop(b, width, height) for b in old) if crop is not None]
        for box in new:
            crop = test_crop(box, width, height)
            if crop is None:  # nothing of it inside the frame: SBI skips such a frame
                continue
            faces += 1
            if not olds:
                continue
            best = max(olds, key=lambda b: box_iou(crop, b))
            if box_iou(crop, best) > 0.3:
                ious.append(box_iou(crop, best))
                shifts.append(float(np.abs(crop - best).max()))
    return {"network": "shipped MobileNet-0.25 at a 2048-px longer side, score > 0.9", "faces_0_0_8": faces,
            "matched_in_0_0_7": len(ious), "crop_iou_mean": round(float(np.mean(ious)), 4) if ious else None,
            "crop_iou_min": round(float(np.min(ious)), 4) if ious else None,
            "crop_edge_shift_px_median": round(float(np.median(shifts)), 2) if shifts else None,
            "crop_edge_shift_px_max": round(float(np.max(shifts)), 2) if shifts else None}


def reference(frames, wheel: Path) -> dict | None:
    if not wheel.is_file():
        print(f"no {wheel}: reference comparison skipped", flush=True)
        return None
    unpacked = Path(tempfile.mkdtemp())
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    sys.path.insert(0, str(unpacked))
    from retinaface.predict_single import Model  # the reference package, never a dependency of hcsi

    state = random_resnet50(face_bias=-1.0)
    model = Model(max_size=2048, device="cpu")
    model.load_state_dict(state)
    model.eval()
    ours = BatchedRetinaFace(RetinaFaceWeights(state, "resnet50", "sbi", MIN_SIZES, Path("random"), "random"),
                             longest_side=2048)
    rows = []
    for name, frame in frames:
        expected = model.predict_jsons(frame)
        found = ours.detect_many([frame])[0]
        boxes = np.array([e["bbox"] for e in expected if e["bbox"]]).reshape(-1, 4)
        scores = np.array([e["score"] for e in expected if e["bbox"]])
        row = {"frame": name, "size": f"{frame.shape[1]}x{frame.shape[0]}", "boxes_reference": len(boxes),
               "boxes_hcsi": len(found.boxes)}
        if len(boxes) and len(found.boxes):
            distance = np.abs(boxes[:, None] - found.boxes[None]).max(axis=2)
            nearest = distance.argmin(axis=1)
            row.update(max_box_difference_px=round(float(distance.min(axis=1).max()), 4),
                       max_score_difference=round(float(np.abs(scores - found.scores[nearest]).max()), 6),
                       one_to_one=len(set(nearest.tolist())) == len(boxes))
        rows.append(row)
        print(row, flush=True)
    return {"weights": "random ResNet-50, class-head face logit −1.0", "frames": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip for the sweep and the versions")
    parser.add_argument("--batch", type=int, default=4, help="frames per call in the timing")
    parser.add_argument("--parts", nargs="+", default=["sweep", "timing", "versions", "reference"],
                        choices=["sweep", "timing", "versions", "reference"])
    parser.add_argument("--amp", nargs="*", default=["fp16", "bf16"], choices=["fp16", "bf16"])
    parser.add_argument("--reference-frames", type=int, default=3, help="frames compared with the reference package")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args()
    out_dir = args.out_dir or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    frames = media_frames(args.data, args.frames)
    record = {**provenance("python benchmarks/bench_retinaface.py " + " ".join(sys.argv[1:])),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch_threads": torch.get_num_threads(), "frames_per_clip": args.frames}
    if "sweep" in args.parts:
        record["sweep"] = sweep({"shared": frames, "fixtures": fixture_frames(args.frames)}, out_dir)
    if "timing" in args.parts:
        record["timing"] = timing(device, args.batch, args.amp, frames)
    if "versions" in args.parts:
        record["versions"] = versions(frames, device)
        print(record["versions"], flush=True)
    if "reference" in args.parts:
        wheel = args.data.parent / "reference" / REFERENCE_WHEEL
        picks = [frames[0], frames[args.frames], frames[-4]][:args.reference_frames]  # 1080p, 720p, a photo
        record["reference"] = reference(picks, wheel)
    print("wrote", write_results(f"retinaface-{device_slug(args.device)}", [record], out_dir=out_dir))


if __name__ == "__main__":
    main()
