"""Weight files: backbone weights and full HCSI-Net checkpoints, read without unpickling arbitrary objects."""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..files import atomic_path, require_torch_save_file
from .config import HCSINetConfig

# Keys a timm classifier leaves in a state dict; the streams are built without one, so these are dropped.
_CLASSIFIER_PREFIXES = ("classifier.", "head.")
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a torch file loaded with weights_only=True (no arbitrary unpickling).

    A torch file may wrap the tensors in {"state_dict": ...}, {"model": ...} or {"model_state_dict": ...}.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types for truncated or foreign files
            raise ValueError(f"{path}: not a readable .safetensors file ({error}); it may be truncated or "
                             "corrupt; copy or export it again") from error
    data = load_torch_file(path)
    for key in _WRAPPER_KEYS:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, found {type(data).__name__}")
    return data


def load_torch_file(path: Path) -> object:
    """torch.load(weights_only=True): tensors and plain containers only, never code. A file that would need code
    to unpickle is refused with the offending global named; a file torch.save cannot have written, by its first
    bytes."""
    require_torch_save_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        text = str(error)
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if unsafe:
            raise ValueError(
                f"{path}: refused: unpickling it needs code ({unsafe.group(1)}), and hcsi reads weights only with "
                "torch.load(weights_only=True), so nothing was executed; if you trust the file, re-save its tensors "
                "as a plain state dict or .safetensors") from None
        first_line = text.strip().splitlines()[0].split(". ")[0][:200] if text.strip() else ""
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {first_line}); it may "
                         "be truncated, corrupt or another kind of file") from None


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """`state` without `prefix` on its keys when every key has it (e.g. "module." from DataParallel / DDP)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _load_exactly(module: nn.Module, state: dict[str, torch.Tensor], problem: str) -> None:
    """load_state_dict where every key and shape must match; a mismatch raises ValueError starting with `problem`."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or misshapen:
        found = [f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})" for what, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("keys of another shape", misshapen))
                 if keys]
        raise ValueError(f"{problem}: {', '.join(found)}")
    module.load_state_dict(state)


def load_backbone_weights(model: nn.Module, stream: str, path: str | os.PathLike) -> None:
    """Load a backbone's weights into stream "cnn" or "vit" of an HCSINet.

    Accepts a timm state dict (its ImageNet classifier is dropped), one saved from DDP ("module." prefix), or the
    stream taken out of an HCSI-Net checkpoint (keys "cnn.net." / "vit.net.", e.g. a stage-1 single-stream run).
    """
    if stream not in ("cnn", "vit"):
        raise ValueError(f"stream must be 'cnn' or 'vit', got {stream!r}")
    backbone = getattr(model, stream)
    if backbone is None:
        raise ValueError(f"model {model.config.name!r} has no {stream} stream to load {path} into")
    state = strip_prefix(read_state_dict(path), "module.")
    prefix = f"{stream}.net."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    _load_exactly(backbone.net, state, f"{path}: does not match the {stream} backbone {getattr(model.config, stream)!r}")


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a full HCSI-Net state dict (strict: every key must match). When it does not fit and the file carries
    the config it was saved with, the error names the settings that differ and `model_from_checkpoint`."""
    state = strip_prefix(read_state_dict(path), "module.")
    try:
        _load_exactly(model, state, f"{path}: does not match model {model.config.name!r}")
    except ValueError as error:
        raise ValueError(f"{error}{_saved_config_hint(model, path)}") from None


def _saved_config_hint(model: nn.Module, path) -> str:
    try:
        saved = checkpoint_config(path)
    except (ValueError, OSError):
        return ""
    ours = dataclasses.asdict(model.config)
    differences = [f"{k}={v!r} (this model: {ours.get(k)!r})" for k, v in dataclasses.asdict(saved).items()
                   if v != ours.get(k)]
    return (f". It was saved from {', '.join(differences)}; `hcsi.models.model_from_checkpoint(path)` builds the "
            "model from the config stored in the checkpoint") if differences else ""


def save_checkpoint(model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write the model's state dict as .safetensors, atomically (temp file + rename), with its config as metadata."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: checkpoints are written as .safetensors")
    info = {"config": json.dumps(dataclasses.asdict(model.config))} | (metadata or {})
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata=info)


def checkpoint_config(path: str | os.PathLike) -> HCSINetConfig:
    """The HCSINetConfig a .safetensors checkpoint was saved with (stored in its metadata by `save_checkpoint`)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: the model config travels only in .safetensors checkpoints written by hcsi; "
                         "build the model yourself and use load_checkpoint for other files")
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
    except Exception as error:
        raise ValueError(f"{path}: not a readable .safetensors file ({error}); it may be truncated or corrupt") \
            from error
    if "config" not in metadata:
        raise ValueError(f"{path}: no model config in its metadata (not written by hcsi's save_checkpoint)")
    return config_from_json(metadata["config"])


def config_from_json(text: str) -> HCSINetConfig:
    """An HCSINetConfig from the JSON `save_checkpoint` stores (lists back to tuples)."""
    fields = json.loads(text)
    tuples = {f.name for f in dataclasses.fields(HCSINetConfig) if "tuple" in str(f.type)}
    return HCSINetConfig(**{k: tuple(v) if k in tuples and v is not None else v for k, v in fields.items()})
