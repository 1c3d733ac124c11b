"""Evaluation: the video-level protocol on real clips, resume after a kill, DDP sharding, dataset readers, metrics,
reports and the subset-matched comparison with Table II (Eq. 17)."""
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from media import fixture
from sklearn.metrics import roc_auc_score

from hcsi.cli import main
from hcsi.evaluate.compare import PAPER_HCSI_NET_AUC, compare_with_baselines, read_baselines
from hcsi.evaluate.datasets import test_videos as read_test_videos
from hcsi.evaluate.metrics import detection_metrics, equal_error_rate
import hcsi.evaluate.protocol as protocol
from hcsi.evaluate.protocol import VideoFaces, aggregate_video, score_in_batches
from hcsi.evaluate.report import ablation_table, collect_aucs, coverage_table, cross_dataset_table
from hcsi.models import build_model, save_checkpoint

PROJECT = Path(__file__).resolve().parents[1]
TABLE_II_OURS = {"FFIW": 91.54, "LipForensics": 88.12, "PCL+I2G": 89.41, "SBI": 89.13, "AltFreezing": 95.87,
                 "UCF": 87.63, "CFM": 87.10, "NoiseDF": 88.12, "ProDet": 87.31, "LSDA": 86.94, "FDML": 94.88,
                 "BSF": 87.63, "LESB": 84.26}
TABLE_II_AVG = {"FFIW": 83.90, "LipForensics": 84.33, "PCL+I2G": 86.01, "SBI": 88.96, "AltFreezing": 95.53,
                "UCF": 85.80, "CFM": 83.76, "NoiseDF": 77.92, "ProDet": 83.49, "LSDA": 81.53, "FDML": 86.33,
                "BSF": 87.40, "LESB": 82.71}
SECTION_V_DELTAS = {"NoiseDF": 10.20, "FDML": 8.55, "LSDA": 5.41, "ProDet": 3.82, "PCL+I2G": 3.40,
                    "AltFreezing": 0.34, "BSF": 0.23}


def test_the_papers_own_row_reproduces_table_ii_and_the_deltas_of_section_v():
    rows = {r["baseline"]: r for r in compare_with_baselines(PAPER_HCSI_NET_AUC, read_baselines())}
    assert set(rows) == set(TABLE_II_OURS)
    for name, ours in TABLE_II_OURS.items():
        assert abs(rows[name]["ours_mauc"] - ours) <= 0.01, name
        assert abs(rows[name]["baseline_mauc"] - TABLE_II_AVG[name]) <= 0.01, name
    for name, delta in SECTION_V_DELTAS.items():
        assert abs(rows[name]["delta"] - delta) <= 0.01, name
    assert rows["FDML"]["datasets"] == ["ff++", "cdf"]


def test_compare_cli_prints_json_and_draws_fig_4(tmp_path, capsys):
    aucs = [f"{d}={v}" for d, v in PAPER_HCSI_NET_AUC.items() if d != "ffiw"]
    assert main(["compare", "--auc", *aucs, "--json", "--plot", str(tmp_path / "fig4")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert set(rows[0]) >= {"baseline", "venue", "datasets", "baseline_mauc", "ours_mauc", "delta"}
    sbi = next(r for r in rows if r["baseline"] == "SBI")
    assert sbi["delta"] is None and sbi["missing"] == ["ffiw"]  # no result on FFIW: no subset-matched Δ
    fdml = next(r for r in rows if r["baseline"] == "FDML")
    assert fdml["ours_mauc"] == pytest.approx(94.88, abs=0.01)
    assert (tmp_path / "fig4.png").stat().st_size > 1000 and "<svg" in (tmp_path / "fig4.svg").read_text()[:500]


def test_metrics_match_direct_computations():
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.4, 0.6, 0.35, 0.8, 0.9]
    m = detection_metrics(labels, scores)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["acc"] == pytest.approx(4 / 6)
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.0)
    assert equal_error_rate(labels, scores) == pytest.approx(1 / 3)
    assert detection_metrics([1, 1], [0.2, 0.9])["auc"] is None


