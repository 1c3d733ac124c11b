"""Self-blended image synthesis on real face crops (hcsi.sbi): two 317×317 crops shipped in tests/fixtures/sbi_faces
with their 68 landmarks (made by tests/fixtures/make_fixtures.py, in the layout of FF++ crops)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from hcsi.faces.crops import face_crop_box
from hcsi.sbi import (
    FACE_COMPONENTS,
    HULL_TYPES,
    SBIConfig,
    SBIAugmentations,
    SelfBlendedImageGenerator,
    blend,
    blend_mask,
    elastic_deform_mask,
    elastic_maps,
    flip_landmarks,
    flip_permutation,
    hull_mask,
    self_blend,
)
from hcsi.sbi.blend import resize_taps
from hcsi.sbi.masks import DFL_FULL_REGIONS, hull_window
from hcsi.sbi.operations import affine_maps, elastic_deform_window, elastic_maps_at, warp
from hcsi.sbi.windows import jpeg_window, source_window, window_slices

CROPS = Path(__file__).resolve().parent / "fixtures" / "sbi_faces"
FACE_NAMES = ("obama.png", "beckham.png")
# RetinaFace-like box read off the landmarks of both crops (jaw extremes, chin, and a forehead line a quarter of the
# brow-to-chin height above the brows), averaged: the crops are made with the face at the same size and place.
_BOXES = [json.loads((CROPS / "landmarks.json").read_text())[name]["box"] for name in FACE_NAMES]
FACE_BOX = tuple(float(round(sum(b[i] for b in _BOXES) / 2)) for i in range(4))
SEEDS = range(6)


@pytest.fixture(scope="module")
def faces() -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB image, (68, 2) float32 landmarks) of the two 317×317 crops."""
    landmarks = json.loads((CROPS / "landmarks.json").read_text())
    return [(cv2.cvtColor(cv2.imread(str(CROPS / name)), cv2.COLOR_BGR2RGB),
             np.asarray(landmarks[name]["landmarks"], dtype=np.float32)) for name in FACE_NAMES]


@pytest.fixture(scope="module")
def generator() -> SelfBlendedImageGenerator:
    return SelfBlendedImageGenerator()


def with_forehead(landmarks: np.ndarray) -> np.ndarray:
    """81 points: the 68 plus 13 forehead points on an arc above the brows, from jaw point 0's side to point 16's."""
    centre = (landmarks[0] + landmarks[16]) / 2
    radius_x = abs(landmarks[16, 0] - landmarks[0, 0]) / 2
    radius_y = 1.8 * (centre[1] - landmarks[17:27, 1].min())
    angles = np.linspace(math.pi, 2 * math.pi, 15)[1:-1]
    forehead = np.stack([centre[0] + radius_x * np.cos(angles), centre[1] + radius_y * np.sin(angles)], axis=1)
    return np.concatenate([landmarks, forehead]).astype(np.float32)


