"""What a training run writes: resumable state, the top-k checkpoints by SBI validation AUC, and their metadata.

Run folder layout:
    config.yaml                       the resolved training config
    log.csv                           training loss / lr / throughput and validation metrics
    resume/latest.json                points at the newest complete resume state (written last, atomically)
    resume/step-NNNNNNNN/             model.safetensors, state.pt (optimizer, scheduler, scaler, RNG), info.json
    checkpoints/<name>.safetensors    the best `keep_top_k` epochs by SBI validation AUC, each with <name>.json
    checkpoints/index.json            those checkpoints, best first, and which split chose them
    checkpoints/best.safetensors      copy of the best one (+ best.json): what stage 2, evaluate and detect load
    final.safetensors                 the weights after the last epoch (+ final.json)
"""
from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..files import atomic_path, write_json_atomic
from ..models import save_checkpoint


def git_commit() -> str | None:
    """The commit of the hcsi source tree, with "+dirty" when it has uncommitted changes; None outside git."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def capture_rng() -> dict[str, Any]:
    """Every global random state a training step draws from, in a form torch.load(weights_only=True) reads."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_resume_state(run_dir: Path, model: nn.Module, training_state: dict[str, Any], info: dict[str, Any]) -> Path:
    """Write resume/step-N/ completely, then point resume/latest.json at it and delete older states.

    A run killed at any moment leaves latest.json pointing at a complete state.
    """
    resume = run_dir / "resume"
    step_dir = resume / f"step-{info['global_step']:08d}"
    if step_dir.exists():
        shutil.rmtree(step_dir)
    staging = resume / f".staging-{info['global_step']:08d}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    save_checkpoint(model, staging / "model.safetensors", {"info": json.dumps(info)})
    torch.save(training_state, staging / "state.pt")
    write_json_atomic(staging / "info.json", info, indent=1)
    staging.rename(step_dir)
    write_json_atomic(resume / "latest.json", {"dir": step_dir.name, **info}, indent=1)
    for old in resume.iterdir():
        if old.is_dir() and old != step_dir:
            shutil.rmtree(old, ignore_errors=True)
    return step_dir


def latest_resume_state(run_dir: Path) -> Path | None:
    """The folder of the newest complete resume state, or None for a fresh run."""
    pointer = run_dir / "resume" / "latest.json"
    if not pointer.is_file():
        return None
    step_dir = run_dir / "resume" / json.loads(pointer.read_text())["dir"]
    if not (step_dir / "model.safetensors").is_file() or not (step_dir / "state.pt").is_file():
        raise FileNotFoundError(f"{pointer} points at {step_dir}, which is incomplete; delete {run_dir / 'resume'} "
                                "to restart the run from scratch")
    return step_dir


def load_training_state(step_dir: Path) -> dict[str, Any]:
    path = step_dir / "state.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: resume state unreadable ({error}); delete {step_dir.parent} to restart") from error


class TopKCheckpoints:
    """The `k` best epochs by SBI validation AUC, kept on disk; `best.safetensors` is always the first of them."""

    def __init__(self, folder: Path, k: int, selection: dict[str, Any]) -> None:
        self.folder = folder
        self.k = k
        self.selection = selection
        index = folder / "index.json"
        self.entries: list[dict[str, Any]] = json.loads(index.read_text())["checkpoints"] if index.is_file() else []

    def consider(self, model: nn.Module, metadata: dict[str, Any]) -> bool:
        """Keep this epoch's weights if they rank among the best k; returns whether they were kept."""
        auc, epoch = metadata["metrics"]["val_auc"], metadata["epoch"]
        self.entries = [e for e in self.entries if e["epoch"] != epoch]  # a resumed run may redo an epoch
        ranked = sorted(self.entries + [{"epoch": epoch, "val_auc": auc}],
                        key=lambda e: (e["val_auc"], e["epoch"]), reverse=True)
        if self.k <= 0 or {"epoch": epoch, "val_auc": auc} not in ranked[: self.k]:
            return False
        name = f"epoch{epoch:03d}-auc{auc:.4f}"
        save_checkpoint(model, self.folder / f"{name}.safetensors", {"metadata": json.dumps(metadata)})
        write_json_atomic(self.folder / f"{name}.json", metadata, indent=1)
        entry = {"epoch": epoch, "val_auc": auc, "step": metadata["step"], "file": f"{name}.safetensors"}
        self.entries = sorted(self.entries + [entry], key=lambda e: (e["val_auc"], e["epoch"]), reverse=True)
        for dropped in self.entries[self.k:]:
            for suffix in (".safetensors", ".json"):
                (self.folder / dropped["file"]).with_suffix(suffix).unlink(missing_ok=True)
        self.entries = self.entries[: self.k]
        best = self.entries[0]
        if best["file"] == entry["file"]:
            for suffix in (".safetensors", ".json"):
                with atomic_path(self.folder / f"best{suffix}") as tmp:
                    shutil.copyfile(self.folder / f"{name}{suffix}", tmp)
        write_json_atomic(self.folder / "index.json", {
            "selected_on": self.selection,
            "best": best["file"],
            "latest_of_top_k": max(self.entries, key=lambda e: e["epoch"])["file"],  # what SBI's paper used
            "checkpoints": self.entries,
        }, indent=1)
        return True
