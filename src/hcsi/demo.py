"""`hcsi demo` (`make demo`): the whole pipeline on built-in data, on a CPU, in minutes.

1. data: public-domain portraits that installed packages carry (skimage's astronaut, matplotlib's Grace Hopper) made
   into short clips with camera-like motion and lighting changes (or `--data DIR`, a folder of real videos);
2. faces: `hcsi preprocess` on the clips;  3. SBI: a preview grid;  4. train: configs/tiny.yaml (hcsi_net_small);
5. evaluate: video-level scores and AUC on the held-out identity's real clips against SBI fakes of them (with --data
   and a manifest.csv: also `hcsi evaluate` on the manifest's real and fake videos, reported separately);
6. report: report.html and report.md with the profile, SBI grid, training curve, ROC curve, per-video scores, gate
   heatmaps of a real and a fake face, and the command behind every piece.
Every step is a command of its own; the demo strings them together. Deterministic under --seed (on one machine).
"""
from __future__ import annotations

import argparse
import csv
import html
import json
import os
import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

# torch and the training and evaluation stack are imported where they are used: `hcsi` imports this module for
# the demo's options (add_demo_arguments) on every start, which must stay quick
from .data.sources import SourceVideo, folder_videos
from .files import atomic_path, save_figure, write_json_atomic

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
FULL_RECIPE = """hcsi preprocess --dataset ff++ --root FaceForensics++ --out data/ffpp_real_faces \\
    --frames 32 --workers 8
hcsi train --config configs/stage1_cnn.yaml
hcsi train --config configs/stage1_vit.yaml
hcsi train --config configs/hcsi_net.yaml
for d in ff++ cdf dfd dfdc dfdcp ffiw; do
  hcsi evaluate --checkpoint runs/hcsi_net/checkpoints/best.safetensors \\
      --dataset $d --root DATA/$d --out results/$d
done
hcsi report results/*
hcsi compare results/* --plot results/fig4"""


