"""Figures of evaluation outputs: ROC curves (one dataset, or all of a report in one plot) and the failure-case
gallery (the most confident false positives and false negatives with the face crop that decided each video)."""
from __future__ import annotations

import csv
import json
from pathlib import Path


from ..files import save_figure
from .compare import DATASET_TITLES


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scored_videos(out_dir: str | Path) -> list[dict]:
    """Rows of an evaluation's videos.csv that entered the metrics (score present), with label and score as numbers."""
    path = Path(out_dir) / "videos.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected an `hcsi evaluate` output folder")
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["score"] != ""]
    for r in rows:
        r["label"], r["score"] = int(r["label"]), float(r["score"])
    return rows


def roc_plot(curves: dict[str, tuple[list[int], list[float]]], out: str | Path, title: str = "") -> list[Path]:
    """ROC curves {name: (labels, scores)} in one figure, with each curve's AUC in the legend; PNG and SVG."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (labels, scores) in curves.items():
        if len(set(labels)) < 2:
            continue  # a curve needs both classes
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUC {100 * roc_auc_score(labels, scores):.2f})")
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (real videos called fake)",
           ylabel="true positive rate (fake videos found)", title=title or "video-level ROC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    written = save_figure(fig, out)
    plt.close(fig)
    return written


def reliability_diagram(labels, scores, out: str | Path, calibration=None, dataset: str = "",
                        bins: int = 15) -> list[Path]:
    """Fraction of fake videos against the mean score in `bins` equal-width bins (the diagonal is perfect
    calibration), for the raw scores and, with a calibration, its probabilities; videos per bin below. PNG and SVG."""
    import numpy as np

    from .metrics import expected_calibration_error

    plt = _pyplot()
    labels = np.asarray(labels, dtype=float)
    curves = {"raw score": np.asarray(scores, dtype=float)}
    if calibration is not None:
        curves[f"calibrated ({calibration.method})"] = calibration.probability(scores)
    fig, (ax, counts) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="perfectly calibrated")
    edges = np.linspace(0, 1, bins + 1)
    for n, (name, p) in enumerate(curves.items()):
        which = np.minimum((p * bins).astype(int), bins - 1)
        used = [b for b in range(bins) if np.any(which == b)]
        ax.plot([p[which == b].mean() for b in used], [labels[which == b].mean() for b in used], marker="o", ms=4,
                lw=1.4, label=f"{name} (ECE {100 * expected_calibration_error(labels, p, bins):.1f} %)")
        counts.hist(p, bins=edges, alpha=0.6 if n else 0.8, label=name)
    title = DATASET_TITLES.get(dataset, dataset)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="fraction of videos that are fake",
           title=f"reliability{f' on {title}' if title else ''} ({len(labels)} videos, {bins} bins)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    counts.set(xlabel="score (probability of fake)", ylabel="videos")
    counts.legend(loc="upper center", fontsize=7)
    counts.grid(alpha=0.3)
    fig.tight_layout()
    written = save_figure(fig, out)
    plt.close(fig)
    return written


def evaluation_roc(out_dir: str | Path, dataset: str) -> list[Path]:
    """roc.png and roc.svg in an evaluation's output folder."""
    rows = scored_videos(out_dir)
    name = DATASET_TITLES.get(dataset, dataset)
    return roc_plot({name: ([r["label"] for r in rows], [r["score"] for r in rows])}, Path(out_dir) / "roc",
                    title=f"video-level ROC, {name}")


def report_roc(result_dirs, out: str | Path) -> list[Path]:
    """All datasets' (and models') curves of several evaluation folders in one figure."""
    curves = {}
    for folder in result_dirs:
        folder = Path(folder)
        folder = folder.parent if folder.name == "summary.json" else folder
        summary = json.loads((folder / "summary.json").read_text())
        rows = scored_videos(folder)
        dataset = DATASET_TITLES.get(summary["dataset"], summary["dataset"])
        name = f"{summary.get('label') or summary['model']}, {dataset}"
        curves[name] = ([r["label"] for r in rows], [r["score"] for r in rows])
    return roc_plot(curves, out)


def failure_cases(out_dir: str | Path, n: int = 8, threshold: float = 0.5) -> tuple[list[dict], list[dict]]:
    """(false positives, false negatives) of an evaluation: real videos scored >= threshold, most confident first,
    and fake videos scored below it, most confident (lowest) first; n of each at most. Failed videos (no face,
    unreadable, error) have no crop and are left out."""
    rows = [r for r in scored_videos(out_dir) if r.get("status") == "ok"]
    false_positives = sorted((r for r in rows if r["label"] == 0 and r["score"] >= threshold),
                             key=lambda r: -r["score"])[:n]
    false_negatives = sorted((r for r in rows if r["label"] == 1 and r["score"] < threshold),
                             key=lambda r: r["score"])[:n]
    return false_positives, false_negatives


def gallery(out_dir: str | Path, out: str | Path, n: int = 8, threshold: float = 0.5) -> Path:
    """Fig. 5-style picture: a row of the n most confident false positives and one of the n most confident false
    negatives, each with the face crop that decided the video (stored by `hcsi evaluate` in crops/), its score,
    label and file name."""
    import cv2

    out_dir = Path(out_dir)
    false_positives, false_negatives = failure_cases(out_dir, n, threshold)
    groups = [("false positives: real videos scored as fake", false_positives),
              ("false negatives: fake videos scored as real", false_negatives)]
    columns = max(1, max(len(g) for _, g in groups))
    plt = _pyplot()
    # wide enough for the row headings whatever the number of columns (a heading over one narrow axis was cut off)
    fig = plt.figure(figsize=(max(1.9 * columns + 0.4, 6.4), 5.2), layout="constrained")
    for sub, (title, cases) in zip(fig.subfigures(2, 1), groups):
        sub.suptitle(f"{title} (threshold {threshold})" if cases else f"{title}: none", x=0.01, ha="left",
                     fontsize=9, fontweight="bold")
        axes = sub.subplots(1, columns, squeeze=False)[0]
        for column in range(columns):
            ax = axes[column]
            ax.axis("off")
            if column >= len(cases):
                continue
            case = cases[column]
            crop_path = out_dir / case["crop"] if case.get("crop") else None
            if crop_path is None or not crop_path.is_file():
                raise FileNotFoundError(f"{out_dir}: no stored face crop for {case['path']}; rerun `hcsi evaluate` "
                                        "into a new folder with this version to keep the crops")
            ax.imshow(cv2.cvtColor(cv2.imread(str(crop_path)), cv2.COLOR_BGR2RGB))
            name = Path(case["path"]).name
            name = name if len(name) <= 22 else name[:9] + "…" + name[-12:]
            ax.text(0.5, -0.04, f"score {case['score']:.3f}\n{'real' if case['label'] == 0 else 'fake'}\n{name}",
                    transform=ax.transAxes, ha="center", va="top", fontsize=7)
    [path] = save_figure(fig, out, suffixes=(Path(out).suffix,))
    plt.close(fig)
    return path
