"""DeeperForensics-1.0 perturbations (hcsi.perturbations) and `hcsi robustness` / `hcsi perturb-preview`."""
import json

import av
import cv2
import numpy as np
import pytest
from media import fixture

from hcsi.cli import main
from hcsi.faces import sample_frames
from hcsi.models import build_model, save_checkpoint
from hcsi.perturbations import LEVELS, PERTURBATIONS, perturb


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


@pytest.fixture(scope="module")
def frames():
    """Two frames of a real clip, 1280×720 so that block-wise occlusion applies (it needs sides ≥ 256 px)."""
    clip = sample_frames(fixture("ghost/dance.mp4"), 2).frames
    return [cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_CUBIC) for frame in clip]


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_every_level_changes_the_frames_and_the_damage_grows_with_the_level(frames, name):
    quality = []
    for level in LEVELS:
        out = perturb(frames, name, level, np.random.default_rng(0))
        assert len(out) == len(frames) and all(o.shape == f.shape and o.dtype == np.uint8 for o, f in zip(out, frames))
        assert all(not np.array_equal(o, f) for o, f in zip(out, frames)), (name, level)
        quality.append(np.mean([psnr(o, f) for o, f in zip(out, frames)]))
    assert all(a > b for a, b in zip(quality, quality[1:])), (name, [round(q, 2) for q in quality])


def test_the_values_are_deeperforensics_ones():
    assert {p.code: p.values for p in PERTURBATIONS.values()} == {
        "CS": (0.4, 0.3, 0.2, 0.1, 0.0), "CC": (0.85, 0.725, 0.6, 0.475, 0.35), "BW": (16, 32, 48, 64, 80),
        "GNC": (0.001, 0.002, 0.005, 0.01, 0.05), "GB": (7, 9, 13, 17, 21), "JPEG": (2, 3, 4, 5, 6),
        "VC": (30, 32, 35, 38, 40)}


def test_operations_match_direct_computations(frames):
    frame = frames[0][:64, :96]
    grey = (frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
    assert np.abs(perturb([frame], "saturation", 5, None)[0].astype(int) - grey[..., None].astype(int)).max() <= 1
    assert np.array_equal(perturb([frame], "contrast", 1, None)[0], (frame * 0.85).astype(np.uint8))
    assert np.array_equal(perturb([frame], "blur", 2, None)[0], cv2.GaussianBlur(frame, (9, 9), 1.5))
    small = cv2.resize(frame, (96 // 4, 64 // 4))
    assert np.array_equal(perturb([frame], "pixelation", 3, None)[0], cv2.resize(small, (96, 64)))
    blocks = perturb([frames[0]], "block", 1, np.random.default_rng(1))[0]
    changed = np.any(blocks != frames[0], axis=2)
    assert np.all(blocks[changed] == 128) and changed.sum() <= 2 * 16 * 64  # 720 // 256 × 16 blocks of 8×8


def test_compression_is_a_real_encoder_and_size_falls_with_the_level(frames, tmp_path):
    sizes = []
    for crf in PERTURBATIONS["compression"].values:
        path = tmp_path / f"crf{crf}.mp4"
        with av.open(str(path), "w") as container:  # the same encoder and settings as the perturbation
            stream = container.add_stream("libx264", rate=25, options={"crf": str(crf)})
            stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        sizes.append(path.stat().st_size)
    assert all(a > b for a, b in zip(sizes, sizes[1:])), sizes
    decoded = perturb(frames, "compression", 5, None)
    assert len(decoded) == 2 and decoded[0].shape == frames[0].shape


def test_a_seeded_run_repeats_exactly(frames):
    for name in ("block", "noise"):  # compression: see docs/protocol.md, "Robustness" (x264 run to run)
        a = perturb(frames, name, 3, np.random.default_rng([0, 7]))
        b = perturb(frames, name, 3, np.random.default_rng([0, 7]))
        c = perturb(frames, name, 3, np.random.default_rng([0, 8]))
        assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[0], c[0])


def test_robustness_writes_every_cell_and_resumes(tmp_path, capsys):
    root = tmp_path / "clips"
    for label, names in (("real", ["liveportrait/d0", "ghost/orig_reencoded"]),
                         ("fake", ["ghost/elon", "ghost/khabenskii"])):
        (root / label).mkdir(parents=True)
        for name in names:
            (root / label / f"{name.split('/')[1]}.mp4").symlink_to(fixture(f"{name}.mp4"))
    checkpoint = tmp_path / "model.safetensors"
    save_checkpoint(build_model("cnn_only_small", input_size=64), checkpoint)
    out = tmp_path / "rob"
    args = ["robustness", "--checkpoint", str(checkpoint), "--dataset", "folder", "--root", str(root),
            "--frames", "2", "--workers", "0", "--device", "cpu", "--out", str(out),
            "--perturbations", "blur,compression", "--levels", "1", "5"]
    assert main(args) == 0
    rows = json.loads((out / "robustness.json").read_text())
    assert [(r["perturbation"], r["level"]) for r in rows] == [("clean", 0), ("blur", 1), ("blur", 5),
                                                               ("compression", 1), ("compression", 5)]
    assert all(r["n_videos"] == 4 and r["auc"] is not None for r in rows)
    assert "| blur (GB) |" in (out / "robustness.md").read_text() and (out / "robustness.png").is_file()
    one_cell = next((out / "cache" / "blur-5").glob("*.json"))
    one_cell.unlink()  # as if the run had been killed before this cell of this video
    assert main(args) == 0 and one_cell.is_file()
    assert json.loads((out / "robustness.json").read_text()) == rows


def test_perturb_preview_draws_a_grid(tmp_path):
    out = tmp_path / "grid.png"
    assert main(["perturb-preview", "--input", str(fixture("face_recognition/obama.jpg")), "--out", str(out)]) == 0
    grid = cv2.imread(str(out))
    assert grid is not None and grid.shape[0] > 1000 and grid.shape[1] > 800


def test_faces_found_once_in_the_clean_frames_cut_the_perturbed_ones_at_the_same_boxes():
    from hcsi.evaluate.protocol import crops_at, faces_in_frames
    from hcsi.faces import create_face_detector

    sampled = sample_frames(fixture("liveportrait/d0.mp4"), 3)
    faces = faces_in_frames(sampled.frames, sampled.indices, create_face_detector(), 64)
    again = crops_at(sampled.frames, faces, 64)  # the clean frames give back the very same crops
    assert len(again.crops) == len(faces.crops) == 3
    assert all(np.array_equal(a, b) for a, b in zip(again.crops, faces.crops))
    blurred = crops_at(perturb(sampled.frames, "blur", 5, None), faces, 64)
    assert blurred.boxes == faces.boxes and not np.array_equal(blurred.crops[0], faces.crops[0])