def builtin_portraits() -> dict[str, np.ndarray]:
    """Public-domain portraits shipped inside installed packages, as RGB uint8."""
    import matplotlib
    from skimage import data

    hopper = cv2.imread(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
    return {"astronaut": data.astronaut(), "hopper": cv2.cvtColor(hopper, cv2.COLOR_BGR2RGB)}


def write_clip(photo: np.ndarray, path: Path, frames: int, rng: np.random.Generator, size: int = 320) -> None:
    """A clip of `photo` with a slow random zoom, pan and roll and a brightness / colour drift, as a handheld
    camera in changing light would give."""
    h, w = photo.shape[:2]
    phases = rng.uniform(0, 2 * np.pi, 5)
    amplitude = rng.uniform(0.5, 1.0, 5)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        stream.bit_rate = 4_000_000
        for t in range(frames):
            s = np.sin(2 * np.pi * t / max(frames, 1) + phases)
            scale = size / min(h, w) * (1.0 + 0.08 * amplitude[0] * s[0])
            angle = 4.0 * amplitude[1] * s[1]
            centre = (w / 2 + 0.04 * w * amplitude[2] * s[2], h / 2 + 0.04 * h * amplitude[3] * s[3])
            matrix = cv2.getRotationMatrix2D(centre, angle, scale)
            matrix[:, 2] += (size / 2 - centre[0], size / 2 - centre[1])
            frame = cv2.warpAffine(photo, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            gain = 1.0 + 0.2 * amplitude[4] * s[4]
            tint = np.array([1.0, 1.0 + 0.03 * s[0], 1.0 - 0.03 * s[0]])
            frame = np.clip(frame * gain * tint, 0, 255).astype(np.uint8)
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = t
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_builtin_clips(folder: Path, clips_per_identity: int, frames: int, seed: int) -> dict[str, list[Path]]:
    rng = np.random.default_rng(seed)
    clips: dict[str, list[Path]] = {}
    for name, photo in builtin_portraits().items():
        for k in range(clips_per_identity):
            path = folder / f"{name}_{k}.mp4"
            if not path.exists():
                write_clip(photo, path, frames, rng)
            clips.setdefault(name, []).append(path)
    return clips


def video_level_sbi_scores(model, store: Path, config, held_out: set[str]) -> list[dict]:
    """For each held-out video: the mean over its frames of p(fake) for its real faces, and for SBI fakes made
    from them (the validation synthesis: fixed seed, test-time crop) — the video protocol's aggregation."""
    import torch

    from .data.sbi_dataset import SBIDataset, VALIDATION_SEED

    dataset = SBIDataset(store, None, frames_per_video=None, train=False, config=config.sbi_config(
        model.config.input_size), seed=VALIDATION_SEED, mean=model.config.mean, std=model.config.std)
    per_video: dict[str, dict[str, list[float]]] = {}
    model.eval()
    with torch.no_grad():
        for i, face in enumerate(dataset.faces):
            if face.video_id not in held_out:
                continue
            real, fake = dataset[i]
            p = model(torch.stack([real, fake])).softmax(dim=1)[:, 1].tolist()
            entry = per_video.setdefault(face.video_id, {"real": [], "fake": []})
            entry["real"].append(p[0])
            entry["fake"].append(p[1])
    rows = []
    for video_id, scores in sorted(per_video.items()):
        rows.append({"video": video_id, "kind": "real clip", "label": 0, "score": float(np.mean(scores["real"]))})
        rows.append({"video": video_id, "kind": "SBI fake of the clip", "label": 1,
                     "score": float(np.mean(scores["fake"]))})
    return rows


def plot_curves(log_csv: Path, rows: list[dict], out: Path) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    with open(log_csv, newline="") as f:
        log = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    train_rows = [r for r in log if r["kind"] == "train"]
    ax.plot([int(r["step"]) for r in train_rows], [float(r["loss"]) for r in train_rows], label="training loss")
    val_rows = [r for r in log if r["kind"] == "val"]
    ax.plot([int(r["step"]) for r in val_rows], [float(r["val_auc"]) for r in val_rows], "o-",
            label="SBI validation AUC")
    ax.set_xlabel("step")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    [curve] = save_figure(fig, out / "training_curve.png", suffixes=(".png",), dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    fpr, tpr, _ = roc_curve([r["label"] for r in rows], [r["score"] for r in rows])
    ax.plot(fpr, tpr, lw=2)
    ax.plot([0, 1], [0, 1], "--", color="0.6")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title("held-out videos")
    fig.tight_layout()
    [roc] = save_figure(fig, out / "roc.png", suffixes=(".png",), dpi=120)
    plt.close(fig)
    return curve, roc


def gate_heatmaps(model, store: Path, config, video_id: str, out: Path) -> tuple[Path, Path]:
    """Gate strips of a held-out real face and of the SBI fake made from it."""
    from .data.sbi_dataset import SBIDataset, VALIDATION_SEED, read_crop
    from .detect import Detector
    from .detect.explain import save_gate_strip

    dataset = SBIDataset(store, None, frames_per_video=None, train=False,
                         config=config.sbi_config(model.config.input_size), seed=VALIDATION_SEED)
    index = next(i for i, f in enumerate(dataset.faces) if f.video_id == video_id)
    face = dataset.faces[index]
    rng = np.random.default_rng([VALIDATION_SEED, 0, index])
    sample = dataset.generator(read_crop(face.crop), face.landmarks, face.box, rng, train=False)
    detector = Detector(model, device="cpu")
    paths = []
    for name, image in (("real", sample.real), ("fake", sample.fake)):
        result = detector.score_face_crop(image, name, explain=True)
        paths.append(save_gate_strip(result, out / f"gates_{name}.png"))
    return paths[0], paths[1]


def write_report(out: Path, sections: list[tuple[str, str]], images: dict[str, Path]) -> tuple[Path, Path]:
    """report.md and report.html from (title, markdown-ish text) sections; images are embedded by relative path."""
    md = ["# hcsi demo report", ""]
    body = ["<h1>hcsi demo report</h1>"]
    for title, text in sections:
        md += [f"## {title}", "", text, ""]
        body.append(f"<h2>{html.escape(title)}</h2><pre>{html.escape(text)}</pre>")
        if title in images:
            rel = images[title].name
            md += [f"![{title}]({rel})", ""]
            body.append(f'<img src="{html.escape(rel)}" alt="{html.escape(title)}" style="max-width:100%">')
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>hcsi demo</title><style>body{font-family:"
            "system-ui,sans-serif;max-width:1000px;margin:2em auto}pre{background:#f6f6f6;padding:.8em;"
            "white-space:pre-wrap;overflow-wrap:anywhere}</style></head><body>" + "".join(body) + "</body></html>")
    md_path, html_path = out / "report.md", out / "report.html"
    for path, text in ((md_path, "\n".join(md)), (html_path, page)):
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text)
    return md_path, html_path


DEMO_MARKER = ".hcsi-demo"  # marks a folder a demo made
DEMO_WORK = ("clips", "store", "run", "manifest_eval", "manifest_eval.csv")  # what a demo rebuilds each run


def prepare_demo_folder(out: Path) -> None:
    """A demo owns its output folder and starts over there on every run (it takes minutes), so runs with other
    options (--quick, --seed, --data) never mix their stores or training runs. A non-empty folder that no demo
    made is refused rather than touched."""
    made_by_demo = (out / DEMO_MARKER).is_file() or (out / "demo_summary.json").is_file()  # the latter: older demos
    if out.is_dir() and any(out.iterdir()) and not made_by_demo:
        raise ValueError(f"{out} is not empty and was not made by `hcsi demo`; choose another --out")
    for name in DEMO_WORK:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("made by `hcsi demo`; a rerun starts over here\n")


def demo_videos(clips_dir: Path, data: Path | None, seed: int, quick: bool) -> tuple[list[SourceVideo], set[str], str]:
    """The demo's videos (built-in clips written into `clips_dir`, or the real files of `data`), the ids of those
    held out of training, and a sentence saying what they are."""
    if data is None:
        clips = make_builtin_clips(clips_dir, clips_per_identity=2 if quick else 4, frames=12 if quick else 32,
                                   seed=seed)
        held_out = {p.relative_to(clips_dir).with_suffix("").as_posix() for p in clips["hopper"]}
        return folder_videos(clips_dir), held_out, (
            "Built-in public-domain portraits made into clips (zoom, pan, roll, light drift): "
            + ", ".join(f"{k}: {len(v)} clips" for k, v in clips.items())
            + ". Training uses the astronaut; Grace Hopper is the held-out identity.")
    sources = [s for s in folder_videos(data) if _is_real(data, s)]
    held_out = set(sorted(s.video_id for s in sources)[::4])
    return sources, held_out, f"{len(sources)} real files from {data}; held out: {', '.join(sorted(held_out))}"


def run_demo(out: str | Path, data: str | Path | None = None, seed: int = 0, quick: bool = False) -> dict:
    from .evaluate.metrics import detection_metrics
    from .models.builder import model_from_checkpoint
    from .profiling import format_profile, profile_model
    from .sbi.preview import preview_grid
    from .train.config import load_config
    from .train.loop import train

    out, data = Path(out), Path(data) if data else None
    prepare_demo_folder(out)
    started = time.time()
    sections: list[tuple[str, str]] = []
    images: dict[str, Path] = {}

    def step(title: str) -> None:
        print(f"\n== {title} ({time.time() - started:.0f} s) ==", flush=True)

    step("1. data")
    clips_dir = out / "clips"
    clips_dir.mkdir(exist_ok=True)
    sources, held_out, data_text = demo_videos(clips_dir, data, seed, quick)
    print(data_text)
    sections.append(("Data", data_text))

    step("2. faces")
    store = out / "store"
    held_split = [SourceVideo(s.path, s.video_id, "val" if s.video_id in held_out else "train") for s in sources]
    from .data.preprocess import PreprocessOptions, preprocess  # not at import: `hcsi` starts without it

    summary = preprocess(held_split, store, PreprocessOptions(frames=8 if quick else 16), workers=2, progress=True)
    sections.append(("Faces", "hcsi preprocess (frames sampled; faces from HOG and BlazeFace on every frame; dlib "
                              f"landmarks; context crops)\n{json.dumps(summary)}"))

    step("3. SBI preview")
    # 6 epochs of the astronaut's 64 faces (48 steps): tiny.yaml's warm-up of 30 steps is meant for its 180, so the
    # demo warms up over its first epoch
    schedule = ["schedule.warmup_steps=8"] + (["schedule.epochs=2", "run.max_steps_per_epoch=6"] if quick
                                              else ["schedule.epochs=6"])
    config = load_config(CONFIG, [f"data.store={store}", f"run.out={out / 'run'}", f"run.seed={seed}",
                                  "data.val_fraction=0.0", *schedule]
                         + (["data.val_frames_per_video=4"] if quick else []))
    first = next(iter(sorted(store.glob("videos/**/meta.json"))))
    meta = json.loads(first.read_text())
    grid = preview_grid(meta["source"], n=4, seed=seed, config=config.sbi_config(128))
    grid_path = out / "sbi_preview.png"
    cv2.imwrite(str(grid_path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    sections.append(("SBI preview", f"hcsi sbi-preview --input {meta['source']} --n 4 --out sbi_preview.png "
                                    "(each triplet: real | blend mask | fake; the tiny config's exaggerated "
                                    "artifacts, see configs/tiny.yaml)"))
    images["SBI preview"] = grid_path

    step("4. train (configs/tiny.yaml)")
    result = train(config)
    sections.append(("Training", f"hcsi train --config configs/tiny.yaml data.store={store} run.out={out / 'run'} "
                                 f"{' '.join(schedule)}\nlast SBI validation: {json.dumps(result['last_val'])}"))

    step("5. evaluate")
    model = model_from_checkpoint(out / "run" / "final.safetensors")
    curve_rows = video_level_sbi_scores(model, store, config, held_out)
    metrics = detection_metrics([r["label"] for r in curve_rows], [r["score"] for r in curve_rows])
    table = "\n".join(f"{r['video']:<28} {r['kind']:<22} score {r['score']:.3f}" for r in curve_rows)
    eval_text = (f"held-out videos: real clips vs SBI fakes of them (validation synthesis), video score = mean over "
                 f"frames.\nAUC {metrics['auc']:.3f}  AP {metrics['ap']:.3f}  EER {metrics['eer']:.3f}  "
                 f"acc@0.5 {metrics['acc']:.3f}\n(AUC measures the ranking of fakes above reals; accuracy at the "
                 "fixed raw threshold 0.5 also needs the scores on the right side of 0.5, which an uncalibrated "
                 "score need not be: the two can disagree, e.g. AUC 1.0 with accuracy 0.5 when every score sits on "
                 f"one side. `hcsi calibrate` fixes the scale.)\n\n{table}")
    print(eval_text)
    sections.append(("Evaluation on held-out identities", eval_text))
    manifest_summary = None
    if data is not None and (data / "manifest.csv").is_file():
        manifest_summary = _evaluate_manifest(data, out, quick)
        sections.append(("Evaluation on the manifest's real and fake videos", json.dumps(manifest_summary, indent=1)
                         + "\n(real deepfakes: a model trained for minutes on a few clips is not expected to "
                           "detect them; reported as measured)"))

    step("6. report")
    curve, roc = plot_curves(out / "run" / "log.csv", curve_rows, out)
    images["Training"], images["Evaluation on held-out identities"] = curve, roc
    real_gates, fake_gates = gate_heatmaps(model, store, config, video_id=sorted(held_out)[0], out=out)
    sections.append(("Gate heatmaps: a real face", "columns: crop | CNN gates of stages 1-5 | transformer gates of "
                                                   "stages 1-5 | Grad-CAM of the CNN stream"))
    sections.append(("Gate heatmaps: its SBI fake", "same layout"))
    images["Gate heatmaps: a real face"], images["Gate heatmaps: its SBI fake"] = real_gates, fake_gates
    profile = profile_model("hcsi_net_small", input_size=model.config.input_size, warmup=1, iters=3)
    sections.insert(0, ("Model cost", f"hcsi profile --model hcsi_net_small --input-size "
                                      f"{model.config.input_size}\n{format_profile(profile)}"))
    sections.append(("Reproduce", f"hcsi demo --out {out} --seed {seed}{' --quick' if quick else ''}"
                                  f"{' --data ' + str(data) if data else ''}\n\nThe full recipe on FaceForensics++:\n"
                                  f"{FULL_RECIPE}"))
    md, page = write_report(out, sections, images)
    summary = {"report": str(page), "markdown": str(md), "held_out_metrics": metrics,
               "manifest_evaluation": manifest_summary, "seconds": round(time.time() - started, 1)}
    write_json_atomic(out / "demo_summary.json", summary, indent=1)
    print(f"\nreport: {page} ({summary['seconds']} s)")
    return summary


def _is_real(root: Path, source: SourceVideo) -> bool:
    """With a manifest.csv (like ../shared/data), only files labelled real train; without one, every file."""
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        return True
    with open(manifest, newline="") as f:
        labels = {Path(r["file"]).with_suffix("").as_posix(): r["label"] for r in csv.DictReader(f)}
    return labels.get(source.video_id) == "real" and source.path.suffix.lower() == ".mp4"


def _evaluate_manifest(data: Path, out: Path, quick: bool) -> dict:
    """`hcsi evaluate`'s protocol on every real and fake file of the manifest (a path,label CSV written for it)."""
    from .evaluate.datasets import test_videos
    from .evaluate.run import EvaluationOptions, evaluate
    from .models.builder import model_from_checkpoint

    with open(data / "manifest.csv", newline="") as f:
        entries = [(data / r["file"], 1 if r["label"] == "fake" else 0) for r in csv.DictReader(f)]
    manifest = out / "manifest_eval.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(entries)
    checkpoint = out / "run" / "final.safetensors"
    model = model_from_checkpoint(checkpoint)
    options = EvaluationOptions(frames=4 if quick else 16, workers=0)
    about = {"dataset": "folder", "root": str(manifest), "checkpoint": str(checkpoint), "model": model.config.name,
             "command": f"hcsi evaluate --checkpoint {checkpoint} --dataset folder --root {manifest} --frames "
                        f"{options.frames} --workers 0 --device cpu --out {out / 'manifest_eval'}"}
    summary = evaluate(model, test_videos("folder", manifest), out / "manifest_eval", options, about=about)
    return {k: summary[k] for k in ("auc", "ap", "eer", "acc", "frame_auc", "n_videos", "n_failed")}


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The demo's options, defined once for `hcsi demo` and `python -m hcsi.demo` (what `make demo` runs)."""
    parser.add_argument("--out", default="outputs/demo",
                        help="output folder, started over on every run (default outputs/demo)")
    parser.add_argument("--data", help="a folder of real videos instead of the built-in clips")
    parser.add_argument("--seed", type=int, default=0, help="seed of the randomness (default 0)")
    parser.add_argument("--quick", action="store_true", help="a reduced run: fewer frames, 2 short epochs")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m hcsi.demo` (`make demo`): `hcsi demo` without the rest of the command line."""
    parser = add_demo_arguments(argparse.ArgumentParser(prog="hcsi demo", description=__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    try:
        run_demo(args.out, args.data, args.seed, args.quick)
    except (ValueError, RuntimeError, OSError) as error:
        print(f"hcsi demo: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