def values_at(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    rounded = np.round(points).astype(int)
    return mask[rounded[:, 1], rounded[:, 0]]


def points_used(hull_type: str) -> list[int]:
    """The landmarks each hull type is built from (for `extended`, those it keeps in place)."""
    if hull_type == "facehull":
        return list(range(68))
    regions = DFL_FULL_REGIONS if hull_type == "dfl_full" else FACE_COMPONENTS
    used = sorted({i for indices in regions.values() for i in indices})
    return [i for i in used if not 17 <= i <= 26] if hull_type == "extended" else used


@pytest.mark.parametrize("hull_type", HULL_TYPES)
def test_hull_mask_covers_its_points_and_nothing_far_outside(faces, hull_type):
    image, landmarks = faces[0]
    mask = hull_mask(image.shape[:2], landmarks, hull_type)
    assert mask.dtype == np.float32 and mask.shape == image.shape[:2]
    assert mask.min() == 0.0 and mask.max() == 1.0
    assert (values_at(mask, landmarks[points_used(hull_type)]) >= 0.5).all()
    assert values_at(mask, landmarks[[30]]) == 1.0  # nose tip: inside every hull
    left_of_face = landmarks[:, 0].min() - 5
    below_chin = landmarks[:, 1].max() + 5
    assert not mask[:, : int(left_of_face)].any() and not mask[int(below_chin):].any()
    if hull_type != "facehull":  # the component hulls are 0/1, as in the reference
        assert set(np.unique(mask)) == {0.0, 1.0}


def test_extended_hull_reaches_above_the_brows(faces):
    image, landmarks = faces[0]
    components = hull_mask(image.shape[:2], landmarks, "components")
    extended = hull_mask(image.shape[:2], landmarks, "extended")
    assert (extended >= components).all()
    eye_brow_distance = landmarks[36:48, 1].mean() - landmarks[17:27, 1].mean()
    top_components = np.nonzero(components.any(axis=1))[0][0]
    top_extended = np.nonzero(extended.any(axis=1))[0][0]
    assert top_components - top_extended >= 0.4 * eye_brow_distance


def test_only_facehull_uses_the_forehead(faces):
    image, landmarks = faces[0]
    full = with_forehead(landmarks)
    shape = image.shape[:2]
    assert (values_at(hull_mask(shape, full, "facehull"), full[68:]) >= 0.5).all()
    assert values_at(hull_mask(shape, landmarks, "facehull"), full[[74]]) == 0.0  # top of the forehead arc
    for hull_type in ("dfl_full", "extended", "components"):
        assert np.array_equal(hull_mask(shape, full, hull_type), hull_mask(shape, landmarks, hull_type))


@pytest.mark.parametrize("n_points", [68, 81])
def test_flip_permutation_is_an_involution(faces, n_points):
    permutation = flip_permutation(n_points)
    assert np.array_equal(np.sort(permutation), np.arange(n_points))
    assert np.array_equal(permutation[permutation], np.arange(n_points))
    points = with_forehead(faces[0][1])[:n_points]
    np.testing.assert_allclose(flip_landmarks(flip_landmarks(points, 317), 317), points, atol=1e-4)
    if n_points == 81:
        assert np.array_equal(permutation[68:], np.arange(80, 67, -1))


def test_flip_maps_the_left_eye_onto_the_right_eye_region(faces):
    image, landmarks = faces[1]
    width = image.shape[1]
    flipped = flip_landmarks(landmarks, width)
    # The subject's right eye stays on the image's left, where the mirrored left eye now is.
    assert flipped[36:42, 0].max() < width / 2 < flipped[42:48, 0].min()
    np.testing.assert_allclose(flipped[36:42].mean(axis=0),
                               [width - landmarks[42:48, 0].mean(), landmarks[42:48, 1].mean()], atol=1e-4)
    assert flipped[0, 0] < flipped[16, 0] and flipped[48, 0] < flipped[54, 0]
    # Masks built from the mirrored landmarks match the mirrored masks (up to the reference's one-pixel offset).
    for hull_type in HULL_TYPES:
        from_flipped = hull_mask(image.shape[:2], flipped, hull_type) > 0.5
        mirrored = hull_mask(image.shape[:2], landmarks, hull_type)[:, ::-1] > 0.5
        assert (from_flipped & mirrored).sum() / (from_flipped | mirrored).sum() > 0.97


def test_blend_mask_is_soft_scaled_and_stays_near_the_hull(faces):
    image, landmarks = faces[0]
    hull = hull_mask(image.shape[:2], landmarks, "components")
    grown = cv2.dilate(hull, np.ones((41, 41), np.uint8))
    config = SBIConfig()
    for seed in SEEDS:
        soft, ratio = blend_mask(hull, np.random.default_rng(seed), config)
        assert soft.dtype == np.float32 and soft.shape == hull.shape
        assert ratio in config.blend_ratios
        assert soft.min() >= 0 and soft.max() == pytest.approx(ratio, rel=1e-3)
        assert values_at(soft, landmarks[[30]]) == pytest.approx(ratio, rel=1e-3)
        assert not soft[grown == 0].any()


def test_elastic_field_has_the_reference_strength():
    size, alpha, sigma = 300, 50.0, 7.0
    maps = elastic_maps((size, size), alpha, sigma, np.random.default_rng(0))
    dx, dy = maps[..., 0] - np.arange(size), maps[..., 1] - np.arange(size)[:, None]
    # Uniform noise (variance 1/3) smoothed by a 2-D Gaussian: std = alpha·sqrt(1/3 / (4π sigma²)) ≈ 1.16 px.
    expected = alpha * math.sqrt(1 / 3 / (4 * math.pi * sigma**2))
    for displacement in (dx, dy):
        assert displacement.std() == pytest.approx(expected, rel=0.1)
        assert np.abs(displacement).max() <= alpha


def test_elastic_deformation_moves_only_the_mask_border(faces):
    image, landmarks = faces[0]
    mask = hull_mask(image.shape[:2], landmarks, "components")
    deformed = elastic_deform_mask(mask, 50.0, 7.0, np.random.default_rng(0))
    assert np.array_equal(deformed, elastic_deform_mask(mask, 50.0, 7.0, np.random.default_rng(0)))
    assert set(np.unique(deformed)) == {0.0, 1.0}
    changed = deformed != mask
    band = cv2.dilate(mask, np.ones((21, 21), np.uint8)) - cv2.erode(mask, np.ones((21, 21), np.uint8))
    assert changed.sum() > 100 and not changed[band == 0].any()


def test_fake_differs_from_target_only_inside_the_blend_mask(faces, generator):
    transformed = set()
    for (image, landmarks), seed in zip(faces * 3, SEEDS):
        stage = generator.blend_stage(image, landmarks, FACE_BOX, np.random.default_rng(seed), train=True)
        transformed.add(stage.transformed)
        changed = (stage.fake != stage.target).any(axis=2)
        assert not changed[stage.mask == 0].any()
        assert changed[stage.mask >= 0.5 * stage.blend_ratio].mean() > 0.5
        assert np.array_equal(stage.fake, blend(stage.source, stage.target, stage.mask))
    assert transformed == {"source", "target"}


def test_same_seed_gives_identical_samples_and_other_seeds_differ(faces, generator):
    image, landmarks = faces[0]
    first, again, other = (generator(image, landmarks, FACE_BOX, np.random.default_rng(seed), train=True)
                           for seed in (7, 7, 8))
    for name in ("real", "fake", "mask"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    assert first.crop_box == again.crop_box and first.hull_type == again.hull_type
    assert not np.array_equal(first.fake, other.fake)


@pytest.mark.parametrize("image_size", [224, 380])
def test_output_shapes_and_dtypes(faces, image_size):
    generator = SelfBlendedImageGenerator(SBIConfig(image_size=image_size))
    image, landmarks = faces[1]
    timings: dict[str, float] = {}
    sample = generator(image, landmarks, FACE_BOX, np.random.default_rng(0), train=True, timings=timings)
    assert sample.real.shape == sample.fake.shape == (image_size, image_size, 3)
    assert sample.real.dtype == sample.fake.dtype == np.uint8
    assert sample.mask.shape == (image_size, image_size) and sample.mask.dtype == np.float32
    assert 0 <= sample.mask.min() and sample.mask.max() <= sample.blend_ratio + 1e-6
    x0, y0, x1, y1 = sample.crop_box
    assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
    assert set(timings) == {"flip", "mask", "source_transforms", "affine", "elastic", "blend_mask", "blend",
                            "post_aug", "crop_resize"}


def test_post_augmentation_treats_real_and_fake_alike(faces, generator):
    image, landmarks = faces[0]
    for seed in SEEDS:
        sample = generator(image, landmarks, FACE_BOX, np.random.default_rng(seed), train=True)
        # Far from the blended region (JPEG mixes 16×16 blocks) the two images saw the same pixels and parameters.
        away = cv2.dilate((sample.mask > 0).astype(np.uint8), np.ones((41, 41), np.uint8)) == 0
        assert away.sum() > 1000
        assert np.array_equal(sample.real[away], sample.fake[away])


def test_eval_mode_uses_the_fixed_crop_without_flip_or_post_augmentation(faces, generator):
    image, landmarks = faces[0]
    x0, y0, x1, y1 = FACE_BOX
    margin_x, margin_y = 0.125 * (x1 - x0), 0.125 * (y1 - y0)
    expected = (math.floor(x0 - margin_x), math.floor(y0 - margin_y),
                math.ceil(x1 + margin_x), min(image.shape[0], math.ceil(y1 + margin_y)))
    assert expected == tuple(face_crop_box(FACE_BOX, image.shape[1], image.shape[0]))  # the project's crop rule
    size = (generator.config.image_size,) * 2
    for seed in SEEDS:
        stage = generator.blend_stage(image, landmarks, FACE_BOX, np.random.default_rng(seed), train=False)
        sample = generator(image, landmarks, FACE_BOX, np.random.default_rng(seed), train=False)
        assert not sample.flipped and sample.crop_box == stage.crop_box == expected
        wx0, wy0 = stage.window[:2]  # the stage's arrays cover its window of the context crop
        cx0, cy0, cx1, cy1 = expected
        for produced, full in ((sample.real, stage.target), (sample.fake, stage.fake)):
            crop = full[cy0 - wy0:cy1 - wy0, cx0 - wx0:cx1 - wx0]
            assert np.array_equal(produced, cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR))


def test_train_mode_flips_about_half_the_samples(faces, generator):
    image, landmarks = faces[0]
    flips = [generator.blend_stage(image, landmarks, FACE_BOX, np.random.default_rng(seed)) for seed in range(12)]
    assert {stage.flipped for stage in flips} == {True, False}
    stage = next(stage for stage in flips if stage.flipped)
    assert stage.box == (317 - FACE_BOX[2], FACE_BOX[1], 317 - FACE_BOX[0], FACE_BOX[3])


@pytest.mark.parametrize("change, message", [
    (lambda im, lm, box: (im.astype(np.float32), lm, box), "uint8"),
    (lambda im, lm, box: (np.dstack([im, im[..., :1]]), lm, box), r"\(H, W, 3\)"),
    (lambda im, lm, box: (im[..., 0], lm, box), r"\(H, W, 3\)"),
    (lambda im, lm, box: (im, lm[:60], box), r"\(68, 2\) or \(81, 2\)"),
    (lambda im, lm, box: (im, np.where(lm == lm[0], np.nan, lm), box), "NaN"),
    (lambda im, lm, box: (im, lm, (100.0, 50.0, 100.0, 200.0)), "empty"),
    (lambda im, lm, box: (im, lm, (400.0, 10.0, 500.0, 100.0)), "outside"),
])
def test_bad_inputs_raise_a_value_error_naming_the_problem(faces, generator, change, message):
    image, landmarks, box = change(*faces[0], FACE_BOX)
    with pytest.raises(ValueError, match=message):
        generator(image, landmarks, box, np.random.default_rng(0))


def test_rng_must_be_a_numpy_generator(faces, generator):
    with pytest.raises(TypeError, match="default_rng"):
        generator(*faces[0], FACE_BOX, np.random.RandomState(0))


def test_config_rejects_invalid_values():
    with pytest.raises(ValueError, match="probability"):
        SBIConfig(hflip_p=1.5)
    with pytest.raises(ValueError, match="odd"):
        SBIConfig(blend_kernel_range=(4, 25))
    with pytest.raises(ValueError, match="hull_types"):
        SBIConfig(hull_types=("mouth",))
    with pytest.raises(ValueError, match="affine_scale"):
        SBIConfig(affine_scale=(0.0, 1.05))
    with pytest.raises(ValueError, match="downscale_factors"):
        SBIConfig(downscale_factors=(0, 2))


# --- The fast generator against the specification (hcsi.sbi.reference), and each windowed step on its own ---

def context_crop(image: np.ndarray, landmarks: np.ndarray, pad: tuple[int, int, int, int]):
    """The 317×317 crop padded by reflection (top, bottom, left, right), like a stored context crop, with its
    landmarks and face box moved along."""
    top, bottom, left, right = pad
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REFLECT_101)
    x0, y0, x1, y1 = FACE_BOX
    return padded, landmarks + np.float32([left, top]), (x0 + left, y0 + top, x1 + left, y1 + top)