def test_frame_score_is_the_max_over_faces_and_the_video_score_the_mean_over_frames():
    faces = VideoFaces(frame_indices=[0, 10, 20], crops=[None] * 4, crop_frame=[0, 0, 2, 2])
    score, frames = aggregate_video(faces, np.array([0.2, 0.7, 0.4, 0.1]))
    assert frames == [(0, 0.7, 2), (20, 0.4, 2)]  # frame 10 had no face: skipped
    assert score == pytest.approx((0.7 + 0.4) / 2)
    assert aggregate_video(VideoFaces(frame_indices=[0]), np.zeros(0)) == (None, [])


class _BrightnessModel(torch.nn.Module):
    """Logits (0, mean brightness × 4 − 2): every crop gets its own score. A crop of another size breaks a pooled
    batch (torch.stack fails) and is refused alone, as a corrupt input breaks a real network's batch."""

    config = type("Config", (), {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "input_size": 16})()

    def forward(self, x):
        if x.shape[-2:] != (16, 16):
            raise ValueError(f"expected 16×16 crops, got {tuple(x.shape)}")
        level = x.mean(dim=(1, 2, 3)) * 4 - 2
        return torch.stack([torch.zeros_like(level), level], dim=1)


def test_pooled_model_batches_keep_each_videos_scores_and_a_broken_video_fails_alone(monkeypatch):
    rng = np.random.default_rng(0)
    videos = []
    for n, side in ((3, 16), (5, 16), (2, 9), (4, 16), (0, 16)):  # the third has a malformed crop; the last no face
        crops = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(n)]
        videos.append((f"video{len(videos)}", VideoFaces(frame_indices=list(range(n)), crops=crops,
                                                          crop_frame=list(range(n)))))
    model, cpu = _BrightnessModel(), torch.device("cpu")
    calls = []
    original = protocol.score_crops
    results = list(score_in_batches(model, iter(videos), cpu, batch_size=8))
    assert [key for key, _, _ in results] == [key for key, _ in videos]
    for (key, faces, scores), (_, own) in zip(results, videos):
        if key == "video2":
            assert isinstance(scores, Exception)
            continue
        alone = original(model, own.crops, cpu, 8)
        assert len(scores) == len(own.crops) and np.allclose(scores, alone, atol=1e-6)
    all_scores = np.concatenate([s for k, _, s in results if k != "video2"])
    assert len(np.unique(np.round(all_scores, 4))) == len(all_scores)  # every crop its own score: no mix-up hides
    monkeypatch.setattr(protocol, "score_crops",
                        lambda model, crops, *a, **k: calls.append(len(crops)) or original(model, crops, *a, **k))
    list(score_in_batches(model, iter(v for v in videos if v[0] != "video2"), cpu, batch_size=8))
    assert calls == [8, 4]  # 3 + 5 crops pooled into one full batch, then 4 + 0


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_readers_follow_the_official_layouts_and_keep_ffpp_methods_apart(tmp_path):
    ff = tmp_path / "ff"
    (ff / "test.json").parent.mkdir(parents=True)
    (ff / "test.json").write_text(json.dumps([["000", "003"]]))
    _touch(ff / "original_sequences/youtube/raw/videos/000.mp4")
    _touch(ff / "original_sequences/youtube/raw/videos/500.mp4")  # not a test id
    for method in ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"):
        _touch(ff / f"manipulated_sequences/{method}/raw/videos/000_003.mp4")
        _touch(ff / f"manipulated_sequences/{method}/raw/videos/003_000.mp4")
    videos = read_test_videos("ff++", ff)
    assert len(videos) == 9 and sum(v.label for v in videos) == 8
    assert len({v.key for v in videos}) == 9  # 000_003 of four methods: four videos
    assert {v.key for v in videos if v.video_id == "000_003"} == {
        f"ff++/{m}/000_003" for m in ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")}

    cdf = tmp_path / "cdf"
    _touch(cdf / "Celeb-real/id0_0000.mp4")
    _touch(cdf / "Celeb-synthesis/videos/id0_id1_0000.mp4")  # SBI's tree with videos/
    (cdf / "List_of_testing_videos.txt").write_text("1 Celeb-real/id0_0000.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n")
    videos = read_test_videos("cdf", cdf)
    assert [(v.label, v.path.exists()) for v in videos] == [(0, True), (1, True)]

    dfdc = tmp_path / "dfdc"
    _touch(dfdc / "videos/a.mp4")
    (dfdc / "labels.csv").write_text("filename,label\na.mp4,1\n")
    assert read_test_videos("dfdc", dfdc)[0].label == 1

    dfdcp = tmp_path / "dfdcp"
    _touch(dfdcp / "method_A/videos/1/2/x.mp4")
    _touch(dfdcp / "original_videos/videos/1/y.mp4")
    (dfdcp / "dataset.json").write_text(json.dumps({
        "method_A/1/2/x.mp4": {"label": "fake", "set": "test"}, "original_videos/1/y.mp4": {"label": "real", "set": "test"},
        "original_videos/1/z.mp4": {"label": "real", "set": "train"}}))
    _touch(dfdcp / "method_B/videos/x.mp4")  # same name in another method's folder: never taken for method_A's
    videos = read_test_videos("dfdcp", dfdcp)
    assert [(v.label, v.path.exists()) for v in videos] == [(1, True), (0, True)]  # found in their own folders
    assert videos[0].path == dfdcp / "method_A/videos/1/2/x.mp4"
    (dfdcp / "original_videos/videos/1/y.mp4").unlink()  # not at its path, but twice inside its own folder
    _touch(dfdcp / "original_videos/extra/y.mp4")
    _touch(dfdcp / "original_videos/train_copy/y.mp4")
    with pytest.raises(ValueError, match="'original_videos/1/y.mp4' matches 2 files named y.mp4"):
        read_test_videos("dfdcp", dfdcp)

    ffiw = tmp_path / "ffiw"
    _touch(ffiw / "FFIW10K-v1-release/source/val/videos/1.mp4")
    _touch(ffiw / "FFIW10K-v1-release/target/val/videos/1.mp4")
    assert sorted(v.label for v in read_test_videos("ffiw", ffiw)) == [0, 1]


def test_missing_roots_and_label_files_say_what_was_expected_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="test.json"):
        read_test_videos("ff++", tmp_path)
    with pytest.raises(FileNotFoundError, match="List_of_testing_videos.txt"):
        read_test_videos("cdf", tmp_path)
    with pytest.raises(FileNotFoundError, match="labels.csv"):
        read_test_videos("dfdc", tmp_path)
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        read_test_videos("dfdcp", tmp_path)
    with pytest.raises(FileNotFoundError, match="real/ and fake/"):
        read_test_videos("folder", tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        read_test_videos("dfd", tmp_path / "nowhere")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """real/ and fake/ folders linking fixture clips (GHOST's face swaps and their source), plus a broken file."""
    root = tmp_path_factory.mktemp("testset")
    for name, label in [("liveportrait/d0", "real"), ("ghost/dance", "fake"), ("ghost/orig_reencoded", "real"),
                        ("ghost/elon", "fake"), ("ghost/khabenskii", "fake"), ("liveportrait/d18", "real")]:
        (root / label).mkdir(exist_ok=True)
        os.symlink(fixture(f"{name}.mp4"), root / label / f"{name.replace('/', '_')}.mp4")
    (root / "fake" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained hcsi_net_small at 64 px: the protocol is checked, not the detector's quality."""
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_checkpoint(build_model("hcsi_net_small", input_size=64), path)
    return path


def _evaluate_cli(args, **popen):
    env = dict(os.environ, PYTHONPATH=str(PROJECT / "src"), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "hcsi.cli", "evaluate", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_folder_evaluation_scores_every_video_and_records_failures(clips, checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder", "--root", str(clips),
                 "--frames", "4", "--workers", "0", "--device", "cpu", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_videos"] == 7 and summary["n_failed"] == 1 and summary["failed_by_status"] == {"unreadable": 1}
    rows = _rows(out / "videos.csv")  # the AUC is that of the scores it lists (failure policy included)
    assert summary["auc"] == pytest.approx(roc_auc_score([int(r["label"]) for r in rows],
                                                         [float(r["score"]) for r in rows]))
    assert summary["checkpoint"] == str(checkpoint) and summary["model"] == "hcsi_net_small" and summary["git_commit"]
    videos = {r["video_id"]: r for r in _rows(out / "videos.csv")}
    assert videos["broken"]["status"] == "unreadable" and float(videos["broken"]["score"]) == 0.5
    assert "broken.mp4" in videos["broken"]["reason"]
    frames = _rows(out / "frames.csv")
    for video_id, row in videos.items():
        if row["status"] != "ok":
            continue
        own = [float(f["score"]) for f in frames if f["video_id"] == video_id]
        assert int(row["frames_used"]) == len(own) == 4
        assert float(row["score"]) == pytest.approx(np.mean(own), abs=1e-6)  # mean over frames
    labels = [int(r["label"]) for r in videos.values()]
    assert summary["auc"] == pytest.approx(roc_auc_score(labels, [float(r["score"]) for r in videos.values()]))

    assert main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder", "--root", str(clips),
                 "--frames", "4", "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "ex"),
                 "--exclude-failures"]) == 0
    excluded = json.loads((tmp_path / "ex" / "summary.json").read_text())
    assert excluded["n_scored"] == 6 and excluded["n_failed"] == 1

    assert main(["report", str(out)]) == 0
    assert "hcsi_net_small" in capsys.readouterr().out


def test_a_killed_evaluation_resumes_to_the_same_auc(clips, checkpoint, tmp_path):
    # batches of 4 crops: videos (about 4 faces each) finish one by one, not pooled into one batch at the end
    args = ["--checkpoint", str(checkpoint), "--dataset", "folder", "--root", str(clips), "--frames", "4",
            "--workers", "1", "--device", "cpu", "--batch-size", "4"]
    straight = _evaluate_cli([*args, "--out", str(tmp_path / "a")])
    assert straight.wait(timeout=600) == 0, straight.stderr.read()
    killed = _evaluate_cli([*args, "--out", str(tmp_path / "b")])
    cache = tmp_path / "b" / "cache"
    deadline = time.time() + 300
    while time.time() < deadline and killed.poll() is None and len(list(cache.glob("*.json"))) < 2:
        time.sleep(0.05)
    killed.kill()
    killed.communicate()
    finished = len(list(cache.glob("*.json")))
    assert 2 <= finished < 7 and not (tmp_path / "b" / "summary.json").exists()
    resumed = _evaluate_cli([*args, "--out", str(tmp_path / "b")])
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    # the same videos, statuses and frame counts; scores equal up to float order (a resumed run may batch its
    # crops differently, and an untrained model's scores lie so close that an exact AUC could flip on a last bit)
    straight_rows, resumed_rows = _rows(tmp_path / "a" / "videos.csv"), _rows(tmp_path / "b" / "videos.csv")
    assert [_without_score(r) for r in straight_rows] == [_without_score(r) for r in resumed_rows]
    for x, y in zip(straight_rows, resumed_rows):
        assert float(x["score"]) == pytest.approx(float(y["score"]), abs=1e-5), x["video_id"]
    resumed = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert resumed["auc"] == pytest.approx(roc_auc_score([int(r["label"]) for r in resumed_rows],
                                                         [float(r["score"]) for r in resumed_rows]))


def _without_score(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "score"}


def test_two_gloo_processes_give_the_csv_of_one(clips, checkpoint, tmp_path):
    args = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder", "--root", str(clips), "--frames", "4",
            "--workers", "0", "--device", "cpu"]
    env = dict(os.environ, PYTHONPATH=str(PROJECT / "src"), OMP_NUM_THREADS="1")
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "hcsi.cli", *args, "--out", str(tmp_path / "two")], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = _rows(tmp_path / "one" / "videos.csv"), _rows(tmp_path / "two" / "videos.csv")
    assert [r["video_id"] for r in one] == [r["video_id"] for r in two]
    for x, y in zip(one, two):
        assert _without_score(x) == _without_score(y)
        assert float(x["score"]) == pytest.approx(float(y["score"]), abs=1e-5)


