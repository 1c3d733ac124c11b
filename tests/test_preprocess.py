"""`hcsi preprocess` on a folder: faces stored with their coordinates, bad files reported, runs resume."""
import json
import os

import cv2
import numpy as np
import pytest
from media import fixture, write_index_video

from hcsi.cli import main
from hcsi.data import preprocess as prep
from hcsi.data.sources import ffpp_real_videos, folder_videos


@pytest.fixture()
def media_root(tmp_path):
    """A folder with a real talking-head clip (linked, not copied), a clip without faces and three bad files."""
    root = tmp_path / "media"
    (root / "clips").mkdir(parents=True)
    os.symlink(fixture("ghost/dance.mp4"), root / "clips" / "dance.mp4")
    write_index_video(root / "clips" / "noface.mkv", frames=12)
    (root / "empty.mp4").touch()
    (root / "notes.mp4").write_text("this is not a video")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def run(root, out, *extra):
    return main(["preprocess", "--dataset", "folder", "--root", str(root), "--out", str(out), "--frames", "4",
                 *extra])


def test_faces_are_stored_with_the_coordinates_to_reproduce_them(media_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(media_root, out) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == {"videos": 5, "skipped_done": 0, "processed": 2, "failed": 3, "no_faces": 1, "out": str(out)}

    meta = json.loads((out / "videos" / "clips" / "dance" / "meta.json").read_text())
    assert meta["status"] == "ok" and meta["frame_count"] == 66 and len(meta["sampled_indices"]) == 4
    frame = meta["frames"][0]
    face = frame["faces"][0]
    crop = cv2.imread(str(out / "videos" / "clips" / "dance" / face["file"]))
    landmarks, box = np.array(face["landmarks"]), np.array(face["box"]).ravel()
    assert landmarks.shape == (81, 2)
    h, w = crop.shape[:2]
    assert np.all((landmarks[:68] >= 0) & (landmarks[:68] <= [w, h]))  # the whole face is inside its crop
    # the crop is the frame region at `origin`: compare with the frame decoded independently
    from hcsi.faces import sample_frames
    original = sample_frames(fixture("ghost/dance.mp4"), 4).frames[0]
    x0, y0 = face["origin"]
    assert np.array_equal(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), original[y0:y0 + h, x0:x0 + w])
    assert 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h

    noface = json.loads((out / "videos" / "clips" / "noface" / "meta.json").read_text())
    assert noface["status"] == "no_faces"
    assert [f["reason"] for f in noface["failures"]] == ["no face found"] * 4

    failures = {f["video_id"]: f["reason"] for f in json.loads((out / "failures.json").read_text())}
    assert set(failures) == {"empty", "notes", "broken"}
    assert "empty" in failures["empty"] and "notes.mp4" in failures["notes"] and "broken.jpg" in failures["broken"]
    index = json.loads((out / "index.json").read_text())["videos"]
    assert set(index) == {"clips/dance", "clips/noface"}


def test_a_rerun_skips_finished_videos_and_retries_failed_ones(media_root, tmp_path, capsys):
    out = tmp_path / "out"
    run(media_root, out)
    before = (out / "videos" / "clips" / "dance" / "meta.json").stat().st_mtime_ns
    capsys.readouterr()
    run(media_root, out)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["skipped_done"] == 2 and summary["failed"] == 3
    assert (out / "videos" / "clips" / "dance" / "meta.json").stat().st_mtime_ns == before
    capsys.readouterr()
    assert run(media_root, out, "--face-detector", "hog") == 2  # a finished store is not extended in another way
    err = capsys.readouterr().err
    assert "detector='hog540+blazeface-every-frame'" in err
    assert "same options (--face-detector hog540+blazeface-every-frame)" in err
    assert main(["preprocess", "--dataset", "folder", "--root", str(media_root), "--out", str(out)]) == 2  # 32 frames
    assert "now frames=32" in capsys.readouterr().err
    assert (out / "videos" / "clips" / "dance" / "meta.json").stat().st_mtime_ns == before