# Crops of 477×260, 317×317, 448×510, 548×423 and 784×825 (width × height): faces inside and at the edges, and the
# end of OpenCV's vectorised rows in different places.
REFERENCE_PADS = [(150, 40, 90, 70), (0, 0, 0, 0), (170, 23, 0, 131), (31, 77, 200, 31), (260, 248, 233, 234)]


@pytest.mark.parametrize("pad", REFERENCE_PADS)
def test_fast_generator_gives_the_reference_pairs_byte_for_byte(faces, pad):
    """Same seed, same bytes, over 20 seeds per crop size, train and eval, 68 and 81 landmarks."""
    generator = SelfBlendedImageGenerator()
    augmentations = SBIAugmentations.from_config(generator.config)
    seen = set()
    for seed in range(20):
        image, landmarks = faces[seed % 2]
        if seed % 3 == 0:
            landmarks = with_forehead(landmarks)
        image, landmarks, box = context_crop(image, landmarks, pad)
        for train in (True, False):
            fast = generator(image, landmarks, box, np.random.default_rng(seed), train=train)
            reference = self_blend(image, landmarks, box, np.random.default_rng(seed), generator.config, train,
                                   augmentations)
            for name in ("real", "fake", "mask"):
                assert np.array_equal(getattr(fast, name), getattr(reference, name)), (seed, train, name)
            for name in ("hull_type", "transformed", "flipped", "blend_ratio", "landmark_count", "crop_box"):
                assert getattr(fast, name) == getattr(reference, name), (seed, train, name)
            seen.add((fast.transformed, fast.flipped, fast.landmark_count))
    # Both branches of the source transforms, both flips and both landmark counts were exercised.
    assert {t for t, _, _ in seen} == {"source", "target"} and {f for _, f, _ in seen} == {True, False}
    assert {n for _, _, n in seen} == {68, 81}


