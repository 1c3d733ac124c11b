"""RetinaFace in PyTorch, written for hcsi, batched over many frames on any device.

The network (Deng et al., "RetinaFace: Single-shot multi-level face localisation in the wild", CVPR 2020): a
ResNet-50 (torchvision) or MobileNet-0.25 body whose stride-8, -16 and -32 outputs go through a feature pyramid
(FPN), one SSH context module per level, and 1×1 class / box / landmark heads with two anchors per cell. Priors,
decoding and non-maximum suppression (torchvision) follow; every frame of one size given to `detect_many` goes
through the network in one forward pass (in groups bounded by `pixels_per_batch`), several videos per call.

Two face stages use it (`hcsi.faces.detect`, docs/protocol.md "Faces as SBI finds them"):
- "sbi-retinaface": SBI's face stage, step for step as `predict_jsons` of `retinaface_pytorch` 0.0.8 (the package
  SBI's Dockerfile installs) computes it, with SBI's R50 weights (`retinaface_resnet50_2020-07-20`, which a user gives
  once: `hcsi fetch-models --retinaface FILE` or `HCSI_RETINAFACE_WEIGHTS=FILE`);
- "retinaface": a practical finder with the MobileNet-0.25 weights shipped in the package (MIT, biubug6).

Weights are read with `torch.load(weights_only=True)` and checked key by key, shape by shape, before any frame is
read. Two layouts: `sbi` (retinaface_pytorch's file: a .zip holding a .pth, or the .pth; RGB input, ImageNet
mean/std) and `biubug6` (Pytorch_Retinaface / Face-Detector-1MB: `Resnet50_Final.pth`, `mobilenet0.25_Final.pth`,
keys possibly prefixed `module.`; BGR input minus (104, 117, 123)).
"""
from __future__ import annotations

import functools
import io
import json
import os
import pickle
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..files import atomic_path, file_sha256
from .blazeface import ModelUnavailable, cache_dir

STEPS = (8, 16, 32)  # strides of the three pyramid levels
VARIANCE = (0.1, 0.2)  # box encoding variances (centre, size)
ANCHORS_PER_CELL = 2
# Anchor sides per level, in input pixels: retinaface_pytorch (predict_single.py) and Pytorch_Retinaface's cfg_re50 /
# cfg_mnet; biubug6's Face-Detector-1MB trained its MobileNet-0.25 with smaller ones (data/config.py, cfg_mnet there).
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
FACE_DETECTOR_1MB_MIN_SIZES = ((10, 20), (32, 64), (128, 256))

SBI_WEIGHTS_NAME = "retinaface_resnet50_2020-07-20"
SBI_WEIGHTS_URL = ("https://github.com/ternaus/retinaface/releases/download/0.01/"
                   "retinaface_resnet50_2020-07-20-f168fae3c.zip")  # pre_trained_models.py of retinaface_pytorch
SBI_ZIP_SHA256_PREFIX = "f168fae3c"  # torch.hub checks a download against the hash prefix in its file name
WEIGHTS_ENV = "HCSI_RETINAFACE_WEIGHTS"
SHIPPED_MOBILENET = Path(__file__).resolve().parent / "models" / "retinaface_mobilenet0.25.pth"
SHIPPED_MOBILENET_SHA256 = "ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1"
# files whose training configuration differs from their repository's default, by SHA-256
KNOWN_MIN_SIZES = {SHIPPED_MOBILENET_SHA256: FACE_DETECTOR_1MB_MIN_SIZES}


@dataclass(frozen=True)
class InputConvention:
    """How a layout's network expects its pixels: channel order, then (x − mean) / std per channel (0..255 units)."""

    channels: str  # "rgb" or "bgr"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


LAYOUTS = {
    # retinaface_pytorch: albumentations' Normalize on the RGB frame (ImageNet mean and std, max_pixel_value 255)
    "sbi": InputConvention("rgb", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # Pytorch_Retinaface detect.py: cv2's BGR frame as float32 minus (104, 117, 123), no scaling
    "biubug6": InputConvention("bgr", (104.0, 117.0, 123.0), (1.0, 1.0, 1.0)),
}


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, leaky: float | None = None) -> nn.Sequential:
    """Convolution (no bias), batch norm, then a leaky ReLU unless `leaky` is None."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(leaky, inplace=True))
    return nn.Sequential(*layers)


def depthwise_separable(cin: int, cout: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """MobileNet-v1 block: 3×3 depthwise conv, BN, leaky ReLU, 1×1 pointwise conv, BN, leaky ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.LeakyReLU(leaky, True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(leaky, True))


