"""The albumentations pipelines of SBI synthesis, built from an `SBIConfig`, and how they are seeded.

Both generators (`hcsi.sbi.reference.self_blend` and `SelfBlendedImageGenerator`) build theirs here, so the two
cannot disagree on a transform or its parameters.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import albumentations as A
import numpy as np

from hcsi.sbi.config import SBIConfig


def seed_pipeline(pipeline: A.Compose, seed: int) -> None:
    """Give an albumentations pipeline its own random stream.

    Compose.set_random_seed would hand each transform of the pipeline its own generator with the same seed, so the
    transforms' "apply with probability p" draws would coincide (the three p=0.3 post-augmentations all on or off).
    """
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))


@dataclass
class SBIAugmentations:
    """SBI's three pipelines. One instance holds per-call random state: do not share it between threads."""

    source_colour: A.Compose  # source transforms, part 1: colour jitter
    sharpen: A.Compose  # source transforms, part 2 when there is no down-up scale
    post: A.Compose  # joint post-augmentation (train): real and fake in turn from the same seed

    @classmethod
    def from_config(cls, config: SBIConfig) -> SBIAugmentations:
        rgb, hsv = config.source_rgb_shift, config.source_hsv_shift
        source_colour = A.Compose([
            A.RGBShift(rgb, rgb, rgb, p=config.source_rgb_shift_p),
            A.HueSaturationValue(hsv, hsv, hsv, p=1.0),
            A.RandomBrightnessContrast(config.source_brightness, config.source_contrast, p=1.0),
        ])
        sharpen = A.Compose([A.Sharpen(alpha=config.sharpen_alpha, lightness=config.sharpen_lightness, p=1.0)])
        rgb, hsv, bc = config.post_rgb_shift, config.post_hsv_shift, config.post_brightness_contrast
        post = A.Compose([
            A.RGBShift(rgb, rgb, rgb, p=config.post_rgb_shift_p),
            A.HueSaturationValue(hsv, hsv, hsv, p=config.post_hsv_p),
            A.RandomBrightnessContrast(bc, bc, p=config.post_brightness_contrast_p),
            A.ImageCompression(quality_range=config.jpeg_quality, p=config.jpeg_p),
        ])
        return cls(source_colour=source_colour, sharpen=sharpen, post=post)
