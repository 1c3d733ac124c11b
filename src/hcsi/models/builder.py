"""Building models: a registered variant or config with its weights, or the model an hcsi checkpoint describes.

Kept apart from `hcsi_net` (the architecture) and `weights` (reading and writing weight files), as timm keeps its
builders apart from its model files, so that neither of those imports the other.
"""
from __future__ import annotations

import dataclasses
import os

import torch

from .config import HCSINetConfig, get_config
from .hcsi_net import HCSINet
from .weights import checkpoint_config, load_backbone_weights, load_checkpoint


def build_model(
    name_or_config: str | HCSINetConfig,
    pretrained: bool = False,
    backbone_weights: dict[str, str] | None = None,
    checkpoint: str | None = None,
    **overrides,
) -> HCSINet:
    """Build a registered variant (or a given config) and load weights.

    Args:
        name_or_config: a registered name (see `list_models()`) or an `HCSINetConfig`.
        pretrained: ImageNet backbone weights through timm (online only).
        backbone_weights: {"cnn": path, "vit": path} weight files for the backbones (offline alternative).
        checkpoint: a full HCSI-Net checkpoint file, loaded last.
        **overrides: config fields to replace, e.g. input_size=256.
    """
    if isinstance(name_or_config, HCSINetConfig):
        config = dataclasses.replace(name_or_config, **overrides)
    else:
        config = get_config(name_or_config, **overrides)
    model = HCSINet(config, pretrained=pretrained)
    for stream, path in (backbone_weights or {}).items():
        load_backbone_weights(model, stream, path)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return model


def model_from_checkpoint(path: str | os.PathLike) -> HCSINet:
    """The model of an hcsi checkpoint, built from the config in its metadata, with its weights, in eval mode."""
    model = HCSINet(checkpoint_config(path))
    load_checkpoint(model, path)
    return model.eval()


def with_batch_statistics(model: HCSINet, batches: int = 3, seed: int = 0) -> HCSINet:
    """`model` (randomly initialised) with batch-norm statistics taken from a few batches of noise at its input
    size, in eval mode. Randomly initialised, EfficientNet's activations shrink about 4x per stage, so every input
    gets the same score and a comparison of two ways of running the network proves nothing; these statistics scale
    the activations back, so that scores differ between faces. For parity checks and timings without weights."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # the mean over the batches
    size = model.config.input_size
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(8, 3, size, size, generator=generator))
    return model.eval()
