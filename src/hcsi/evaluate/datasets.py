"""Test lists of the six benchmarks (official test splits, SBI reference §4 layouts) and of any labelled folder.

A video's identity is (dataset, source, video id): `key` = "<dataset>/<source>/<id>", where source is the FF++
manipulation method (or "original"), the Celeb-DF subfolder, etc. FF++ fakes reuse file names across methods
(Deepfakes/000_003.mp4 and FaceSwap/000_003.mp4 are different videos), so names alone never identify a video.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..data.sources import VIDEO_SUFFIXES
from ..faces.frames import IMAGE_SUFFIXES

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")  # SBI's FF++ test set (no FaceShifter)
DATASET_NAMES = ("ff++", "cdf", "dfd", "dfdc", "dfdcp", "ffiw", "folder")


@dataclass(frozen=True)
class TestVideo:
    dataset: str
    source: str  # manipulation method / subfolder / "real" / "fake"
    video_id: str  # unique within (dataset, source)
    path: Path
    label: int  # 1 = fake, 0 = real
    group: str = ""  # a folder CSV's `group` column (AUC per group in the summary)
    face_mask: Path | None = None  # a fake video's mask video (white on its manipulated faces, frame-aligned): FFIW
    fake_boxes: tuple = ()  # boxes (x0, y0, x1, y1, frame pixels) of a fake video's manipulated faces: folder CSV

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.source}/{self.video_id}"


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: expected {what}")
    return path


def _videos_in(folder: Path, what: str) -> list[Path]:
    _need(folder, what)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)


def ffpp_test_videos(root: Path, compression: str = "raw") -> list[TestVideo]:
    """FF++ test split (test.json ids): 140 originals + 4 methods × 140 fakes (SBI's set)."""
    split = _need(root / "test.json", "FF++'s official test.json (dataset/splits/test.json) in the dataset root")
    ids = {str(v) for pair in json.loads(split.read_text()) for v in pair}
    videos = []
    originals = root / "original_sequences" / "youtube" / compression / "videos"
    for path in _videos_in(originals, f"FF++ original videos ({compression})"):
        if path.stem[:3] in ids:
            videos.append(TestVideo("ff++", "original", path.stem, path, 0))
    for method in FFPP_METHODS:
        folder = root / "manipulated_sequences" / method / compression / "videos"
        for path in _videos_in(folder, f"FF++ {method} videos ({compression})"):
            if path.stem[:3] in ids:
                videos.append(TestVideo("ff++", method, path.stem, path, 1))
    return videos


def cdf_test_videos(root: Path) -> list[TestVideo]:
    """Celeb-DF v2 test list: lines "<1 = real | 0 = fake> <subfolder>/<file>.mp4" (518 videos)."""
    listing = _need(root / "List_of_testing_videos.txt", "Celeb-DF v2's List_of_testing_videos.txt in the root")
    videos = []
    for n, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise ValueError(f"{listing}:{n}: expected '<0|1> <folder>/<file>.mp4', got {line!r}")
        subfolder, name = parts[1].split("/", 1)
        path = root / subfolder / name
        if not path.exists() and (root / subfolder / "videos" / name).exists():  # SBI's tree adds videos/
            path = root / subfolder / "videos" / name
        videos.append(TestVideo("cdf", subfolder, Path(name).stem, path, 1 - int(parts[0])))
    return videos


def dfd_test_videos(root: Path, compression: str = "raw") -> list[TestVideo]:
    """DeepFakeDetection (in the FF++ tree), all videos: actors' originals (real) and DeepFakeDetection fakes."""
    real = _videos_in(root / "original_sequences" / "actors" / compression / "videos",
                      f"DFD real videos (FF++ original_sequences/actors/{compression})")
    fake = _videos_in(root / "manipulated_sequences" / "DeepFakeDetection" / compression / "videos",
                      f"DFD fake videos (FF++ manipulated_sequences/DeepFakeDetection/{compression})")
    return [TestVideo("dfd", "actors", p.stem, p, 0) for p in real] + \
        [TestVideo("dfd", "DeepFakeDetection", p.stem, p, 1) for p in fake]


def dfdc_test_videos(root: Path) -> list[TestVideo]:
    """DFDC public test set: labels.csv (filename, label with 1 = fake), videos in videos/ (or the root)."""
    labels = _need(root / "labels.csv", "DFDC's labels.csv (columns filename,label) in the root")
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"filename", "label"} <= set(rows[0]):
        raise ValueError(f"{labels}: expected columns filename,label")
    videos = []
    for row in rows:
        path = root / "videos" / row["filename"]
        if not path.exists() and (root / row["filename"]).exists():
            path = root / row["filename"]
        videos.append(TestVideo("dfdc", "test", Path(row["filename"]).stem, path, int(float(row["label"]))))
    return videos


def _dfdcp_file(root: Path, key: str) -> Path:
    """The file of dataset.json entry `key` ("<source>/<rest>"): at the key's path, at <source>/videos/<rest> (the
    released layout), or else found by base name inside the key's own <source> folder only. Several files of that
    name there are ambiguous and refused (SBI's reader, searching the whole root, kept the last, which can be a
    copy outside the test split)."""
    source, _, rest = key.partition("/")
    for candidate in (root / key, root / source / "videos" / rest):
        if candidate.is_file():
            return candidate
    folder = root / source
    matches = sorted(p for p in folder.rglob(Path(key).name) if p.is_file()) if folder.is_dir() else []
    if len(matches) > 1:
        raise ValueError(f"{root / 'dataset.json'}: test entry {key!r} matches {len(matches)} files named "
                         f"{Path(key).name} under {folder} ({', '.join(str(m) for m in matches[:3])}); keep only the "
                         "one at the entry's own path")
    return matches[0] if matches else root / key


