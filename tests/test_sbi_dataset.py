"""SBI training pairs and validation set from a preprocessed store of real clips; `hcsi sbi-preview`."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
from media import fixture

from hcsi.cli import main
from hcsi.data.preprocess import PreprocessOptions, preprocess
from hcsi.data.sbi_dataset import SBIDataset, sbi_collate, sbi_validation_set
from hcsi.data.sources import ffpp_real_videos
from hcsi.faces import MediaError
from hcsi.sbi import SBIConfig


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An FF++-shaped dataset of two real clips (fixtures, linked), preprocessed with 4 frames each."""
    root = tmp_path_factory.mktemp("ffpp")
    videos = root / "original_sequences" / "youtube" / "raw" / "videos"
    videos.mkdir(parents=True)
    os.symlink(fixture("ghost/dance.mp4"), videos / "000.mp4")
    os.symlink(fixture("liveportrait/d18.mp4"), videos / "001.mp4")
    (root / "train.json").write_text(json.dumps([["000", "010"]]))
    (root / "val.json").write_text(json.dumps([["001", "011"]]))
    (root / "test.json").write_text(json.dumps([["002", "012"]]))
    out = root / "store"
    preprocess(ffpp_real_videos(root, "raw"), out, PreprocessOptions(frames=4), progress=False)
    return out


def test_training_pairs_are_batched_reals_then_fakes(store):
    dataset = SBIDataset(store, "train", frames_per_video=3, config=SBIConfig(image_size=96))
    assert len(dataset) == 3 and {f.video_id for f in dataset.faces} == {"original_sequences/youtube/raw/videos/000"}
    images, labels = sbi_collate([dataset[0], dataset[1]])
    assert images.shape == (4, 3, 96, 96) and images.dtype == torch.float32
    assert labels.tolist() == [0, 0, 1, 1]
    assert not torch.equal(images[0], images[2])  # the fake differs from its real


def test_training_samples_repeat_under_a_seed_and_change_with_the_epoch(store):
    config = SBIConfig(image_size=64)
    a, b = SBIDataset(store, "train", config=config, seed=3), SBIDataset(store, "train", config=config, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    b.set_epoch(1)
    assert not torch.equal(a[1][1], b[1][1])


def test_validation_set_is_the_val_split_and_fixed(store):
    first = sbi_validation_set(store, SBIConfig(image_size=64))
    second = sbi_validation_set(store, SBIConfig(image_size=64))
    assert {f.video_id for f in first.faces} == {"original_sequences/youtube/raw/videos/001"}
    assert not first.train
    for i in range(len(first)):
        assert all(torch.equal(x, y) for x, y in zip(first[i], second[i]))
    second.set_epoch(5)  # validation shows the same fakes in every epoch
    assert all(torch.equal(x, y) for x, y in zip(first[0], second[0]))


def test_missing_store_or_crop_is_reported_with_its_path(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="hcsi preprocess"):
        SBIDataset(tmp_path / "nothing")
    dataset = SBIDataset(store, "train", config=SBIConfig(image_size=64))
    broken = dataset.faces[0].crop.with_name("broken.png")
    broken.write_bytes(b"not a png")
    object.__setattr__(dataset.faces[0], "crop", broken)
    with pytest.raises(MediaError, match="broken.png"):
        dataset[0]


def test_sbi_preview_writes_a_grid_of_triplets(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sbi-preview", "--input", str(fixture("face_recognition/obama.jpg")), "--n", "3", "--out", str(out),
                 "--image-size", "64"]) == 0
    grid = cv2.imread(str(out))
    from hcsi.sbi.preview import GAP

    assert grid.shape == (64, 3 * 3 * 64 + 2 * GAP, 3)  # three triplets in a row, white gaps between them
    assert np.all(grid[:, 3 * 64:3 * 64 + GAP] == 255)
    mask_tile = grid[:, 64:128]
    assert mask_tile.max() > 0 and np.all(mask_tile[..., 0] == mask_tile[..., 1])  # grey blend mask

    flat = tmp_path / "flat.png"
    cv2.imwrite(str(flat), np.full((120, 160, 3), 80, np.uint8))
    assert main(["sbi-preview", "--input", str(flat), "--n", "2", "--out", str(tmp_path / "x.png")]) == 2
    assert "no face found" in capsys.readouterr().err


