"""The `hcsi` command line. Thin: it parses arguments, calls the library and prints."""
from __future__ import annotations

import argparse
import json
import sys

from .models import list_models


def _profile(args: argparse.Namespace) -> int:
    from .profiling import format_profile, profile_model

    report = profile_model(
        args.model, args.input_size, args.batch, args.device, args.dtype, args.warmup, args.iters, args.compile
    )
    print(json.dumps(report) if args.json else format_profile(report))
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from .data.preprocess import PreprocessOptions, preprocess
    from .data.sources import ffpp_real_videos, folder_videos

    if args.dataset == "ff++":
        sources = ffpp_real_videos(args.root, args.compression)
    else:
        sources = folder_videos(args.root)
    summary = preprocess(sources, args.out, PreprocessOptions(args.frames, args.detector), args.workers)
    print(json.dumps(summary))
    if summary["failed"]:
        print(f"{summary['failed']} file(s) could not be read; reasons in {args.out}/failures.json "
              "(they are retried by the next run)", file=sys.stderr)
    return 0


def _sbi_preview(args: argparse.Namespace) -> int:
    import cv2

    from .files import atomic_path
    from .sbi import SBIConfig
    from .sbi.preview import preview_grid

    grid = preview_grid(args.input, args.n, args.seed, SBIConfig(image_size=args.image_size))
    out = args.out
    with atomic_path(out) as tmp:
        if not cv2.imwrite(tmp, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {out} (is its suffix an image format such as .png?)")
    print(f"wrote {out}: {args.n} triplets, each real | blend mask | fake")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .train.loop import train

    summary = train(args.config, args.overrides)
    if summary["status"] == "interrupted":
        print(f"interrupted at step {summary['global_step']}: resume state in {summary['run_dir']}/resume; "
              "rerun the same command to continue", file=sys.stderr)
        return 130
    print(json.dumps({k: summary[k] for k in ("status", "run_dir", "epochs_done", "global_step", "last_val",
                                               "best_checkpoint")}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hcsi", description="HCSI-Net face-deepfake detection toolkit")
    commands = parser.add_subparsers(dest="command", required=True)

    profile = commands.add_parser("profile", help="parameters, MACs, latency and peak memory of a model variant")
    profile.add_argument("--model", default="hcsi_net", choices=list_models())
    profile.add_argument("--input-size", type=int, default=224, help="face-crop side in pixels (default 224)")
    profile.add_argument("--batch", type=int, default=1)
    profile.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    profile.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                         help="bf16/fp16 run under autocast")
    profile.add_argument("--warmup", type=int, default=3, help="untimed passes before timing")
    profile.add_argument("--iters", type=int, default=10, help="timed passes (the median is reported)")
    profile.add_argument("--compile", action="store_true", help="time torch.compile(model)")
    profile.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    profile.set_defaults(run=_profile)

    prep = commands.add_parser("preprocess", help="sample frames, detect faces, store context crops (resumable)")
    prep.add_argument("--dataset", required=True, choices=["ff++", "folder"],
                      help="ff++: real videos of the official splits; folder: every video/image under --root")
    prep.add_argument("--root", required=True, help="dataset root")
    prep.add_argument("--out", required=True, help="output folder (a rerun skips finished videos)")
    prep.add_argument("--frames", type=int, default=32, help="evenly spaced frames per video (default 32)")
    prep.add_argument("--workers", type=int, default=1, help="videos processed in parallel")
    prep.add_argument("--compression", default="raw", choices=["raw", "c23", "c40"], help="FF++ quality folder")
    prep.add_argument("--detector", default="dlib", help="face detector backend")
    prep.set_defaults(run=_preprocess)

    preview = commands.add_parser("sbi-preview", help="grid of real | mask | fake triplets made from a face")
    preview.add_argument("--input", required=True, help="image or video with a face")
    preview.add_argument("--n", type=int, default=16, help="number of triplets")
    preview.add_argument("--out", required=True, help="output image (.png)")
    preview.add_argument("--seed", type=int, default=0)
    preview.add_argument("--image-size", type=int, default=224, help="side of each tile (paper: 224, SBI: 380)")
    preview.set_defaults(run=_sbi_preview)

    train = commands.add_parser("train", help="train a model on SBI (stage 1 or 2 of the recipe); resumable",
                                description="Rerunning the same command continues from the last resume state. "
                                            "Under `torchrun --nproc_per_node N` the same command trains with DDP.")
    train.add_argument("--config", required=True, help="YAML training config, e.g. configs/hcsi_net.yaml")
    train.add_argument("overrides", nargs="*", metavar="section.key=value",
                       help="settings replaced after reading the config, e.g. data.store=DIR optim.lr=1e-4")
    train.set_defaults(run=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, RuntimeError, KeyError, OSError) as error:
        print(f"hcsi {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
