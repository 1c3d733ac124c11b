"""Shared helpers of the benchmark scripts: where results go and what each record carries."""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import tempfile
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def provenance(command: str) -> dict:
    """The command that regenerates a record, the commit and the date it was measured."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = ""
    commit = commit or os.environ.get("HCSI_COMMIT", "unknown")  # a copied tree without .git (GPU machines)
    return {"command": command, "commit": commit, "date": datetime.date.today().isoformat(),
            "torch": torch.__version__}


def device_slug(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device)).replace(" ", "-").lower()
    return "cpu"


def write_results(name: str, records: list[dict], out_dir: Path = RESULTS) -> Path:
    """Write `records` to <out_dir>/<name>.json atomically (temp file + rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(records, f, indent=1)
    os.replace(tmp, path)
    return path
