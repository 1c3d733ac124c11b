"""BlazeFace: anchor layout, decoding, tiling, the model file's resolution, and the faces HOG misses."""
import cv2
import numpy as np
import pytest
from skimage import data as skimage_data
from media import fixture

from hcsi.faces import create_face_detector, read_image, sample_frames
from hcsi.faces.blazeface import (
    NUM_ANCHORS,
    BlazeFace,
    ModelUnavailable,
    blazeface_anchors,
    blazeface_model_path,
    decode_blazeface,
    shrunk_tiles,
    tile_origins,
)
from hcsi.faces.detect import blazeface_to_hog_box


def test_anchors_follow_the_short_range_ssd_layout():
    anchors = blazeface_anchors()
    assert anchors.shape == (NUM_ANCHORS, 2)
    # stride 8: 16×16 cells × 2 anchors, then stride 16: 8×8 cells × 6 anchors; row-major, a cell's anchors adjacent
    assert np.allclose(anchors[0], anchors[1]) and np.allclose(anchors[0], [0.5 / 16, 0.5 / 16])
    assert np.allclose(anchors[2], [1.5 / 16, 0.5 / 16]) and np.allclose(anchors[32], [0.5 / 16, 1.5 / 16])
    assert np.allclose(anchors[511], [15.5 / 16, 15.5 / 16])
    assert np.allclose(anchors[512:518], [0.5 / 8, 0.5 / 8]) and np.allclose(anchors[518], [1.5 / 8, 0.5 / 8])
    assert np.allclose(anchors[-1], [7.5 / 8, 7.5 / 8])


def test_decoding_matches_a_direct_computation_per_anchor():
    rng = np.random.default_rng(0)
    anchors = blazeface_anchors()
    regressors = rng.normal(0, 20, (NUM_ANCHORS, 16)).astype(np.float32)
    logits = rng.normal(0, 3, NUM_ANCHORS).astype(np.float32)
    logits[:3] = [150.0, -150.0, 0.0]  # beyond the ±100 clip, and exactly 0.5
    boxes, scores = decode_blazeface(regressors, logits, anchors, min_score=0.6)
    expected_boxes, expected_scores = [], []
    for (ax, ay), raw, logit in zip(anchors, regressors, logits):
        score = 1 / (1 + np.exp(-min(max(float(logit), -100.0), 100.0)))
        if score <= 0.6:
            continue
        cx, cy = ax + raw[0] / 128, ay + raw[1] / 128
        w, h = raw[2] / 128, raw[3] / 128
        expected_boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        expected_scores.append(score)
    assert len(boxes) == len(expected_boxes) > 0
    assert np.allclose(boxes, expected_boxes, atol=1e-6) and np.allclose(scores, expected_scores, atol=1e-6)
    assert scores[0] == pytest.approx(1.0)


@pytest.mark.parametrize("length,tile,stride", [(1080, 540, 405), (1920, 960, 720), (300, 512, 384), (700, 256, 192)])
def test_tiles_cover_the_whole_side(length, tile, stride):
    origins = tile_origins(length, tile, stride)
    covered = np.zeros(length, bool)
    for start in origins:
        covered[start:start + tile] = True
    assert covered.all()
    assert origins[0] == 0 and origins[-1] == max(length - tile, 0)
    assert all(b - a <= stride for a, b in zip(origins, origins[1:]))


@pytest.mark.parametrize("height,width,shrunk_once", [(1080, 1920, 3), (720, 1280, 3), (480, 640, 2), (360, 640, 2),
                                                     (560, 464, 1), (404, 720, 1), (1437, 1001, 1)])
