"""The paper's stage-2 augmentations that emulate post-processing: resampling, blur, noise, JPEG, photometric jitter.

The paper names the kinds ("resampling/blur/noise and photometric perturbations") but not their strengths; the
ranges below are ours (docs/protocol.md, "Training"). Real and fake of a pair get identical parameters, as in SBI's
joint post-augmentation, so the blend stays the only difference between them.
"""
from __future__ import annotations

import cv2
import numpy as np

import albumentations as A

from ..sbi.augmentations import seed_pipeline


class PostProcessingAugmentation:
    """Callable (real, fake, rng) -> (real, fake) on uint8 RGB images of the same size.

    Args:
        p: probability of the distortion group (one of downscale-upscale, Gaussian blur, Gaussian noise, JPEG) and,
            independently, of the photometric group (brightness / contrast / saturation / hue jitter).
    """

    def __init__(self, p: float = 0.5) -> None:
        linear = {"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}
        self.pipeline = A.Compose([
            A.OneOf([
                A.Downscale(scale_range=(0.5, 0.9), interpolation_pair=linear, p=1.0),
                A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.5), p=1.0),
                A.GaussNoise(std_range=(0.01, 0.05), p=1.0),
                A.ImageCompression(quality_range=(40, 95), p=1.0),
            ], p=p),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03, p=p),
        ], additional_targets={"fake": "image"})

    def __call__(self, real: np.ndarray, fake: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        seed_pipeline(self.pipeline, int(rng.integers(2**63)))
        out = self.pipeline(image=real, fake=fake)
        return out["image"], out["fake"]
