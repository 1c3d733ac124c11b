"""The fast SBI generator: `hcsi.sbi.reference.self_blend`, computed only where its output depends on it.

The specification is `hcsi.sbi.reference.self_blend`: read it first. This module gives the same pairs byte for byte,
with the same random draws in the same order (tests/test_sbi.py checks this over many seeds and crop sizes), and
several times faster per sample (docs/protocol.md, SBI synthesis, "Speed"). A change to the synthesis is made in the reference first; that test then fails until
this generator follows.

Only the final crop reaches the output, so each step computes just the *window* of pixels the output depends on
(`hcsi.sbi.windows`): the final crop, grown to whole JPEG coding units for the post-augmentation; for the face donor,
the box where the blend mask is non-zero; for the elastic deformation of the mask, the pixels that the blend mask's
first resize reads. The blend mask itself is computed on the whole context crop, whose size sets its random resize.
Each restricted step gives exactly the pixels it gives on the whole crop; docs/protocol.md (SBI synthesis) gives the
argument for each step. One generator instance must not be shared between threads: its albumentations pipelines
hold per-call random state.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from hcsi.faces.crops import TEST_MARGIN_FACTOR, face_crop_box, train_margin_factors
from hcsi.sbi.augmentations import SBIAugmentations, seed_pipeline
from hcsi.sbi.blend import blend, blend_mask_size, blend_ratio, resize_taps, soft_mask
from hcsi.sbi.config import SBIConfig
from hcsi.sbi.masks import flip_landmarks, hull_mask, hull_window
from hcsi.sbi.operations import (
    Box,
    downscale,
    elastic_deform_window,
    elastic_reach,
    flip_box,
    validate_inputs,
    warp,
)
from hcsi.sbi.reference import SBISample, draw_affine
from hcsi.sbi.windows import (
    JPEG_REACH,
    Window,
    column_blocks,
    grow_window,
    intersect,
    jpeg_window,
    nonzero_window,
    output_window,
    source_window,
    window_slices,
)


@dataclass
class BlendStage:
    """The pipeline up to the blend, before post-augmentation and the final crop.

    The images and the mask cover `window` of the (possibly flipped) context crop, at its resolution.
    """

    window: Window  # what the arrays below cover: crop_box grown to whole JPEG units (train) and colour blocks
    crop_box: Window  # the final crop, inside window
    blend_box: Window  # the blend mask's non-zero box, inside window: the only place the source is computed
    source: np.ndarray  # uint8: the face donor after its transforms and the random affine, inside blend_box (else 0)
    target: np.ndarray  # uint8: the image that receives the face; it becomes the real sample
    fake: np.ndarray  # uint8: mask · source + (1 − mask) · target
    mask: np.ndarray  # float32: the blend mask, already scaled by blend_ratio
    landmarks: np.ndarray  # float32 (68 or 81, 2): the points the hull was built from (after flip and truncation)
    box: Box  # face box after the flip
    hull_type: str  # one of HULL_TYPES
    transformed: Literal["source", "target"]  # which image got the source transforms
    flipped: bool  # whether the context crop was mirrored first
    blend_ratio: float  # the gain the mask was scaled by


@contextmanager
def step_timer(timings: dict[str, float] | None, step: str) -> Iterator[None]:
    """Add the wall time of the block to timings[step] (seconds); does nothing when timings is None."""
    if timings is None:
        yield
        return
    start = time.perf_counter()
    yield
    timings[step] = timings.get(step, 0.0) + time.perf_counter() - start


class _Scratch:
    """Arrays reused from sample to sample. A fresh array of a few megabytes costs more in page faults (several µs per
    4 KiB page on virtual machines) than the work done on it. Not pickled: each worker process grows its own."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def __call__(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        """An array of `shape`, valid until the next request for `name`: zeros when new, else what was left in it."""
        array = self._arrays.get(name)
        if array is None or array.dtype != dtype or any(a < s for a, s in zip(array.shape, shape)):
            grown = shape if array is None else tuple(max(a, s) for a, s in zip(array.shape, shape))
            array = self._arrays[name] = np.zeros(grown, dtype=dtype)
        return array[tuple(slice(0, s) for s in shape)]

    def __getstate__(self) -> dict:
        return {"_arrays": {}}


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
        self.config = config or SBIConfig()
        self.augmentations = SBIAugmentations.from_config(self.config)
        self._scratch = _Scratch()

    def source_transforms(self, image: np.ndarray, window: Window, rng: np.random.Generator) -> np.ndarray:
        """SBI's source transforms of `image` (colour jitter, then a down-up scale or a sharpen), for `window` only;
        every random parameter comes from `rng`.

        The colour jitter is pixel-wise, so it runs on the window grown by what the last step reads around a pixel
        (1 pixel for the 3×3 sharpen, 2·factor + 2 for the down-up scale) and widened by `column_blocks`. The down-up
        scale then runs on a canvas of the whole image's shape holding that grown window (zeros elsewhere), because
        its sampling grid depends on the image size. Returns the transformed window, uint8.
        """
        config = self.config
        for pipeline in (self.augmentations.source_colour, self.augmentations.sharpen):
            seed_pipeline(pipeline, int(rng.integers(2**63)))
        factor = int(rng.choice(config.downscale_factors)) if rng.random() < config.downscale_p else 0
        x0, y0, x1, y1 = window
        if x1 == x0 or y1 == y0:
            return image[window_slices(window)].copy()
        grown = column_blocks(grow_window(window, 2 * factor + 2 if factor else 1, image.shape[:2]), image.shape[:2])
        coloured = self.augmentations.source_colour(image=image[window_slices(grown)])["image"]
        if not factor:
            sharpened = self.augmentations.sharpen(image=coloured)["image"]
            return np.ascontiguousarray(sharpened[window_slices(window, grown)])
        canvas = self._scratch("downscale", image.shape, np.uint8)
        canvas[...] = 0
        canvas[window_slices(grown)] = coloured
        return downscale(canvas, factor, out=canvas)[window_slices(window)].copy()

    def blend_stage(self, image: np.ndarray, landmarks: np.ndarray, box: Box, rng: np.random.Generator,
                    train: bool = True, timings: dict[str, float] | None = None) -> BlendStage:
        """Run the pipeline up to the blend (flip, hull, crop, warp, blend mask, source transforms, blend).

        `__call__` starts with exactly this, so the same seed gives the same stage in both.
        Args are those of `__call__`.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
        points, box = validate_inputs(image, landmarks, box)
        config = self.config
        shape = image.shape[:2]
        with step_timer(timings, "flip"):
            flipped = train and rng.random() < config.hflip_p
            if flipped:
                image = cv2.flip(image, 1, dst=self._scratch("flipped", image.shape, np.uint8))
                points, box = flip_landmarks(points, shape[1]), flip_box(box, shape[1])
        with step_timer(timings, "mask"):
            if rng.random() < config.drop_forehead_p:
                points = points[:68]
            hull_type = config.hull_types[int(rng.integers(len(config.hull_types)))]
            hull_part = hull_window(shape, points)
            hull = hull_mask(shape, points, hull_type, hull_part)
        with step_timer(timings, "crop_resize"):
            # The final crop is drawn first: it bounds every image step below. Train mode JPEG-compresses the window.
            factors = train_margin_factors(rng) if train else (TEST_MARGIN_FACTOR,) * 4
            crop_box = tuple(int(v) for v in face_crop_box(box, shape[1], shape[0], factors))
            window = column_blocks(jpeg_window(crop_box, shape) if train else crop_box, shape)
        transformed = "source" if rng.random() < config.transform_source_p else "target"
        with step_timer(timings, "affine"):
            maps = draw_affine(shape, rng, config)
            # Grown by twice the elastic reach: all that the deformation below reads, so it reads this in place.
            warped_part = grow_window(output_window(maps, nonzero_window(hull, hull_part), shape),
                                      2 * elastic_reach(config.elastic_alpha), shape)
            warped = warp(hull, maps, warped_part, cv2.INTER_NEAREST, hull_part)
        with step_timer(timings, "elastic"):
            # The deformed mask only feeds the blend mask's first resize, which reads a fraction of its pixels, so the
            # resize's random size is drawn first and the deformation computed only there. (The reference also
            # deforms the source image and discards it.)
            size = blend_mask_size(rng, config)
            values, rows, cols = elastic_deform_window(
                warped, warped_part, shape, alpha=config.elastic_alpha, sigma=config.elastic_sigma, rng=rng,
                rows=resize_taps(shape[0], size[0]), cols=resize_taps(shape[1], size[1]))
        with step_timer(timings, "blend_mask"):
            # The random resize needs the whole image's shape: a reused canvas takes the deformed mask. It is all
            # zeros: new, and every row written here is zeroed again below.
            canvas = self._scratch("mask", shape, np.float32)
            sampled_rows = np.zeros((len(rows), shape[1]), dtype=np.float32)
            sampled_rows[:, cols] = values  # two one-axis scatters: far faster than one two-axis scatter
            canvas[rows] = sampled_rows
            try:
                soft = soft_mask(canvas, rng, config, size, out=self._scratch("soft", shape, np.float32))
            finally:
                canvas[rows] = 0
            ratio = blend_ratio(rng, config)
            mask = soft[window_slices(window)] * np.float32(ratio)
            # The source is used only where the mask is non-zero.
            blended = nonzero_window(mask, window)
            reads = source_window(maps, blended, shape)
        with step_timer(timings, "source_transforms"):
            if transformed == "target":
                target = self.source_transforms(image, window, rng)
                source_part = image[window_slices(reads)]
            else:
                target = image[window_slices(window)].copy()
                source_part = self.source_transforms(image, reads, rng)
        with step_timer(timings, "affine"):
            source = np.zeros_like(target)
            source[window_slices(blended, window)] = warp(source_part, maps, blended, cv2.INTER_LINEAR, reads)
        with step_timer(timings, "blend"):
            fake = blend(source, target, mask)
        return BlendStage(window=window, crop_box=crop_box, blend_box=blended, source=source, target=target,
                          fake=fake, mask=mask, landmarks=points, box=box, hull_type=hull_type,
                          transformed=transformed, flipped=flipped, blend_ratio=ratio)

    def _post_augment(self, stage: BlendStage, shape_hw: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
        """SBI's joint post-augmentation of (real, fake) over the stage's window, the same parameters for both.

        The fake equals the real outside the blend mask's box, and every step gives equal pixels for equal pixels
        (JPEG within each coding unit, whose decoding reads JPEG_REACH pixels beyond it). So the fake is augmented
        only over the coding units around that box, in a window grown as the crop's is, and is the real elsewhere.
        """
        window, blended = stage.window, stage.blend_box
        seed_pipeline(self.augmentations.post, seed)
        real = self.augmentations.post(image=stage.target)["image"]
        fake = real.copy()
        if blended[2] > blended[0] and blended[3] > blended[1]:
            units = jpeg_window(blended, shape_hw, margin=0)
            differs = intersect(grow_window(units, JPEG_REACH, shape_hw), window)
            part = intersect(jpeg_window(differs, shape_hw), window)
            part = column_blocks(part, shape_hw, within=window)
            seed_pipeline(self.augmentations.post, seed)
            augmented = self.augmentations.post(image=stage.fake[window_slices(part, window)])["image"]
            fake[window_slices(differs, window)] = augmented[window_slices(differs, part)]
        return real, fake

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
        stage = self.blend_stage(image, landmarks, box, rng, train=train, timings=timings)
        real, fake = stage.target, stage.fake
        if train:
            with step_timer(timings, "post_aug"):
                real, fake = self._post_augment(stage, image.shape[:2], int(rng.integers(2**63)))
        with step_timer(timings, "crop_resize"):
            crop = window_slices(stage.crop_box, stage.window)
            size = (self.config.image_size, self.config.image_size)
            real, fake, mask = (cv2.resize(a[crop], size, interpolation=cv2.INTER_LINEAR)
                                for a in (real, fake, stage.mask))
        return SBISample(real=real, fake=fake, mask=mask, hull_type=stage.hull_type, transformed=stage.transformed,
                         flipped=stage.flipped, blend_ratio=stage.blend_ratio,
                         landmark_count=len(stage.landmarks), crop_box=stage.crop_box)