def test_tiles_cut_from_a_level_shrunk_once_equal_tiles_shrunk_one_by_one(height, width, shrunk_once):
    """The pyramid shrinks a level once when every tile starts on a whole pixel of the shrunk level (and each tile
    alone otherwise, as 464 px wide frames at the 280 px level): the network sees the same pixels either way."""
    image = np.random.default_rng(height + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    tile = max(height, width)
    padded = cv2.copyMakeBorder(image, 0, tile - height, 0, tile - width, cv2.BORDER_CONSTANT, value=0)
    levels_shrunk_once = 0
    while True:
        stride = round(tile * 0.75)
        origins = tile_origins(height, tile, stride) + tile_origins(width, tile, stride)
        levels_shrunk_once += not any(o * 128 % tile for o in origins)
        tiles = list(shrunk_tiles(padded, height, width, tile, stride, 128))
        assert len(tiles) == len(tile_origins(height, tile, stride)) * len(tile_origins(width, tile, stride))
        for x, y, shrunk in tiles:
            one_by_one = cv2.resize(padded[y:y + tile, x:x + tile], (128, 128), interpolation=cv2.INTER_AREA)
            assert np.array_equal(shrunk, one_by_one), (tile, x, y)
        if tile // 2 < 256:
            break
        tile //= 2
    assert levels_shrunk_once == shrunk_once


def test_blazeface_box_maps_to_hog_convention():
    box = blazeface_to_hog_box(np.array([100, 200, 300, 400], np.float32))
    assert box[2] - box[0] == pytest.approx(0.951 * 200, rel=1e-5)
    assert (box[0] + box[2]) / 2 == pytest.approx(200 - 0.014 * 200, rel=1e-5)
    assert (box[1] + box[3]) / 2 == pytest.approx(300 - 0.026 * 200, rel=1e-5)


@pytest.fixture(scope="module")
def dark_frames():
    """A dim room with one dim, tilted face (tests/fixtures/dim_room.mp4, made like the DFDC sample's situation)."""
    return sample_frames(fixture("dim_room.mp4"), n=4).frames


def test_blazeface_finds_the_dark_face_that_hog_misses(dark_frames):
    hog = create_face_detector("hog")
    default = create_face_detector()
    assert default.name == "hog540+blazeface-every-frame"
    missed_by_hog = [frame for frame in dark_frames if not hog.detect(frame)]
    assert missed_by_hog, "HOG now finds this face; pick a harder frame for this test"
    for frame in missed_by_hog:
        faces = default.detect(frame)
        assert len(faces) == 1 and faces[0].found_by == "blazeface" and faces[0].score > 0.75
        x0, y0, x1, y1 = faces[0].detector_box
        assert 900 < (x0 + x1) / 2 < 1040 and 190 < (y0 + y1) / 2 < 310 and 40 < x1 - x0 < 160  # the face
        nose = faces[0].landmarks[30]
        assert x0 <= nose[0] <= x1 and y0 <= nose[1] <= y1


def test_hog_faces_stay_hog_faces():
    frame = skimage_data.astronaut()
    (face,) = create_face_detector().detect(frame)
    assert face.found_by == "hog"
    (face_bf,) = create_face_detector("blazeface").detect(frame)
    assert face_bf.found_by == "blazeface"
    iou_box = np.r_[np.maximum(face.detector_box[:2], face_bf.detector_box[:2]),
                    np.minimum(face.detector_box[2:], face_bf.detector_box[2:])]
    inter = np.prod(np.clip(iou_box[2:] - iou_box[:2], 0, None))
    union = 2 * np.prod(face.detector_box[2:] - face.detector_box[:2]) - inter  # boxes of similar size
    assert inter / union > 0.6  # the mapped BlazeFace box lands where HOG puts it


def test_no_face_in_noise_or_a_flat_image():
    finder = BlazeFace()
    rng = np.random.default_rng(1)
    for image in (np.full((480, 640, 3), 128, np.uint8), rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)):
        boxes, scores = finder.detect(image)
        assert boxes.shape == (0, 4) and scores.shape == (0,)


def test_model_file_problems_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HCSI_BLAZEFACE_MODEL", str(tmp_path / "missing.tflite"))
    with pytest.raises(ModelUnavailable, match="missing.tflite: BlazeFace model file not found"):
        blazeface_model_path()
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelUnavailable, match="junk.tflite: not a usable BlazeFace model"):
        BlazeFace(junk)
    monkeypatch.delenv("HCSI_BLAZEFACE_MODEL")
    monkeypatch.setenv("HCSI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HCSI_OFFLINE", "1")
    with pytest.raises(ModelUnavailable, match="downloads are off.*hcsi fetch-models"):
        blazeface_model_path()
    damaged = tmp_path / "cache" / "models" / "face_detection_short_range.tflite"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"truncated")
    with pytest.raises(ModelUnavailable, match="face_detection_short_range.tflite: SHA-256 differs"):
        blazeface_model_path()


