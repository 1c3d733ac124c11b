"""Test media: the fixtures shipped in tests/fixtures and small synthetic videos."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FIXTURES = Path(__file__).resolve().parent / "fixtures"  # small cuts of permissively licensed media (README there)


def fixture(relative: str) -> Path:
    """A file of tests/fixtures (shipped with the repository, so no test skips for lack of media)."""
    path = FIXTURES / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: regenerate with `python tests/fixtures/make_fixtures.py`")
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
