"""Frames, face detection and landmarks on real media (the fixtures of tests/fixtures)."""
import av
import cv2
import numpy as np
import pytest
from media import fixture, write_index_video
from PIL import Image

from hcsi.faces import (
    MediaError,
    context_crop_box,
    create_face_detector,
    face_crop_box,
    keep_large_faces,
    read_image,
    sample_frame_indices,
    sample_frames,
    sbi_test_crop_box,
)
from hcsi.faces.detect import box_iou


@pytest.fixture(scope="module")
def detector():
    return create_face_detector()


def test_sample_frames_takes_evenly_spaced_frames_in_one_pass():
    sampled = sample_frames(fixture("ghost/dance.mp4"), n=32)
    assert sampled.frame_count == 66
    assert sampled.indices == np.linspace(0, 65, 32, dtype=int).tolist()
    assert len(sampled.frames) == 32 and sampled.frames[0].shape == (280, 232, 3)
    assert sampled.failure is None


@pytest.mark.parametrize("suffix,vfr", [(".mkv", False), (".mp4", True)])
def test_sampled_frames_are_the_frames_their_indices_name(tmp_path, suffix, vfr):
    path = tmp_path / f"index{suffix}"
    write_index_video(path, frames=50, vfr=vfr)
    with av.open(str(path)) as container:  # reference: every frame, decoded in order
        every = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    sampled = sample_frames(path, n=8)
    assert sampled.frame_count == len(every) == 50
    assert sampled.indices == sample_frame_indices(50, 8)
    for frame, index in zip(sampled.frames, sampled.indices):
        assert np.array_equal(frame, every[index]), index


def test_display_rotation_is_applied(tmp_path):
    path = tmp_path / "portrait.mp4"
    write_index_video(path, frames=3, size=(64, 32), rotation=90)  # stored landscape, shown rotated 90° ccw
    frame = sample_frames(path, n=1).frames[0]
    assert frame.shape == (64, 32, 3)  # portrait
    assert frame[-8:].mean() > 250 and frame[:8].mean() < 10  # the stored left edge is now at the bottom


def test_short_video_gives_each_frame_once(tmp_path):
    path = tmp_path / "short.mkv"
    write_index_video(path, frames=5)
    assert sample_frames(path, n=32).indices == [0, 1, 2, 3, 4]


def test_an_image_is_a_one_frame_video_grey_and_alpha_become_rgb(tmp_path):
    grey, rgba = tmp_path / "grey.png", tmp_path / "alpha.png"
    Image.new("L", (40, 30), 128).save(grey)
    Image.new("RGBA", (40, 30), (10, 20, 30, 0)).save(rgba)
    for path in (grey, rgba):
        sampled = sample_frames(path)
        assert sampled.indices == [0] and sampled.frames[0].shape == (30, 40, 3)
    assert read_image(rgba)[0, 0].tolist() == [10, 20, 30]


def test_unreadable_files_raise_media_errors_naming_the_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    bad_image = tmp_path / "broken.jpg"
    bad_image.write_bytes(b"\xff\xd8garbage")
    for path, problem in ((empty, "empty"), (text, "not a video or image file"), (bad_image, "not a readable image"),
                          (tmp_path / "missing.mp4", "no such file")):
        with pytest.raises(MediaError, match=problem) as info:
            sample_frames(path)
        assert path.name in str(info.value)


def test_truncated_video_is_an_error_or_reports_where_it_stopped(tmp_path):
    data = fixture("ghost/dance.mp4").read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 3])
    try:
        sampled = sample_frames(truncated, n=32)
    except MediaError as error:
        assert "truncated.mp4" in str(error)
    else:
        assert len(sampled.frames) < 32 and sampled.failure


def test_detector_finds_every_face_of_the_photos(detector):
    assert len(detector.detect(read_image(fixture("face_recognition/two_people.jpg")))) == 2
    for photo in ("face_recognition/obama.jpg", "face_recognition/biden.jpg", "ghost/beckham.jpg",
                  "sbi_faces/obama.png", "sbi_faces/beckham.png"):
        assert len(detector.detect(read_image(fixture(photo)))) == 1, photo


