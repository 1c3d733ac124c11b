"""What `hcsi detect` reads: files, folders (recursively) and glob patterns, expanded to a sorted list of files."""
from __future__ import annotations

import glob
from pathlib import Path

from ..data.sources import VIDEO_SUFFIXES
from ..faces.frames import IMAGE_SUFFIXES

MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES


def expand_inputs(items: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """(files to score, [(item, problem)]): folders contribute their media files (by suffix; every other file is
    reported as skipped), globs their matches, plain paths themselves whatever their suffix (the content decides)."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            contents = sorted(p for p in path.rglob("*") if p.is_file())
            found = [p for p in contents if p.suffix.lower() in MEDIA_SUFFIXES]
            problems += [(str(p), "skipped: not a video or image file name") for p in contents if p not in found]
            if not found:
                problems.append((item, "folder holds no video or image files"))
            files += found
        elif path.exists():
            files.append(path)
        elif any(c in item for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                problems.append((item, "pattern matches no file"))
            files += matches
        else:
            problems.append((item, "no such file or folder"))
    unique = list(dict.fromkeys(files))
    return unique, problems