def test_reports_build_table_ii_and_table_iii_layouts(tmp_path):
    paths = []
    for model, base in (("hcsi_net", 90.0), ("late_fusion", 87.0)):
        for i, dataset in enumerate(("ff++", "cdf", "dfd", "dfdc", "dfdcp", "ffiw")):
            path = tmp_path / f"{model}-{dataset}.json"
            path.write_text(json.dumps({"dataset": dataset, "auc": (base + i) / 100, "model": model}))
            paths.append(path)
    table = collect_aucs(paths)
    text = cross_dataset_table(table)
    assert "| hcsi_net | 90.00 | 91.00 | 92.00 | 93.00 | 94.00 | 95.00 | 92.50 |" in text
    assert "| late_fusion | 89.50 | -3.00 |" in ablation_table(table)
    with pytest.raises(ValueError, match="two results"):
        collect_aucs(paths + paths[:1])
    paths[1].write_text(json.dumps({"dataset": "cdf", "auc": 0.91, "model": "hcsi_net", "n_videos": 518,
                                    "n_failed": 3, "failed_by_status": {"no_face": 2, "unreadable": 1},
                                    "frames_without_face": 41, "auc_ci95": [0.8812, 0.9345]}))
    table = coverage_table(paths)
    assert "| hcsi_net | CDF | 91.00 [88.12, 93.45] | 518 | 3 | no_face 2, unreadable 1 | 41 |" in table
    assert "| hcsi_net | FF++ | 90.00 (no interval) |" in table