def test_window_warp_equals_the_window_of_the_whole_warp(faces):
    image, landmarks = faces[0]
    height, width = image.shape[:2]
    (sx, sy), (tx, ty) = (1.03, 0.96), (7.4, -3.2)
    maps = affine_maps((height, width), (sx, sy), (tx, ty))
    whole = (0, 0, width, height)
    warped = warp(image, maps, whole, cv2.INTER_LINEAR)
    for window in [(40, 60, 250, 300), (0, 0, 120, height), (200, 150, width, height)]:
        reads = source_window(maps, window, (height, width))
        part = warp(image[window_slices(reads)], maps, window, cv2.INTER_LINEAR, reads)
        assert np.array_equal(part, warped[window_slices(window)])
    # Nearest neighbour (the mask) picks rows and columns: the same as cv2.remap with two-dimensional maps.
    mask = hull_mask((height, width), landmarks, "facehull")
    grid_x, grid_y = np.meshgrid(maps[0], maps[1])
    assert np.array_equal(warp(mask, maps, whole, cv2.INTER_NEAREST),
                          cv2.remap(mask, grid_x, grid_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT))
    # The same transform as the reference's (albumentations 1.x's matrix through cv2.warpAffine), up to rounding.
    cx, cy = width / 2 - 0.5, height / 2 - 0.5
    matrix = np.array([[sx, 0, cx - sx * cx + tx], [0, sy, cy - sy * cy + ty]])
    reference = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR)
    difference = np.abs(reference.astype(int) - warped)
    assert difference.max() <= 1 and (difference > 0).mean() < 3e-3  # rounding only (0.15 % of pixels here)


