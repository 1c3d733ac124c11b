"""Self-blended image (SBI) synthesis: hull masks, blending masks and the real/fake pair generator.

`reference.self_blend` is the specification (every step on the whole crop, top to bottom);
`synthesis.SelfBlendedImageGenerator` is its fast version, byte-identical to it (tests/test_sbi.py).
"""
from hcsi.sbi.augmentations import SBIAugmentations
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
from hcsi.sbi.operations import downscale, elastic_deform_mask, elastic_maps, flip_box
from hcsi.sbi.reference import SBISample, self_blend
from hcsi.sbi.synthesis import BlendStage, SelfBlendedImageGenerator

__all__ = [
    "FACE_COMPONENTS",
    "FLIP_PERMUTATION_68",
    "HULL_TYPES",
    "BlendStage",
    "SBIAugmentations",
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
    "self_blend",
]