def test_landmarks_partly_outside_the_crop_still_give_a_pair(store):
    from hcsi.data.sbi_dataset import read_crop
    from hcsi.sbi import SelfBlendedImageGenerator

    face = SBIDataset(store, "train").faces[0]
    image = read_crop(face.crop)
    cut = int(face.landmarks[8, 1]) - 10  # cut the crop above the chin: the lowest jaw points fall outside
    landmarks = face.landmarks.copy()
    assert (landmarks[:, 1] >= cut).any()
    sample = SelfBlendedImageGenerator(SBIConfig(image_size=64))(
        image[:cut], landmarks, face.box, np.random.default_rng(0), train=False)
    assert sample.real.shape == sample.fake.shape == (64, 64, 3)
    assert sample.mask.max() > 0


def test_a_failed_synthesis_draws_another_sample_and_is_counted(store, monkeypatch):
    from torch.utils.data import DataLoader

    dataset = SBIDataset(store, "train", frames_per_video=3, config=SBIConfig(image_size=64))
    real_generator = dataset.generator
    crop_that_fails = dataset.faces[0].crop

    def generator(image, landmarks, box, rng, train=True):
        if np.array_equal(image, cv2.cvtColor(cv2.imread(str(crop_that_fails)), cv2.COLOR_BGR2RGB)):
            raise ValueError("empty blend mask")  # what a degenerate face makes SBI's synthesis do
        return real_generator(image, landmarks, box, rng, train=train)

    dataset.generator = generator
    real, fake = dataset[0]  # redrawn from another face instead of raising
    assert real.shape == fake.shape == (3, 64, 64) and dataset.redrawn_samples >= 1
    dataset.reset_redrawn_samples()
    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=sbi_collate)
    images, labels = next(iter(loader))  # the worker processes survive and report their redraws
    assert images.shape[0] == 6 and dataset.redrawn_samples >= 1


def test_training_crops_follow_the_stores_retinaface_boxes(store, tmp_path):
    """A store with RetinaFace boxes: crops are cut around them (SBI's sbi.py) and frames without one are left out;
    data.crop_box=face keeps hcsi's face box; a store without boxes cannot be asked for them."""
    import shutil

    from hcsi.data.sbi_dataset import load_stored_faces, training_crop_box

    assert json.loads((store / "store.json").read_text())["retinaface"] is not None
    assert training_crop_box(store) == "retinaface"
    by_retina = load_stored_faces(store, "train", None, crop_box="retinaface")
    by_face = load_stored_faces(store, "train", None, crop_box="face")
    metas = {p.parent.name: json.loads(p.read_text()) for p in (store / "videos").rglob("meta.json")}
    with_box = {(m["video_id"], f["index"]): f["faces"][0] for m in metas.values() for f in m["frames"]
                if m["split"] == "train" and f["faces"] and f["faces"][0]["retina_box"] is not None}
    assert {(f.video_id, f.frame_index) for f in by_retina} == set(with_box)
    for face in by_retina:
        assert face.box == tuple(np.ravel(with_box[face.video_id, face.frame_index]["retina_box"]))
    assert len(by_face) >= len(by_retina) and all(f.box != g.box for f, g in zip(by_face, by_retina)
                                                  if (f.video_id, f.frame_index) == (g.video_id, g.frame_index))
    assert SBIDataset(store, "train", train=True).crop_box == "retinaface"
    assert SBIDataset(store, "train", train=True, crop_box="face").crop_box == "face"
    plain = tmp_path / "plain"
    shutil.copytree(store, plain)
    settings = json.loads((plain / "store.json").read_text())
    (plain / "store.json").write_text(json.dumps({**settings, "retinaface": None}))
    assert training_crop_box(plain) == "face"
    with pytest.raises(ValueError, match="holds no RetinaFace boxes"):
        training_crop_box(plain, "retinaface")
