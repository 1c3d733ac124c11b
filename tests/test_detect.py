"""`Detector` and `hcsi detect`: real media, gate heatmaps, and every kind of bad input, per file."""
import datetime
import json
import shutil

import cv2
import numpy as np
import pytest
from media import fixture
from PIL import Image

from hcsi.cli import main
from hcsi.detect import Detector
from hcsi.detect.api import strip_faces
from hcsi.detect.explain import gate_strip
from hcsi.evaluate.protocol import MAX_DETECTION_SIDE
from hcsi.models import build_model, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained hcsi_net_small at 64 px: the API's behaviour is checked, not the verdicts."""
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_checkpoint(build_model("hcsi_net_small", input_size=64), path)
    return path


@pytest.fixture(scope="module")
def detector(checkpoint):
    return Detector.from_checkpoint(checkpoint, device="cpu", frames=4)


def test_a_video_gives_frame_scores_faces_and_their_aggregate(detector):
    result = detector.score(fixture("ghost/elon.mp4"))
    assert result.status == "ok" and result.frames_sampled == 4
    assert len(result.frame_scores) == len(result.frame_indices) == 4
    assert result.score == pytest.approx(np.mean(result.frame_scores))
    for index, frame_score in zip(result.frame_indices, result.frame_scores):
        assert frame_score == max(f.score for f in result.faces if f.frame_index == index)
    from hcsi.evaluate.calibration import Decision

    result.decision = Decision(threshold=result.score)
    assert result.to_dict()["label"] == "fake"  # at or above the threshold: fake
    result.decision = Decision(threshold=min(1.0, result.score + 1e-6))
    assert result.to_dict()["label"] == "real"


def test_an_image_file_and_an_array_score_the_same(detector):
    path = fixture("face_recognition/two_people.jpg")
    from_file = detector.score(path)
    from_array = detector.score(np.asarray(Image.open(path).convert("RGB")))
    assert len(from_file.faces) == 2 and from_file.score == pytest.approx(from_array.score, abs=1e-6)


def test_gates_of_every_stage_and_both_streams_make_a_heatmap_strip(detector):
    result = detector.score(fixture("ghost/dance.mp4"), explain=True)
    # gates for the faces the strips show only: each frame's top face, and each person's
    assert sorted(result.gates) == sorted(set(strip_faces(result.faces)) | {p.best_face for p in result.persons})
    assert len(result.gates) == 4 == len(result.faces)  # 4 frames, one face each
    stages = len(result.gates[0]["cnn"])
    assert stages == len(result.gates[0]["vit"]) >= 4
    strip = gate_strip(result)
    # a band of column titles, then one row per frame: crop, gates of both streams, Grad-CAM
    assert strip.shape == (18 + 4 * 112, (2 + 2 * stages) * 112, 3)
    assert strip[:18].min() < 128 and np.median(strip[:18]) == 255  # black titles on white
    cam = result.gates[0]["gradcam"]
    assert cam.shape == (2, 2) and 0.0 <= cam.min() and cam.max() <= 1.0


