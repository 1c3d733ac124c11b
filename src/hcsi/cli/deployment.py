"""`hcsi detect`, `hcsi export`: a trained checkpoint put to use (the service: `cli/service.py`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..provenance import read_trust_anchors
from .options import (
    aggregate_option,
    backend_option,
    checkpoint_option,
    decision_option,
    device_option,
    face_detector_option,
    frames_option,
    require_hcsi_checkpoint,
    trust_anchors_option,
)

NO_CHECKPOINT = (
    "hcsi detect needs a trained checkpoint: --checkpoint FILE.safetensors (e.g. "
    "runs/hcsi_net/checkpoints/best.safetensors). Train one with the paper's recipe (README, 'Training': "
    "hcsi train --config configs/stage1_cnn.yaml, stage1_vit.yaml, then hcsi_net.yaml), import SBI's published "
    "EfficientNet-B4 (README, 'A detector in two commands': hcsi import-weights --format sbi FFc23.tar --out "
    "sbi.safetensors) or use one you were given. "
    "An untrained model's scores are noise, so none are shown."
)

DETECT_CSV_FIELDS = ["path", "score", "label", "status", "reason", "frames_used", "faces_found", "heatmap",
                     "calibration", "probability", "verdict", "verdict_meaning", "cannot_judge", "report",
                     "aggregate", "paper_score", "persons", "provenance", "provenance_signer", "ai_generated",
                     "provenance_generator"]  # new columns go last: readers keep their positions
PERSON_CSV_FIELDS = ["path", "person", "person_score", "probability", "verdict", "cannot_judge", "frames_seen",
                     "faces_scored", "time_ranges", "frames", "boxes", "identity", "video_score", "aggregate",
                     "video_verdict", "status", "reason"]


def _write_case_report(result, row: dict, detector, args: argparse.Namespace, commit: str | None, out: Path) -> Path:
    """`hcsi detect --report DIR`: one self-contained HTML case report per input, written atomically."""
    import datetime

    import cv2

    from ..detect.explain import gate_strip, person_images
    from ..detect.report import case_report_html, media_facts, with_person_images
    from ..files import atomic_path

    heatmap = None
    if result.gates:
        ok, png = cv2.imencode(".png", cv2.cvtColor(gate_strip(result), cv2.COLOR_RGB2BGR))
        heatmap = png.tobytes() if ok else None
    settings = {"frames": detector.frames, "face detector": detector.face_detector.name,
                "video score": detector.aggregate}
    about = {"file_name": Path(result.source).name, **media_facts(result.source),
             "analysed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "model": detector.model.config.name, "checkpoint_sha256": detector.checkpoint_sha256,
             "commit": commit, "settings": settings}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(case_report_html(with_person_images(row, person_images(result)), about, heatmap))
    return out


def _codes(reasons: list[dict] | None) -> str:
    return " ".join(r["code"] for r in reasons or [])


def person_rows(row: dict) -> list[dict]:
    """`--per-person` CSV rows of one input: one per person (an input without persons keeps one row, so that it
    is not lost)."""
    video = {"path": row["path"], "video_score": row.get("score"), "aggregate": row.get("aggregate"),
             "video_verdict": row.get("verdict") or row.get("label"), "status": row["status"],
             "reason": row.get("reason")}
    if not row.get("persons"):
        return [video]
    return [{**video, "person": p["id"], "person_score": p["score"], "probability": p["probability"],
             "verdict": p["verdict"], "cannot_judge": _codes(p["cannot_judge"]), "frames_seen": len(p["frames"]),
             "faces_scored": p["faces_scored"], "identity": p["identity"],
             "time_ranges": " ".join(f"{a:.2f}-{b:.2f}" for a, b in p["time_ranges"]),
             "frames": " ".join(map(str, p["frames"])), "boxes": " ".join(",".join(map(str, b)) for b in p["boxes"])}
            for p in row["persons"]]


def _provenance_cells(row: dict) -> dict:
    """The CSV's provenance columns: state, signer (common name, issuer), ai_generated, claim generator."""
    found = row.get("provenance")
    if not found:
        return {"provenance": ""}
    signer = found.get("signer") or {}
    return {"provenance": found["state"], "ai_generated": found["ai_generated"],
            "provenance_signer": ", ".join(v for v in (signer.get("common_name"), signer.get("issuer")) if v),
            "provenance_generator": found.get("claim_generator") or ""}


