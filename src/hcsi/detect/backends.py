"""Which engine runs the network on the CPU: ONNX Runtime by default (measured faster for both model families,
docs/benchmarks.md "hcsi detect"), from an export made once per checkpoint and kept in a cache, or PyTorch
(`--backend torch`, the eager path).

Cache: $HCSI_ONNX_CACHE_DIR, else <hcsi's cache, `hcsi.files.cache_dir`>/onnx; one file per checkpoint and input size,
<checkpoint SHA-256>-<input size>.onnx (about 140 MB for HCSI-Net small; delete the folder to reclaim the space).
An entry is written under a temporary name and renamed into place (two processes filling it at once each write a
whole file), and it is used only when the checkpoint SHA-256 recorded in it is the one asked for; a checkpoint that
changed has another SHA-256, so its old entry is never found.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from torch import nn

from ..files import cache_dir, file_sha256

BACKENDS = ("auto", "torch", "onnxruntime")


def onnx_cache_dir() -> Path:
    return Path(os.environ["HCSI_ONNX_CACHE_DIR"]) if os.environ.get("HCSI_ONNX_CACHE_DIR") else cache_dir() / "onnx"


def resolve_backend(backend: str, device) -> str:
    """"auto": ONNX Runtime on the CPU, PyTorch on a GPU (where the gates, bf16 and compilation live)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "onnxruntime" if str(device).startswith("cpu") else "torch"
    return backend


def onnx_scorer(model: nn.Module, checkpoint: str | Path, backend: str, device,
                checkpoint_sha256: str | None = None):
    """What scores for the network `model` of `checkpoint`: its cached ONNX Runtime export when `backend` resolves to
    ONNX Runtime on `device`, else None (the PyTorch model itself scores). An export that fails is said once and
    gives None: PyTorch scores, never a silent other result."""
    if resolve_backend(backend, device) != "onnxruntime":
        return None
    try:
        return cached_onnx_model(model, checkpoint_sha256 or file_sha256(checkpoint))
    except Exception as error:
        say(f"the ONNX export of {Path(checkpoint).name} failed ({type(error).__name__}: {error}); scoring with "
            "PyTorch instead (--backend torch skips the attempt)")
        return None


def say(message: str) -> None:
    print(f"hcsi: {message}", file=sys.stderr, flush=True)


def cached_onnx_model(model: nn.Module, checkpoint_sha256: str):
    """An `OnnxRuntimeModel` of `model` (the network of the checkpoint with that SHA-256), exported into the cache on
    first use (reported with its time) and reused afterwards. An unwritable cache exports into a temporary folder for
    this run (said so). Raises when the export itself fails (the caller falls back to PyTorch, saying so)."""
    from .export import OnnxRuntimeModel

    name = f"{checkpoint_sha256}-{model.config.input_size}.onnx"
    entry = onnx_cache_dir() / name
    if entry.is_file():
        found = OnnxRuntimeModel(entry)
        if found.checkpoint_sha256 == checkpoint_sha256:
            return found
        say(f"the cached export {entry} was made from another checkpoint; exporting again")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        folder = entry.parent
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-")
        probe.close()
    except OSError as error:
        say(f"the cache folder {entry.parent} is not writable ({error.strerror or error}); exporting for this run "
            "only (set HCSI_ONNX_CACHE_DIR to a writable folder to keep the export)")
        with tempfile.TemporaryDirectory(prefix="hcsi-onnx-") as folder:  # the session holds the model once loaded
            return OnnxRuntimeModel(_export_into(model, Path(folder) / name, checkpoint_sha256))
    return OnnxRuntimeModel(_export_into(model, entry, checkpoint_sha256))


def _export_into(model: nn.Module, entry: Path, checkpoint_sha256: str) -> Path:
    from .export import add_onnx_metadata, export_model

    say(f"exporting the network to ONNX once for this checkpoint and input size ({entry.name}); later runs reuse it")
    start = time.perf_counter()
    temporary = entry.with_name(f".{entry.stem}.{os.getpid()}.tmp.onnx")  # whole file first, then renamed
    try:
        export_model(model, temporary, "onnx")
        add_onnx_metadata(temporary, json.dumps(dataclasses.asdict(model.config)), checkpoint_sha256)
        os.replace(temporary, entry)
    finally:
        if temporary.exists():
            temporary.unlink()
    say(f"exported in {time.perf_counter() - start:.1f} s")
    return entry