def dfdcp_test_videos(root: Path) -> list[TestVideo]:
    """DFDC Preview: the entries of dataset.json with set == "test"; files found by `_dfdcp_file`."""
    index = _need(root / "dataset.json", "DFDC-Preview's dataset.json in the root")
    entries = json.loads(index.read_text())
    videos = []
    for key, entry in sorted(entries.items()):
        if entry.get("set") != "test":
            continue
        path = _dfdcp_file(root, key)
        label = {"fake": 1, "real": 0}.get(str(entry.get("label")).lower())
        if label is None:
            raise ValueError(f"{index}: entry {key!r} has label {entry.get('label')!r}, expected 'fake' or 'real'")
        source, _, rest = key.partition("/")
        videos.append(TestVideo("dfdcp", source, str(Path(rest).with_suffix("")), path, label))
    return videos


def ffiw_test_videos(root: Path) -> list[TestVideo]:
    """FFIW-10K val split (250 real source videos, 250 fake target videos), labelled by folder. Where the release's
    `target_mask/val/videos/<id>.mp4` (or `target_mask/val/<id>.mp4`) exists, a fake video carries it: its white
    pixels mark the manipulated face in each frame, which labels the video's persons (person-level AUC)."""
    release = root / "FFIW10K-v1-release" if (root / "FFIW10K-v1-release").is_dir() else root
    real = _videos_in(release / "source" / "val" / "videos", "FFIW real videos (FFIW10K-v1-release/source/val/videos)")
    fake = _videos_in(release / "target" / "val" / "videos", "FFIW fake videos (FFIW10K-v1-release/target/val/videos)")
    masks = [release / "target_mask" / "val" / "videos", release / "target_mask" / "val"]

    def mask_of(video: Path) -> Path | None:
        return next((m / video.name for m in masks if (m / video.name).is_file()), None)

    return [TestVideo("ffiw", "source", p.stem, p, 0) for p in real] + \
        [TestVideo("ffiw", "target", p.stem, p, 1, face_mask=mask_of(p)) for p in fake]


def _boxes_value(text: str, where: str) -> tuple:
    """A folder CSV's `fake_boxes`: boxes "x0 y0 x1 y1" separated by ";" (frame pixels)."""
    boxes = []
    for part in filter(None, (p.strip() for p in (text or "").split(";"))):
        values = part.replace(",", " ").split()
        try:
            box = tuple(float(v) for v in values)
        except ValueError:
            box = ()
        if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"{where}: fake_boxes {part!r} is not a box 'x0 y0 x1 y1' with x1 > x0 and y1 > y0")
        boxes.append(box)
    return tuple(boxes)


def _label_value(text: str, where: str) -> int:
    value = {"0": 0, "1": 1, "real": 0, "fake": 1}.get(text.strip().lower())
    if value is None:
        raise ValueError(f"{where}: label {text!r} is not 0/1/real/fake")
    return value


def folder_test_videos(root: Path) -> list[TestVideo]:
    """A CSV manifest (root is a .csv with columns path,label and optionally group, and fake_boxes: the boxes of a
    fake video's manipulated faces, which label its persons; paths relative to it) or a folder with real/ and fake/
    subfolders (searched recursively). Labels: 0/1 or real/fake."""
    media = VIDEO_SUFFIXES | IMAGE_SUFFIXES
    if root.is_file() and root.suffix.lower() == ".csv":
        with open(root, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"path", "label"} <= set(rows[0]):
            raise ValueError(f"{root}: expected a CSV with columns path,label")
        videos = []
        for n, row in enumerate(rows, 2):
            path = (root.parent / row["path"]).resolve() if not Path(row["path"]).is_absolute() else Path(row["path"])
            label = _label_value(row["label"], f"{root}:{n}")
            videos.append(TestVideo("folder", "fake" if label else "real",
                                    Path(row["path"]).with_suffix("").as_posix(), path, label,
                                    (row.get("group") or "").strip(),
                                    fake_boxes=_boxes_value(row.get("fake_boxes"), f"{root}:{n}")))
        return videos
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found: expected a folder with real/ and fake/ subfolders or a CSV "
                                "manifest with columns path,label")
    videos = []
    for name, label in (("real", 0), ("fake", 1)):
        folder = root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} not found: a folder dataset needs real/ and fake/ subfolders "
                                    "(or give a CSV manifest with columns path,label)")
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in media):
            videos.append(TestVideo("folder", name, path.relative_to(folder).with_suffix("").as_posix(), path, label))
    return videos


def test_videos(dataset: str, root: str | Path, compression: str = "raw") -> list[TestVideo]:
    """The test list of `dataset` (one of DATASET_NAMES) under `root`."""
    root = Path(root)
    readers = {"ff++": lambda: ffpp_test_videos(root, compression), "cdf": lambda: cdf_test_videos(root),
               "dfd": lambda: dfd_test_videos(root, compression), "dfdc": lambda: dfdc_test_videos(root),
               "dfdcp": lambda: dfdcp_test_videos(root), "ffiw": lambda: ffiw_test_videos(root),
               "folder": lambda: folder_test_videos(root)}
    if dataset not in readers:
        raise KeyError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASET_NAMES)}")
    if dataset != "folder" and not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    videos = readers[dataset]()
    if not videos:
        raise ValueError(f"{root}: no test videos found for {dataset}")
    keys = [v.key for v in videos]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{root}: two test videos share an identity; check the layout")
    return videos