def _provenance_cell(found: dict | None) -> str:
    """The terminal table's provenance: the state, "+AI" when an action says a model made the media."""
    if not found:
        return "-"
    return found["state"] + ("+AI" if found["ai_generated"] else "")


def _persons_cell(persons: list[dict]) -> str:
    """"2 (top P2 0.931)": how many persons, and the highest-scoring one."""
    scored = [p for p in persons if p["score"] is not None]
    if not scored:
        return str(len(persons)) if persons else "-"
    top = max(scored, key=lambda p: p["score"])
    return f"{len(persons)} (top P{top['id']} {top['score']:.3f})"


def _write_detections(rows: list[dict], out: str, per_person: bool = False) -> None:
    import csv as csv_module

    from ..files import atomic_path

    with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
        if out.lower().endswith(".csv"):
            writer = csv_module.DictWriter(f, PERSON_CSV_FIELDS if per_person else DETECT_CSV_FIELDS,
                                           extrasaction="ignore")
            writer.writeheader()
            if per_person:
                writer.writerows(line for row in rows for line in person_rows(row))
            else:
                writer.writerows({**row, "cannot_judge": _codes(row.get("cannot_judge")),
                                  "persons": len(row.get("persons") or []), **_provenance_cells(row)}
                                 for row in rows)
        else:
            f.writelines(json.dumps(row) + "\n" for row in rows)


def _save_person_images(result, row: dict, folder: Path, stem: str) -> None:
    """`--explain DIR`: each person's thumbnail and gate strip as files beside the input's strip, named in its
    row."""
    from ..detect.explain import person_strip, save_image

    for person, entry in zip(result.persons, row["persons"]):
        if person.thumbnail is not None:
            entry["thumbnail"] = str(save_image(person.thumbnail, folder / f"{stem}-person{person.id}.jpg"))
        strip = person_strip(result, person)
        if strip is not None:
            entry["heatmap"] = str(save_image(strip, folder / f"{stem}-person{person.id}-gates.png"))