class MobileNet025Body(nn.Module):
    """MobileNet-v1 at width 0.25: three stages ending at strides 8 (64 channels), 16 (128) and 32 (256)."""

    channels = (64, 128, 256)

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(conv_bn(3, 8, stride=2, leaky=0.1), depthwise_separable(8, 16, 1),
                                    depthwise_separable(16, 32, 2), depthwise_separable(32, 32, 1),
                                    depthwise_separable(32, 64, 2), depthwise_separable(64, 64, 1))
        self.stage2 = nn.Sequential(depthwise_separable(64, 128, 2),
                                    *(depthwise_separable(128, 128, 1) for _ in range(5)))
        self.stage3 = nn.Sequential(depthwise_separable(128, 256, 2), depthwise_separable(256, 256, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return [c1, c2, self.stage3(c2)]


class ResNet50Body(nn.Module):
    """torchvision's ResNet-50 up to layer4; outputs of layer2, layer3, layer4 (strides 8, 16, 32)."""

    channels = (512, 1024, 2048)

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet50

        resnet = resnet50(weights=None)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(resnet, name))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        c2 = self.layer2(x)
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]


BACKBONES = {"resnet50": (ResNet50Body, 256), "mobilenet0.25": (MobileNet025Body, 64)}  # body, pyramid channels


def _leaky(channels: int) -> float:
    return 0.1 if channels <= 64 else 0.0  # the narrow (MobileNet) heads use a leaky ReLU, the wide ones ReLU


class FeaturePyramid(nn.Module):
    """Top-down FPN: 1×1 lateral convs, nearest-neighbour upsampling added to the finer level, 3×3 merge convs."""

    def __init__(self, in_channels: tuple[int, int, int], channels: int) -> None:
        super().__init__()
        leaky = _leaky(channels)
        self.output1, self.output2, self.output3 = (conv_bn(c, channels, 1, leaky=leaky) for c in in_channels)
        self.merge1 = conv_bn(channels, channels, leaky=leaky)
        self.merge2 = conv_bn(channels, channels, leaky=leaky)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        p1, p2, p3 = self.output1(features[0]), self.output2(features[1]), self.output3(features[2])
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[2:], mode="nearest"))
        return [p1, p2, p3]


