"""Which videos a preprocessing run reads: the FF++ real videos with their official splits, or any folder."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..faces.frames import IMAGE_SUFFIXES

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
FFPP_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SourceVideo:
    """A file to preprocess. `video_id` is its path relative to the dataset root without suffix: unique, unlike
    basenames (FF++ fake folders reuse names such as 000_003 across methods)."""

    path: Path
    video_id: str
    split: str | None = None


def folder_videos(root: str | Path) -> list[SourceVideo]:
    """Every video and image under `root` (recursively), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    suffixes = VIDEO_SUFFIXES | IMAGE_SUFFIXES
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    return [SourceVideo(p, p.relative_to(root).with_suffix("").as_posix()) for p in files]


def read_ffpp_split_ids(root: Path) -> dict[str, str]:
    """{3-digit id: split} from FF++'s official train/val/test.json (lists of id pairs) at the dataset root."""
    ids: dict[str, str] = {}
    for split in FFPP_SPLITS:
        path = root / f"{split}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: put FF++'s official split files (dataset/splits/{{train,val,test}}.json of "
                "the FaceForensics repository) in the dataset root"
            )
        try:
            pairs = json.loads(path.read_text())
            for pair in pairs:
                for video in pair:
                    ids[str(video)] = split
        except (json.JSONDecodeError, TypeError) as error:
            raise ValueError(f"{path}: expected a JSON list of id pairs like [[\"953\", \"974\"], ...] ({error})")
    return ids


def ffpp_real_videos(root: str | Path, compression: str = "raw") -> list[SourceVideo]:
    """FF++ real videos (original_sequences/youtube/<compression>/videos) of the official splits, with their split."""
    root = Path(root)
    folder = root / "original_sequences" / "youtube" / compression / "videos"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found: expected the FF++ layout <root>/original_sequences/youtube/"
                                f"{{raw,c23}}/videos/*.mp4")
    split_of = read_ffpp_split_ids(root)
    videos = []
    for path in sorted(folder.glob("*.mp4")):
        split = split_of.get(path.stem[:3])
        if split is not None:
            videos.append(SourceVideo(path, path.relative_to(root).with_suffix("").as_posix(), split))
    if not videos:
        raise FileNotFoundError(f"{folder}: no .mp4 file whose id is in the split files")
    return videos