def _detect(args: argparse.Namespace) -> int:
    from ..detect.inputs import expand_inputs  # light: every argument is checked before torch is imported

    if args.model and args.backend == "torch":
        raise ValueError("--model FILE.onnx is an ONNX file: it runs on ONNX Runtime, not with --backend torch")
    if args.model:
        if args.explain or args.report:
            raise ValueError("--explain and --report need the checkpoint (the gates come from its PyTorch model, not "
                             "from the ONNX graph's outputs): give --checkpoint instead of --model")
        if (args.strict_fpr or args.lenient_fpr) and not args.calibration:
            raise ValueError("--strict-fpr and --lenient-fpr need --calibration FILE (with --backend onnxruntime the "
                             "calibration is not found beside a checkpoint)")
    elif not args.checkpoint:
        print(NO_CHECKPOINT, file=sys.stderr)
        return 2
    if args.out and not args.out.lower().endswith((".jsonl", ".csv")):
        raise ValueError(f"--out {args.out}: expected a .jsonl (one JSON object per input) or .csv file name")
    if args.per_person and not (args.out or "").lower().endswith(".csv"):
        raise ValueError("--per-person writes one CSV row per person: give --out FILE.csv (the JSONL always holds "
                         "a `persons` list per input)")
    if not args.model:
        require_hcsi_checkpoint(args.checkpoint, "detect")
    trust_anchors = read_trust_anchors(args.trust_anchors) if args.trust_anchors is not None else None
    entries = expand_inputs(args.paths)
    if all(entry.problem for entry in entries):  # nothing to score: said before any model is loaded
        for entry in entries:
            print(f"{entry.path}: {entry.problem}", file=sys.stderr)
        print(f"nothing to score in {len(entries)} input(s)", file=sys.stderr)
        return 1
    from tqdm import tqdm

    from ..detect import Detector
    from ..detect.explain import save_gate_strip

    if args.model:
        detector = Detector.from_onnx(args.model, frames=args.frames, face_detector=args.face_detector,
                                      calibration=args.calibration, strict_fpr=args.strict_fpr,
                                      lenient_fpr=args.lenient_fpr, threshold=args.threshold,
                                      aggregate=args.aggregate, trust_anchors=trust_anchors)
    else:
        detector = Detector.from_checkpoint(args.checkpoint, device=args.device, frames=args.frames,
                                            face_detector=args.face_detector, calibration=args.calibration,
                                            strict_fpr=args.strict_fpr, lenient_fpr=args.lenient_fpr,
                                            threshold=args.threshold, aggregate=args.aggregate,
                                            backend=args.backend, trust_anchors=trust_anchors)
    calibration_name = detector.calibration.source if detector.calibration is not None else "uncalibrated"
    rows = []
    # the readable inputs' crops are pooled into full model batches across files; results come back in order
    explain = bool(args.explain or args.report)  # a case report shows the gate heatmaps
    if args.report:
        from ..train.checkpoints import git_commit

        commit = git_commit()  # named in every report; asked once
    results = detector.score_many([e.path for e in entries if not e.problem], explain=explain)
    for n, entry in enumerate(tqdm(entries, desc="detect", unit="file", dynamic_ncols=True)):
        if entry.problem:
            unreadable = [] if entry.skipped else [{"code": "unreadable", "message": entry.problem}]
            rows.append({"path": entry.path, "score": None, "label": None, "calibration": calibration_name,
                         "probability": None, "verdict": "cannot_judge" if unreadable else None,
                         "verdict_meaning": None, "decided_by": detector.decision.to_dict(),
                         "cannot_judge": unreadable,
                         "status": "skipped" if entry.skipped else "unreadable", "reason": entry.problem,
                         "frames_used": 0, "faces_found": 0})
            continue
        result = next(results)
        row = result.to_dict()
        if args.explain and result.gates:
            strip = Path(args.explain) / f"{n:04d}-{Path(result.source).stem}.png"
            row["heatmap"] = str(save_gate_strip(result, strip))
            _save_person_images(result, row, Path(args.explain), strip.stem)
        if args.report:
            row["report"] = str(_write_case_report(result, row, detector, args, commit, Path(args.report) /
                                                   f"{n:04d}-{Path(result.source).stem}.html"))
        rows.append(row)
        if args.out:  # rewritten after every file: a killed run keeps what it scored
            _write_detections(rows, args.out, args.per_person)
    if args.out:
        _write_detections(rows, args.out, args.per_person)
    width = min(60, max([len(r["path"]) for r in rows] + [4]))
    calibrated = detector.calibration is not None
    print(f"{'file':<{width}}  {'score':>6}  {'prob.':>6}  {'verdict':<12}  {'persons':<14}  {'C2PA':<10}  status"
          if calibrated else
          f"{'file':<{width}}  {'score':>6}  {'label':<5}  {'persons':<14}  {'C2PA':<10}  status  (uncalibrated: raw "
          "scores)")
    for r in rows:
        score = "" if r["score"] is None else f"{r['score']:.3f}"
        status = r["status"] + (f" ({r['reason']})" if r["status"] != "ok" and r["reason"] else "")
        shown = r["path"] if len(r["path"]) <= width else "…" + r["path"][-(width - 1):]
        persons = _persons_cell(r.get("persons") or [])
        c2pa = _provenance_cell(r.get("provenance"))
        if calibrated:
            probability = "" if r.get("probability") is None else f"{r['probability']:.3f}"
            print(f"{shown:<{width}}  {score:>6}  {probability:>6}  {r.get('verdict') or '-':<12}  {persons:<14}  "
                  f"{c2pa:<10}  {status}")
        else:
            print(f"{shown:<{width}}  {score:>6}  {r['label'] or '-':<5}  {persons:<14}  {c2pa:<10}  {status}")
    processed = sum(1 for r in rows if r["status"] in ("ok", "no_face"))
    decision = detector.decision
    if calibrated:
        decided = (f"verdicts in tiers: manipulated at or above the strict operating point FPR "
                   f"{decision.strict.target_fpr:g} (raw score {decision.strict.threshold:.4f}), inconclusive down "
                   f"to the lenient one FPR {decision.lenient.target_fpr:g} ({decision.lenient.threshold:.4f}), "
                   f"no_evidence below; calibration {detector.calibration.source}")
    else:
        decided = f"uncalibrated: labels by the raw-score threshold {decision.threshold:g}, no tiers"
    print(f"{processed} of {len(rows)} input(s) processed; {decided}"
          + (f"; results in {args.out}" if args.out else ""), file=sys.stderr)
    return 0 if processed else 1


