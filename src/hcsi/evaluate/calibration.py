"""Calibrated probabilities and operating points for video scores (`hcsi calibrate`), used by detect and serve.

A raw video score (mean over frames of the max over faces of the model's softmax) is not a probability, and its scale
moves from dataset to dataset. A calibration fitted on labelled videos maps it to a probability of "fake" for videos
like those and fixes operating points: for each target false-positive rate, the raw-score threshold that gives it
on the calibration videos and the true-positive rate measured there. Methods: Platt's logistic calibration on the
score's logit, sigmoid(a · logit(s) + b) (the default: its bias moves the scale, which SBI-trained detectors need),
temperature scaling (a alone, b = 0: 0.5 stays 0.5), isotonic regression, or `auto` (the lowest 5-fold
cross-validated negative log-likelihood). The file records the method's held-out NLL, the checkpoint it was made for
(SHA-256) and the scoring settings it was fitted with (frames, face detector, input size, amp, aggregate): a consumer
with another checkpoint or other settings refuses it, naming what differs, since a mean over fewer frames, or faces
found by another detector, spread differently.
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

CALIBRATION_VERSION = 2
METHODS = ("platt", "temperature", "isotonic")
DEFAULT_TARGET_FPRS = (0.01, 0.10)  # the strict and the lenient operating point of the tiers
SETTINGS = ("frames", "face_detector", "input_size", "amp", "aggregate")  # what a calibration was fitted with
SETTINGS_BEFORE_PERSONS = {"aggregate": "paper"}  # files written before `--aggregate persons` existed scored this way
CV_FOLDS = 5
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


def _nll(labels, logits) -> float:
    """Mean negative log-likelihood of labels under sigmoid(logits), computed stably."""
    return float(np.mean(np.logaddexp(0, logits) - np.asarray(labels, dtype=float) * logits))


def fit_temperature(labels, scores) -> float:
    """The temperature T > 0 that minimises the negative log-likelihood of sigmoid(logit(score) / T)."""
    from scipy.optimize import minimize_scalar

    z = score_logits(scores)
    return float(np.exp(minimize_scalar(lambda log_t: _nll(labels, z / np.exp(log_t)), bounds=(-7, 7),
                                        method="bounded").x))


def fit_platt(labels, scores) -> tuple[float, float]:
    """(a, b) minimising the negative log-likelihood of sigmoid(a · logit(score) + b) (Platt scaling on the logit;
    unregularised maximum likelihood)."""
    from scipy.optimize import minimize

    z = score_logits(scores)
    fitted = minimize(lambda ab: _nll(labels, ab[0] * z + ab[1]), x0=np.array([1.0, 0.0]), method="BFGS")
    return float(fitted.x[0]), float(fitted.x[1])


def _fit_parameters(method: str, labels, scores) -> dict:
    if method == "platt":
        a, b = fit_platt(labels, scores)
        return {"a": a, "b": b}
    if method == "temperature":
        return {"temperature": fit_temperature(labels, scores)}
    from sklearn.isotonic import IsotonicRegression

    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, labels)
    return {"x": isotonic.X_thresholds_.tolist(), "y": isotonic.y_thresholds_.tolist()}


def probability_of(method: str, parameters: dict, scores) -> np.ndarray:
    """Calibrated probability of "fake" for raw video scores under a fitted method."""
    scores = np.asarray(scores, dtype=float)
    if method == "platt":
        return 1 / (1 + np.exp(-(parameters["a"] * score_logits(scores) + parameters["b"])))
    if method == "temperature":
        return 1 / (1 + np.exp(-score_logits(scores) / parameters["temperature"]))
    return np.interp(scores, parameters["x"], parameters["y"])


def heldout_nll(method: str, labels, scores, folds: int = CV_FOLDS, seed: int = 0) -> float:
    """Cross-validated negative log-likelihood of `method`: fitted on k − 1 folds (stratified by label), scored on
    the held-out fold, probabilities clipped to [1e-6, 1 − 1e-6] (isotonic gives 0 and 1)."""
    from sklearn.model_selection import StratifiedKFold

    labels, scores = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    folds = max(2, min(folds, int(np.sum(labels == 0)), int(np.sum(labels == 1))))
    losses = np.zeros(len(labels))
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(scores, labels):
        p = np.clip(probability_of(method, _fit_parameters(method, labels[fit], scores[fit]), scores[held]),
                    1e-6, 1 - 1e-6)
        losses[held] = -(labels[held] * np.log(p) + (1 - labels[held]) * np.log(1 - p))
    return float(np.mean(losses))


@dataclass
class OperatingPoint:
    target_fpr: float
    threshold: float  # on the raw score: a video scoring at or above it is called fake
    fpr: float  # measured on the calibration videos
    tpr: float


TIERS = ("manipulated", "inconclusive", "no_evidence")
TIER_MEANINGS = {
    "manipulated": "At or above the strict operating point: on the calibration videos {strict_fpr} of real videos "
                   "scored this high and {strict_tpr} of fakes did. Strong evidence of manipulation for videos like "
                   "those, not proof.",
    "inconclusive": "Between the lenient and the strict operating point, where real videos ({lenient_fpr} of them "
                    "reach the lenient point) and fakes overlap: the detector cannot tell. Look closer.",
    "no_evidence": "Below the lenient operating point: the detector found no evidence of manipulation. This does "
                   "not show that the video is authentic: {lenient_miss} of the calibration's fakes also scored "
                   "this low.",
}
CANNOT_JUDGE_MEANING = ("cannot judge: {reasons}. The score, if any, is shown for completeness; neither a verdict "
                        "nor its absence says anything about this input")
UNCALIBRATED_MEANING = ("uncalibrated: the raw score (not a probability) compared with the threshold {threshold:g}; "
                        "tiers need a calibration (`hcsi calibrate`)")


def _percent(rate: float) -> str:
    return f"{100 * rate:.1f} %"


@dataclass
class Decision:
    """How a verdict is reached from a raw video score: with a calibration, tiers at a strict and a lenient
    operating point (`verdict`: manipulated / inconclusive / no_evidence); without one, a raw-score threshold
    (`label`: fake / real)."""

    strict: OperatingPoint | None = None
    lenient: OperatingPoint | None = None
    threshold: float = 0.5

    @property
    def calibrated(self) -> bool:
        return self.strict is not None

    def verdict(self, score: float | None) -> str | None:
        if score is None or not self.calibrated:
            return None
        if score >= self.strict.threshold:
            return "manipulated"
        return "inconclusive" if score >= self.lenient.threshold else "no_evidence"

    def label(self, score: float | None) -> str | None:
        if score is None or self.calibrated:
            return None
        return "fake" if score >= self.threshold else "real"

    def meaning(self, score: float | None) -> str | None:
        """One sentence on what the verdict (or the uncalibrated label) does and does not mean."""
        if score is None:
            return None
        if not self.calibrated:
            return UNCALIBRATED_MEANING.format(threshold=self.threshold)
        return TIER_MEANINGS[self.verdict(score)].format(
            strict_fpr=_percent(self.strict.fpr), strict_tpr=_percent(self.strict.tpr),
            lenient_fpr=_percent(self.lenient.fpr), lenient_miss=_percent(1 - self.lenient.tpr))

    def to_dict(self) -> dict:
        """What decided: {"kind": "operating_points", "strict": {...}, "lenient": {...}} or {"kind": "threshold",
        "threshold": t}."""
        if not self.calibrated:
            return {"kind": "threshold", "threshold": self.threshold}
        return {"kind": "operating_points", "strict": asdict(self.strict), "lenient": asdict(self.lenient)}


@dataclass
class Calibration:
    method: str
    parameters: dict  # platt: {"a", "b"}; temperature: {"temperature"}; isotonic: {"x": [...], "y": [...]}
    operating_points: list[OperatingPoint]
    n_real: int
    n_fake: int
    fitted_on: dict  # dataset, root, n_videos, videos_sha256 (sorted keys), video_sha256s (one per video), results
    checkpoint_sha256: str
    settings: dict = field(default_factory=dict)  # SETTINGS: frames, face_detector, input_size, amp, aggregate
    heldout_nll: float | None = None  # CV_FOLDS-fold cross-validated NLL of the method
    selection: dict = field(default_factory=dict)  # method -> held-out NLL of each method compared (method auto)
    created: str = ""
    version: int = CALIBRATION_VERSION
    source: str = field(default="", compare=False)  # the file it was read from

    def probability(self, scores) -> np.ndarray:
        """Calibrated probability of "fake" for raw video scores."""
        return probability_of(self.method, self.parameters, scores)

    def require_settings(self, actual: dict, consumer: str) -> None:
        """Refuse to be applied by `consumer` scoring with other settings, naming each that differs."""
        differ = [f"{key} {actual.get(key)!r} (fitted with {self.settings.get(key)!r})" for key in SETTINGS
                  if actual.get(key) != self.settings.get(key)]
        if differ:
            raise CalibrationError(f"{self.source or 'the calibration'} was fitted with other scoring settings than "
                                   f"{consumer} uses: {'; '.join(differ)}. Score with the calibration's settings, or "
                                   "refit with `hcsi calibrate` at these")

    def operating_point(self, target_fpr: float) -> OperatingPoint:
        """The operating point fitted for `target_fpr`."""
        for point in self.operating_points:
            if abs(point.target_fpr - target_fpr) < 1e-12:
                return point
        fitted = ", ".join(f"{p.target_fpr:g}" for p in self.operating_points)
        raise CalibrationError(f"{self.source or 'the calibration'} has no operating point at FPR {target_fpr:g} "
                               f"(it has {fitted}); refit with `hcsi calibrate --target-fpr`")

    def decision(self, strict_fpr: float | None = None, lenient_fpr: float | None = None) -> Decision:
        """The tiers at the strict (default: the lowest target FPR fitted) and lenient (default: the highest)
        operating points."""
        strict = self.operating_point(strict_fpr) if strict_fpr is not None else self.operating_points[0]
        lenient = self.operating_point(lenient_fpr) if lenient_fpr is not None else self.operating_points[-1]
        if strict.target_fpr > lenient.target_fpr:
            raise CalibrationError(f"the strict operating point (FPR {strict.target_fpr:g}) must not allow more "
                                   f"false positives than the lenient one (FPR {lenient.target_fpr:g})")
        return Decision(strict=strict, lenient=lenient)

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
            calibration.settings = {**SETTINGS_BEFORE_PERSONS, **calibration.settings}
        except FileNotFoundError:
            raise CalibrationError(f"{path}: calibration file not found") from None
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
            raise CalibrationError(f"{path}: not an hcsi calibration file ({type(error).__name__}: {error})") from None
        if calibration.version != CALIBRATION_VERSION:
            raise CalibrationError(f"{path}: a calibration of format version {calibration.version} (this hcsi reads "
                                   f"{CALIBRATION_VERSION}); older files do not record the frames, face detector, "
                                   "input size and amp they were fitted with, so they cannot be checked: refit with "
                                   "`hcsi calibrate` (`--from-results DIR` reuses an evaluation's scores)")
        problems = []
        unknown = sorted(set(calibration.settings) - set(SETTINGS))
        missing = [key for key in SETTINGS if key not in calibration.settings]
        if unknown or missing:
            problems.append(f"settings fields {unknown} unknown, {missing} missing (expected {list(SETTINGS)})")
        if calibration.method not in METHODS:
            problems.append(f"unknown method {calibration.method!r}")
        elif calibration.method == "platt" and not all(
                isinstance(calibration.parameters.get(k), (int, float)) for k in ("a", "b")):
            problems.append("platt parameters a and b missing")
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


def video_sha256(key: str) -> str:
    """SHA-256 of one video key (dataset/source/video_id): recorded per calibration video, compared by evaluate."""
    return hashlib.sha256(key.encode()).hexdigest()


def video_list_sha256(keys) -> str:
    """SHA-256 of the sorted video keys, one per line: which videos a calibration was fitted on."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