def test_bad_inputs_each_get_a_status_and_the_batch_goes_on(detector, tmp_path):
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(fixture("ghost/dance.mp4").read_bytes()[:20000])
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 300, 3), 127, np.uint8))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video at all")
    disguised = tmp_path / "photo.mp4"  # a JPEG with a video's extension: the content decides
    shutil.copy(fixture("face_recognition/obama.jpg"), disguised)
    video_as_jpg = tmp_path / "clip.jpg"  # and a video with an image's extension
    shutil.copy(fixture("ghost/dance.mp4"), video_as_jpg)
    photo = Image.open(fixture("face_recognition/obama.jpg"))
    modes = {}
    for mode in ("L", "CMYK", "RGBA", "P"):
        path = tmp_path / f"obama-{mode}.{'jpg' if mode in ('L', 'CMYK') else 'png'}"
        photo.convert(mode).save(path)
        modes[mode] = path
    results = {r.source: r for r in detector.score_many(
        [truncated, blank, junk, disguised, video_as_jpg, tmp_path / "missing.mp4", *modes.values()])}
    assert results[str(blank)].status == "no_face" and results[str(blank)].score is None
    assert results[str(junk)].status == "unreadable" and "junk.mp4" in results[str(junk)].reason
    assert results[str(tmp_path / "missing.mp4")].status == "unreadable"
    assert results[str(disguised)].status == "ok"
    assert results[str(video_as_jpg)].status == "ok" and results[str(video_as_jpg)].frames_sampled == 4
    # cut before its index (the fixture's moov atom is at the end): unreadable, and the reason names the file
    assert results[str(truncated)].status == "unreadable" and "truncated.mp4" in results[str(truncated)].reason
    for mode, path in modes.items():
        assert results[str(path)].status == "ok", mode
    assert detector.score(np.zeros((10, 10), np.float32)).status == "unreadable"


def test_a_very_large_image_is_shrunk_before_detection(detector, tmp_path):
    face = np.asarray(Image.open(fixture("face_recognition/obama.jpg")).convert("RGB"))
    big = cv2.resize(face, (8000, 8000), interpolation=cv2.INTER_LINEAR)
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    del big
    result = detector.score(path)
    assert result.status == "ok"
    assert max(max(f.box) for f in result.faces) <= MAX_DETECTION_SIDE


def test_detect_cli_writes_one_row_per_input_and_heatmaps(checkpoint, tmp_path, capsys):
    junk = tmp_path / "media"
    junk.mkdir()
    (junk / "readme.txt").write_text("not media")
    shutil.copy(fixture("face_recognition/obama.jpg"), junk / "obama.jpg")
    out = tmp_path / "results.jsonl"
    code = main(["detect", str(fixture("ghost/elon.mp4")), str(junk), str(tmp_path / "nothing-*.mp4"),
                 "--checkpoint", str(checkpoint), "--frames", "2", "--device", "cpu", "--out", str(out),
                 "--explain", str(tmp_path / "heat")])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # in the order given: the clip, the folder's files (sorted), the empty glob
    assert [r["status"] for r in rows] == ["ok", "ok", "skipped", "unreadable"]
    assert rows[1]["path"].endswith("obama.jpg") and rows[2]["path"].endswith("readme.txt")
    assert rows[3]["reason"] == "pattern matches no file"
    for r in rows[:2]:
        assert {"path", "score", "label", "status", "reason", "frames_used", "faces_found"} <= set(r)
        assert cv2.imread(r["heatmap"]) is not None
    table = capsys.readouterr().out.splitlines()
    assert "elon.mp4" in table[1] and "obama.jpg" in table[2]
    assert table[3].endswith("skipped (not a video or image file name)")

    csv_out = tmp_path / "results.csv"
    assert main(["detect", str(junk / "obama.jpg"), "--checkpoint", str(checkpoint), "--device", "cpu",
                 "--out", str(csv_out)]) == 0
    assert csv_out.read_text().splitlines()[0].startswith("path,score,label,status,reason")


def test_detect_without_checkpoint_or_any_readable_input_says_so(checkpoint, tmp_path, capsys):
    assert main(["detect", str(tmp_path)]) == 2
    assert "needs a trained checkpoint" in capsys.readouterr().err
    (tmp_path / "a.mp4").write_bytes(b"junk")
    assert main(["detect", str(tmp_path / "a.mp4"), "--checkpoint", str(checkpoint), "--device", "cpu"]) == 1


def test_pickled_checkpoints_with_arbitrary_objects_are_refused(tmp_path):
    import torch

    from hcsi.models.weights import read_state_dict

    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": datetime.date(2020, 1, 1)}, path)  # not allow-listed
    with pytest.raises(ValueError, match="weights_only"):
        read_state_dict(path)
    with pytest.raises(ValueError, match="only in .safetensors"):
        Detector.from_checkpoint(path)


