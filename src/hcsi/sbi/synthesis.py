"""Self-blended image (SBI) synthesis: a real face blended with a transformed copy of itself.

Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images", CVPR 2022. The steps and their parameters follow
the reference implementation's training data pipeline; docs/sbi-notes.md lists where and why this one differs.

The input is a stored *context crop* (face plus margin), its landmarks and its face box, all in crop pixel coordinates.
Every random draw comes from the `np.random.Generator` passed in, so a seed fixes the output byte for byte.
One generator instance must not be shared between threads: its albumentations pipelines hold per-call random state.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import albumentations as A
import cv2
import numpy as np

from hcsi.sbi.blend import blend, blend_mask
from hcsi.sbi.masks import HULL_TYPES, LANDMARK_COUNTS, flip_landmarks, hull_mask

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class SBIConfig:
    """Every number of the SBI pipeline. The reference implementation's values are the defaults.

    The one exception is `image_size`: the HCSI-Net paper trains at 224, the SBI reference at 380.
    Ranges are inclusive; probabilities are per sample.
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
    crop_margin: float = 0.25  # final crop: base margin per side as a fraction of the box width / height
    crop_margin_scale_train: tuple[float, float] = (0.2, 0.8)  # train: each side's margin × U(low, high)
    crop_margin_scale_eval: float = 0.5  # evaluation: each side's margin × this (12.5% of the box per side)

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
        low, high = self.blend_kernel_range
        if low % 2 == 0 or high % 2 == 0 or not 1 <= low <= high:
            raise ValueError(f"SBIConfig.blend_kernel_range needs odd bounds low <= high, got {self.blend_kernel_range}")
        if not self.blend_ratios or not all(0.0 < r <= 1.0 for r in self.blend_ratios):
            raise ValueError(f"SBIConfig.blend_ratios must be values in (0, 1], got {self.blend_ratios}")


@dataclass
class BlendStage:
    """The pipeline up to the blend, before post-augmentation and the final crop (context-crop resolution)."""

    source: np.ndarray  # uint8 (H, W, 3): the face donor after its transforms and the random affine
    target: np.ndarray  # uint8 (H, W, 3): the image that receives the face; it becomes the real sample
    fake: np.ndarray  # uint8 (H, W, 3): mask · source + (1 − mask) · target
    mask: np.ndarray  # float32 (H, W): the blend mask, already scaled by blend_ratio
    landmarks: np.ndarray  # float32 (68 or 81, 2): the points the hull was built from (after flip and truncation)
    box: Box  # face box after the flip
    hull_type: str  # one of HULL_TYPES
    transformed: Literal["source", "target"]  # which image got the source transforms
    flipped: bool  # whether the context crop was mirrored first
    blend_ratio: float  # the gain the mask was scaled by


@dataclass
class SBISample:
    """One real/fake training pair, cropped around the face box and resized to image_size."""

    real: np.ndarray  # uint8 (S, S, 3)
    fake: np.ndarray  # uint8 (S, S, 3)
    mask: np.ndarray  # float32 (S, S): the blend mask after the same crop and resize, in [0, blend_ratio]
    hull_type: str
    transformed: Literal["source", "target"]
    flipped: bool
    blend_ratio: float
    landmark_count: int  # 81 when the hull could use the forehead points, else 68
    crop_box: tuple[int, int, int, int]  # (x0, y0, x1, y1) cut from the (possibly flipped) context crop


@contextmanager
def step_timer(timings: dict[str, float] | None, step: str) -> Iterator[None]:
    """Add the wall time of the block to timings[step] (seconds); does nothing when timings is None."""
    if timings is None:
        yield
        return
    start = time.perf_counter()
    yield
    timings[step] = timings.get(step, 0.0) + time.perf_counter() - start


