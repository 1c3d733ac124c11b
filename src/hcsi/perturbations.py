"""The seven DeeperForensics-1.0 perturbations at their five levels, applied to RGB uint8 frames.

Values from EndlessSora/DeeperForensics-1.0, `perturbation/add_distortion_to_video.py` (levels) and
`perturbation/distortions.py` (operations); docs/protocol.md ("Robustness") says where this code differs. Every
random draw comes from the generator passed in, so a run seeded per video is repeatable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

LEVELS = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Perturbation:
    name: str
    code: str  # DeeperForensics-1.0's abbreviation
    values: tuple  # the parameter of levels 1..5 (DeeperForensics-1.0)
    apply: Callable  # (frames, value, rng) -> frames
    meaning: str


def _luma(frame: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB frame (what OpenCV's YCrCb conversion uses), float32 H×W×1."""
    return (frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]


def colour_saturation(frames: list[np.ndarray], factor: float, rng) -> list[np.ndarray]:
    """CS: both chroma components scaled by `factor` around neutral, luma kept: x' = Y + factor·(x − Y)."""
    out = []
    for frame in frames:
        y = _luma(frame)
        out.append(np.clip(y + factor * (frame.astype(np.float32) - y), 0, 255).astype(np.uint8))
    return out


def colour_contrast(frames, factor: float, rng) -> list[np.ndarray]:
    """CC: every value multiplied by `factor` and truncated."""
    return [(frame.astype(np.float32) * factor).astype(np.uint8) for frame in frames]


def block_wise(frames, per_256px: int, rng) -> list[np.ndarray]:
    """BW: (min(H, W) // 256) × per_256px grey (128) 8×8 blocks at random places, drawn anew for every frame
    (frames smaller than 256 px on a side get none, as in the reference)."""
    out = []
    for frame in frames:
        frame = frame.copy()
        height, width = frame.shape[:2]
        for _ in range(min(height, width) // 256 * per_256px):
            x = int(rng.integers(0, width - 1 - 8 + 1))
            y = int(rng.integers(0, height - 1 - 8 + 1))
            frame[y:y + 8, x:x + 8] = 128
        out.append(frame)
    return out


def gaussian_noise_colour(frames, variance: float, rng) -> list[np.ndarray]:
    """GNC: white Gaussian noise added in YCbCr. The reference adds N(0, variance) to YCbCr scaled to video range
    and divided by 255; in 8-bit YCbCr that is a standard deviation of √variance·255·255/219 on Y and
    √variance·255·255/224 on Cb and Cr."""
    sigma = np.sqrt(variance) * 255 * 255 / np.array([219.0, 224.0, 224.0], np.float32)  # Y, Cr, Cb
    out = []
    for frame in frames:
        ycrcb = cv2.cvtColor(frame.astype(np.float32), cv2.COLOR_RGB2YCrCb)
        ycrcb += rng.standard_normal(ycrcb.shape).astype(np.float32) * sigma
        out.append(np.clip(cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB), 0, 255).astype(np.uint8))
    return out


def gaussian_blur(frames, kernel: int, rng) -> list[np.ndarray]:
    """GB: a kernel×kernel Gaussian with σ = kernel / 6."""
    return [cv2.GaussianBlur(frame, (kernel, kernel), kernel / 6) for frame in frames]


def pixelation(frames, factor: int, rng) -> list[np.ndarray]:
    """The reference's "JPEG" level: each side shrunk by `factor` and enlarged back (bilinear both ways)."""
    out = []
    for frame in frames:
        height, width = frame.shape[:2]
        small = cv2.resize(frame, (max(1, width // factor), max(1, height // factor)))
        out.append(cv2.resize(small, (width, height)))
    return out


def video_compression(frames, crf: int, rng, fps: int = 25) -> list[np.ndarray]:
    """VC: the frames encoded as an H.264 stream with libx264 at this CRF (default preset, as ffmpeg's default for
    the reference's `ffmpeg -i in -crf N out.mp4`) and decoded again. The frames are encoded one after another, so
    inter-frame prediction runs between sampled frames, not between a video's adjacent frames."""
    import io

    import av

    height, width = frames[0].shape[:2]
    padded_w, padded_h = width + width % 2, height + height % 2  # yuv420p needs even sides
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="h264") as container:  # a raw stream: no container timing
        stream = container.add_stream("libx264", rate=fps, options={"crf": str(crf)})
        stream.width, stream.height, stream.pix_fmt = padded_w, padded_h, "yuv420p"
        for index, frame in enumerate(frames):
            frame = cv2.copyMakeBorder(frame, 0, padded_h - height, 0, padded_w - width, cv2.BORDER_REPLICATE)
            # RGB -> YUV 4:2:0 by OpenCV: PyAV's (swscale's) conversion varied from run to run here
            picture = av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
            picture.pts = index
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    buffer.seek(0)
    with av.open(buffer, format="h264") as container:  # back to RGB by OpenCV as well
        decoded = [cv2.cvtColor(f.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420)[:height, :width]
                   for f in container.decode(video=0)]
    if len(decoded) != len(frames):
        raise RuntimeError(f"video compression returned {len(decoded)} frames for {len(frames)}")
    return decoded


PERTURBATIONS = {p.name: p for p in (
    Perturbation("saturation", "CS", (0.4, 0.3, 0.2, 0.1, 0.0), colour_saturation, "chroma × value"),
    Perturbation("contrast", "CC", (0.85, 0.725, 0.6, 0.475, 0.35), colour_contrast, "values × value"),
    Perturbation("block", "BW", (16, 32, 48, 64, 80), block_wise, "8×8 grey blocks per 256 px of the short side"),
    Perturbation("noise", "GNC", (0.001, 0.002, 0.005, 0.01, 0.05), gaussian_noise_colour, "noise variance"),
    Perturbation("blur", "GB", (7, 9, 13, 17, 21), gaussian_blur, "kernel size (σ = size / 6)"),
    Perturbation("pixelation", "JPEG", (2, 3, 4, 5, 6), pixelation, "down- and upscaling factor"),
    Perturbation("compression", "VC", (30, 32, 35, 38, 40), video_compression, "x264 CRF"),
)}


def perturb(frames: list[np.ndarray], name: str, level: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`frames` (RGB uint8) under perturbation `name` at `level` (1-5)."""
    if name not in PERTURBATIONS:
        raise KeyError(f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if not frames:
        return []
    perturbation = PERTURBATIONS[name]
    return perturbation.apply(frames, perturbation.values[level - 1], rng)
