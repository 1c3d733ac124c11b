"""Frames from a video (or an image, a one-frame video): evenly spaced, decoded in one sequential pass."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


class MediaError(ValueError):
    """A file that cannot be read as an image or video; the message names the file and the problem."""


@dataclass
class SampledFrames:
    """RGB uint8 frames (H×W×3, display orientation) and the index of each in the video's frame sequence."""

    frames: list[np.ndarray]
    indices: list[int]
    frame_count: int  # frames in the file, counted from its packets (not the container's header)
    failure: str | None = None  # why fewer frames than asked came back (e.g. the stream broke off), else None
    times: list[float] | None = None  # seconds from the start of the video, per frame (images: 0)


def is_image(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def sample_frame_indices(frame_count: int, n: int) -> list[int]:
    """n evenly spaced indices over [0, frame_count − 1] (linspace, rounded down as SBI does); no repeats."""
    if frame_count <= 0 or n <= 0:
        return []
    return sorted(set(np.linspace(0, frame_count - 1, n, dtype=int).tolist()))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as RGB uint8 H×W×3: EXIF orientation applied, grayscale expanded, alpha dropped."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise MediaError(f"{path}: not a readable image ({error})") from error


def count_video_frames(path: str | os.PathLike) -> int:
    """Frames of the first video stream, counted by demuxing its packets (no decoding).

    Container headers can be wrong or missing (variable frame rate, re-muxed files); packets are not.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size > 0)
    except av.error.InvalidDataError:
        raise MediaError(f"{path}: not a video or image file (its content is neither, whatever its name)") from None
    except av.error.FFmpegError as error:
        raise MediaError(f"{path}: not a readable video ({error.strerror or error})") from error


def _to_display_orientation(frame: av.VideoFrame) -> np.ndarray:
    """The frame as RGB with the stream's display rotation applied (phones store portrait video rotated)."""
    rgb = frame.to_ndarray(format="rgb24")
    quarter_turns = round((frame.rotation or 0) / 90) % 4  # counter-clockwise degrees of the display matrix
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def sample_frames(path: str | os.PathLike, n: int = 32) -> SampledFrames:
    """n evenly spaced frames of a video in one sequential decode pass, or an image as a one-frame video.

    Frames are counted first from the packets, so a wrong header count does not shift the sample; only the kept
    frames are converted to RGB. If decoding breaks off, the frames before the break are returned with the reason.

    Raises:
        MediaError: the file is missing, empty, not a video/image, or yields no frame at all.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    if is_image(path):
        try:
            return SampledFrames([read_image(path)], [0], 1, times=[0.0])
        except MediaError as image_error:  # the name may lie: try the content as a video before giving up
            try:
                return _sample_video(path, n)
            except MediaError:
                raise image_error from None
    return _sample_video(path, n)


def _sample_video(path: Path, n: int) -> SampledFrames:
    frame_count = count_video_frames(path)
    wanted = sample_frame_indices(frame_count, n)
    if not wanted:
        raise MediaError(f"{path}: the video stream holds no frames")
    frames, indices, times, failure = [], [], [], None
    wanted_set = set(wanted)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            start = None
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            for index, frame in enumerate(container.decode(stream)):
                if start is None:
                    start = frame.time
                if index in wanted_set:
                    frames.append(_to_display_orientation(frame))
                    indices.append(index)
                    known = frame.time is not None and start is not None  # a timestamp, else the mean rate
                    times.append(round(frame.time - start if known else index / rate, 4))
                    if len(indices) == len(wanted):
                        break
    except av.error.FFmpegError as error:
        failure = f"decoding stopped after {len(indices)} of {len(wanted)} sampled frames: {error}"
    if len(indices) < len(wanted) and failure is None:
        failure = f"the stream ended after {len(indices)} of {len(wanted)} sampled frames"
    if not frames:
        raise MediaError(f"{path}: no frame could be decoded ({failure})")
    return SampledFrames(frames, indices, frame_count, failure, times)
