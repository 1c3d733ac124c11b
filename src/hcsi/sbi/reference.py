"""The specification of SBI synthesis: one real/fake pair, every step on the whole context crop, top to bottom.

Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images", CVPR 2022; their training code's names are given
in brackets ([self_blending], [randaffine], ...). This function is slow and plain on purpose. The generator used for
training, `hcsi.sbi.synthesis.SelfBlendedImageGenerator`, computes each step only on the window of pixels its output
needs; tests/test_sbi.py requires both to give byte-identical pairs over many seeds and crop sizes.

To change the synthesis (a new hull, rotation in the affine step, another augmentation), change this function first,
then make the generator follow until that test passes again. The order of the random draws is part of the
specification: the same seed must give the same pair in both, so each draw is numbered below.

Where this differs from SBI's code, on purpose (docs/protocol.md, "SBI synthesis"):
- the input is the stored context crop, not the whole frame, and the flip mirrors that crop;
- the final crop's margins are drawn before the steps that they bound (SBI draws them when cropping at the end);
- the blend mask's random resize size is drawn before the elastic field, because the field is only evaluated
  where that resize reads it; and the field is drawn only around the mask, where it can move a mask pixel;
- the source image is not elastically deformed: SBI deforms it and then discards the result.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from hcsi.faces.crops import TEST_MARGIN_FACTOR, face_crop_box, train_margin_factors
from hcsi.sbi.augmentations import SBIAugmentations, seed_pipeline
from hcsi.sbi.blend import blend, blend_mask_size, blend_ratio, resize_taps, soft_mask
from hcsi.sbi.config import SBIConfig
from hcsi.sbi.masks import flip_landmarks, hull_mask
from hcsi.sbi.operations import Box, affine_maps, downscale, elastic_deform_mask, flip_box, validate_inputs, warp
from hcsi.sbi.windows import Window


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
    crop_box: Window  # cut from the (possibly flipped) context crop


def draw_affine(shape_hw: tuple[int, int], rng: np.random.Generator,
                config: SBIConfig) -> tuple[np.ndarray, np.ndarray]:
    """[randaffine] The maps of SBI's random affine: x and y scales drawn separately, then a shift of up to
    ±affine_translate of the width and height; no rotation."""
    scale = rng.uniform(*config.affine_scale, size=2)
    limits = np.array(config.affine_translate)
    shift = rng.uniform(-limits, limits) * np.array(shape_hw[::-1])
    return affine_maps(shape_hw, (float(scale[0]), float(scale[1])), (float(shift[0]), float(shift[1])))


def source_transforms(image: np.ndarray, rng: np.random.Generator, augmentations: SBIAugmentations,
                      config: SBIConfig) -> np.ndarray:
    """[source_transforms] Colour jitter, then a down-up scale (factor 2 or 4) or else a sharpen."""
    for pipeline in (augmentations.source_colour, augmentations.sharpen):
        seed_pipeline(pipeline, int(rng.integers(2**63)))
    factor = int(rng.choice(config.downscale_factors)) if rng.random() < config.downscale_p else 0
    coloured = augmentations.source_colour(image=image)["image"]
    if factor:
        return downscale(coloured, factor)
    return augmentations.sharpen(image=coloured)["image"]


def self_blend(image: np.ndarray, landmarks: np.ndarray, box: Box, rng: np.random.Generator,
               config: SBIConfig | None = None, train: bool = True,
               augmentations: SBIAugmentations | None = None) -> SBISample:
    """[self_blending + the dataset's __getitem__] Make one real/fake pair from a context crop.

    Args are those of `SelfBlendedImageGenerator.__call__`; `augmentations` defaults to ones built from `config`.
    """
    config = config or SBIConfig()
    augmentations = augmentations or SBIAugmentations.from_config(config)
    points, box = validate_inputs(image, landmarks, box)
    height, width = shape = image.shape[:2]

    # 1. [hflip] Mirror the crop, its landmarks and its box (train only).
    flipped = train and rng.random() < config.hflip_p
    if flipped:
        image = cv2.flip(image, 1)
        points, box = flip_landmarks(points, width), flip_box(box, width)

    # 2. [random_get_hull] Drop the forehead points now and then, draw a hull type, fill it.
    if rng.random() < config.drop_forehead_p:
        points = points[:68]
    hull_type = config.hull_types[int(rng.integers(len(config.hull_types)))]
    hull = hull_mask(shape, points, hull_type)

    # 3. [crop_face] The final crop around the face box: random margins per side in training, fixed otherwise.
    factors = train_margin_factors(rng) if train else (TEST_MARGIN_FACTOR,) * 4
    crop_box = tuple(int(v) for v in face_crop_box(box, width, height, factors))

    # 4. Which copy gets the source transforms: the source (the face donor) or the target (which becomes the real).
    transformed = "source" if rng.random() < config.transform_source_p else "target"

    # 5. [randaffine] One random affine for the source image and the hull (nearest neighbour for the hull).
    maps = draw_affine(shape, rng, config)
    warped_hull = warp(hull, maps, (0, 0, width, height), cv2.INTER_NEAREST)

    # 6. [randaffine: ElasticTransform] Deform the hull. The blend mask (step 7) first resizes it to a random size,
    #    reading only the rows and columns `resize_taps` lists, so that size is drawn first and the deformation is
    #    evaluated at those pixels (its smoothing, done by DFT, can differ in the last float bit with the set of
    #    pixels computed; computing exactly these keeps the two generators byte-identical).
    size = blend_mask_size(rng, config)
    deformed = elastic_deform_mask(warped_hull, alpha=config.elastic_alpha, sigma=config.elastic_sigma, rng=rng,
                                   rows=resize_taps(height, size[0]), cols=resize_taps(width, size[1]))

    # 7. [get_blend_mask + dynamic_blend] Resize, blur, erode, blur again, resize back; scale by a random ratio.
    soft = soft_mask(deformed, rng, config, size)
    ratio = blend_ratio(rng, config)
    mask = soft * np.float32(ratio)

    # 8. [source_transforms] Transform one copy; warp the source by the affine of step 5 (bilinear).
    if transformed == "source":
        source, target = source_transforms(image, rng, augmentations, config), image
    else:
        source, target = image, source_transforms(image, rng, augmentations, config)
    source = warp(source, maps, (0, 0, width, height), cv2.INTER_LINEAR)

    # 9. [dynamic_blend] fake = mask · source + (1 − mask) · target.
    fake = blend(source, target, mask)
    real = target

    # 10. [transforms, additional_targets] The same post-augmentation for real and fake (train only).
    if train:
        seed = int(rng.integers(2**63))
        seed_pipeline(augmentations.post, seed)
        real = augmentations.post(image=real)["image"]
        seed_pipeline(augmentations.post, seed)
        fake = augmentations.post(image=fake)["image"]

    # 11. [crop_face + resize] Cut the final crop from real, fake and mask; resize to image_size.
    x0, y0, x1, y1 = crop_box
    out_size = (config.image_size, config.image_size)
    real, fake, mask = (cv2.resize(a[y0:y1, x0:x1], out_size, interpolation=cv2.INTER_LINEAR)
                        for a in (real, fake, mask))
    return SBISample(real=real, fake=fake, mask=mask, hull_type=hull_type, transformed=transformed, flipped=flipped,
                     blend_ratio=ratio, landmark_count=len(points), crop_box=crop_box)