def test_exported_models_give_the_probabilities_of_pytorch(checkpoint, detector, tmp_path):
    import onnxruntime
    import torch

    from hcsi.models.builder import model_from_checkpoint
    from hcsi.normalization import image_to_tensor

    model = model_from_checkpoint(checkpoint)
    faces = detector.score(fixture("ghost/dance.mp4"), explain=True)
    real_crops = torch.stack([image_to_tensor(g["crop"]) for g in faces.gates.values()])
    inputs = {"random": torch.randn(5, 3, 64, 64), "faces": real_crops}
    onnx_path, ts_path = tmp_path / "model.onnx", tmp_path / "model.pt"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(onnx_path)]) == 0
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(ts_path)]) == 0
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(str(ts_path))
    for name, x in inputs.items():
        with torch.no_grad():
            expected = model(x).softmax(dim=1).numpy()
            traced = scripted(x).numpy()
        from_onnx = session.run(None, {"images": x.numpy()})[0]
        assert np.abs(from_onnx - expected).max() < 1e-4, name
        assert np.abs(traced - expected).max() < 1e-4, name

    out = tmp_path / "onnx.jsonl"
    assert main(["detect", str(fixture("ghost/dance.mp4")), "--backend", "onnxruntime", "--model", str(onnx_path),
                 "--frames", "4", "--out", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["score"] == pytest.approx(faces.score, abs=1e-4)

    from hcsi.evaluate.calibration import fit_calibration
    from hcsi.faces import DEFAULT_FACE_DETECTOR
    from hcsi.files import file_sha256

    rng = np.random.default_rng(0)  # a calibration around this score, so that the tier is not trivially one
    calibration = tmp_path / "c.json"
    fit_calibration(np.r_[np.zeros(100, int), np.ones(100, int)],
                    np.r_[rng.normal(faces.score - 0.01, 0.01, 100), rng.normal(faces.score + 0.01, 0.01, 100)],
                    checkpoint_sha256=file_sha256(checkpoint),
                    settings={"frames": 4, "face_detector": DEFAULT_FACE_DETECTOR, "input_size": 64,
                              "amp": False}).save(calibration)
    rows = {}
    for backend in (["--checkpoint", str(checkpoint)], ["--backend", "onnxruntime", "--model", str(onnx_path)]):
        assert main(["detect", str(fixture("ghost/dance.mp4")), *backend, "--frames", "4", "--device", "cpu",
                     "--calibration", str(calibration), "--out", str(out)]) == 0
        rows[backend[-1]] = json.loads(out.read_text())
    torch_row, onnx_row = rows.values()
    assert torch_row["verdict"] == onnx_row["verdict"] and torch_row["decided_by"] == onnx_row["decided_by"]
    assert onnx_row["probability"] == pytest.approx(torch_row["probability"], abs=1e-3)


def test_an_input_that_breaks_the_face_detector_gets_status_error_and_the_batch_goes_on(checkpoint, tmp_path):
    from media import write_face_clip

    write_face_clip(tmp_path / "ok.mp4", frames=2, width=384)
    write_face_clip(tmp_path / "odd.mp4", frames=2, width=300)
    detector = Detector.from_checkpoint(checkpoint, device="cpu", frames=2)
    inner = detector.face_detector

    class BreaksOnOddVideo:
        def detect(self, frame):
            if frame.shape[1] == 300:
                raise IndexError("landmark index out of range")
            return inner.detect(frame)

    detector.face_detector = BreaksOnOddVideo()
    odd, ok = detector.score_many([tmp_path / "odd.mp4", tmp_path / "ok.mp4"])
    assert odd.status == "error" and "IndexError: landmark index out of range" in odd.reason and odd.score is None
    assert ok.status == "ok" and ok.score is not None


@pytest.mark.parametrize("explain", [False, True])
def test_progress_counts_every_frame_searched_and_scored(checkpoint, explain):
    detector = Detector.from_checkpoint(checkpoint, device="cpu", frames=10)
    calls = []
    result = detector.score(fixture("ghost/elon.mp4"), explain=explain, progress=lambda *call: calls.append(call))
    assert result.status == "ok" and len(result.frame_indices) == 10
    searching = [(done, total) for stage, done, total in calls if stage == "finding faces"]
    scoring = [(done, total) for stage, done, total in calls if stage == "scoring faces"]
    assert searching == [(0, 10), (4, 10), (8, 10), (10, 10)]  # PROGRESS_FRAMES at a time
    assert scoring == [(0, 10), (8, 10), (10, 10)]  # PROGRESS_CROPS at a time, one face per frame
    assert calls.index(("scoring faces", 0, 10)) == len(searching)  # faces are found first
    plain = detector.score(fixture("ghost/elon.mp4"), explain=explain)
    assert result.frame_scores == pytest.approx(plain.frame_scores, abs=1e-5)


def test_a_frame_counts_as_scored_once_all_its_faces_are():
    from hcsi.detect.api import _frames_scored
    from hcsi.evaluate.protocol import VideoFaces

    calls = []
    scored = _frames_scored(VideoFaces(crop_frame=[0, 0, 1, 3, 3, 3]), lambda *call: calls.append(call))
    for n in range(7):
        scored(n)
    assert [done for _, done, _ in calls] == [0, 0, 0, 1, 2, 2, 2, 3]
    assert {total for _, _, total in calls} == {3}


def _obama(scale: float) -> np.ndarray:
    import cv2

    image = cv2.cvtColor(cv2.imread(str(fixture("face_recognition/obama.jpg"))), cv2.COLOR_BGR2RGB)
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def test_inputs_that_cannot_be_judged_say_why(checkpoint, tmp_path):
    """A face shrunk to a few pixels, a crowd of twelve, no face, a text file renamed .mp4: verdict cannot_judge with
    the reason's code, calibrated or not; a clear face gets a label."""
    detector = Detector.from_checkpoint(checkpoint, device="cpu", frames=1)
    small = np.full((480, 640, 3), 128, np.uint8)
    face = _obama(0.35)
    small[100:100 + face.shape[0], 200:200 + face.shape[1]] = face
    tile = _obama(0.5)
    crowd = np.tile(tile, (3, 4, 1))
    (tmp_path / "notes.mp4").write_text("not a video")
    cases = {"face_too_small": detector.score(small), "too_many_faces": detector.score(crowd),
             "no_face": detector.score(np.full((240, 320, 3), 128, np.uint8)),
             "unreadable": detector.score(tmp_path / "notes.mp4")}
    for code, result in cases.items():
        assert [r["code"] for r in result.cannot_judge] == [code], (code, result.cannot_judge)
        row = result.to_dict()
        assert row["verdict"] == "cannot_judge" and row["label"] is None
        assert row["cannot_judge"][0]["message"] in row["verdict_meaning"]
    assert len(cases["too_many_faces"].faces) == 12 and cases["face_too_small"].score is not None
    clear = detector.score(fixture("face_recognition/obama.jpg"))
    assert clear.cannot_judge == [] and clear.verdict is None and clear.label in ("fake", "real")

    from hcsi.evaluate.calibration import fit_calibration

    rng = np.random.default_rng(0)
    calibration = fit_calibration(np.r_[np.zeros(50, int), np.ones(50, int)], rng.uniform(0, 1, 100),
                                  settings=detector.scoring_settings())
    calibrated = Detector(detector.model, device="cpu", frames=1, calibration=calibration)
    small_face = calibrated.score(small)
    assert small_face.verdict == "cannot_judge" and small_face.probability is not None  # calibrated or not
    assert calibrated.score(fixture("face_recognition/obama.jpg")).verdict in ("manipulated", "inconclusive",
                                                                              "no_evidence")
