"""Writing files so that a reader (or a killed run) never sees half of one; folders bound to their settings."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def require_torch_save_file(path: str | os.PathLike, example: str = "a .pth or .tar checkpoint") -> None:
    """Refuse, by its first bytes and before torch is imported, a file that torch.save cannot have written: since
    PyTorch 1.6 a zip archive ("PK"), before that a pickle (protocol byte 0x80)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file" if not path.exists() else f"{path} is a folder, not a file")
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return
    if not head:
        found = "it is empty"
    elif all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        found = f"it is text beginning {head.decode().splitlines()[0][:16]!r}"
    else:
        found = f"its first bytes are {head[:8].hex(' ')}"
    raise ValueError(f"{path}: expected a PyTorch checkpoint written by torch.save ({example}: a zip archive, or a "
                     f"pickle from PyTorch before 1.6), but {found}")


def _umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path`; once the block succeeds it is renamed onto `path`, else removed.

    The temporary name keeps the suffix, so writers that pick a format from it (cv2.imwrite) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the file gets the mode open() would give it
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_figure(fig, out: str | os.PathLike, suffixes=(".png", ".svg"), dpi: int = 150) -> list[Path]:
    """A matplotlib figure written atomically as `out` with each suffix (PNG and SVG by default)."""
    written = []
    for suffix in suffixes:
        path = Path(out).with_suffix(suffix)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi)
        written.append(path)
    return written


def write_json_atomic(path: str | os.PathLike, data, **dump_options) -> None:
    """Write `data` as JSON through a temporary file and a rename."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, **dump_options)


def differing(recorded: dict, now: dict) -> dict[str, tuple]:
    """{key: (recorded, now)} for every key whose value differs between the two dicts (a missing key is None)."""
    return {k: (recorded.get(k), now.get(k)) for k in sorted(now.keys() | recorded.keys())
            if now.get(k) != recorded.get(k)}


def settings_mismatch(path: str | os.PathLike, settings: dict) -> dict[str, tuple]:
    """`differing` between the settings recorded in the JSON file `path` and `settings`; empty when they match or
    nothing is recorded yet. Resumable jobs use it to refuse continuing a folder made with other options."""
    path = Path(path)
    if not path.is_file():
        return {}
    return differing(json.loads(path.read_text()), settings)


# The command-line option that sets each recorded setting a user can choose (for the hints of the refusals above).
SETTING_OPTIONS = {"frames": "--frames", "detector": "--face-detector", "retinaface": "--retinaface-boxes"}


def options_to_continue(changed: dict[str, tuple]) -> str:
    """The options that give back the recorded values of `changed`, e.g. "--frames 4 --face-detector hog"; empty
    when none of them is a setting a user chooses on the command line."""
    return " ".join(f"{SETTING_OPTIONS[k]} {'none' if old is None else old}" for k, (old, _) in changed.items()
                    if k in SETTING_OPTIONS and (old is not None or k == "retinaface"))


def cache_dir() -> Path:
    """hcsi's cache: $HCSI_CACHE_DIR, else $XDG_CACHE_HOME/hcsi, else ~/.cache/hcsi."""
    if os.environ.get("HCSI_CACHE_DIR"):
        return Path(os.environ["HCSI_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hcsi"