def test_landmarks_lie_on_the_detected_face(detector):
    image = read_image(fixture("face_recognition/obama.jpg"))
    face = detector.detect(image)[0]
    assert face.landmarks.shape == (81, 2) and face.landmarks.dtype == np.float32
    x0, y0, x1, y1 = face.detector_box
    w, h = x1 - x0, y1 - y0
    lm68 = face.landmarks[:68]
    assert np.all((lm68[:, 0] > x0 - 0.25 * w) & (lm68[:, 0] < x1 + 0.25 * w))
    assert np.all((lm68[:, 1] > y0 - 0.25 * h) & (lm68[:, 1] < y1 + 0.25 * h))
    bx0, by0, bx1, by1 = face.box
    assert np.all((lm68 >= [bx0, by0]) & (lm68 <= [bx1, by1]))  # the crop box holds the whole face
    # forehead points: an arc from temple to temple that rises well above the brows, ordered from jaw point 0's
    # side to point 16's
    forehead, brows = face.landmarks[68:], face.landmarks[17:27]
    brow_to_nose_base = face.landmarks[33, 1] - brows[:, 1].mean()
    assert forehead[:, 1].min() < brows[:, 1].min() - 0.5 * brow_to_nose_base
    assert np.all(forehead[:, 1] < max(face.landmarks[0, 1], face.landmarks[16, 1]))
    assert np.all(np.diff(forehead[:, 0]) > 0)
    assert face.landmarks[0, 0] < forehead[:, 0].min() and forehead[:, 0].max() < face.landmarks[16, 0]


def test_no_face_in_a_flat_image(detector):
    assert detector.detect(np.full((240, 320, 3), 90, dtype=np.uint8)) == []
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((10, 10), dtype=np.uint8))


def test_crop_rules_follow_sbi(detector):
    image = read_image(fixture("face_recognition/obama.jpg"))
    face = detector.detect(image)[0]
    lm = face.landmarks[:68]
    w, h = np.ptp(lm[:, 0]), np.ptp(lm[:, 1])
    cx0, cy0, cx1, cy1 = context_crop_box(face.landmarks, image.shape[1], image.shape[0])
    assert abs(cx0 - max(0, lm[:, 0].min() - w / 2)) <= 1 and abs(cy0 - max(0, lm[:, 1].min() - h)) <= 1
    assert abs((cy1 - lm[:, 1].max()) - 0.4 * h) <= 1
    assert abs(cx1 - min(image.shape[1], lm[:, 0].max() + w / 2)) <= 1
    x0, y0, x1, y1 = face_crop_box(face.box, image.shape[1], image.shape[0])  # test time: 12.5 % per side
    bw = face.box[2] - face.box[0]
    bh = face.box[3] - face.box[1]
    assert abs((face.box[0] - x0) - 0.125 * bw) <= 1 and abs((x1 - face.box[2]) - 0.125 * bw) <= 1
    assert abs((face.box[1] - y0) - 0.125 * bh) <= 1 and abs((y1 - face.box[3]) - 0.125 * bh) <= 1


def test_small_faces_are_dropped_at_test_time(detector):
    faces = detector.detect(read_image(fixture("face_recognition/two_people.jpg")))
    kept = keep_large_faces(faces)
    assert all(f.area >= 0.5 * faces[0].area for f in kept) and faces[0] in kept


def test_hog_on_a_shrunk_copy_finds_the_same_faces_on_large_frames(detector):
    """hog540: HOG sees a copy with a 540-px shorter side; the faces, boxes and landmarks stay those of full-size HOG."""
    fast = create_face_detector("hog540+blazeface-every-frame")
    assert fast.name == "hog540+blazeface-every-frame"
    seen = []
    run = fast._hog.run
    fast._hog = type("Spy", (), {"run": lambda self, image, *a: seen.append(image.shape[:2]) or run(image, *a)})()
    photo = read_image(fixture("face_recognition/two_people.jpg"))
    large = np.ascontiguousarray(np.repeat(np.repeat(photo, 2, axis=0), 2, axis=1))  # 892×1520: HOG would shrink
    full, shrunk = detector.detect(large), fast.detect(large)
    assert seen == [(540, 920)]
    assert len(full) == len(shrunk) == 2
    for a, b in zip(full, shrunk):
        assert b.found_by == "hog"
        assert box_iou(a.detector_box, b.detector_box) > 0.8
        assert np.abs(a.landmarks[:68] - b.landmarks[:68]).mean() < 0.03 * (a.box[2] - a.box[0])
    # frames already small enough are searched as they are
    seen.clear()
    fast.detect(photo)
    assert seen == [photo.shape[:2]]
    with pytest.raises(ValueError, match="hog_short_side"):
        create_face_detector("hog", hog_short_side=40)


