"""Shared helpers of the benchmark scripts: where results go and what each record carries."""
from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path

import torch

from hcsi.files import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results"
# The shared media (../shared/data beside the repository); HCSI_SHARED_DATA points elsewhere (e.g. the copy carried
# to the GPU machine, see gpu_suite.sh).
SHARED_DATA = Path(os.environ.get("HCSI_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


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
    path = out_dir / f"{name}.json"
    write_json_atomic(path, records, indent=1)
    return path
