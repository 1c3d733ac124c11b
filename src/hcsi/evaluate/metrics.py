"""Detection metrics on scores in [0, 1] with fake = 1, through scikit-learn; AUCs as fractions in [0, 1]."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def equal_error_rate(labels, scores) -> float:
    """The error rate where the false-positive rate equals the false-negative rate (interpolated on the ROC)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    if i == 0:
        return float((fpr[0] + fnr[0]) / 2)
    # linear interpolation between the two ROC points around the crossing of fpr and fnr
    d0, d1 = fpr[i - 1] - fnr[i - 1], fpr[i] - fnr[i]
    t = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def detection_metrics(labels, scores, threshold: float = 0.5) -> dict[str, float | None]:
    """auc, ap, eer and acc (at `threshold`) of one set of scores; metrics needing both classes are None
    when only one class is present."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    both = len(np.unique(labels)) == 2
    return {
        "auc": float(roc_auc_score(labels, scores)) if both else None,
        "ap": float(average_precision_score(labels, scores)) if both else None,
        "eer": equal_error_rate(labels, scores) if both else None,
        "acc": float(np.mean((scores >= threshold).astype(int) == labels)) if len(labels) else None,
    }


ECE_BINS = 15
BOOTSTRAP_RESAMPLES = 1000


def expected_calibration_error(labels, probabilities, bins: int = ECE_BINS) -> float | None:
    """ECE: the mean over `bins` equal-width probability bins of |fraction of fakes − mean probability|, weighted
    by the share of videos in the bin (a probability of 1 falls in the last bin)."""
    labels = np.asarray(labels, dtype=float)
    probabilities = np.asarray(probabilities, dtype=float)
    if not len(labels):
        return None
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(labels[inside].mean() - probabilities[inside].mean())
    return float(error)


def brier_score(labels, probabilities) -> float | None:
    """Mean squared difference between the probability of "fake" and the label."""
    from sklearn.metrics import brier_score_loss

    return float(brier_score_loss(labels, probabilities)) if len(labels) else None


def threshold_at_fpr(labels, scores, target_fpr: float) -> tuple[float, float, float]:
    """(threshold, fpr, tpr): the lowest score threshold (calling ≥ threshold fake) whose false-positive rate on
    these real videos is at most `target_fpr`, and the rates measured at it."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    real, fake = scores[labels == 0], scores[labels == 1]
    if not len(real) or not len(fake):
        raise ValueError("a threshold for a false-positive rate needs real and fake videos")
    allowed = int(np.floor(target_fpr * len(real) + 1e-9))  # reals that may score at or above the threshold
    ordered = np.sort(real)[::-1]
    # just above the (allowed+1)-th highest real score: at most `allowed` reals reach it
    threshold = float(np.nextafter(ordered[allowed], np.inf)) if allowed < len(real) else float(ordered[-1])
    return threshold, float(np.mean(real >= threshold)), float(np.mean(fake >= threshold))


def tpr_at_fpr(labels, scores, target_fpr: float) -> float | None:
    """The fraction of fakes found at the lowest threshold whose false-positive rate is at most target_fpr."""
    labels = np.asarray(labels, dtype=int)
    if len(np.unique(labels)) < 2:
        return None
    return threshold_at_fpr(labels, scores, target_fpr)[2]


BOOTSTRAPPED = {"auc": roc_auc_score, "ap": average_precision_score, "eer": equal_error_rate}


def bootstrap_intervals(labels, scores, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = 0.95,
                        metrics=("auc", "ap", "eer")) -> dict[str, list[float] | None]:
    """Percentile intervals of `metrics` (AUC, AP, EER) over video-level bootstrap resamples, stratified by label
    (each resample draws as many real and as many fake videos as there are, with replacement), seeded."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    real, fake = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    if not len(real) or not len(fake):
        return dict.fromkeys(metrics)
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in metrics}
    for _ in range(resamples):
        pick = np.concatenate([rng.choice(real, len(real)), rng.choice(fake, len(fake))])
        y, s = labels[pick], scores[pick]
        for name in metrics:
            draws[name].append(BOOTSTRAPPED[name](y, s))
    tail = (1 - level) / 2 * 100
    return {k: [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))] for k, v in draws.items()}
