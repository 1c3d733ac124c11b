"""`hcsi preprocess`, `hcsi sbi-preview`, `hcsi train`: from real videos to a trained checkpoint."""
from __future__ import annotations

import argparse
import json
import sys

from ..faces.detect import DEFAULT_FACE_DETECTOR, retinaface_detectors
from .options import (
    at_least,
    compression_option,
    face_detector_option,
    face_input_option,
    frames_option,
    image_out_option,
    seed_option,
)


def _preprocess(args: argparse.Namespace) -> int:
    from ..data.preprocess import PreprocessOptions, preprocess
    from ..data.sources import ffpp_real_videos, folder_videos

    if args.dataset == "ff++":
        sources = ffpp_real_videos(args.root, args.compression)
    else:
        sources = folder_videos(args.root)
    boxes = None if args.retinaface_boxes == "none" else args.retinaface_boxes
    summary = preprocess(sources, args.out,
                         PreprocessOptions(args.frames, args.detector or DEFAULT_FACE_DETECTOR, boxes), args.workers)
    print(json.dumps(summary))
    if summary["failed"]:
        print(f"{summary['failed']} file(s) could not be read; reasons in {args.out}/failures.json "
              "(they are retried by the next run)", file=sys.stderr)
    return 0


def _sbi_preview(args: argparse.Namespace) -> int:
    import cv2

    from ..files import atomic_path
    from ..sbi import SBIConfig
    from ..sbi.preview import preview_grid

    out = args.out
    if not out.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".bmp")):
        raise ValueError(f"--out {out}: expected an image file name ending in .png or .jpg (e.g. grid.png)")
    grid = preview_grid(args.input, args.n, args.seed, SBIConfig(image_size=args.image_size))
    with atomic_path(out) as tmp:
        if not cv2.imwrite(tmp, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {out} (is its suffix an image format such as .png?)")
    print(f"wrote {out}: {args.n} triplets, each real | blend mask | fake")
    return 0


def _train(args: argparse.Namespace) -> int:
    from ..train.loop import train

    summary = train(args.config, args.overrides, new_run=args.new_run)
    if summary["status"] == "interrupted":
        print(f"interrupted at step {summary['global_step']}: resume state in {summary['run_dir']}/resume; "
              "rerun the same command to continue", file=sys.stderr)
        return 130
    print(json.dumps({k: summary[k] for k in ("status", "run_dir", "epochs_done", "global_step", "last_val",
                                               "best_checkpoint")}))
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """preprocess, sbi-preview, train."""
    prep = commands.add_parser("preprocess", help="sample frames, detect faces, store context crops (resumable)",
                               parents=[frames_option(), compression_option(),
                                        face_detector_option("--detector", dest="detector")])
    prep.add_argument("--dataset", required=True, choices=["ff++", "folder"],
                      help="ff++: real videos of the official splits; folder: every video/image under --root")
    prep.add_argument("--root", required=True, help="dataset root")
    prep.add_argument("--out", required=True, help="output folder (a rerun skips finished videos)")
    prep.add_argument("--workers", type=at_least(1), default=1, help="videos processed in parallel")
    prep.add_argument("--retinaface-boxes", default="auto",
                      choices=["auto", *retinaface_detectors(), "none"],
                      help="RetinaFace finder whose box is stored beside each face, as SBI's crop_retina_ff.py does; "
                           "training crops by it (data.crop_box). auto: sbi-retinaface when its weights are installed "
                           "(hcsi fetch-models --retinaface FILE), else the shipped retinaface; none: no boxes")
    prep.set_defaults(run=_preprocess)

    preview = commands.add_parser("sbi-preview", help="grid of real | mask | fake triplets made from a face",
                                  parents=[face_input_option(), image_out_option(), seed_option()])
    preview.add_argument("--n", type=at_least(1), default=16, help="number of triplets")
    preview.add_argument("--image-size", type=at_least(32), default=224,
                         help="side of each tile (paper: 224, SBI: 380)")
    preview.set_defaults(run=_sbi_preview)

    train = commands.add_parser("train", help="train a model on SBI (stage 1 or 2 of the recipe); resumable",
                                description="Rerunning the same command continues from the last resume state. "
                                            "Under `torchrun --nproc_per_node N` the same command trains with DDP.")
    train.add_argument("--config", required=True, help="YAML training config, e.g. configs/hcsi_net.yaml")
    train.add_argument("overrides", nargs="*", metavar="section.key=value",
                       help="settings replaced after reading the config, e.g. data.store=DIR optim.lr=1e-4")
    train.add_argument("--new-run", action="store_true",
                       help="if run.out already holds a run, train into the next free <run.out>-2, -3, ... instead "
                            "(a rerun without it resumes, and refuses other settings)")
    train.set_defaults(run=_train)
