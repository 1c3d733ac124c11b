"""Training throughput: SBI pairs per second from the data loader with N workers, and whole training steps (real SBI
loading, the stage-2 recipe's augmentations, optimizer, schedule) per second with peak memory.

Usage:
  NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/bench_train.py [--device cpu] [--model hcsi_net_small]
      [--input-size 224] [--pairs 8] [--steps 30] [--workers 0 1 2] [--store DIR] [--out-dir DIR] [--suffix S]
Writes <out-dir>/train-<device>[-S].json (default benchmarks/results).

Without --store, the real clips of ../shared/data are preprocessed into a temporary store first (16 frames each).
The training figure runs `hcsi.train.train` itself (one epoch cut to --steps steps, no validation counted) and reads
its log; the first logging window (warm-up, loader start) is left out. "minutes per epoch" is 360 steps (5,760 FF++
training faces / 16 pairs) at the measured rate, beside the paper's 3.5 min on an A100.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, device_slug, provenance, write_results

from hcsi.data.augment import PostProcessingAugmentation
from hcsi.data.preprocess import PreprocessOptions, preprocess
from hcsi.data.sbi_dataset import SBIDataset, sbi_collate
from hcsi.data.sources import folder_videos
from hcsi.profiling import reset_peak_resident_memory, resident_memory_mb
from hcsi.sbi import SBIConfig
from hcsi.train.config import load_config
from hcsi.train.loop import train

CLIPS = ["liveportrait/d0", "liveportrait/d3", "liveportrait/d6", "liveportrait/d11", "liveportrait/d12",
         "liveportrait/d18", "liveportrait/d19", "liveportrait/d20", "liveportrait/s18", "liveportrait/s32",
         "ghost/dance", "ffpp/519"]
PAPER_MINUTES_PER_EPOCH = 3.5  # A100, Section IV
STEPS_PER_EPOCH_FFPP = 360  # 720 training videos × 8 frames / 16 pairs


def shared_store(workdir: Path) -> Path:
    clips = workdir / "clips"
    clips.mkdir()
    for clip in CLIPS:
        os.symlink(SHARED_DATA / f"{clip}.mp4", clips / f"{clip.replace('/', '_')}.mp4")
    store = workdir / "store"
    workers = max(1, min(len(CLIPS), (os.cpu_count() or 2) - 1))
    preprocess(folder_videos(clips), store, PreprocessOptions(frames=16), workers=workers, progress=False)
    return store


def loader_throughput(store: Path, input_size: int, pairs: int, workers: int, batches: int) -> dict:
    """SBI pairs per second delivered by the training loader (stage-2 augmentation on), after its first batch."""
    dataset = SBIDataset(store, "train", frames_per_video=16, config=SBIConfig(image_size=input_size),
                         pair_augmentation=PostProcessingAugmentation())
    loader = DataLoader(dataset, batch_size=pairs, shuffle=True, num_workers=workers, collate_fn=sbi_collate,
                        drop_last=True)
    done, start = 0, None
    while done < batches:
        for _ in loader:
            if start is None:
                start = time.perf_counter()
                continue
            done += 1
            if done == batches:
                break
    seconds = time.perf_counter() - start
    return {"kind": "loader", "workers": workers, "input_size": input_size, "pairs_per_batch": pairs,
            "pairs_per_s": batches * pairs / seconds}


def training_throughput(store: Path, args: argparse.Namespace, workdir: Path) -> dict:
    overrides = [f"data.store={store}", "data.val_fraction=0.2", "data.frames_per_video=16", "model.init_cnn=null",
                 "model.init_vit=null",
                 f"data.workers={args.train_workers}", f"model.name={args.model}", "model.pretrained=false",
                 f"model.input_size={args.input_size}", "schedule.epochs=1", f"run.max_steps_per_epoch={args.steps}",
                 f"run.batch_pairs={args.pairs}", f"run.device={args.device}", f"run.amp={args.amp}",
                 "run.save_every_steps=100000", "run.max_val_batches=1", f"run.out={workdir / 'run'}",
                 f"run.compile={args.compile}"]
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "hcsi_net.yaml", overrides)
    device = torch.device(config.run.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_resident_memory()
        before = resident_memory_mb("VmRSS")
    train(config, progress_bar=False)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = (resident_memory_mb("VmHWM") or 0) - (before or 0)
    with open(workdir / "run" / "log.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "train"]
    rates = [float(r["images_per_s"]) for r in rows[1:]] or [float(rows[0]["images_per_s"])]
    images_per_s = sum(rates) / len(rates)
    steps_per_s = images_per_s / (2 * args.pairs)
    return {"kind": "train", "model": args.model, "device": args.device, "input_size": args.input_size,
            "pairs_per_step": args.pairs, "amp": args.amp, "compile": args.compile, "loader_workers":
            args.train_workers, "steps": args.steps, "images_per_s": images_per_s, "steps_per_s": steps_per_s,
            "minutes_per_ffpp_epoch": STEPS_PER_EPOCH_FFPP / steps_per_s / 60 * (16 / args.pairs),
            "paper_minutes_per_epoch": PAPER_MINUTES_PER_EPOCH, "peak_memory_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="hcsi_net_small")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--pairs", type=int, default=8, help="real/fake pairs per step (paper: 16)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--amp", default="bf16", choices=["none", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2], help="loader workers to measure")
    parser.add_argument("--loader-batches", type=int, default=20)
    parser.add_argument("--train-workers", type=int, default=2, help="loader workers during the training run")
    parser.add_argument("--store", type=Path, help="a preprocessed store (default: built from ../shared/data)")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--suffix", help="appended to the results file name (e.g. compile, beside the plain run)")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        store = args.store or shared_store(workdir)
        records = [loader_throughput(store, args.input_size, args.pairs, w, args.loader_batches)
                   for w in args.workers]
        for r in records:
            print(f"loader, {r['workers']} workers: {r['pairs_per_s']:.1f} pairs/s", flush=True)
        record = training_throughput(store, args, workdir)
        print(f"train {args.model} on {args.device}: {record['images_per_s']:.1f} img/s, "
              f"{record['steps_per_s']:.3f} steps/s, peak {record['peak_memory_mb']:.0f} MiB", flush=True)
        records.append(record)
    command = "python benchmarks/bench_train.py " + " ".join(sys.argv[1:])
    result = {**provenance(command), "device": device_slug(args.device), "threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "records": records}
    kwargs = {"out_dir": args.out_dir} if args.out_dir else {}
    name = f"train-{device_slug(args.device)}" + (f"-{args.suffix}" if args.suffix else "")
    print("wrote", write_results(name, [result], **kwargs))


if __name__ == "__main__":
    main()
