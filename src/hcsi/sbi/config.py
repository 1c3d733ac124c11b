"""`SBIConfig`: every number of the self-blended image pipeline, in one frozen dataclass (the reference's values)."""
from __future__ import annotations

from dataclasses import dataclass

from hcsi.sbi.masks import HULL_TYPES


@dataclass(frozen=True)
class SBIConfig:
    """Every number of the SBI pipeline. The reference implementation's values are the defaults.

    The one exception is `image_size`: the HCSI-Net paper trains at 224, the SBI reference at 380.
    Ranges are inclusive; probabilities are per sample. The final crop's margins are not here: they are
    hcsi.faces.crops' FACE_MARGIN_BASE × TRAIN_MARGIN_FACTOR / TEST_MARGIN_FACTOR, which preprocessing also uses to
    size the stored crops, so the two cannot disagree.
    """

    image_size: int = 224  # side of the square output crops (SBI reference: 380)
    hflip_p: float = 0.5  # horizontal flip of the context crop, train only
    drop_forehead_p: float = 0.25  # keep only points 0-67, so no hull reaches the forehead
    hull_types: tuple[str, ...] = HULL_TYPES  # hull types drawn uniformly per sample
    transform_source_p: float = 0.5  # the source gets the source transforms; otherwise the target (the real) does
    source_rgb_shift: float = 20.0  # source transforms: RGBShift limit per channel, uint8 levels
    source_rgb_shift_p: float = 0.3  # probability of that RGBShift
    source_hsv_shift: float = 0.3  # source transforms: hue/sat/value shift limit, always applied (a near no-op)
    source_brightness: float = 0.1  # source transforms: brightness limit, always applied
    source_contrast: float = 0.1  # source transforms: contrast limit, always applied
    downscale_p: float = 0.5  # source transforms end with a down-up scale, otherwise with a sharpen
    downscale_factors: tuple[int, ...] = (2, 4)  # down-up scale factor, drawn uniformly
    sharpen_alpha: tuple[float, float] = (0.2, 0.5)  # sharpen: blend of the sharpened image
    sharpen_lightness: tuple[float, float] = (0.5, 1.0)  # sharpen: lightness of the kernel centre
    affine_translate: tuple[float, float] = (0.03, 0.015)  # random affine: max |shift| in x, y as image fractions
    affine_scale: tuple[float, float] = (0.95, 1 / 0.95)  # random affine: scale range, drawn for x and y separately
    elastic_alpha: float = 50.0  # elastic deformation of the mask: displacement gain in pixels
    elastic_sigma: float = 7.0  # elastic deformation of the mask: smoothing of the displacement field in pixels
    blend_resize_range: tuple[int, int] = (192, 256)  # blend mask: side range of the random resize before blurring
    blend_kernel_range: tuple[int, int] = (5, 25)  # blend mask: odd Gaussian kernel sides of both blurs
    blend_sigma_range: tuple[int, int] = (5, 45)  # blend mask: integer sigma range of the second blur
    blend_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # mask gain, drawn uniformly (P(1) = 0.5)
    post_rgb_shift: float = 20.0  # joint post-augmentation (train): RGBShift limit, uint8 levels
    post_rgb_shift_p: float = 0.3  # probability of that RGBShift
    post_hsv_shift: float = 0.3  # joint post-augmentation: hue/sat/value shift limit (a near no-op)
    post_hsv_p: float = 0.3  # probability of that shift
    post_brightness_contrast: float = 0.3  # joint post-augmentation: brightness and contrast limit
    post_brightness_contrast_p: float = 0.3  # probability of that change
    jpeg_quality: tuple[int, int] = (40, 100)  # joint post-augmentation: JPEG quality range
    jpeg_p: float = 0.5  # probability of the JPEG round trip

    def __post_init__(self) -> None:
        probabilities = {name: getattr(self, name) for name in (
            "hflip_p", "drop_forehead_p", "transform_source_p", "source_rgb_shift_p", "downscale_p",
            "post_rgb_shift_p", "post_hsv_p", "post_brightness_contrast_p", "jpeg_p")}
        for name, value in probabilities.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"SBIConfig.{name} is a probability; got {value}")
        if self.image_size <= 0:
            raise ValueError(f"SBIConfig.image_size must be positive, got {self.image_size}")
        if not self.hull_types or not set(self.hull_types) <= set(HULL_TYPES):
            raise ValueError(f"SBIConfig.hull_types must be a non-empty subset of {HULL_TYPES}, got {self.hull_types}")
        if not 0 < self.affine_scale[0] <= self.affine_scale[1]:
            raise ValueError(f"SBIConfig.affine_scale needs 0 < low <= high, got {self.affine_scale}")
        if not self.downscale_factors or min(self.downscale_factors) < 1:
            raise ValueError(f"SBIConfig.downscale_factors must be integers >= 1, got {self.downscale_factors}")
        low, high = self.blend_kernel_range
        if low % 2 == 0 or high % 2 == 0 or not 1 <= low <= high:
            raise ValueError(f"SBIConfig.blend_kernel_range needs odd bounds low <= high, got {self.blend_kernel_range}")
        if not self.blend_ratios or not all(0.0 < r <= 1.0 for r in self.blend_ratios):
            raise ValueError(f"SBIConfig.blend_ratios must be values in (0, 1], got {self.blend_ratios}")