def fit_calibration(labels, scores, method: str = "platt", target_fprs=DEFAULT_TARGET_FPRS,
                    fitted_on: dict | None = None, checkpoint_sha256: str = "",
                    settings: dict | None = None) -> Calibration:
    """Fit `method` ("auto": the METHODS' lowest held-out NLL) on labelled raw video scores, and the operating
    points for `target_fprs`; `settings` are the scoring settings the scores were made with (SETTINGS).

    Raises:
        CalibrationError: an unknown method, a target outside (0, 1), or only one class among the videos.
    Warns when a class has fewer than MIN_VIDEOS_PER_CLASS videos (with the width of the AUC's 95 % interval).
    """
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    if method not in (*METHODS, "auto"):
        raise CalibrationError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)} or auto")
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
    compared = METHODS if method == "auto" else (method,)
    selection = {m: heldout_nll(m, labels, scores) for m in compared}
    chosen = min(selection, key=selection.get)
    points = [OperatingPoint(float(t), *threshold_at_fpr(labels, scores, t)) for t in sorted(target_fprs)]
    return Calibration(chosen, _fit_parameters(chosen, labels, scores), points, n_real, n_fake,
                       dict(fitted_on or {}), checkpoint_sha256, settings=dict(settings or {}),
                       heldout_nll=selection[chosen], selection=selection if method == "auto" else {},
                       created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
