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
