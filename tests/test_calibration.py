"""Calibration, operating points and intervals: synthetic scores with known answers, the calibration file's checks,
and the fields detect, serve and evaluate report."""
import csv
import json
import shutil

import numpy as np
import pytest
from media import fixture
from scipy.stats import norm

from hcsi.cli import main
from hcsi.evaluate.calibration import (
    Calibration,
    CalibrationError,
    fit_calibration,
    fit_platt,
    fit_temperature,
    heldout_nll,
)
from hcsi.evaluate.metrics import bootstrap_intervals, expected_calibration_error, threshold_at_fpr
from hcsi.faces import DEFAULT_FACE_DETECTOR
from hcsi.files import file_sha256
from hcsi.models import build_model, save_checkpoint


SETTINGS = {"frames": 8, "face_detector": "hog540", "input_size": 64, "amp": False, "aggregate": "paper"}


def _overconfident(n, rng, sharpen=3.0):
    """Labels drawn from a true probability p = sigmoid(z), and scores sigmoid(sharpen · z): overconfident."""
    z = rng.normal(0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return labels, 1 / (1 + np.exp(-sharpen * z))


def _direct_ece(labels, probabilities, bins=15):
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = [(y, p) for y, p in zip(labels, probabilities) if low <= p < high or (b == bins - 1 and p == 1.0)]
        if inside:
            ys, ps = zip(*inside)
            total += len(inside) / len(labels) * abs(np.mean(ys) - np.mean(ps))
    return total


def test_ece_matches_a_direct_computation_and_falls_after_calibration():
    rng = np.random.default_rng(0)
    labels, scores = _overconfident(4000, rng)
    fresh_labels, fresh_scores = _overconfident(4000, rng)
    before = expected_calibration_error(fresh_labels, fresh_scores)
    assert before == pytest.approx(_direct_ece(fresh_labels, fresh_scores), abs=1e-12)
    assert fit_temperature(labels, scores) == pytest.approx(3.0, rel=0.15)  # the sharpening it undoes
    for method in ("platt", "temperature", "isotonic"):
        calibration = fit_calibration(labels, scores, method)
        probabilities = calibration.probability(fresh_scores)
        after = expected_calibration_error(fresh_labels, probabilities)
        assert after == pytest.approx(_direct_ece(fresh_labels, probabilities), abs=1e-12)
        assert after < before / 2, method
        assert np.all(np.diff(calibration.probability(np.sort(fresh_scores))) >= -1e-12)  # keeps the order


def _shifted(n, rng, stretch=2.5, shift=-3.5):
    """Labels from p = sigmoid(z); scores sigmoid(stretch · z + shift): overconfident and shifted towards real, as
    an SBI-trained detector's raw scores are on unseen data."""
    z = rng.normal(0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return labels, 1 / (1 + np.exp(-(stretch * z + shift)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_platt_fixes_a_shifted_scale_that_temperature_cannot(seed):
    rng = np.random.default_rng(seed)
    labels, scores = _shifted(3000, rng)
    fresh_labels, fresh_scores = _shifted(20000, rng)
    platt = fit_calibration(labels, scores, "platt")
    temperature = fit_calibration(labels, scores, "temperature")
    assert expected_calibration_error(fresh_labels, platt.probability(fresh_scores)) < 0.03
    assert expected_calibration_error(fresh_labels, temperature.probability(fresh_scores)) > 0.15
    a, b = platt.parameters["a"], platt.parameters["b"]
    assert a == pytest.approx(1 / 2.5, rel=0.1) and b == pytest.approx(3.5 / 2.5, abs=0.15)  # undoes the shift
    chosen = fit_calibration(labels, scores, "auto")
    assert chosen.method in ("platt", "isotonic") and set(chosen.selection) == {"platt", "temperature", "isotonic"}
    assert chosen.selection["temperature"] > chosen.selection["platt"]
    assert chosen.heldout_nll == min(chosen.selection.values())


def test_platt_and_held_out_nll_match_direct_computations():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from hcsi.evaluate.calibration import score_logits

    labels, scores = _shifted(600, np.random.default_rng(5))
    z = score_logits(scores).reshape(-1, 1)
    reference = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(z, labels)
    a, b = fit_platt(labels, scores)
    assert a == pytest.approx(reference.coef_[0, 0], abs=2e-3) and b == pytest.approx(reference.intercept_[0], abs=2e-3)
    losses = []
    for fit, held in StratifiedKFold(5, shuffle=True, random_state=0).split(z, labels):
        model = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(z[fit], labels[fit])
        p = np.clip(model.predict_proba(z[held])[:, 1], 1e-6, 1 - 1e-6)
        losses += list(-(labels[held] * np.log(p) + (1 - labels[held]) * np.log(1 - p)))
    assert heldout_nll("platt", labels, scores) == pytest.approx(np.mean(losses), abs=1e-4)


def test_tiers_follow_the_strict_and_lenient_operating_points():
    labels, scores = _shifted(2000, np.random.default_rng(6))
    calibration = fit_calibration(labels, scores, settings=SETTINGS)
    decision = calibration.decision()
    strict, lenient = decision.strict, decision.lenient
    assert (strict.target_fpr, lenient.target_fpr) == (0.01, 0.1) and strict.threshold > lenient.threshold
    assert decision.verdict(strict.threshold) == "manipulated"
    assert decision.verdict(np.nextafter(strict.threshold, 0)) == "inconclusive"
    assert decision.verdict(lenient.threshold) == "inconclusive"
    assert decision.verdict(np.nextafter(lenient.threshold, 0)) == "no_evidence"
    assert decision.label(0.99) is None  # with a calibration the tiers decide, not a threshold
    assert "not show that the video is authentic" in decision.meaning(0.0)
    with pytest.raises(CalibrationError, match="must not allow more false positives"):
        calibration.decision(strict_fpr=0.1, lenient_fpr=0.01)


def test_a_calibration_refuses_other_scoring_settings_naming_them(tmp_path):
    labels, scores = _shifted(400, np.random.default_rng(7))
    path = fit_calibration(labels, scores, settings=SETTINGS).save(tmp_path / "c.json")
    calibration = Calibration.load(path)
    calibration.require_settings(dict(SETTINGS), "detect")
    with pytest.raises(CalibrationError, match=r"frames 32 \(fitted with 8\); face_detector 'blazeface'"):
        calibration.require_settings({**SETTINGS, "frames": 32, "face_detector": "blazeface"}, "detect")
    old = json.loads(path.read_text())
    old["version"] = 1
    del old["settings"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(CalibrationError, match="format version 1 .* refit with `hcsi calibrate`"):
        Calibration.load(tmp_path / "old.json")
    odd = json.loads(path.read_text())
    odd["settings"]["jpeg_quality"] = 90
    (tmp_path / "odd.json").write_text(json.dumps(odd))
    with pytest.raises(CalibrationError, match=r"settings fields \['jpeg_quality'\] unknown"):
        Calibration.load(tmp_path / "odd.json")


def test_the_threshold_for_a_target_fpr_gives_that_fpr_on_fresh_videos():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(0, 1, 4000), rng.normal(1.5, 1, 4000)
    labels = np.r_[np.zeros(4000, int), np.ones(4000, int)]
    for target in (0.01, 0.05):
        threshold, fpr, tpr = threshold_at_fpr(labels, np.r_[real, fake], target)
        assert fpr <= target and fpr > target - 0.002  # as close to the target as the real scores allow
        fresh_real, fresh_fake = rng.normal(0, 1, 100_000), rng.normal(1.5, 1, 100_000)
        assert np.mean(fresh_real >= threshold) == pytest.approx(target, abs=0.25 * target)
        assert np.mean(fresh_fake >= threshold) == pytest.approx(tpr, abs=0.03)


def test_bootstrap_intervals_cover_the_true_auc_in_at_least_90_percent_of_experiments():
    """Reals ~ N(0, 1), fakes ~ N(1, 1): true AUC = Φ(1/√2). 200 seeded experiments of 60 + 60 videos; 200
    resamples each (the evaluation's 1,000 would only make this test slower, not different)."""
    true_auc = norm.cdf(1 / np.sqrt(2))
    covered = 0
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        labels = np.r_[np.zeros(60, int), np.ones(60, int)]
        scores = np.r_[rng.normal(0, 1, 60), rng.normal(1, 1, 60)]
        low, high = bootstrap_intervals(labels, scores, resamples=200, seed=seed, metrics=("auc",))["auc"]
        covered += low <= true_auc <= high
    assert covered >= 180, covered


def test_bad_calibration_sets_and_files_are_refused_with_the_reason(tmp_path):
    rng = np.random.default_rng(2)
    with pytest.raises(CalibrationError, match="needs real and fake videos; got 0 real and 30 fake"):
        fit_calibration(np.ones(30, int), rng.random(30))
    with pytest.warns(UserWarning, match=r"only 12 real and 40 fake videos .* interval on them is [\d.]+ points"):
        fit_calibration(np.r_[np.zeros(12, int), np.ones(40, int)], rng.random(52))
    calibration = fit_calibration(*_overconfident(400, rng), "temperature", checkpoint_sha256="a" * 64,
                                  settings=SETTINGS)
    path = calibration.save(tmp_path / "c.json")
    assert Calibration.load(path, "a" * 64).probability([0.5]) == pytest.approx([0.5])  # temperature keeps 0.5
    with pytest.raises(CalibrationError, match=f"made for the checkpoint with SHA-256 {'a' * 64}, not for this one "
                                               f"\\({'b' * 64}\\)"):
        Calibration.load(path, "b" * 64)
    broken = json.loads(path.read_text())
    broken["parameters"] = {"temperature": -1}
    (tmp_path / "neg.json").write_text(json.dumps(broken))
    with pytest.raises(CalibrationError, match="neg.json: malformed calibration .temperature missing or not positive"):
        Calibration.load(tmp_path / "neg.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(CalibrationError, match="junk.json: not an hcsi calibration file"):
        Calibration.load(tmp_path / "junk.json")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained hcsi_net_small at 64 px, and a calibration made for it (fitted on synthetic scores)."""
    folder = tmp_path_factory.mktemp("calibrated")
    path = folder / "model.safetensors"
    save_checkpoint(build_model("hcsi_net_small", input_size=64), path)
    return path


def test_detect_reports_probability_and_verdict_with_a_calibration_and_says_uncalibrated_without(checkpoint,
                                                                                                 tmp_path, capsys):
    image = fixture("face_recognition/obama.jpg")
    plain = tmp_path / "plain.jsonl"
    assert main(["detect", str(image), "--checkpoint", str(checkpoint), "--device", "cpu", "--frames", "1",
                 "--out", str(plain)]) == 0
    row = json.loads(plain.read_text())
    assert row["calibration"] == "uncalibrated" and row["probability"] is None and row["verdict"] is None
    assert row["decided_by"] == {"kind": "threshold", "threshold": 0.5} and row["label"] in ("fake", "real")
    assert "uncalibrated: labels by the raw-score threshold 0.5, no tiers" in capsys.readouterr().err

    at_one_frame = {"frames": 1, "face_detector": DEFAULT_FACE_DETECTOR, "input_size": 64, "amp": False}
    calibration = fit_calibration(*_overconfident(400, np.random.default_rng(3)), target_fprs=(0.05, 0.01, 0.2),
                                  checkpoint_sha256=file_sha256(checkpoint), settings=at_one_frame)
    beside = tmp_path / "model.safetensors"
    shutil.copy(checkpoint, beside)
    calibration.save(f"{beside}.calibration.json")  # found beside the checkpoint without an option
    out = tmp_path / "calibrated.csv"
    assert main(["detect", str(image), "--checkpoint", str(beside), "--device", "cpu", "--frames", "1",
                 "--lenient-fpr", "0.05", "--out", str(out)]) == 0
    header, line = out.read_text().splitlines()
    row = dict(zip(header.split(","), next(csv.reader([line]))))
    score = float(row["score"])
    assert float(row["probability"]) == pytest.approx(calibration.probability([score])[0], abs=1e-6)
    strict, lenient = calibration.operating_point(0.01), calibration.operating_point(0.05)
    expected = ("manipulated" if score >= strict.threshold else
                "inconclusive" if score >= lenient.threshold else "no_evidence")
    assert row["verdict"] == expected and row["label"] == "" and row["verdict_meaning"]
    assert row["calibration"].endswith(".json")
    assert "lenient one FPR 0.05" in capsys.readouterr().err

    for refused, message in [(["--threshold", "0.3"], "not from a raw-score threshold"),
                             (["--frames", "4"], "frames 4 (fitted with 1)"),
                             (["--frames", "1", "--strict-fpr", "0.3"], "no operating point at FPR 0.3")]:
        assert main(["detect", str(image), "--checkpoint", str(beside), "--device", "cpu", *refused]) == 2
        assert message in capsys.readouterr().err, refused
    assert main(["detect", str(image), "--checkpoint", str(beside), "--device", "cpu", "--frames", "4",
                 "--calibration", "none", "--threshold", "0.3", "--out", str(plain)]) == 0  # without it: a threshold
    assert json.loads(plain.read_text())["decided_by"] == {"kind": "threshold", "threshold": 0.3}

    other = tmp_path / "other.json"
    fit_calibration(*_overconfident(400, np.random.default_rng(4)), checkpoint_sha256="0" * 64,
                    settings=at_one_frame).save(other)
    assert main(["detect", str(image), "--checkpoint", str(beside), "--device", "cpu", "--calibration",
                 str(other)]) == 2
    err = capsys.readouterr().err
    assert f"made for the checkpoint with SHA-256 {'0' * 64}, not for this one ({file_sha256(beside)})" in err


def test_evaluate_reports_intervals_and_calibration_errors_and_calibrate_reuses_only_its_own_results(
        checkpoint, tmp_path, capsys):
    root = tmp_path / "set"
    for name, label in [("liveportrait/d0", "real"), ("ghost/orig_reencoded", "real"), ("liveportrait/d18", "real"),
                        ("ghost/elon", "fake"), ("ghost/khabenskii", "fake"), ("ghost/dance", "fake")]:
        (root / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(fixture(f"{name}.mp4"), root / label / f"{name.replace('/', '_')}.mp4")
    out = tmp_path / "eval"
    common = ["--checkpoint", str(checkpoint), "--frames", "2", "--workers", "0", "--device", "cpu"]
    assert main(["evaluate", "--dataset", "folder", "--root", str(root), "--out", str(out), *common]) == 0
    summary = json.loads((out / "summary.json").read_text())
    low, high = summary["auc_ci95"]
    assert low <= summary["auc"] <= high and summary["tpr_at_fpr"] == {"0.001": None, "0.01": None, "0.05": None}
    assert "needs at least 20 real videos" in summary["tpr_at_fpr_unmeasured"]["0.05"]  # 3 reals: not measurable
    assert 0 <= summary["ece"] <= 1 and 0 <= summary["brier"] <= 1
    assert (out / "reliability.png").stat().st_size > 1000 and (out / "reliability.svg").is_file()

    cal = tmp_path / "cal.json"
    with pytest.warns(UserWarning, match="fewer than 20 of a class"):
        assert main(["calibrate", "--from-results", str(out), "--out", str(cal), "--method", "isotonic",
                     *common]) == 0
    made = Calibration.load(cal, file_sha256(checkpoint))
    assert made.fitted_on["n_videos"] == 6 and made.n_real == 3 and made.n_fake == 3
    assert [p.target_fpr for p in made.operating_points] == [0.01, 0.1]
    assert made.settings == {"frames": 2, "face_detector": DEFAULT_FACE_DETECTOR, "input_size": 64, "amp": False,
                             "aggregate": "paper"}
    assert len(made.fitted_on["video_sha256s"]) == 6 and made.heldout_nll > 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["calibration"] == str(cal)

    other = tmp_path / "other.safetensors"
    save_checkpoint(build_model("hcsi_net_small", input_size=64), other)
    assert main(["calibrate", "--from-results", str(out), "--checkpoint", str(other), "--frames", "2",
                 "--device", "cpu"]) == 2
    assert "was scored with another checkpoint or settings (weights_sha1 differ" in capsys.readouterr().err
    assert main(["calibrate", "--from-results", str(out), "--out", str(cal), *common[:2], "--frames", "4"]) == 2
    assert "frames differ" in capsys.readouterr().err

    again = tmp_path / "eval-calibrated"
    with pytest.warns(UserWarning, match="6 of these 6 videos were among the 6 the calibration was fitted on"):
        assert main(["evaluate", "--dataset", "folder", "--root", str(root), "--out", str(again), "--calibration",
                     str(cal), *common]) == 0
    calibrated = json.loads((again / "summary.json").read_text())["calibrated"]
    assert calibrated["method"] == "isotonic" and calibrated["ece"] <= summary["ece"] + 1e-12
    assert calibrated["videos_in_calibration_set"] == 6
    assert main(["evaluate", "--dataset", "folder", "--root", str(root), "--out", str(tmp_path / "at4"),
                 "--calibration", str(cal), *common[:-4], "--frames", "4", "--device", "cpu"]) == 2
    assert "frames 4 (fitted with 2)" in capsys.readouterr().err


def test_auc_per_ffpp_manipulation_and_per_folder_group():
    from sklearn.metrics import roc_auc_score

    from hcsi.evaluate.run import subset_aucs

    def row(dataset, source, label, group=""):
        return {"dataset": dataset, "source": source, "label": label, "group": group}

    reals = [(row("ff++", "original", 0), s) for s in (0.1, 0.3, 0.5, 0.7)]
    fakes = [(row("ff++", "Deepfakes", 1), s) for s in (0.9, 0.8, 0.6)] + \
        [(row("ff++", "NeuralTextures", 1), s) for s in (0.2, 0.4, 0.65)]
    result = subset_aucs(reals + fakes)
    assert set(result["auc_by_manipulation"]) == {"Deepfakes", "NeuralTextures"}
    expected = roc_auc_score([0] * 4 + [1] * 3, [0.1, 0.3, 0.5, 0.7, 0.2, 0.4, 0.65])
    assert result["auc_by_manipulation"]["NeuralTextures"] == pytest.approx(expected)
    assert "auc_by_group" not in result
    folder = [(row("folder", "real", 0, "phones"), 0.2), (row("folder", "fake", 1, "phones"), 0.6),
              (row("folder", "real", 0, "phones"), 0.7), (row("folder", "fake", 1, "tv"), 0.9),
              (row("folder", "real", 0, ""), 0.1)]
    groups = subset_aucs(folder)["auc_by_group"]
    assert groups["phones"] == pytest.approx(0.5)  # within the group: 0.6 beats 0.2, loses to 0.7
    assert groups["tv"] == pytest.approx(1.0)  # fakes only: against every real video
