"""Subset-matched comparison with published baselines (Eq. 17, Table II) and its dumbbell plot (Fig. 4).

Baselines report video-level AUC on different subsets D_b of the six test sets. For each baseline b, our mean AUC
over exactly D_b (Eq. 17) is compared with b's own mean over D_b: Δ_b = mAUC_b(ours) − mAUC(b). AUCs here are in
percent, as in the paper's tables.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

DATASETS = ("ff++", "cdf", "dfd", "dfdc", "dfdcp", "ffiw")
DATASET_TITLES = {"ff++": "FF++", "cdf": "CDF", "dfd": "DFD", "dfdc": "DFDC", "dfdcp": "DFDCp", "ffiw": "FFIW"}
# The paper's own HCSI-Net row of Table II (percent): what `hcsi compare` reproduces the last column from.
PAPER_HCSI_NET_AUC = {"ff++": 99.31, "cdf": 90.45, "dfd": 97.84, "dfdc": 74.61, "dfdcp": 84.85, "ffiw": 87.73}


@dataclass(frozen=True)
class Baseline:
    name: str
    venue: str
    auc: dict[str, float]  # dataset -> video-level AUC in percent, only the datasets it reports

    @property
    def mauc(self) -> float:
        return sum(self.auc.values()) / len(self.auc)


def read_baselines(path: str | Path | None = None) -> list[Baseline]:
    """Baselines from a CSV (method, venue, one column per dataset, empty = not reported); default: Table II."""
    if path is None:
        text = resources.files("hcsi.evaluate").joinpath("data/table2_baselines.csv").read_text()
        source = "Table II (built in)"
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"baselines file {path} not found")
        text, source = path.read_text(), str(path)
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or not {"method", "venue"} <= set(rows[0]):
        raise ValueError(f"{source}: expected a CSV with columns method, venue and dataset columns "
                         f"({', '.join(DATASETS)})")
    baselines = []
    for row in rows:
        auc = {d: float(row[d]) for d in DATASETS if (row.get(d) or "").strip()}
        if not auc:
            raise ValueError(f"{source}: baseline {row['method']!r} reports no dataset")
        baselines.append(Baseline(row["method"], row["venue"], auc))
    return baselines


def subset_mauc(ours: dict[str, float], datasets) -> float:
    """Eq. 17: our mean AUC over the given datasets."""
    datasets = list(datasets)
    return sum(ours[d] for d in datasets) / len(datasets)


def compare_with_baselines(ours: dict[str, float], baselines: list[Baseline]) -> list[dict]:
    """One row per baseline: its datasets D_b, its mean over D_b, ours over D_b (Eq. 17) and Δ_b.

    A dataset of D_b that `ours` lacks makes that comparison impossible; such rows carry `missing` and no Δ, rather
    than a mean over fewer datasets that would no longer be subset-matched.
    """
    unknown = sorted(set(ours) - set(DATASETS))
    if unknown:
        raise KeyError(f"unknown dataset(s) {unknown}; expected some of {', '.join(DATASETS)}")
    rows = []
    for b in baselines:
        datasets = [d for d in DATASETS if d in b.auc]
        missing = [d for d in datasets if d not in ours]
        row = {"baseline": b.name, "venue": b.venue, "datasets": datasets, "baseline_mauc": round(b.mauc, 4),
               "ours_mauc": None, "delta": None}
        if missing:
            row["missing"] = missing
        else:
            ours_mauc = subset_mauc(ours, datasets)
            row["ours_mauc"] = round(ours_mauc, 4)
            row["delta"] = round(ours_mauc - b.mauc, 4)
        rows.append(row)
    return rows


def format_comparison(ours: dict[str, float], rows: list[dict]) -> str:
    """Table II's layout: ours per dataset, then one line per baseline with both subset means and Δ."""
    lines = ["ours: " + "  ".join(f"{DATASET_TITLES[d]} {ours[d]:.2f}" for d in DATASETS if d in ours)]
    if all(d in ours for d in DATASETS):
        lines[0] += f"  mAUC {subset_mauc(ours, DATASETS):.2f}"
    lines.append(f"{'baseline':<14}{'venue':<15}{'datasets':<30}{'theirs':>8}{'ours':>8}{'Δ':>8}")
    for r in rows:
        subset = ",".join(DATASET_TITLES[d] for d in r["datasets"])
        if r["delta"] is None:
            tail = f"{'–':>8}{'–':>8}  (no result of ours on {', '.join(r['missing'])})"
        else:
            tail = f"{r['ours_mauc']:>8.2f}{r['delta']:>+8.2f}"
        lines.append(f"{r['baseline']:<14}{r['venue']:<15}{subset:<30}{r['baseline_mauc']:>8.2f}{tail}")
    return "\n".join(lines)


def dumbbell_plot(rows: list[dict], out: str | Path, label: str = "ours") -> list[Path]:
    """Fig. 4: for each baseline, its subset mAUC and ours (named `label`, e.g. the evaluated model) joined by a
    line, Δ written beside; the legend sits above the axes so that it covers no row; PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import save_figure

    rows = sorted((r for r in rows if r["delta"] is not None), key=lambda r: r["delta"])
    if not rows:
        raise ValueError("no baseline could be compared (our results miss datasets of every baseline)")
    fig, ax = plt.subplots(figsize=(7, 0.42 * len(rows) + 1.6))
    for y, r in enumerate(rows):
        ax.plot([r["baseline_mauc"], r["ours_mauc"]], [y, y], color="0.7", lw=2, zorder=1)
        ax.scatter(r["baseline_mauc"], y, color="tab:gray", zorder=2, label="baseline" if y == 0 else None)
        ax.scatter(r["ours_mauc"], y, color="tab:red", zorder=3, label=f"{label} (same datasets)" if y == 0 else None)
        ax.annotate(f"{r['delta']:+.2f}", (max(r["baseline_mauc"], r["ours_mauc"]), y), xytext=(6, -3),
                    textcoords="offset points", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{r['baseline']} ({r['venue']})" for r in rows], fontsize=8)
    ax.set_xlabel("subset-matched mean video-level AUC (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.08)  # room for the Δ written right of the rightmost dot
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    written = save_figure(fig, out)
    plt.close(fig)
    return written
