"""Tables from evaluation outputs: the cross-dataset table (Table II layout) and the ablation table (Table III)."""
from __future__ import annotations

import json
from pathlib import Path

from .compare import DATASET_TITLES, DATASETS


def read_summary(path: str | Path) -> dict:
    """An evaluation's summary.json, given the file or its output folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected the summary.json of an `hcsi evaluate` output folder")
    summary = json.loads(path.read_text())
    for key in ("dataset", "auc", "model"):
        if key not in summary:
            raise ValueError(f"{path}: not an hcsi evaluation summary (no {key!r})")
    return summary


def collect_aucs(paths) -> dict[str, dict[str, float]]:
    """{model label: {dataset: video-level AUC in percent}} from several summaries. The label is the checkpoint's
    run folder name when there is one, else the model name; a second result for the same model and dataset is an
    error rather than a silent overwrite."""
    table: dict[str, dict[str, float]] = {}
    for path in paths:
        s = read_summary(path)
        label = s.get("label") or s["model"]
        if s["auc"] is None:
            raise ValueError(f"{path}: no AUC (only one class was scored)")
        if s["dataset"] in table.setdefault(label, {}):
            raise ValueError(f"two results for {label} on {s['dataset']} (second: {path})")
        table[label][s["dataset"]] = 100 * s["auc"]
    return table


def cross_dataset_table(table: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per model, AUC (%) per dataset, and mAUC over the six datasets (when all are present)."""
    datasets = [d for d in DATASETS if any(d in row for row in table.values())]
    datasets += sorted({d for row in table.values() for d in row} - set(datasets))
    lines = ["| model | " + " | ".join(DATASET_TITLES.get(d, d) for d in datasets) + " | mAUC |",
             "|---" * (len(datasets) + 2) + "|"]
    for label, row in table.items():
        cells = [f"{row[d]:.2f}" if d in row else "–" for d in datasets]
        complete = all(d in row for d in DATASETS)
        mauc = f"{sum(row[d] for d in DATASETS) / len(DATASETS):.2f}" if complete else "– (needs all six)"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {mauc} |")
    return "\n".join(lines)


def ablation_table(table: dict[str, dict[str, float]], reference: str | None = None) -> str:
    """Markdown, Table III's layout: mean AUC over the datasets every model has, and Δ to the reference model
    (default: the row named hcsi_net, else the first)."""
    common = [d for d in DATASETS if all(d in row for row in table.values())]
    if not common:
        raise ValueError("the models share no evaluated dataset; an ablation table needs common datasets")
    means = {label: sum(row[d] for d in common) / len(common) for label, row in table.items()}
    reference = reference or ("hcsi_net" if "hcsi_net" in means else next(iter(means)))
    lines = [f"Mean AUC (%) over {', '.join(DATASET_TITLES[d] for d in common)}; Δ relative to {reference}.", "",
             "| setting | AUC | Δ |", "|---|---|---|"]
    for label, mean in means.items():
        delta = "–" if label == reference else f"{mean - means[reference]:+.2f}"
        lines.append(f"| {label} | {mean:.2f} | {delta} |")
    return "\n".join(lines)


def coverage_table(paths) -> str:
    """Markdown: per result, how many videos were scored, how many failed (by status) and how many sampled frames
    had no face — where two face detectors differ, it shows here before it shows in the AUC."""
    lines = ["| model | dataset | AUC (95 % interval) | videos | failed | failed by status | frames without face |",
             "|---" * 7 + "|"]
    for path in paths:
        s = read_summary(path)
        by_status = ", ".join(f"{status} {n}" for status, n in sorted(s.get("failed_by_status", {}).items())) or "–"
        lines.append(f"| {s.get('label') or s['model']} | {DATASET_TITLES.get(s['dataset'], s['dataset'])} | "
                     f"{auc_with_interval(s)} | {s.get('n_videos', '?')} | {s.get('n_failed', '?')} | {by_status} | "
                     f"{s.get('frames_without_face', '?')} |")
    return "\n".join(lines)


def auc_with_interval(summary: dict) -> str:
    """"90.45 [88.10, 92.60]" (percent; the bootstrap interval of `hcsi evaluate`), or the AUC alone for summaries
    written before intervals were computed."""
    if summary.get("auc") is None:
        return "–"
    interval = summary.get("auc_ci95")
    text = f"{100 * summary['auc']:.2f}"
    return text + (f" [{100 * interval[0]:.2f}, {100 * interval[1]:.2f}]" if interval else " (no interval)")


def interval_widths(paths) -> dict[str, float | None]:
    """{dataset: width of the AUC's 95 % interval in points} of evaluation summaries."""
    widths = {}
    for path in paths:
        s = read_summary(path)
        interval = s.get("auc_ci95")
        widths[s["dataset"]] = None if not interval else 100 * (interval[1] - interval[0])
    return widths
