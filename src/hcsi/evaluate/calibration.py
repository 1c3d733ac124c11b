"""Calibrated probabilities and operating points for video scores (`hcsi calibrate`), used by detect and serve.

A raw video score (mean over frames of the max over faces of the model's softmax) is not a probability, and its scale
moves from dataset to dataset. A calibration fitted on labelled videos maps it to a probability of "fake" for videos
like those (temperature scaling or isotonic regression) and fixes operating points: for each target false-positive
rate, the raw-score threshold that gives it on the calibration videos and the true-positive rate measured there.
A calibration file names the checkpoint it was made for (SHA-256 of the file); any other checkpoint refuses it.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..files import write_json_atomic
from .metrics import bootstrap_intervals, threshold_at_fpr

CALIBRATION_VERSION = 1
METHODS = ("temperature", "isotonic")
DEFAULT_TARGET_FPRS = (0.01, 0.05)
MIN_VIDEOS_PER_CLASS = 20  # fewer of a class: a warning that says how wide the AUC interval is
UNCALIBRATED = "uncalibrated"


class CalibrationError(ValueError):
    """A calibration that cannot be fitted or used; the message says why."""


def calibration_path_for(checkpoint: str | Path) -> Path:
    """Where `hcsi calibrate` writes, and detect and serve look, by default: beside the checkpoint."""
    return Path(f"{checkpoint}.calibration.json")


def score_logits(scores) -> np.ndarray:
    """log(p / (1 − p)) of scores, clipped to [1e-7, 1 − 1e-7] so that 0 and 1 stay finite."""
    p = np.clip(np.asarray(scores, dtype=float), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def fit_temperature(labels, scores) -> float:
    """The temperature T > 0 that minimises the negative log-likelihood of sigmoid(logit(score) / T)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(labels, dtype=float)
    z = score_logits(scores)

    def nll(log_t: float) -> float:
        q = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0, q) - y * q))  # −[y log σ(q) + (1 − y) log(1 − σ(q))]

    return float(np.exp(minimize_scalar(nll, bounds=(-7, 7), method="bounded").x))


@dataclass
class OperatingPoint:
    target_fpr: float
    threshold: float  # on the raw score: a video scoring at or above it is called fake
    fpr: float  # measured on the calibration videos
    tpr: float


