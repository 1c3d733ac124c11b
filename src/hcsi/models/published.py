"""Published SBI-trained EfficientNet-B4 checkpoints turned into hcsi checkpoints (`hcsi import-weights`).

Two layouts, both efficientnet_pytorch's EfficientNet-B4 underneath:
- "sbi": the authors' files (Shiohara & Yamasaki, CVPR 2022; mapooon/SelfBlendedImages, "Pretrained model"):
  {"model": {"net.<efficientnet_pytorch key>": tensor}, "optimizer": ..., "epoch": ...}; `net._fc` is the 2-class layer.
- "deepfakebench": SCLBD/DeepfakeBench's SBI detector: a state dict with "backbone.efficientnet.<key>" and its own
  "backbone.last_layer" classifier after the pooled features ("module." in front when saved from DataParallel).

Every tensor is mapped to timm's tf_efficientnet_b4 by name, strictly: a key that maps nowhere, a key the model needs
but the file lacks, or a shape that differs fails the import with the keys listed. Files are read with
torch.load(weights_only=True) only. The model variants are registered in `hcsi.models.config`.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual

from ..files import file_sha256
from .config import get_config
from .hcsi_net import HCSINet
from .weights import read_state_dict, save_checkpoint, strip_prefix


@dataclass(frozen=True)
class PublishedFormat:
    name: str
    model: str  # the registered config the network is rebuilt as
    backbone_prefix: str  # prefix of efficientnet_pytorch's keys in the file
    classifier_prefix: str  # prefix of the final linear layer's weight and bias
    description: str


FORMATS = {
    "sbi": PublishedFormat("sbi", "sbi_efficientnet_b4", "net.", "net._fc.",
                           "an SBI checkpoint (mapooon/SelfBlendedImages)"),
    "deepfakebench": PublishedFormat("deepfakebench", "deepfakebench_efficientnet_b4", "backbone.efficientnet.",
                                     "backbone.last_layer.", "a DeepfakeBench SBI checkpoint (SCLBD/DeepfakeBench)"),
}

# timm module name -> efficientnet_pytorch module name, outside the blocks and per block type
_TOP_LEVEL = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1"}
_DEPTHWISE_SEPARABLE = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "se.conv_reduce": "_se_reduce",
                        "se.conv_expand": "_se_expand", "conv_pw": "_project_conv", "bn2": "_bn2"}
_INVERTED_RESIDUAL = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
                      "se.conv_reduce": "_se_reduce", "se.conv_expand": "_se_expand", "conv_pwl": "_project_conv",
                      "bn3": "_bn2"}


def efficientnet_pytorch_names(net: torch.nn.Module) -> dict[str, str]:
    """{timm key: efficientnet_pytorch key} for every tensor of a timm EfficientNet (blocks numbered flat there)."""
    modules: dict[str, str] = dict(_TOP_LEVEL)
    flat = 0
    for stage_index, stage in enumerate(net.blocks):
        for block_index, block in enumerate(stage):
            if isinstance(block, DepthwiseSeparableConv):
                table = _DEPTHWISE_SEPARABLE
            elif isinstance(block, InvertedResidual):
                table = _INVERTED_RESIDUAL
            else:
                raise ValueError(f"no efficientnet_pytorch names for block type {type(block).__name__}")
            for ours, theirs in table.items():
                modules[f"blocks.{stage_index}.{block_index}.{ours}"] = f"_blocks.{flat}.{theirs}"
            flat += 1
    names = {}
    for key in net.state_dict():
        module, _, leaf = key.rpartition(".")
        if module not in modules:
            raise ValueError(f"no efficientnet_pytorch name for timm tensor {key}")
        names[key] = f"{modules[module]}.{leaf}"
    return names


def _examples(keys: list[str], limit: int = 5) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def guess_format(keys) -> str | None:
    """The published layout a set of state-dict keys looks like, if any."""
    for fmt in FORMATS.values():
        if any(k.startswith(fmt.backbone_prefix + "_blocks.") for k in keys):
            return fmt.name
    return None


def build_published_model(path: str | os.PathLike, fmt: str, input_size: int | None = None) -> HCSINet:
    """The hcsi model holding the weights of a published checkpoint `path` of layout `fmt`, in eval mode.

    Args:
        input_size: face-crop side; default that of the format's config (SBI 380, DeepfakeBench 256).
    Raises:
        ValueError: the file is unreadable, would need code to unpickle, or its tensors do not map one to one.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; known: {', '.join(FORMATS)}")
    layout = FORMATS[fmt]
    path = Path(path)
    state = strip_prefix(read_state_dict(path), "module.")  # saved from DataParallel / DDP
    classifier_weight = state.get(layout.classifier_prefix + "weight")
    if classifier_weight is None or classifier_weight.ndim != 2 or classifier_weight.shape[0] < 2:
        looks_like = guess_format(state)
        hint = (f"; it looks like the {looks_like!r} layout: use --format {looks_like}"
                if looks_like and looks_like != fmt else "")
        raise ValueError(f"{path}: not {layout.description}: no classifier "
                         f"{layout.classifier_prefix}weight of shape classes×features (keys such as "
                         f"{_examples(sorted(state), 3)}){hint}")
    overrides = {"num_classes": int(classifier_weight.shape[0])}
    if input_size is not None:
        overrides["input_size"] = input_size
    model = HCSINet(get_config(layout.model, **overrides))
    target = model.state_dict()
    names = {f"cnn.net.{k}": layout.backbone_prefix + v for k, v in efficientnet_pytorch_names(model.cnn.net).items()}
    names |= {f"head.mlp.0.{leaf}": layout.classifier_prefix + leaf for leaf in ("weight", "bias")}
    missing = sorted(theirs for ours, theirs in names.items() if theirs not in state)
    unmapped = sorted(set(state) - set(names.values()))
    misshapen = sorted(f"{theirs} {tuple(state[theirs].shape)} vs {tuple(target[ours].shape)}"
                       for ours, theirs in names.items()
                       if theirs in state and state[theirs].shape != target[ours].shape)
    if missing or unmapped or misshapen:
        problems = [f"{len(items)} {what}: {_examples(items)}" for what, items in
                    (("missing keys", missing), ("unmapped keys", unmapped), ("keys of another shape", misshapen))
                    if items]
        looks_like = guess_format(state)
        hint = f" (it looks like the {looks_like!r} layout)" if looks_like and looks_like != fmt else ""
        raise ValueError(f"{path}: does not match {layout.description} (EfficientNet-B4){hint}: "
                         + "; ".join(problems))
    model.load_state_dict({ours: state[theirs] for ours, theirs in names.items()}, strict=True)
    return model.eval()


def import_weights(path: str | os.PathLike, fmt: str, out: str | os.PathLike,
                   input_size: int | None = None) -> dict[str, str]:
    """Convert a published checkpoint into an hcsi .safetensors checkpoint with its config and provenance.

    Nothing is written unless the whole import succeeds (the output appears by an atomic rename).
    Returns the provenance stored in the checkpoint's metadata.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out {out}: hcsi checkpoints are .safetensors files")
    model = build_published_model(path, fmt, input_size)
    provenance = {
        "source_file": Path(path).name,
        "source_sha256": file_sha256(path),
        "source_format": fmt,
        "imported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": model.config.name,
    }
    save_checkpoint(model, out, metadata=provenance)
    return provenance