@pytest.mark.parametrize("branch", [{"downscale_p": 1.0, "downscale_factors": (2,)},
                                    {"downscale_p": 1.0, "downscale_factors": (4,)},
                                    {"downscale_p": 0.0}], ids=["downscale2", "downscale4", "sharpen"])
def test_source_transforms_of_a_window_equal_the_window_of_the_whole_image(faces, branch):
    generator = SelfBlendedImageGenerator(SBIConfig(**branch))
    image, _, _ = context_crop(*faces[1], (150, 40, 90, 70))  # 507×477: neither side a multiple of 2, 4 or 64
    height, width = image.shape[:2]
    for seed, window in enumerate([(37, 51, 251, 290), (0, 0, 101, height), (300, 200, width, height)]):
        whole, part = (generator.source_transforms(image, w, np.random.default_rng(seed))
                       for w in ((0, 0, width, height), window))
        assert np.array_equal(part, whole[window_slices(window)])
        assert not np.array_equal(part, image[window_slices(window)])


def test_jpeg_of_a_window_grown_to_coding_units_equals_the_window_of_the_whole_image(faces):
    image, _, _ = context_crop(*faces[0], (150, 40, 90, 70))
    shape = image.shape[:2]

    def jpeg(a: np.ndarray, quality: int) -> np.ndarray:
        return cv2.imdecode(cv2.imencode(".jpg", np.ascontiguousarray(a), (cv2.IMWRITE_JPEG_QUALITY, quality))[1],
                            cv2.IMREAD_UNCHANGED)

    for quality in (40, 75, 100):
        whole = jpeg(image, quality)
        # Edges inside coding units, on their borders (the decoder reads across those), and at the image's edges.
        for window in [(33, 45, 301, 299), (48, 64, 320, 288), (0, 0, 170, 130), (250, 300, shape[1], shape[0])]:
            part = jpeg_window(window, shape)
            assert np.array_equal(jpeg(image[window_slices(part)], quality)[window_slices(window, part)],
                                  whole[window_slices(window)])


