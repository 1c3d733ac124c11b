"""What `hcsi detect` reads: files, folders (recursively) and glob patterns, expanded in the order given."""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from ..data.sources import VIDEO_SUFFIXES
from ..faces.frames import IMAGE_SUFFIXES

MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES


@dataclass(frozen=True)
class InputEntry:
    """One file to score (problem empty), or an input that cannot be scored and why."""

    path: str
    problem: str = ""
    skipped: bool = False  # a non-media file found in a folder: listed, not an error


def expand_inputs(items: list[str]) -> list[InputEntry]:
    """Every input in the order given: folders contribute their files (sorted; media by suffix, every other file is
    listed as skipped), globs their matches, plain paths themselves whatever their suffix (the content decides).
    A file reached twice is listed once."""
    entries: list[InputEntry] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            contents = sorted(p for p in path.rglob("*") if p.is_file())
            media = [p for p in contents if p.suffix.lower() in MEDIA_SUFFIXES]
            entries += [InputEntry(str(p)) if p in media else
                        InputEntry(str(p), "not a video or image file name", skipped=True) for p in contents]
            if not media:
                entries.append(InputEntry(item, f"no media files found in {item}", skipped=True))
        elif path.exists():
            entries.append(InputEntry(str(path)))
        elif any(c in item for c in "*?["):
            matches = sorted(m for m in glob.glob(item, recursive=True) if Path(m).is_file())
            entries += [InputEntry(str(Path(m))) for m in matches] or [InputEntry(item, "pattern matches no file")]
        else:
            entries.append(InputEntry(item, "no such file or folder"))
    return list(dict.fromkeys(entries))  # InputEntry is hashable: equal entries collapse, the order stays