def test_an_output_folder_refuses_scores_made_with_other_settings(clips, checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["evaluate", "--dataset", "folder", "--root", str(clips), "--workers", "0", "--device", "cpu",
            "--out", str(out)]
    assert main([*args, "--checkpoint", str(checkpoint), "--frames", "2"]) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["frames"] == 2 and settings["model_config"]["name"] == "hcsi_net_small"
    before = (out / "videos.csv").read_text()
    capsys.readouterr()
    assert main([*args, "--checkpoint", str(checkpoint), "--frames", "3"]) == 2  # other frame count
    assert "frames differ" in capsys.readouterr().err
    other = tmp_path / "other.safetensors"
    torch.manual_seed(1)
    save_checkpoint(build_model("hcsi_net_small", input_size=64), other)  # same architecture, other weights
    assert main([*args, "--checkpoint", str(other), "--frames", "2"]) == 2
    assert "weights_sha1 differ" in capsys.readouterr().err
    assert main([*args, "--checkpoint", str(checkpoint), "--frames", "2", "--face-detector", "hog"]) == 2
    assert "pass that to continue it" in capsys.readouterr().err  # names the detector the folder used
    assert (out / "videos.csv").read_text() == before  # nothing was mixed in
    assert main([*args, "--checkpoint", str(checkpoint), "--frames", "2"]) == 0  # the same settings resume


def test_a_video_that_breaks_the_face_detector_is_listed_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    """One video among several makes the detector raise: that video gets status "error" with the message, every
    other one is scored, the failure policy applies, and a rerun does not try it again."""
    import hcsi.evaluate.run as run_module
    from hcsi.faces import create_face_detector
    from media import write_face_clip

    root = tmp_path / "clips"
    for label, name, width in [("real", "a", 320), ("real", "b", 352), ("fake", "c", 384), ("fake", "odd", 300)]:
        (root / label).mkdir(parents=True, exist_ok=True)
        write_face_clip(root / label / f"{name}.mp4", frames=2, width=width)
    calls = {"odd": 0, "all": 0}
    broken = {"detector": True}

    class BreaksOnOddVideo:
        def __init__(self):
            self.inner = create_face_detector()

        def detect(self, frame):
            calls["all"] += 1
            if frame.shape[1] == 300:
                calls["odd"] += 1
            if frame.shape[1] == 300 and broken["detector"]:
                raise IndexError("landmark index out of range")  # an unexpected detector failure
            return self.inner.detect(frame)

    monkeypatch.setattr(run_module, "create_face_detector", lambda name, device=None: BreaksOnOddVideo())
    checkpoint = tmp_path / "model.safetensors"
    save_checkpoint(build_model("cnn_only_small", input_size=64), checkpoint)
    args = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder", "--root", str(root), "--frames", "2",
            "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_videos"] == 4 and summary["failed_by_status"] == {"error": 1} and summary["n_scored"] == 4
    rows = {Path(r["path"]).name: r for r in csv.DictReader(open(tmp_path / "out" / "videos.csv"))}
    assert rows["odd.mp4"]["status"] == "error" and "IndexError: landmark index out of range" in rows["odd.mp4"]["reason"]
    assert rows["odd.mp4"]["score"] == "0.500000"  # the failure policy (SBI's 0.5)
    assert all(rows[n]["status"] == "ok" for n in ("a.mp4", "b.mp4", "c.mp4"))
    calls_before = calls["odd"]
    assert main(args) == 0 and calls["odd"] == calls_before  # the rerun resumes past it
    broken["detector"] = False  # the cause is fixed: --retry-failed scores that video again, and only that one
    all_before = calls["all"]
    assert main([*args, "--retry-failed"]) == 0
    assert calls["odd"] - calls_before == calls["all"] - all_before == 2  # its two frames, no other video's
    rows = {Path(r["path"]).name: r for r in csv.DictReader(open(tmp_path / "out" / "videos.csv"))}
    assert rows["odd.mp4"]["status"] == "ok" and rows["odd.mp4"]["reason"] == ""
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["failed_by_status"] == {}