def test_elastic_deformation_is_computed_only_where_the_blend_mask_reads_it(faces):
    image, landmarks = faces[0]
    shape = image.shape[:2]
    rows, cols = resize_taps(shape[0], 230), resize_taps(shape[1], 200)
    # The resize of the blend mask reads only those rows and columns.
    noise = np.random.default_rng(0).random(shape, dtype=np.float32)
    junk = np.full(shape, 1e6, dtype=np.float32)
    junk[np.ix_(rows, cols)] = noise[np.ix_(rows, cols)]
    assert np.array_equal(cv2.resize(noise, (200, 230), interpolation=cv2.INTER_LINEAR),
                          cv2.resize(junk, (200, 230), interpolation=cv2.INTER_LINEAR))
    # There, the field equals the whole field made from the same noise, up to float rounding (pixels).
    whole = elastic_maps(shape, 50.0, 7.0, np.random.default_rng(3))
    sampled = elastic_maps_at(shape, 50.0, 7.0, np.random.default_rng(3), rows, cols)
    np.testing.assert_allclose(sampled, whole[np.ix_(rows, cols)], atol=1e-3)
    # A mask held in a window deforms as the whole-image mask does, mirrored image edges included.
    mask = hull_mask(shape, landmarks, "components")
    window = hull_window(shape, landmarks)
    in_window = elastic_deform_window(mask[window_slices(window)], window, shape, 50.0, 7.0,
                                      np.random.default_rng(1), rows, cols)
    in_image = elastic_deform_window(mask, (0, 0, shape[1], shape[0]), shape, 50.0, 7.0,
                                     np.random.default_rng(1), rows, cols)
    for a, b in zip(in_window, in_image):
        assert np.array_equal(a, b)
    assert in_window[0].any() and not in_window[0].all()


@pytest.mark.parametrize("hull_type", HULL_TYPES)
def test_hull_window_holds_the_whole_hull(faces, hull_type):
    image, landmarks = faces[0]
    shape = image.shape[:2]
    for points in (landmarks, with_forehead(landmarks)):
        window = hull_window(shape, points)
        whole = hull_mask(shape, points, hull_type)
        part = hull_mask(shape, points, hull_type, window)
        assert np.array_equal(part, whole[window_slices(window)])
        assert np.count_nonzero(part) == np.count_nonzero(whole) > 0


def test_blend_is_the_truncated_formula():
    rng = np.random.default_rng(0)
    source, target = (rng.integers(0, 256, (90, 70, 3), dtype=np.uint8) for _ in range(2))
    mask = rng.random((90, 70), dtype=np.float32) * (rng.random((90, 70)) > 0.3)
    expected = (mask[..., None] * source + (1.0 - mask[..., None]) * target).astype(np.uint8)
    assert np.array_equal(blend(source, target, mask), expected)
