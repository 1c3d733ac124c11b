"""The HCSI-Net model family: staged backbones, cross-stream interaction, fusion head, registry of variants."""
from .backbones import NUM_STAGES, StagedBackbone, build_staged_backbone
from .config import HCSINetConfig, get_config, list_models, register_config
from .hcsi_net import FusionHead, HCSINet, StageGates, build_model
from .interaction import (
    BidirectionalSpatialCrossGating,
    CrossStreamInteraction,
    SharedDescriptorProjection,
    normalized_coordinate_grid,
)
from .weights import load_backbone_weights, load_checkpoint, read_state_dict, save_checkpoint

__all__ = [
    "NUM_STAGES", "StagedBackbone", "build_staged_backbone", "HCSINetConfig", "get_config", "list_models",
    "register_config", "FusionHead", "HCSINet", "StageGates", "build_model", "BidirectionalSpatialCrossGating",
    "CrossStreamInteraction", "SharedDescriptorProjection", "normalized_coordinate_grid", "load_backbone_weights",
    "load_checkpoint", "read_state_dict", "save_checkpoint",
]