def test_evaluation_draws_its_roc_and_the_gallery_shows_the_most_confident_mistakes(tmp_path, capsys):
    import cv2

    from hcsi.evaluate.figures import failure_cases
    from media import write_face_clip

    root = tmp_path / "clips"
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True)
        for k, width in enumerate((352, 384, 416)):
            write_face_clip(root / label / f"{label}{k}.mp4", frames=2, width=width + (8 if label == "fake" else 0))
    checkpoint = tmp_path / "model.safetensors"
    torch.manual_seed(3)
    save_checkpoint(build_model("cnn_only_small", input_size=64), checkpoint)
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "folder", "--root", str(root),
                 "--frames", "2", "--workers", "0", "--device", "cpu", "--out", str(out)]) == 0
    assert (out / "roc.png").stat().st_size > 10_000 and (out / "roc.svg").read_text().startswith("<?xml")
    rows = list(csv.DictReader(open(out / "videos.csv")))
    assert all(cv2.imread(str(out / r["crop"])).shape == (160, 160, 3) for r in rows)

    scores = sorted(float(r["score"]) for r in rows)
    threshold = round((scores[2] + scores[3]) / 2, 6)  # half the videos above: mistakes on both sides likely
    false_positives, false_negatives = failure_cases(out, n=8, threshold=threshold)
    expected_fp = sorted((float(r["score"]) for r in rows if r["label"] == "0" and float(r["score"]) >= threshold),
                         reverse=True)
    assert [c["score"] for c in false_positives] == pytest.approx(expected_fp, abs=1e-6)
    assert all(c["label"] == 1 and c["score"] < threshold for c in false_negatives)
    assert main(["gallery", str(out), "--threshold", str(threshold), "--out", str(tmp_path / "gallery.png")]) == 0
    assert cv2.imread(str(tmp_path / "gallery.png")) is not None

    assert main(["report", str(out), "--roc", str(tmp_path / "all_roc")]) == 0
    assert (tmp_path / "all_roc.png").is_file() and (tmp_path / "all_roc.svg").is_file()
