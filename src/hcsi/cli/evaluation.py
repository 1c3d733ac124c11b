"""`hcsi evaluate`, `hcsi calibrate`, `hcsi robustness`, `hcsi perturb-preview`: a checkpoint on labelled videos."""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from ..faces.detect import default_face_detector
from ..perturbations import LEVELS, PERTURBATIONS
from .options import (
    aggregate_option,
    backend_option,
    benchmark_options,
    checkpoint_option,
    face_detector_option,
    face_input_option,
    fraction,
    image_out_option,
    require_hcsi_checkpoint,
    seed_option,
    target_fpr,
)


def _evaluate(args: argparse.Namespace) -> int:
    from ..evaluate.datasets import test_videos

    require_hcsi_checkpoint(args.checkpoint, "evaluate")  # mistakes answered before torch is imported
    videos = test_videos(args.dataset, args.root, args.compression)
    from ..distributed import resolve_device, setup_distributed, shutdown_distributed
    from ..evaluate.run import EvaluationOptions, evaluate
    from ..models.builder import model_from_checkpoint
    from ..train.checkpoints import git_commit

    model = model_from_checkpoint(args.checkpoint)
    options = EvaluationOptions(frames=args.frames, batch_size=args.batch_size, workers=args.workers,
                                failure_score=None if args.exclude_failures else args.failure_score,
                                detector=args.detector or default_face_detector(resolve_device(args.device)),
                                amp=args.amp, retry_failed=args.retry_failed, aggregate=args.aggregate)
    path = os.path.abspath(args.checkpoint)
    in_run = os.path.basename(os.path.dirname(path)) == "checkpoints"  # runs/<name>/checkpoints/best.safetensors
    run_name = os.path.basename(os.path.dirname(os.path.dirname(path))) if in_run else \
        os.path.splitext(os.path.basename(path))[0]  # e.g. an imported weights/sbi_ffc23.safetensors
    out = args.out or os.path.join("results", f"{args.dataset}-{run_name or 'model'}")
    about = {"dataset": args.dataset, "root": str(args.root), "checkpoint": os.path.abspath(args.checkpoint),
             "model": model.config.name, "label": args.label, "model_config": model.config.__dict__,
             "git_commit": git_commit(), "command": "hcsi " + " ".join(sys.argv[1:])}
    calibration = None
    if args.calibration:
        from ..evaluate.calibration import Calibration
        from ..files import file_sha256

        calibration = Calibration.load(args.calibration, file_sha256(args.checkpoint))
    ctx = setup_distributed(args.device)
    try:
        summary = evaluate(model, videos, out, options=options, ctx=ctx, about=about, calibration=calibration,
                           scorer=_scorer(args, model, ctx.device))
    finally:
        shutdown_distributed(ctx)
    if summary is not None:
        keys = ("dataset", "aggregate", "backends", "n_videos", "n_failed", "auc", "ap", "eer", "acc", "frame_auc",
                "person_auc", "top_person_is_manipulated")
        print(json.dumps({k: summary[k] for k in keys if k in summary} | {"out": out}))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    require_hcsi_checkpoint(args.checkpoint, "calibrate")  # mistakes answered before torch is imported
    targets = [target_fpr(value) for value in args.target_fpr.split(",")]
    if args.from_results and not Path(args.from_results).is_dir():
        raise ValueError(f"--from-results {args.from_results}: no such folder")
    if args.from_jobs and not Path(args.from_jobs).is_dir() and not args.database:
        raise ValueError(f"--from-jobs {args.from_jobs}: no such folder")
    if not (args.from_results or args.from_jobs):
        if not args.dataset or not args.root:
            raise ValueError("calibrate needs --dataset and --root (labelled videos to score), or --from-results DIR")
        from ..evaluate.datasets import test_videos

        videos = test_videos(args.dataset, args.root, args.compression)
    from ..distributed import resolve_device, setup_distributed, shutdown_distributed
    from ..evaluate.calibration import calibration_path_for, fit_calibration, video_list_sha256, video_sha256
    from ..evaluate.run import EvaluationOptions, calibration_settings, evaluate, scoring_settings, video_key
    from ..files import file_sha256, options_to_continue, settings_mismatch
    from ..models.builder import model_from_checkpoint

    model = model_from_checkpoint(args.checkpoint)
    options = EvaluationOptions(frames=args.frames, batch_size=args.batch_size, workers=args.workers,
                                detector=args.detector or default_face_detector(resolve_device(args.device)),
                                amp=args.amp, aggregate=args.aggregate)
    if args.from_jobs:
        return _calibrate_from_jobs(args, model, targets)
    results = args.from_results
    if results:  # reuse an evaluation: only if it scored with this checkpoint and these settings
        settings = Path(results) / "settings.json"
        if not settings.is_file() or not (Path(results) / "videos.csv").is_file():
            raise ValueError(f"--from-results {results}: not a finished `hcsi evaluate` folder (settings.json and "
                             "videos.csv expected)")
        changed = settings_mismatch(settings, scoring_settings(model, options))
        if changed:
            hint = options_to_continue(changed)
            raise ValueError(f"--from-results {results} was scored with another checkpoint or settings "
                             f"({', '.join(changed)} differ{f'; it used {hint}' if hint else ''}); its scores do not "
                             "calibrate this checkpoint")
    else:
        results = args.results_out or os.path.join("results", f"calibrate-{args.dataset}-{Path(args.checkpoint).stem}")
        about = {"dataset": args.dataset, "root": str(args.root), "checkpoint": os.path.abspath(args.checkpoint),
                 "model": model.config.name, "command": "hcsi " + " ".join(sys.argv[1:])}
        ctx = setup_distributed(args.device)
        try:
            evaluate(model, videos, results, options=options, ctx=ctx, about=about,
                     scorer=_scorer(args, model, ctx.device))
        finally:
            shutdown_distributed(ctx)
    with open(Path(results) / "videos.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]  # failed videos carry no model score
    summary = json.loads((Path(results) / "summary.json").read_text())
    if summary.get("aggregate", "paper") != options.aggregate:
        raise ValueError(f"{results} holds video scores made with --aggregate {summary.get('aggregate', 'paper')}, "
                         f"not {options.aggregate}: summarise it again with `hcsi evaluate --aggregate "
                         f"{options.aggregate}` into the same folder (the cached faces are reused)")
    keys = [video_key(r) for r in rows]
    fitted_on = {"dataset": summary.get("dataset"), "root": summary.get("root"), "n_videos": len(rows),
                 "videos_sha256": video_list_sha256(keys), "video_sha256s": sorted(map(video_sha256, keys)),
                 "results": os.path.abspath(results)}
    calibration = fit_calibration([int(r["label"]) for r in rows], [float(r["score"]) for r in rows], args.method,
                                  targets, fitted_on, file_sha256(args.checkpoint),
                                  calibration_settings(model, options))
    out = calibration.save(args.out or calibration_path_for(args.checkpoint))
    shown = calibration.parameters if calibration.method != "isotonic" else {}  # isotonic knots: in the file
    print(json.dumps({"calibration": str(out), "method": calibration.method, **shown,
                      "heldout_nll": calibration.heldout_nll, **({"compared": calibration.selection}
                                                                  if calibration.selection else {}),
                      "n_real": calibration.n_real, "n_fake": calibration.n_fake,
                      "settings": calibration.settings,
                      "operating_points": [vars(p) for p in calibration.operating_points]}))
    return 0


def _calibrate_from_jobs(args: argparse.Namespace, model, targets: list[float]) -> int:
    """Fit a calibration on the jobs of `hcsi serve` that analysts labelled fake or real, made with this checkpoint;
    among them, the largest group with one set of scoring settings (frames, face detector, aggregate) is used."""
    from collections import Counter

    from ..evaluate.calibration import calibration_path_for, fit_calibration, video_sha256
    from ..files import file_sha256
    from ..serve.backends import labelled_jobs

    digest = file_sha256(args.checkpoint)
    jobs = [j for j in labelled_jobs(args.from_jobs, args.database) if j["score"] is not None]
    decided = [j for j in jobs if j["analyst_label"] in ("fake", "real")]
    mine = [j for j in decided if json.loads(j["settings"]).get("checkpoint_sha256") == digest]

    def scoring(job: dict) -> tuple:
        settings = json.loads(job["settings"])
        return settings.get("frames"), settings.get("face_detector"), settings.get("aggregate", "paper")

    groups = Counter(map(scoring, mine))
    if not groups:
        raise ValueError(f"--from-jobs {args.from_jobs}: no job labelled fake or real was made with this checkpoint "
                         f"({len(decided)} labelled fake/real with other checkpoints, "
                         f"{len(jobs) - len(decided)} labelled unsure)")
    (frames, face_detector, aggregate), _ = groups.most_common(1)[0]
    used = [j for j in mine if scoring(j) == (frames, face_detector, aggregate)]
    print(f"calibrating on {len(used)} labelled job(s) at {frames} frames with {face_detector} ({aggregate} video "
          f"scores); not used: "
          f"{len(decided) - len(mine)} made with another checkpoint, {len(mine) - len(used)} with other settings, "
          f"{len(jobs) - len(decided)} labelled unsure", file=sys.stderr)
    settings = {"frames": frames, "face_detector": face_detector, "input_size": model.config.input_size, "amp": False,
                "aggregate": aggregate}
    fitted_on = {"jobs": os.path.abspath(args.from_jobs), "n_videos": len(used),
                 "video_sha256s": sorted(video_sha256(j["sha256"]) for j in used)}
    calibration = fit_calibration([int(j["analyst_label"] == "fake") for j in used], [j["score"] for j in used],
                                  args.method, targets, fitted_on, digest, settings)
    out = calibration.save(args.out or calibration_path_for(args.checkpoint))
    print(json.dumps({"calibration": str(out), "method": calibration.method, "heldout_nll": calibration.heldout_nll,
                      "n_real": calibration.n_real, "n_fake": calibration.n_fake, "settings": settings}))
    return 0


def _robustness(args: argparse.Namespace) -> int:
    from ..evaluate.datasets import test_videos

    require_hcsi_checkpoint(args.checkpoint, "robustness")  # mistakes answered before torch is imported
    videos = test_videos(args.dataset, args.root, args.compression)
    from ..distributed import resolve_device, setup_distributed, shutdown_distributed
    from ..evaluate.robustness import RobustnessOptions, robustness, robustness_table
    from ..models.builder import model_from_checkpoint

    perturbations = args.perturbations.split(",") if args.perturbations != "all" else None
    options = RobustnessOptions(frames=args.frames, batch_size=args.batch_size, workers=args.workers,
                                detector=args.detector or default_face_detector(resolve_device(args.device)),
                                amp=args.amp, seed=args.seed, levels=tuple(args.levels),
                                detect_on=args.detect_on,
                                **({"perturbations": tuple(perturbations)} if perturbations else {}))
    model = model_from_checkpoint(args.checkpoint)
    ctx = setup_distributed(args.device)
    try:
        rows = robustness(model, videos, args.out, options=options, ctx=ctx, scorer=_scorer(args, model, ctx.device))
    finally:
        shutdown_distributed(ctx)
    if rows is not None:
        print(robustness_table(rows))
        print(f"wrote {args.out}/robustness.json, robustness.md, robustness.png", file=sys.stderr)
    return 0


def _scorer(args: argparse.Namespace, model, device):
    """The ONNX Runtime export that scores for `model` with --backend on `device`, or None (PyTorch scores)."""
    from ..detect.backends import onnx_scorer

    return onnx_scorer(model, args.checkpoint, args.backend, device)


def _perturb_preview(args: argparse.Namespace) -> int:
    from ..evaluate.robustness import perturbation_preview

    if not args.out.lower().endswith((".png", ".jpg", ".jpeg")):
        raise ValueError(f"--out {args.out}: expected an image file name ending in .png or .jpg")
    print(f"wrote {perturbation_preview(args.input, args.out, seed=args.seed)}", file=sys.stderr)
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """evaluate, robustness, perturb-preview."""
    ev = commands.add_parser("evaluate", help="video-level AUC of a checkpoint on a benchmark (resumable)",
                             description="N frames per video, every face cropped, max over faces, mean over frames; "
                                         "ROC-AUC over videos. Under torchrun the videos are shared among processes.",
                             parents=[checkpoint_option(required=True), benchmark_options(),
                                      face_detector_option("--detector", dest="detector"), aggregate_option(),
                                      backend_option(onnx_file=False)])
    ev.add_argument("--out", help="output folder (default results/<dataset>-<run>); a rerun resumes")
    ev.add_argument("--failure-score", type=fraction, default=0.5,
                    help="score of a video that is unreadable or has no face (default 0.5, as SBI)")
    ev.add_argument("--exclude-failures", action="store_true",
                    help="leave such videos out of the metrics instead (they are still listed and counted)")
    ev.add_argument("--label", help="name of this model in reports (default: the model's name)")
    ev.add_argument("--calibration", metavar="FILE",
                    help="also report ECE and Brier of this calibration's probabilities (made for this checkpoint)")
    ev.add_argument("--retry-failed", action="store_true",
                    help="on a rerun, score again the videos that failed (status error or unreadable), e.g. after "
                         "replacing a broken file; the others stay cached")
    ev.set_defaults(run=_evaluate)

    cal = commands.add_parser(
        "calibrate", help="fit calibrated probabilities and operating points on labelled videos",
        description="Scores labelled videos through the evaluation pipeline (or reuses an evaluation folder made with "
                    "this checkpoint and settings), fits Platt, temperature or isotonic calibration to the video "
                    "scores, and finds the raw-score threshold of each target false-positive rate. Writes a "
                    "calibration file (default: beside the checkpoint, <checkpoint>.calibration.json) that hcsi "
                    "detect, hcsi serve and hcsi evaluate --calibration apply.",
        parents=[checkpoint_option(required=True), benchmark_options(required=False),
                 face_detector_option("--detector", dest="detector"), aggregate_option(),
                 backend_option(onnx_file=False)])
    cal.add_argument("--method", default="platt", choices=["platt", "temperature", "isotonic", "auto"],
                     help="platt (default: a logistic fit on the score's logit, which can move the scale), "
                          "temperature, isotonic, or auto (the lowest 5-fold cross-validated NLL)")
    cal.add_argument("--target-fpr", default="0.01,0.1",
                     help="comma-separated false-positive rates of the operating points (default 0.01,0.1: the "
                          "lowest is the strict point of the tiers, the highest the lenient one)")
    cal.add_argument("--out", help="calibration file (default <checkpoint>.calibration.json)")
    cal.add_argument("--from-results", metavar="DIR", help="reuse this `hcsi evaluate` folder's scores")
    cal.add_argument("--from-jobs", metavar="DATA_DIR",
                     help="fit on the jobs of hcsi serve (its --data-dir) that analysts labelled fake or real with "
                          "this checkpoint (the largest group with one set of frames and face detector)")
    cal.add_argument("--database", metavar="URL", help="with --from-jobs: the service's PostgreSQL database")
    cal.add_argument("--results-out", metavar="DIR",
                     help="where the scoring run goes (default results/calibrate-<dataset>-<checkpoint name>)")
    cal.set_defaults(run=_calibrate)

    rob = commands.add_parser(
        "robustness", help="video-level AUC under the 7 DeeperForensics perturbations × 5 levels (resumable)",
        description="Each video is decoded once; its sampled frames are perturbed before face detection for every "
                    "(perturbation, level) and scored as by hcsi evaluate. Writes robustness.json, robustness.md "
                    "and robustness.png. Under torchrun the videos are shared among processes.",
        parents=[checkpoint_option(required=True), benchmark_options(), seed_option(),
                 face_detector_option(dest="detector"), backend_option(onnx_file=False)])
    rob.add_argument("--out", required=True, help="output folder (a rerun resumes)")
    rob.add_argument("--perturbations", default="all",
                     help=f"all, or a comma-separated subset of {','.join(PERTURBATIONS)}")
    rob.add_argument("--levels", type=int, nargs="+", default=list(LEVELS), choices=LEVELS)
    rob.add_argument("--detect-on", default="perturbed", choices=["perturbed", "clean"],
                     help="find faces in each perturbed frame (default: the whole pipeline degraded) or once in the "
                          "clean frames, cutting the perturbed ones at those boxes (cheaper: the classifier alone)")
    rob.set_defaults(run=_robustness)

    pp = commands.add_parser("perturb-preview", help="grid of a face under each perturbation and level",
                             parents=[face_input_option(), image_out_option(), seed_option()])
    pp.set_defaults(run=_perturb_preview)