class ContextModule(nn.Module):
    """SSH context module: a 3×3 branch (half the channels) beside 5×5- and 7×7-wide branches built from stacked
    3×3 convolutions (a quarter each), concatenated, then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        leaky = _leaky(channels)
        self.conv3X3 = conv_bn(channels, channels // 2)
        self.conv5X5_1 = conv_bn(channels, channels // 4, leaky=leaky)
        self.conv5X5_2 = conv_bn(channels // 4, channels // 4)
        self.conv7X7_2 = conv_bn(channels // 4, channels // 4, leaky=leaky)
        self.conv7x7_3 = conv_bn(channels // 4, channels // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        middle = self.conv5X5_1(x)
        wide = self.conv7x7_3(self.conv7X7_2(middle))
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(middle), wide], dim=1))


class Head(nn.Module):
    """A 1×1 convolution giving `values` numbers per anchor, laid out as B × (cells · anchors) × values."""

    def __init__(self, channels: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(channels, ANCHORS_PER_CELL * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(len(x), -1, self.values)


class RetinaFaceNet(nn.Module):
    """forward: normalised B×3×H×W → (box offsets B×P×4, class logits B×P×2, landmark offsets B×P×10), P the priors of
    `priors(H, W)` in their order (level, row, column, anchor). Key names match both published layouts."""

    def __init__(self, backbone: str = "resnet50") -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown RetinaFace backbone {backbone!r}; choose from {sorted(BACKBONES)}")
        body, channels = BACKBONES[backbone]
        self.backbone = backbone
        self.body = body()
        self.fpn = FeaturePyramid(body.channels, channels)
        self.ssh1, self.ssh2, self.ssh3 = (ContextModule(channels) for _ in STEPS)
        self.BboxHead = nn.ModuleList(Head(channels, 4) for _ in STEPS)
        self.ClassHead = nn.ModuleList(Head(channels, 2) for _ in STEPS)
        self.LandmarkHead = nn.ModuleList(Head(channels, 10) for _ in STEPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pyramid = self.fpn(self.body(x))
        features = [ssh(p) for ssh, p in zip((self.ssh1, self.ssh2, self.ssh3), pyramid)]
        return tuple(torch.cat([head(f) for head, f in zip(heads, features)], dim=1)
                     for heads in (self.BboxHead, self.ClassHead, self.LandmarkHead))


def prior_boxes(height: int, width: int, min_sizes=MIN_SIZES) -> torch.Tensor:
    """Anchors (cx, cy, w, h), relative to the input size, in the heads' order: per level (stride s, a
    ⌈H/s⌉ × ⌈W/s⌉ grid), row by row, column by column, the level's anchor sides in turn; centres at cell centres."""
    anchors = []
    for step, sides in zip(STEPS, min_sizes):
        rows, columns = -(-height // step), -(-width // step)
        cy, cx = np.meshgrid((np.arange(rows) + 0.5) * step / height, (np.arange(columns) + 0.5) * step / width,
                             indexing="ij")
        for_cell = [np.stack([cx, cy, np.full_like(cx, side / width), np.full_like(cy, side / height)], axis=-1)
                    for side in sides]
        anchors.append(np.stack(for_cell, axis=2).reshape(-1, 4))
    return torch.from_numpy(np.concatenate(anchors).astype(np.float32))


def decode_boxes(offsets: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """(x0, y0, x1, y1) relative to the input, from offsets (…×P×4) and priors (P×4), in the reference's order of
    operations: centre = prior centre + offset · 0.1 · prior size, size = prior size · exp(offset · 0.2), then the
    top-left corner = centre − size / 2 and the bottom-right one = top-left + size."""
    centre = priors[:, :2] + offsets[..., :2] * VARIANCE[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(offsets[..., 2:] * VARIANCE[1])
    top_left = centre - size / 2
    return torch.cat([top_left, top_left + size], dim=-1)


def decode_landmarks(offsets: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Five (x, y) points per prior relative to the input: prior centre + offset · 0.1 · prior size."""
    points = offsets.reshape(*offsets.shape[:-1], 5, 2)
    return priors[:, None, :2] + points * VARIANCE[0] * priors[:, None, 2:]


# ---- weights ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetinaFaceWeights:
    """A checked state dict and what it needs: its backbone, layout (input convention) and anchors."""

    state_dict: dict[str, torch.Tensor]
    backbone: str
    layout: str
    min_sizes: tuple[tuple[int, int], ...]
    path: Path
    sha256: str

    @property
    def convention(self) -> InputConvention:
        return LAYOUTS[self.layout]


def _read_state_dict(path: Path) -> dict:
    """The tensors of a .pth (torch.save, zip or legacy format) or of a .zip archive holding one .pth."""
    source: Path | io.BytesIO = path
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            is_torch_file = any(n.endswith("/data.pkl") or n == "data.pkl" for n in names)
            if not is_torch_file:
                members = [n for n in names if n.endswith((".pth", ".pt"))]
                if len(members) != 1:
                    raise ModelUnavailable(f"{path}: a .zip archive should hold one .pth file, it holds "
                                           f"{', '.join(names[:5]) or 'nothing'}")
                source = io.BytesIO(archive.read(members[0]))
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        needs = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if needs:
            raise ModelUnavailable(f"{path}: refused, it needs code to unpickle ({needs.group(1)}), not only "
                                   "tensors; hcsi reads weights with torch.load(weights_only=True)") from None
        raise ModelUnavailable(f"{path}: not a readable PyTorch weights file: truncated, or not written by "
                               "torch.save") from None
    except Exception as error:  # torch.load's many ways to fail on a file that is not a checkpoint
        # torch's own reader says what it found (e.g. a zip without its central directory); the unpickler's
        # KeyError or struct.error on foreign bytes says nothing a user can act on
        detail = f" ({str(error).splitlines()[0]})" if isinstance(error, RuntimeError) and str(error) else ""
        raise ModelUnavailable(f"{path}: not a readable PyTorch weights file: truncated, or not written by "
                               f"torch.save{detail}") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ModelUnavailable(f"{path}: expected a state dict of tensors, found {type(loaded).__name__}")
    return loaded


def named_as_sbis(path: Path) -> bool:
    """A .zip archive (how retinaface_pytorch's release ships its weights) or a file named after SBI's weights."""
    return path.suffix.lower() == ".zip" or SBI_WEIGHTS_NAME in path.name


def _infer_layout(path: Path, prefixed: bool, backbone: str) -> str:
    if backbone == "mobilenet0.25" or prefixed or "Resnet50_Final" in path.name:
        return "biubug6"
    if named_as_sbis(path):
        return "sbi"
    raise ModelUnavailable(f"{path}: ResNet-50 RetinaFace weights, but whose? retinaface_pytorch's "
                           f"({SBI_WEIGHTS_NAME}, SBI's) and biubug6's Resnet50_Final.pth share key names and need "
                           "different input normalisation; name the layout: `hcsi fetch-models --retinaface FILE "
                           "--retinaface-layout sbi` (or biubug6)")


@functools.cache
def expected_shapes(backbone: str) -> dict[str, tuple[int, ...]]:
    """Key → shape of the network of a backbone (built once per process)."""
    return {k: tuple(v.shape) for k, v in RetinaFaceNet(backbone).state_dict().items()}


def read_retinaface_weights(path: str | os.PathLike, layout: str | None = None,
                            sha256: str | None = None) -> RetinaFaceWeights:
    """Read and check RetinaFace weights: `weights_only` loading, `module.` prefixes dropped, every key and shape
    compared with the network of the backbone the keys name. `layout` (sbi / biubug6) is inferred when None: a .zip
    or a name with retinaface_resnet50_2020-07-20 is SBI's, `module.` keys, `Resnet50_Final` or MobileNet keys are
    biubug6's. `sha256`: the file's, when the caller has just computed it. Raises ModelUnavailable with the reason,
    before any frame is read."""
    path = Path(path)
    if str(path) in ("", "."):
        raise ModelUnavailable("no RetinaFace weights file given (an empty path)")
    if path.is_dir():
        raise ModelUnavailable(f"{path}: a folder, not a RetinaFace weights file")
    if not path.is_file():
        raise ModelUnavailable(f"{path}: no such RetinaFace weights file")
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"unknown RetinaFace weights layout {layout!r}; choose from {sorted(LAYOUTS)}")
    loaded = _read_state_dict(path)
    prefixed = bool(loaded) and all(k.startswith("module.") for k in loaded)
    state = {k.removeprefix("module."): v for k, v in loaded.items()}
    if "body.conv1.weight" in state:
        backbone = "resnet50"
    elif "body.stage1.0.0.weight" in state:
        backbone = "mobilenet0.25"
    else:
        raise ModelUnavailable(f"{path}: not RetinaFace weights (no ResNet-50 `body.conv1.weight` nor MobileNet-0.25 "
                               f"`body.stage1.0.0.weight` key; first keys: {', '.join(list(state)[:3]) or 'none'})")
    expected = expected_shapes(backbone)
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {shape})" for k, shape in expected.items()
             if k in state and tuple(state[k].shape) != shape]
    if missing or unexpected or wrong:
        problems = [f"{len(missing)} missing keys ({', '.join(missing[:3])})" if missing else "",
                    f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])})" if unexpected else "",
                    f"{len(wrong)} of another shape ({', '.join(wrong[:2])})" if wrong else ""]
        raise ModelUnavailable(f"{path}: does not fit RetinaFace-{backbone}: " + "; ".join(p for p in problems if p))
    layout = layout or _infer_layout(path, prefixed, backbone)
    if layout == "sbi" and backbone != "resnet50":
        raise ModelUnavailable(f"{path}: retinaface_pytorch (layout sbi) has only ResNet-50 weights; this file holds "
                               "MobileNet-0.25 ones (layout biubug6)")
    sha256 = sha256 or file_sha256(path)
    return RetinaFaceWeights({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, backbone,
                             layout, KNOWN_MIN_SIZES.get(sha256, MIN_SIZES), path, sha256)


def installed_weights_dir() -> Path:
    return cache_dir() / "models" / "retinaface"


def install_retinaface_weights(path: str | os.PathLike, layout: str | None = None) -> tuple[Path, RetinaFaceWeights]:
    """Check a ResNet-50 weights file and copy it into hcsi's models cache with its SHA-256 and layout
    (`hcsi fetch-models --retinaface FILE`); returns the copy and what was read."""
    weights = read_retinaface_weights(path, layout)
    if weights.backbone != "resnet50":
        raise ModelUnavailable(f"{path}: MobileNet-0.25 weights ship with hcsi; only ResNet-50 weights are installed")
    folder = installed_weights_dir()
    target = folder / f"resnet50-{weights.sha256[:16]}{Path(path).suffix or '.pth'}"
    with atomic_path(target) as staged:
        shutil.copyfile(path, staged)
    info = {"file": target.name, "source": str(Path(path).resolve()), "sha256": weights.sha256,
            "layout": weights.layout, "backbone": weights.backbone}
    with atomic_path(folder / "resnet50.json") as staged:
        Path(staged).write_text(json.dumps(info, indent=1))
    return target, weights


def resnet50_weights(layout: str | None = None) -> RetinaFaceWeights:
    """The ResNet-50 weights a user gave: $HCSI_RETINAFACE_WEIGHTS, else the copy `hcsi fetch-models --retinaface`
    made. Raises ModelUnavailable naming the file and where to get it when there is none."""
    if os.environ.get(WEIGHTS_ENV):
        return read_retinaface_weights(os.environ[WEIGHTS_ENV], layout)
    record = installed_weights_dir() / "resnet50.json"
    if record.is_file():
        info = json.loads(record.read_text())
        copy = record.parent / info["file"]
        if not copy.is_file() or file_sha256(copy) != info["sha256"]:
            raise ModelUnavailable(f"{copy}: missing or changed since `hcsi fetch-models --retinaface` copied it "
                                   f"(SHA-256 {info['sha256'][:16]}…); give the file again")
        return read_retinaface_weights(copy, layout or info["layout"], sha256=info["sha256"])
    raise ModelUnavailable(
        f"RetinaFace ResNet-50 weights are not installed: SBI's face stage needs {SBI_WEIGHTS_NAME} "
        f"(retinaface_pytorch 0.0.8 downloads it from {SBI_WEIGHTS_URL}, as SBI's inference code does). Download it "
        f"once, then run `hcsi fetch-models --retinaface FILE` or set {WEIGHTS_ENV}=FILE")


def sbi_weights_installed() -> bool:
    """Whether retinaface_pytorch's (SBI's) ResNet-50 weights were given (`resnet50_weights` reads them), without
    reading the file: $HCSI_RETINAFACE_WEIGHTS names a file named as SBI's (`named_as_sbis`), or `hcsi fetch-models
    --retinaface` recorded an sbi-layout copy."""
    if os.environ.get(WEIGHTS_ENV):
        return named_as_sbis(Path(os.environ[WEIGHTS_ENV]))
    record = installed_weights_dir() / "resnet50.json"
    return record.is_file() and json.loads(record.read_text()).get("layout") == "sbi"


def shipped_weights() -> RetinaFaceWeights:
    """The MobileNet-0.25 weights inside the package (biubug6, MIT; models/README.md there)."""
    return read_retinaface_weights(SHIPPED_MOBILENET, "biubug6")


# ---- detection ----------------------------------------------------------------------------------------------------


def longest_side_size(height: int, width: int, longest: int | None, upscale: bool = True) -> tuple[int, int]:
    """(height, width) after albumentations' LongestMaxSize(longest): scale = longest / max side, each side
    multiplied and rounded half to even (albumentations 1.0's py3round, which Python's round is); None, or a frame
    already within `longest` when upscale is False: unchanged."""
    if longest is None or (not upscale and max(height, width) <= longest):
        return height, width
    scale = longest / float(max(width, height))
    if scale == 1.0:
        return height, width
    return round(height * scale), round(width * scale)


@dataclass
class RetinaFaceBoxes:
    """One frame's faces, best score first: boxes N×4 (x0, y0, x1, y1, frame pixels), scores N, landmarks N×5×2."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray


class BatchedRetinaFace:
    """RetinaFace over many frames: frames of one size go through the network together.

    Args:
        weights: checked weights (`read_retinaface_weights`, `resnet50_weights`, `shipped_weights`).
        device: where the network, decoding and suppression run.
        longest_side: frames are resized (OpenCV bilinear, on the CPU, as albumentations does) so that their longer
            side is this many pixels; None keeps their size.
        upscale: whether frames smaller than longest_side are enlarged (SBI's stage does; the practical finder
            does not).
        levels: sizes searched per frame: the first, then each half the previous one's longer side; overlapping
            boxes of all levels are suppressed as within one (faces larger than the largest anchors at the first
            size are found at the next).
        min_score: a face's softmax score must exceed it.
        nms_iou: IoU above which the lower-scoring of two boxes is suppressed.
        rounding: decimals of the returned boxes, scores and landmarks (retinaface_pytorch rounds to 2), or None.
        amp: None, "fp16" or "bf16": autocast of the network's forward pass on CUDA (decoding stays float32).
        pixels_per_batch: input pixels the network sees per forward pass (bounds memory).
    """

    def __init__(self, weights: RetinaFaceWeights, device: str | torch.device = "cpu", longest_side: int | None = 2048,
                 upscale: bool = True, levels: int = 1, min_score: float = 0.7, nms_iou: float = 0.4,
                 rounding: int | None = 2, amp: str | None = None, pixels_per_batch: int = 2 * 2048 * 1152) -> None:
        if amp not in (None, "fp16", "bf16"):
            raise ValueError(f"amp must be None, 'fp16' or 'bf16', got {amp!r}")
        self.device = torch.device(device)
        if amp is not None and self.device.type != "cuda":
            raise ValueError(f"RetinaFace autocast ({amp}) runs on CUDA only, not on {self.device}")
        self.weights = weights
        self.net = RetinaFaceNet(weights.backbone)
        self.net.load_state_dict(weights.state_dict, strict=False)  # num_batches_tracked may be absent
        self.net.to(self.device).eval()
        convention = weights.convention
        scale = 255.0 if weights.layout == "sbi" else 1.0  # Normalize(max_pixel_value=255) multiplies mean and std
        self._mean = torch.tensor(np.float32(convention.mean) * np.float32(scale), device=self.device)
        self._inverse_std = torch.tensor(np.reciprocal(np.float32(convention.std) * np.float32(scale)),
                                         device=self.device)
        if levels < 1:
            raise ValueError(f"levels must be at least 1, got {levels}")
        self.longest_side, self.upscale, self.levels = longest_side, upscale, levels
        self.min_score, self.nms_iou = min_score, nms_iou
        self.rounding, self.amp, self.pixels_per_batch = rounding, amp, pixels_per_batch
        self._priors: dict[tuple[int, int], torch.Tensor] = {}

    def priors(self, height: int, width: int) -> torch.Tensor:
        if (height, width) not in self._priors:
            self._priors[height, width] = prior_boxes(height, width, self.weights.min_sizes).to(self.device)
        return self._priors[height, width]

    def input_size(self, height: int, width: int, level: int = 0) -> tuple[int, int]:
        """(height, width) the network sees a height×width frame at, at a level of the search."""
        size = longest_side_size(height, width, self.longest_side, self.upscale)
        return size if level == 0 else longest_side_size(height, width, max(size) // 2 ** level)

    def network_input(self, frames: list[np.ndarray], level: int = 0) -> torch.Tensor:
        """Same-size RGB uint8 frames → the normalised B×3×h×w batch (resized on the CPU, normalised on the device):
        (x − mean) · (1 / std) in float32, as albumentations' Normalize computes it."""
        height, width = frames[0].shape[:2]
        size = self.input_size(height, width, level)
        if size != (height, width):
            frames = [cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for f in frames]
        batch = torch.from_numpy(np.stack(frames)).to(self.device)
        if self.weights.convention.channels == "bgr":
            batch = batch.flip(-1)
        batch = (batch.float() - self._mean) * self._inverse_std
        return batch.permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def _forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.amp is None:
            return self.net(inputs)
        dtype = torch.float16 if self.amp == "fp16" else torch.bfloat16
        with torch.autocast("cuda", dtype=dtype):
            outputs = self.net(inputs)
        return tuple(o.float() for o in outputs)

    @torch.no_grad()
    def detect_many(self, frames: list[np.ndarray]) -> list[RetinaFaceBoxes]:
        """The faces of each RGB uint8 frame, frames of one size in batched forward passes."""
        for frame in frames:
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"expected RGB uint8 H×W×3 frames, got {frame.dtype} {frame.shape}")
        found = self._detect_at(frames, 0)
        for level in range(1, self.levels):
            found = [merge_faces(a, b, self.nms_iou) for a, b in zip(found, self._detect_at(frames, level))]
        if self.rounding is not None:
            found = [RetinaFaceBoxes(*(np.round(a, self.rounding) for a in (f.boxes, f.scores, f.landmarks)))
                     for f in found]
        return found

    def _detect_at(self, frames: list[np.ndarray], level: int) -> list[RetinaFaceBoxes]:
        from torchvision.ops import batched_nms

        results: list[RetinaFaceBoxes | None] = [None] * len(frames)
        by_size: dict[tuple[int, int], list[int]] = {}
        for k, frame in enumerate(frames):
            by_size.setdefault(frame.shape[:2], []).append(k)
        for (height, width), members in by_size.items():
            in_height, in_width = self.input_size(height, width, level)
            per_batch = max(1, self.pixels_per_batch // (in_height * in_width))
            priors = self.priors(in_height, in_width)
            for start in range(0, len(members), per_batch):
                group = members[start:start + per_batch]
                offsets, logits, points = self._forward(self.network_input([frames[k] for k in group], level))
                scores = F.softmax(logits, dim=-1)[..., 1]
                owner, index = torch.nonzero(scores > self.min_score, as_tuple=True)
                size = torch.tensor([in_width, in_height], dtype=torch.float32, device=self.device)
                boxes = decode_boxes(offsets[owner, index], priors[index]) * size.repeat(2)
                marks = decode_landmarks(points[owner, index], priors[index]) * size
                selected = scores[owner, index]
                kept = batched_nms(boxes, selected, owner, self.nms_iou)  # by decreasing score
                owner, kept_scores = owner[kept].cpu().numpy(), selected[kept].cpu().numpy()
                boxes, marks = boxes[kept].cpu().numpy(), marks[kept].cpu().numpy()
                for position, k in enumerate(group):
                    mine = owner == position
                    results[k] = to_frame_pixels(boxes[mine], kept_scores[mine], marks[mine], height, in_height,
                                                 width)
        return results


def to_frame_pixels(boxes: np.ndarray, scores: np.ndarray, marks: np.ndarray, height: int, in_height: int,
                    width: int) -> RetinaFaceBoxes:
    """Input pixels → frame pixels (both axes by height / input height, float32, as retinaface_pytorch does); boxes
    kept unclipped, but dropped when clipping them into the frame would leave nothing (predict_jsons' validity
    test)."""
    coefficient = np.float32(height / in_height)
    boxes = boxes.astype(np.float32) * coefficient
    marks = marks.astype(np.float32) * coefficient
    x_min = np.minimum(np.maximum(boxes[:, 0], 0), width - 1)
    x_max = np.minimum(np.maximum(boxes[:, 2], x_min + 1), width - 1)
    y_min = np.minimum(np.maximum(boxes[:, 1], 0), height - 1)
    y_max = np.minimum(np.maximum(boxes[:, 3], y_min + 1), height - 1)
    valid = (x_min < x_max) & (y_min < y_max)
    return RetinaFaceBoxes(boxes[valid].astype(np.float64).reshape(-1, 4), scores[valid].astype(np.float64),
                           marks[valid].astype(np.float64).reshape(-1, 5, 2))


def merge_faces(first: RetinaFaceBoxes, second: RetinaFaceBoxes, nms_iou: float) -> RetinaFaceBoxes:
    """The faces of two searches of one frame, overlapping ones suppressed (best score first)."""
    from torchvision.ops import nms

    boxes = np.concatenate([first.boxes, second.boxes])
    scores = np.concatenate([first.scores, second.scores])
    keep = nms(torch.from_numpy(boxes), torch.from_numpy(scores), nms_iou).numpy()
    return RetinaFaceBoxes(boxes[keep], scores[keep], np.concatenate([first.landmarks, second.landmarks])[keep])