def validate_inputs(image: np.ndarray, landmarks: np.ndarray, box: Box) -> tuple[np.ndarray, Box]:
    """Check a context crop, its landmarks and face box; return the landmarks as float32 and the box as floats."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        found = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got a {found}; pass the decoded 8-bit crop")
    points = np.asarray(landmarks, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) not in LANDMARK_COUNTS:
        raise ValueError(f"landmarks must have shape (68, 2) or (81, 2) (iBUG-68, optionally + 13 forehead points), "
                         f"got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("landmarks contain NaN or infinite values")
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ValueError(f"box must be 4 finite numbers (x0, y0, x1, y1), got {box}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box is empty: (x0, y0, x1, y1) = {box} needs x1 > x0 and y1 > y0")
    height, width = image.shape[:2]
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise ValueError(f"box {box} lies outside the {width}×{height} image; box and image must share coordinates")
    return points, (x0, y0, x1, y1)


def flip_box(box: Box, width: float) -> Box:
    """The face box of the horizontally flipped image, with x' = width − x as for the landmarks."""
    x0, y0, x1, y1 = box
    return (width - x1, y0, width - x0, y1)


def downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Down-up scale: shrink by `factor` with nearest neighbour, enlarge back with bilinear interpolation.

    albumentations' Downscale draws a continuous scale and defaults to nearest both ways, so SBI's version is kept.
    """
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_NEAREST)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def elastic_maps(shape_hw: tuple[int, int], alpha: float, sigma: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sampling maps (absolute x and y per output pixel, for cv2.remap) of a random elastic deformation.

    Uniform noise in [-1, 1] per pixel and axis, smoothed by a Gaussian of `sigma` truncated at 4 sigma with mirrored
    borders, then scaled by `alpha`: albumentations 1.x's exact (non-approximate) ElasticTransform, which SBI used
    (2.x defaults to normalised Gaussian noise, which would change the deformation's strength).
    Each displacement is at most `alpha` pixels per axis, since the smoothed noise stays within [-1, 1].
    """
    height, width = shape_hw
    side = 2 * math.ceil(4 * sigma) + 1
    maps = []
    for grid in (np.arange(width, dtype=np.float32)[None, :], np.arange(height, dtype=np.float32)[:, None]):
        field = rng.random((height, width), dtype=np.float32)
        field *= 2
        field -= 1
        cv2.GaussianBlur(field, (side, side), sigma, dst=field, borderType=cv2.BORDER_REFLECT)
        field *= alpha
        field += grid
        maps.append(field)
    return maps[0], maps[1]


