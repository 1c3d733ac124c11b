"""Test media: the real files in ../shared/data (never copied into the project) and small synthetic videos."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

# ../shared/data beside the project; HCSI_SHARED_DATA points elsewhere (e.g. for a clone outside /work)
SHARED_DATA = Path(os.environ.get("HCSI_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def shared(relative: str) -> Path:
    """A file of ../shared/data; the test is skipped with a message when that folder is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} not found: these tests need the shared test media in ../shared/data "
                    "(or set HCSI_SHARED_DATA)")
    return path


def write_index_video(path: Path, frames: int, size=(64, 48), vfr: bool = False, rotation: int = 0) -> None:
    """A video whose frame k is a flat grey of level 4·k with a white stripe over its left quarter; with `vfr`,
    frames are spaced irregularly in time; `rotation` sets the display matrix (degrees counter-clockwise)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for k in range(frames):
            image = np.full((size[1], size[0], 3), 4 * k, dtype=np.uint8)
            image[:, : size[0] // 4] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = pts
            frame.time_base = Fraction(1, 1000)
            pts += (20 + 37 * (k % 3)) if vfr else 40
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_face_clip(path: Path, frames: int = 4, width: int = 384) -> None:
    """A short clip of scikit-image's astronaut portrait (a face every detector finds), `width` pixels wide."""
    import cv2
    from skimage import data as skimage_data

    face = skimage_data.astronaut()[:, 64:448]
    face = cv2.resize(face, (width, width), interpolation=cv2.INTER_AREA)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height = width, width
        stream.pix_fmt = "yuv420p"
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.roll(face, 2 * k, axis=1)), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
