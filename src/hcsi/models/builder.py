"""Building models: a registered variant or config with its weights, or the model an hcsi checkpoint describes.

Kept apart from `hcsi_net` (the architecture) and `weights` (reading and writing weight files), as timm keeps its
builders apart from its model files, so that neither of those imports the other.
"""
from __future__ import annotations

import dataclasses
import os

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