def _export(args: argparse.Namespace) -> int:
    import dataclasses

    from ..detect.export import add_onnx_metadata, export_model
    from ..models.builder import model_from_checkpoint

    expected = {"onnx": (".onnx",), "torchscript": (".pt", ".pth")}[args.format]
    if not args.out.lower().endswith(expected):
        raise ValueError(f"--out {args.out}: the {args.format} export is written to a *{' or *'.join(expected)} file")
    require_hcsi_checkpoint(args.checkpoint, "export")
    model = model_from_checkpoint(args.checkpoint)
    path = export_model(model, args.out, args.format)
    if args.format == "onnx":
        from ..files import file_sha256

        add_onnx_metadata(path, json.dumps(dataclasses.asdict(model.config)), file_sha256(args.checkpoint))
    print(f"wrote {path}: input 'images' B×3×{model.config.input_size}×{model.config.input_size} (normalised), "
          "output 'probabilities' B×2 (column 1 = fake)")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """detect, export."""
    detect = commands.add_parser("detect", help="score videos and images with a trained checkpoint",
                                 description="Scores every file (folders recursively, glob patterns) with the "
                                             "evaluation protocol; per-file problems are reported, not fatal.",
                                 parents=[checkpoint_option(required=False), frames_option(), device_option(),
                                          decision_option(), face_detector_option(), aggregate_option(),
                                          backend_option(), trust_anchors_option()])
    detect.add_argument("paths", nargs="+", help="files, folders or glob patterns")
    detect.add_argument("--out", help="results file: .jsonl (one JSON object per input) or .csv")
    detect.add_argument("--explain", metavar="DIR", help="write a gate-heatmap strip (PNG) per input into DIR, and "
                                                         "each person's thumbnail and highest-scoring face's strip")
    detect.add_argument("--per-person", action="store_true",
                        help="with --out FILE.csv: one row per person (its score, verdict, frames, times, boxes)")
    detect.add_argument("--report", metavar="DIR",
                        help="write a case report per input into DIR: one self-contained HTML file (images embedded)")
    detect.add_argument("--model", help="an exported .onnx file to score with (--backend onnxruntime)")
    detect.set_defaults(run=_detect)

    export = commands.add_parser("export", help="export a checkpoint to ONNX or TorchScript (probabilities out)",
                                 parents=[checkpoint_option(required=True)])
    export.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    export.add_argument("--out", required=True, help="output file (.onnx / .pt)")
    export.set_defaults(run=_export)
