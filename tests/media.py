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


FACE_PHOTOS = {  # fixture photo and the face box our default finder gives it (x0, y0, x1, y1)
    "obama": ("face_recognition/obama.jpg", (156, 53, 262, 180)),
    "beckham": ("ghost/beckham.jpg", (86, 145, 245, 315)),
    "biden": ("face_recognition/biden.jpg", (211, 110, 361, 282)),
}
PERSON_PATCH = (150, 180)  # width, height of a pasted head


def person_patch(name: str, marker: bool = False) -> np.ndarray:
    """A head cut from a fixture photo (its face box widened by half on each side), PERSON_PATCH in size; with
    `marker`, a pure-green square on the cheek that a stand-in scorer can flag."""
    import cv2

    from hcsi.faces import read_image

    relative, (x0, y0, x1, y1) = FACE_PHOTOS[name]
    image = read_image(fixture(relative))
    w, h = x1 - x0, y1 - y0
    left, top = max(0, x0 - w // 2), max(0, y0 - h // 2)
    head = image[top:min(image.shape[0], y1 + h // 2), left:min(image.shape[1], x1 + w // 2)]
    head = np.ascontiguousarray(cv2.resize(head, PERSON_PATCH, interpolation=cv2.INTER_AREA))
    if marker:
        head[95:107, 45:57] = (0, 255, 0)
    return head


def write_people_video(path: Path, scenes: list[list[tuple[np.ndarray, int, int]]], size=(640, 360)) -> None:
    """A video with one frame per scene: each (head, x, y) pasted on a grey background with a little noise."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "18"})
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for heads in scenes:
            canvas = rng.integers(100, 116, (size[1], size[0], 3), dtype=np.uint8)
            for head, x, y in heads:
                canvas[y:y + head.shape[0], x:x + head.shape[1]] = head
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
