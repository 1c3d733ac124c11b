"""The HCSI-Net model family: staged backbones, cross-stream interaction, fusion head, registry of variants."""
from .backbones import NUM_STAGES, StagedBackbone, build_staged_backbone
from .config import HCSINetConfig, get_config, list_models, register_config
from .builder import build_model, model_from_checkpoint, with_batch_statistics
from .hcsi_net import FusionHead, HCSINet, StageGates
from .interaction import (
    BidirectionalSpatialCrossGating,
    CrossStreamInteraction,
    SharedDescriptorProjection,
    normalized_coordinate_grid,
)
from .weights import load_backbone_weights, load_checkpoint, read_state_dict, save_checkpoint

__all__ = [
    "NUM_STAGES",
    "BidirectionalSpatialCrossGating",
    "CrossStreamInteraction",
    "FusionHead",
    "HCSINet",
    "HCSINetConfig",
    "SharedDescriptorProjection",
    "StageGates",
    "StagedBackbone",
    "build_model",
    "build_staged_backbone",
    "get_config",
    "list_models",
    "load_backbone_weights",
    "load_checkpoint",
    "model_from_checkpoint",
    "with_batch_statistics",
    "normalized_coordinate_grid",
    "read_state_dict",
    "register_config",
    "save_checkpoint",
]
