"""Self-blended image (SBI) synthesis: hull masks, blending masks and the real/fake pair generator."""
from hcsi.sbi.blend import blend, blend_mask
from hcsi.sbi.config import SBIConfig
from hcsi.sbi.masks import (
    FACE_COMPONENTS,
    FLIP_PERMUTATION_68,
    HULL_TYPES,
    flip_landmarks,
    flip_permutation,
    hull_mask,
)
from hcsi.sbi.synthesis import (
    BlendStage,
    SBISample,
    SelfBlendedImageGenerator,
    downscale,
    elastic_deform_mask,
    elastic_maps,
    flip_box,
)

__all__ = [
    "FACE_COMPONENTS",
    "FLIP_PERMUTATION_68",
    "HULL_TYPES",
    "BlendStage",
    "SBIConfig",
    "SBISample",
    "SelfBlendedImageGenerator",
    "blend",
    "blend_mask",
    "downscale",
    "elastic_deform_mask",
    "elastic_maps",
    "flip_box",
    "flip_landmarks",
    "flip_permutation",
    "hull_mask",
]