class _FixedBoxes:
    """A face finder stand-in that returns the same face boxes (with fractional edges) in every frame."""

    name = "fixed"

    def __init__(self, boxes):
        self.boxes = boxes

    def detect(self, image):
        from hcsi.faces import Face

        faces = [Face(np.array(b, np.float32), np.array(b, np.float32), 1.0, np.zeros((81, 2), np.float32))
                 for b in self.boxes]
        return sorted(faces, key=lambda f: f.area, reverse=True)


def _sbi_test_crop(frame, box, size):
    """SBI's crop_face(..., crop_by_bbox=True, phase='test') followed by its cv2.resize, computed directly."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    height, width = frame.shape[:2]
    top, bottom = max(0, int(y0 - h / 4 * 0.5)), min(height, int(y1 + h / 4 * 0.5) + 1)
    left, right = max(0, int(x0 - w / 4 * 0.5)), min(width, int(x1 + w / 4 * 0.5) + 1)
    return cv2.resize(frame[top:bottom, left:right], dsize=(size, size))


def test_test_time_crops_are_sbis_pixel_for_pixel_on_opencv_decoded_frames():
    """Crops after the 380-px resize equal SBI's rule on the frames OpenCV decodes (SBI's reader), for boxes with
    fractional and whole edges; the old outward rounding differs on the whole ones."""
    from hcsi.evaluate.protocol import faces_in_frames

    path = fixture("liveportrait/s32.mp4")
    sampled = sample_frames(path, 6)
    capture, opencv_frames, index = cv2.VideoCapture(str(path)), {}, 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index in sampled.indices:
            opencv_frames[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        index += 1
    rng = np.random.default_rng(0)
    corners = rng.uniform([60, 20], [240, 90], size=(12, 2))  # the clip is 384×216
    boxes = [(x, y, x + side, y + side * 1.2) for (x, y), side in zip(corners, rng.uniform(70, 100, 12))]
    boxes.append((-5.3, -3.6, 80.2, 96.9))  # beyond the top-left corner: clipped at 0, as max(0, int(...))
    boxes.append((100.0, 40.0, 180.0, 136.0))  # integer edges, sides divisible by 8: x1 + m is a whole number, where
    # rounding outwards (the old rule) ends the crop 1 px before SBI's int(x1 + m) + 1
    ours = faces_in_frames(sampled.frames, sampled.indices, _FixedBoxes(boxes), 380)
    expected = [_sbi_test_crop(opencv_frames[index], face.box, 380) for index in sampled.indices
                for face in keep_large_faces(_FixedBoxes(boxes).detect(opencv_frames[index]))]
    assert len(ours.crops) == len(expected) > 0
    assert all(np.array_equal(a, b) for a, b in zip(ours.crops, expected))
    width, height = sampled.frames[0].shape[1], sampled.frames[0].shape[0]
    old_rule = [tuple(int(v) for v in face_crop_box(b, width, height)) for b in boxes]
    assert any(old != tuple(sbi_test_crop_box(b, width, height)) for old, b in zip(old_rule, boxes))


def test_a_face_that_leaves_no_crop_skips_its_frame_not_the_video():
    from hcsi.evaluate.protocol import STATUS_OK, faces_in_frames

    frames = [np.full((120, 160, 3), 80, np.uint8) for _ in range(3)]

    class OneBadFrame(_FixedBoxes):
        calls = 0

        def detect(self, image):
            self.calls += 1
            faces = super().detect(image)
            if self.calls == 2:  # a face box entirely outside the frame, as a broken detector might give
                faces[0].box = np.array([500, 500, 560, 560], np.float32)
            return faces

    result = faces_in_frames(frames, [0, 5, 9], OneBadFrame([(40.5, 30.2, 100.7, 95.1)]), 64)
    assert result.status == STATUS_OK and result.crop_frame == [0, 2]
    assert "frame 5 skipped" in result.reason and "no test crop" in result.reason