def elastic_deform_mask(mask: np.ndarray, alpha: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """`mask` deformed by a random elastic field (nearest-neighbour sampling, mirrored borders).

    The field is drawn only where it can matter: around the mask's non-zero box, grown by the largest possible
    displacement (alpha, +1 for rounding), plus the blur's reach so that the field there is exactly what a full-image
    field would be. Outside that window every sample lands on zeros, so the result has the full-image distribution
    at a fraction of the cost on context crops, where the face fills only part of the image.
    """
    height, width = mask.shape
    x, y, box_w, box_h = cv2.boundingRect(cv2.compare(mask, 0, cv2.CMP_GT))
    if box_w == 0:
        return mask.copy()
    reach = math.ceil(alpha) + 1
    wx0, wy0 = max(0, x - reach), max(0, y - reach)
    wx1, wy1 = min(width, x + box_w + reach), min(height, y + box_h + reach)
    blur_reach = math.ceil(4 * sigma)
    fx0, fy0 = max(0, wx0 - blur_reach), max(0, wy0 - blur_reach)
    fx1, fy1 = min(width, wx1 + blur_reach), min(height, wy1 + blur_reach)
    map_x, map_y = elastic_maps((fy1 - fy0, fx1 - fx0), alpha, sigma, rng)
    inner = np.s_[wy0 - fy0:wy1 - fy0, wx0 - fx0:wx1 - fx0]
    deformed = np.zeros_like(mask)
    deformed[wy0:wy1, wx0:wx1] = cv2.remap(mask, map_x[inner] + fx0, map_y[inner] + fy0, cv2.INTER_NEAREST,
                                           borderMode=cv2.BORDER_REFLECT_101)
    return deformed


def crop_coordinates(box: Box, shape_hw: tuple[int, int], margins: np.ndarray) -> tuple[int, int, int, int]:
    """Integer crop (x0, y0, x1, y1) of the box grown by `margins` (left, top, right, bottom as fractions of the box
    width / height), rounded outwards and clipped to the image."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    left, top, right, bottom = margins
    image_h, image_w = shape_hw
    return (max(0, math.floor(x0 - left * width)), max(0, math.floor(y0 - top * height)),
            min(image_w, math.ceil(x1 + right * width)), min(image_h, math.ceil(y1 + bottom * height)))


class SelfBlendedImageGenerator:
    """Turns one real context crop into a (real, fake) pair by blending the face with a transformed copy of itself.

    Args:
        config: every parameter of the pipeline; the SBI reference's values by default.

    Example:
        >>> generator = SelfBlendedImageGenerator()
        >>> sample = generator(image, landmarks, box, np.random.default_rng(0), train=True)
        >>> sample.real.shape, sample.fake.shape, sample.mask.shape
        ((224, 224, 3), (224, 224, 3), (224, 224))
    """

    def __init__(self, config: SBIConfig | None = None) -> None:
        self.config = config = config or SBIConfig()
        rgb, hsv = config.source_rgb_shift, config.source_hsv_shift
        self._source_colour = A.Compose([
            A.RGBShift(rgb, rgb, rgb, p=config.source_rgb_shift_p),
            A.HueSaturationValue(hsv, hsv, hsv, p=1.0),
            A.RandomBrightnessContrast(config.source_brightness, config.source_contrast, p=1.0),
        ])
        self._sharpen = A.Compose([A.Sharpen(alpha=config.sharpen_alpha, lightness=config.sharpen_lightness, p=1.0)])
        tx, ty = config.affine_translate
        # Nearest-neighbour for the mask keeps the hull's values, as albumentations does for masks by default.
        self._affine = A.Compose([A.Affine(translate_percent={"x": (-tx, tx), "y": (-ty, ty)},
                                           scale=config.affine_scale, fit_output=False, p=1.0)])
        rgb, hsv, bc = config.post_rgb_shift, config.post_hsv_shift, config.post_brightness_contrast
        # `additional_targets` makes real and fake receive identical random parameters.
        self._post = A.Compose([
            A.RGBShift(rgb, rgb, rgb, p=config.post_rgb_shift_p),
            A.HueSaturationValue(hsv, hsv, hsv, p=config.post_hsv_p),
            A.RandomBrightnessContrast(bc, bc, p=config.post_brightness_contrast_p),
            A.ImageCompression(quality_range=config.jpeg_quality, p=config.jpeg_p),
        ], additional_targets={"real": "image"})

    def _seed_albumentations(self, rng: np.random.Generator) -> None:
        """Give every albumentations pipeline one shared random stream drawn from `rng`.

        Compose.set_random_seed would hand each transform its own generator with the same seed, so the transforms'
        "apply with probability p" draws would coincide (the three p=0.3 post-augmentations all on or all off).
        """
        seed = int(rng.integers(2**63))
        numpy_state, python_state = np.random.default_rng(seed), random.Random(seed)
        for pipeline in (self._source_colour, self._sharpen, self._affine, self._post):
            pipeline.set_random_state(numpy_state, python_state)

    def _source_transforms(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Colour jitter, then a down-up scale or a sharpen: the differences the detector learns to find."""
        image = self._source_colour(image=image)["image"]
        if rng.random() < self.config.downscale_p:
            return downscale(image, int(rng.choice(self.config.downscale_factors)))
        return self._sharpen(image=image)["image"]

    def _warp(self, source: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
              timings: dict[str, float] | None) -> tuple[np.ndarray, np.ndarray]:
        """Random affine of source and mask together, then an elastic deformation of the mask alone.

        The reference also deforms the source and throws the result away; we skip that pass.
        """
        with step_timer(timings, "affine"):
            warped = self._affine(image=source, mask=mask)
        with step_timer(timings, "elastic"):
            deformed = elastic_deform_mask(warped["mask"], self.config.elastic_alpha, self.config.elastic_sigma, rng)
        return warped["image"], deformed

    def blend_stage(self, image: np.ndarray, landmarks: np.ndarray, box: Box, rng: np.random.Generator,
                    train: bool = True, timings: dict[str, float] | None = None) -> BlendStage:
        """Run the pipeline up to the blend (flip, hull, source transforms, warp, blend mask, blend).

        `__call__` starts with exactly this, so the same seed gives the same stage in both.
        Args are those of `__call__`.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
        points, box = validate_inputs(image, landmarks, box)
        config = self.config
        self._seed_albumentations(rng)
        with step_timer(timings, "flip"):
            flipped = train and rng.random() < config.hflip_p
            if flipped:
                width = image.shape[1]
                image = cv2.flip(image, 1)
                points, box = flip_landmarks(points, width), flip_box(box, width)
        with step_timer(timings, "mask"):
            if rng.random() < config.drop_forehead_p:
                points = points[:68]
            hull_type = config.hull_types[int(rng.integers(len(config.hull_types)))]
            mask = hull_mask(image.shape[:2], points, hull_type)
        with step_timer(timings, "source_transforms"):
            transformed = "source" if rng.random() < config.transform_source_p else "target"
            source, target = image.copy(), image
            if transformed == "source":
                source = self._source_transforms(source, rng)
            else:
                target = self._source_transforms(target, rng)
        source, mask = self._warp(source, mask, rng, timings)
        with step_timer(timings, "blend_mask"):
            mask, ratio = blend_mask(mask, rng, config)
        with step_timer(timings, "blend"):
            fake = blend(source, target, mask)
        return BlendStage(source=source, target=target, fake=fake, mask=mask, landmarks=points, box=box,
                          hull_type=hull_type, transformed=transformed, flipped=flipped, blend_ratio=ratio)

    def __call__(self, image: np.ndarray, landmarks: np.ndarray, box: Box, rng: np.random.Generator,
                 train: bool = True, timings: dict[str, float] | None = None) -> SBISample:
        """Make one real/fake pair from a context crop.

        Args:
            image: uint8 (H, W, 3) RGB context crop.
            landmarks: (68, 2) or (81, 2) float points in crop pixels (iBUG-68, then 13 forehead points in contour
                order from the side of jaw point 0 to the side of jaw point 16).
            box: face box (x0, y0, x1, y1) in crop pixels, forehead to chin (RetinaFace-like).
            rng: source of every random draw; the same seed gives byte-identical outputs.
            train: True adds the flip, the joint post-augmentation and random crop margins; False gives the fixed
                12.5% margin and no flip or post-augmentation (the blend itself stays random, as in SBI validation).
            timings: if given, the seconds spent in each step are added to it under the step's name.
        """
        stage = self.blend_stage(image, landmarks, box, rng, train, timings)
        config = self.config
        real, fake = stage.target, stage.fake
        if train:
            with step_timer(timings, "post_aug"):
                augmented = self._post(image=fake, real=real)
                real, fake = augmented["real"], augmented["image"]
        with step_timer(timings, "crop_resize"):
            if train:
                margins = config.crop_margin * rng.uniform(*config.crop_margin_scale_train, size=4)
            else:
                margins = np.full(4, config.crop_margin * config.crop_margin_scale_eval)
            crop = crop_coordinates(stage.box, real.shape[:2], margins)
            x0, y0, x1, y1 = crop
            size = (config.image_size, config.image_size)
            real, fake, mask = (cv2.resize(a[y0:y1, x0:x1], size, interpolation=cv2.INTER_LINEAR)
                                for a in (real, fake, stage.mask))
        return SBISample(real=real, fake=fake, mask=mask, hull_type=stage.hull_type, transformed=stage.transformed,
                         flipped=stage.flipped, blend_ratio=stage.blend_ratio,
                         landmark_count=len(stage.landmarks), crop_box=crop)
