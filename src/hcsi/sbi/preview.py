"""A picture of what SBI makes from a face: rows of real | blend mask | fake triplets."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..faces import FaceDetector, create_face_detector, cut_stored_crop, sample_frames
from .config import SBIConfig
from .synthesis import SelfBlendedImageGenerator

TRIPLETS_PER_ROW = 4
GAP = 8  # pixels of white between triplets


def face_crops_of(path: str | Path, frames: int, detector: FaceDetector) -> list[tuple[np.ndarray, np.ndarray, tuple]]:
    """(context crop, landmarks, box) of the largest face in each of `frames` sampled frames that has one."""
    crops = []
    sampled = sample_frames(path, frames)
    for image in sampled.frames:
        faces = detector.detect(image)
        if not faces:
            continue
        crop = cut_stored_crop(image, faces[0])
        crops.append((crop.image, crop.landmarks, tuple(float(v) for v in crop.box)))
    if not crops:
        raise ValueError(f"{path}: no face found in {len(sampled.frames)} sampled frame(s)")
    return crops


def preview_grid(path: str | Path, n: int = 16, seed: int = 0, config: SBIConfig | None = None,
                 detector: FaceDetector | None = None) -> np.ndarray:
    """An RGB uint8 grid of n training triplets (real | mask | fake) made from the faces of an image or video."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    generator = SelfBlendedImageGenerator(config or SBIConfig())
    crops = face_crops_of(path, min(n, 8), detector or create_face_detector())
    tiles = []
    for i in range(n):
        image, landmarks, box = crops[i % len(crops)]
        sample = generator(image, landmarks, box, np.random.default_rng([seed, i]), train=True)
        mask = np.repeat((np.clip(sample.mask, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
        tiles.append(np.concatenate([sample.real, mask, sample.fake], axis=1))
    blank = np.full_like(tiles[0], 255)
    columns = min(TRIPLETS_PER_ROW, n)
    tiles += [blank] * (-len(tiles) % columns)
    side = tiles[0].shape[0]
    vertical_gap = np.full((side, GAP, 3), 255, dtype=np.uint8)  # white lines between triplets
    rows = [np.concatenate([part for tile in tiles[r:r + columns] for part in (tile, vertical_gap)][:-1], axis=1)
            for r in range(0, len(tiles), columns)]
    horizontal_gap = np.full((GAP, rows[0].shape[1], 3), 255, dtype=np.uint8)
    return np.concatenate([part for row in rows for part in (row, horizontal_gap)][:-1], axis=0)