@dataclass
class Calibration:
    method: str
    parameters: dict  # temperature: {"temperature": T}; isotonic: {"x": [...], "y": [...]} (scikit-learn's knots)
    operating_points: list[OperatingPoint]
    n_real: int
    n_fake: int
    fitted_on: dict  # dataset, root, n_videos, videos_sha256 (of the sorted video keys), results folder if reused
    checkpoint_sha256: str
    created: str = ""
    version: int = CALIBRATION_VERSION
    source: str = field(default="", compare=False)  # the file it was read from

    def probability(self, scores) -> np.ndarray:
        """Calibrated probability of "fake" for raw video scores."""
        scores = np.asarray(scores, dtype=float)
        if self.method == "temperature":
            return 1 / (1 + np.exp(-score_logits(scores) / self.parameters["temperature"]))
        return np.interp(scores, self.parameters["x"], self.parameters["y"])

    def operating_point(self, target_fpr: float | None = None) -> OperatingPoint:
        """The operating point for `target_fpr` (default: the first one fitted)."""
        if target_fpr is None:
            return self.operating_points[0]
        for point in self.operating_points:
            if abs(point.target_fpr - target_fpr) < 1e-12:
                return point
        fitted = ", ".join(f"fpr={p.target_fpr:g}" for p in self.operating_points)
        raise CalibrationError(f"{self.source or 'the calibration'} has no operating point at fpr={target_fpr:g} "
                               f"(it has {fitted}); refit with `hcsi calibrate --target-fpr`")

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("source")
        return data

    def save(self, path: str | Path) -> Path:
        write_json_atomic(Path(path), self.to_dict(), indent=1)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, checkpoint_sha256: str | None = None) -> Calibration:
        """Read a calibration file; refuse a malformed one, or one made for another checkpoint, with the reason."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            points = [OperatingPoint(**p) for p in data["operating_points"]]
            calibration = cls(**{**data, "operating_points": points, "source": str(path)})
        except FileNotFoundError:
            raise CalibrationError(f"{path}: calibration file not found") from None
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
            raise CalibrationError(f"{path}: not an hcsi calibration file ({type(error).__name__}: {error})") from None
        problems = []
        if calibration.version != CALIBRATION_VERSION:
            problems.append(f"version {calibration.version}, expected {CALIBRATION_VERSION}")
        if calibration.method not in METHODS:
            problems.append(f"unknown method {calibration.method!r}")
        elif calibration.method == "temperature" and not calibration.parameters.get("temperature", 0) > 0:
            problems.append("temperature missing or not positive")
        elif calibration.method == "isotonic" and (
                len(calibration.parameters.get("x", [])) < 1
                or len(calibration.parameters.get("x", [])) != len(calibration.parameters.get("y", []))):
            problems.append("isotonic knots missing or of unequal length")
        if not calibration.operating_points:
            problems.append("no operating point")
        if problems:
            raise CalibrationError(f"{path}: malformed calibration ({'; '.join(problems)})")
        if checkpoint_sha256 is not None and calibration.checkpoint_sha256 != checkpoint_sha256:
            raise CalibrationError(f"{path} was made for the checkpoint with SHA-256 {calibration.checkpoint_sha256}, "
                                   f"not for this one ({checkpoint_sha256}); calibrate this checkpoint with "
                                   "`hcsi calibrate` or pass its own file with --calibration")
        return calibration


def video_list_sha256(keys) -> str:
    """SHA-256 of the sorted video keys, one per line: which videos a calibration was fitted on."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


def fit_calibration(labels, scores, method: str = "temperature", target_fprs=DEFAULT_TARGET_FPRS,
                    fitted_on: dict | None = None, checkpoint_sha256: str = "") -> Calibration:
    """Fit `method` on labelled raw video scores and the operating points for `target_fprs`.

    Raises:
        CalibrationError: an unknown method, a target outside (0, 1), or only one class among the videos.
    Warns when a class has fewer than MIN_VIDEOS_PER_CLASS videos (with the width of the AUC's 95 % interval).
    """
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    if not target_fprs or any(not 0 < t < 1 for t in target_fprs):
        raise CalibrationError(f"target false-positive rates must lie in (0, 1), got {list(target_fprs)}")
    n_real, n_fake = int(np.sum(labels == 0)), int(np.sum(labels == 1))
    if not n_real or not n_fake:
        raise CalibrationError(f"calibration needs real and fake videos; got {n_real} real and {n_fake} fake")
    if min(n_real, n_fake) < MIN_VIDEOS_PER_CLASS:
        low, high = bootstrap_intervals(labels, scores, resamples=200, metrics=("auc",))["auc"]
        warnings.warn(f"only {n_real} real and {n_fake} fake videos (fewer than {MIN_VIDEOS_PER_CLASS} of a class): "
                      f"the AUC's 95 % interval on them is {100 * (high - low):.1f} points wide, and the "
                      "calibration and thresholds are as uncertain", stacklevel=2)
    if method == "temperature":
        parameters = {"temperature": fit_temperature(labels, scores)}
    else:
        from sklearn.isotonic import IsotonicRegression

        isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, labels)
        parameters = {"x": isotonic.X_thresholds_.tolist(), "y": isotonic.y_thresholds_.tolist()}
    points = [OperatingPoint(float(t), *threshold_at_fpr(labels, scores, t)) for t in target_fprs]
    return Calibration(method, parameters, points, n_real, n_fake, dict(fitted_on or {}), checkpoint_sha256,
                       created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