def test_an_interrupted_video_is_not_marked_done_and_is_redone(media_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    (out / ".partial" / "left-by-a-killed-run").mkdir(parents=True)
    written, real = [], cv2.imwrite

    def failing_imwrite(path, image):  # the second crop of the run fails, mid-video
        written.append(path)
        if len(written) == 2:
            raise OSError("disk full")
        return real(path, image)

    monkeypatch.setattr(prep.cv2, "imwrite", failing_imwrite)
    prep.preprocess(folder_videos(media_root), out, prep.PreprocessOptions(frames=4), progress=False)
    assert not (out / "videos" / "clips" / "dance").exists()  # nothing half-written looks finished
    assert not (out / ".partial").exists()
    failures = json.loads((out / "failures.json").read_text())
    assert any(f["video_id"] == "clips/dance" and "disk full" in f["reason"] for f in failures)

    monkeypatch.setattr(prep.cv2, "imwrite", real)
    summary = prep.preprocess(folder_videos(media_root), out, prep.PreprocessOptions(frames=4), progress=False)
    assert summary["skipped_done"] == 1  # noface was finished, dance is redone
    assert json.loads((out / "videos" / "clips" / "dance" / "meta.json").read_text())["status"] == "ok"


def test_parallel_workers_give_the_same_store(media_root, tmp_path):
    prep.preprocess(folder_videos(media_root), tmp_path / "a", prep.PreprocessOptions(frames=4), progress=False)
    prep.preprocess(folder_videos(media_root), tmp_path / "b", prep.PreprocessOptions(frames=4), workers=2,
                    progress=False)
    a = json.loads((tmp_path / "a" / "index.json").read_text())
    b = json.loads((tmp_path / "b" / "index.json").read_text())
    assert a == b


def test_ffpp_sources_follow_the_official_splits(tmp_path):
    videos = tmp_path / "ffpp" / "original_sequences" / "youtube" / "c23" / "videos"
    videos.mkdir(parents=True)
    for vid in ("000", "001", "002", "519"):
        (videos / f"{vid}.mp4").touch()
    root = tmp_path / "ffpp"
    (root / "train.json").write_text(json.dumps([["000", "001"]]))
    (root / "val.json").write_text(json.dumps([["002", "003"]]))
    with pytest.raises(FileNotFoundError, match="test.json"):
        ffpp_real_videos(root, "c23")
    (root / "test.json").write_text(json.dumps([["004", "005"]]))
    sources = ffpp_real_videos(root, "c23")
    assert [(s.video_id, s.split) for s in sources] == [
        ("original_sequences/youtube/c23/videos/000", "train"),
        ("original_sequences/youtube/c23/videos/001", "train"),
        ("original_sequences/youtube/c23/videos/002", "val"),
    ]
    with pytest.raises(FileNotFoundError, match="raw"):
        ffpp_real_videos(root, "raw")


def test_retinaface_boxes_are_stored_beside_the_landmarks(tmp_path, capsys):
    """Each face keeps the RetinaFace box SBI would crop it by (the larger-IoU of the frame's two largest), in crop
    pixels; the stored crop holds the widest training crop around it; the store records the finder."""
    from hcsi.faces import create_face_detector, face_crop_box, sample_frames
    from hcsi.faces.crops import TRAIN_MARGIN_FACTOR, matching_retina_box

    root = tmp_path / "media"
    root.mkdir()
    os.symlink(fixture("liveportrait/s18.mp4"), root / "s18.mp4")
    out = tmp_path / "out"
    assert run(root, out, "--retinaface-boxes", "retinaface") == 0
    assert json.loads((out / "store.json").read_text())["retinaface"] == "retinaface"
    meta = json.loads((out / "videos" / "s18" / "meta.json").read_text())
    assert meta["retinaface"] == "retinaface"
    frames = sample_frames(fixture("liveportrait/s18.mp4"), 4).frames
    found = create_face_detector("retinaface").detect_many(frames)
    for frame, stored, faces in zip(frames, meta["frames"], found):
        face = stored["faces"][0]
        origin = np.array(face["origin"] * 2, dtype=float)
        expected = matching_retina_box(np.array(face["landmarks"]) + origin[:2], [f.box for f in faces])
        assert expected is not None
        assert np.allclose(np.ravel(face["retina_box"]) + origin, expected, atol=0.006)  # stored to 2 decimals
        crop = cv2.imread(str(out / "videos" / "s18" / face["file"]))
        widest = face_crop_box(expected, frame.shape[1], frame.shape[0], (TRAIN_MARGIN_FACTOR[1],) * 4)
        assert np.all(widest[:2] >= origin[:2]) and np.all(widest[2:] <= origin[:2] + crop.shape[1::-1])
    capsys.readouterr()
    assert run(root, out, "--retinaface-boxes", "none") != 0  # the store was made with boxes
    assert "--retinaface-boxes retinaface" in capsys.readouterr().err
    assert run(root, tmp_path / "plain", "--retinaface-boxes", "none") == 0
    plain = json.loads((tmp_path / "plain" / "videos" / "s18" / "meta.json").read_text())
    assert plain["retinaface"] is None and "retina_box" not in plain["frames"][0]["faces"][0]


def test_the_retinaface_box_is_chosen_as_sbi_chooses_it():
    from hcsi.faces.crops import iou_inclusive, matching_retina_box

    landmarks = np.array([[100, 100], [200, 220]], dtype=float)
    assert iou_inclusive((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
    assert iou_inclusive((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(50 / 150)  # +1 pixel per side
    near, nearer, third = (90, 80, 210, 230), (98, 95, 202, 222), (100, 100, 200, 220)
    assert np.array_equal(matching_retina_box(landmarks, [near, nearer]), nearer)
    assert np.array_equal(matching_retina_box(landmarks, [near, (0, 0, 10, 10), third]), near)  # two largest only
    assert matching_retina_box(landmarks, [(300, 300, 400, 400)]) is None
    assert matching_retina_box(landmarks, []) is None