# Score tolerance of the whole search. The networks agree to 3e-5 on identical tiles (asserted below); what the search
# adds is OpenCV's area shrink of each tile, whose 8-bit rounding of a value at k + 0.5 can differ by one grey level
# from the matrix products' (its float order depends on the CPU's SIMD path). On these frames that moved scores by
# 2e-7 (short range, whose 128-px tiles shrink by whole factors here) and 9e-4 (full range, 192-px tiles at
# factors like 8/3); over every frame of ../shared/data the short-range model's worst was 7.2e-4.
SEARCH_SCORE_TOLERANCE = {"short-range": 1e-3, "full-range": 2e-3}


@pytest.mark.parametrize("model", ["short-range", "full-range"])
def test_the_torch_network_reproduces_the_tflite_file_on_many_frames_in_one_call(model):
    """BatchedBlazeFace (weights read from the .tflite file into torch) finds the faces the LiteRT path finds, frame
    by frame, with frames of several videos and sizes and the photos in one call: same faces, box IoU >= 0.98,
    scores within 1e-3 for the short-range model hcsi uses (SEARCH_SCORE_TOLERANCE); the networks' logits on the
    same tiles within 1e-4 (+ 1e-5 relative). Both models of the wheel: the short-range one, and the full-range one."""
    import torch

    from hcsi.faces.blazeface_torch import BatchedBlazeFace
    from hcsi.faces.detect import box_iou

    frames = [frame for clip in ("ghost/dance.mp4", "liveportrait/s32.mp4", "liveportrait/d20.mp4", "dim_room.mp4")
              for frame in sample_frames(fixture(clip), 3).frames]
    frames += [read_image(fixture(f"face_recognition/{name}.jpg")) for name in ("two_people", "obama")]
    reference, batched = BlazeFace(model=model), BatchedBlazeFace(tiles_per_batch=32, model=model)
    side = batched.side
    tiles = np.random.default_rng(0).uniform(-1, 1, (4, side, side, 3)).astype(np.float32)
    tiles[0] = cv2.resize(frames[0], (side, side), interpolation=cv2.INTER_AREA) / 127.5 - 1
    with torch.no_grad():
        _, logits = batched.net(torch.from_numpy(tiles).permute(0, 3, 1, 2))
    for tile, torch_logits in zip(tiles, logits.numpy()):
        reference._interpreter.set_tensor(reference._input, tile[None])
        reference._interpreter.invoke()
        expected = reference._interpreter.get_tensor(reference._logits)[0, :, 0]
        assert np.allclose(torch_logits, expected, rtol=1e-5, atol=1e-4)  # logits reach ±100 on noise tiles
    found = batched.detect_many(frames)
    faces = 0
    for frame, (boxes, scores) in zip(frames, found):
        expected_boxes, expected_scores = reference.detect(frame)
        assert len(boxes) == len(expected_boxes), frame.shape
        for box, expected in zip(boxes, expected_boxes):
            assert box_iou(box, expected) >= 0.98
        assert np.abs(scores - expected_scores).max(initial=0) <= SEARCH_SCORE_TOLERANCE[model]
        faces += len(boxes)
    assert faces >= len(frames)  # every frame shows a face; two_people shows two


def test_the_gpu_default_finds_the_cpu_defaults_faces_with_blazeface_in_torch():
    """The backend chosen for CUDA devices is the CPU default with BlazeFace run by torch (here on the CPU): the
    same faces, boxes and landmarks up to the two BlazeFace paths' tolerance, a whole video's frames per call."""
    from hcsi.faces import DEFAULT_FACE_DETECTOR, default_face_detector
    from hcsi.faces.detect import DEFAULT_GPU_FACE_DETECTOR, box_iou

    assert default_face_detector("cuda:1") == DEFAULT_GPU_FACE_DETECTOR
    assert default_face_detector("cpu") == default_face_detector(None) == DEFAULT_FACE_DETECTOR
    frames = sample_frames(fixture("liveportrait/d20.mp4"), 4).frames
    frames.append(read_image(fixture("face_recognition/two_people.jpg")))
    cpu = create_face_detector(DEFAULT_FACE_DETECTOR)
    gpu_kind = create_face_detector(DEFAULT_GPU_FACE_DETECTOR, device="cpu")
    assert gpu_kind._blazeface.device.type == "cpu"
    for frame, faces in zip(frames, gpu_kind.detect_many(frames)):
        expected = cpu.detect(frame)
        assert [f.found_by for f in faces] == [f.found_by for f in expected] and faces
        for face, other in zip(faces, expected):
            assert box_iou(face.box, other.box) >= 0.98
