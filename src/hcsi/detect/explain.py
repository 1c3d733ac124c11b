"""Gate heatmaps: the BSCG gates of every stage and both streams over the face crop, the model's own spatial evidence
(Eq. 11-14: G_c gates the CNN map, g_t the transformer tokens), not a post-hoc attribution."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..files import atomic_path
from .api import STRIP_ROWS, DetectionResult, strip_faces
from .report import person_colour

TILE = 112  # side of each tile in the strip, pixels
HEADER = 18  # height of the column-title band, pixels


def overlay(crop: np.ndarray, gate: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The gate (any H×W, values in [0, 1]) upsampled to the crop, coloured (jet) and blended over it; RGB uint8."""
    size = crop.shape[:2][::-1]
    heat = cv2.resize(gate.astype(np.float32), size, interpolation=cv2.INTER_CUBIC)
    heat = np.clip(heat, 0.0, 1.0)
    colour = cv2.cvtColor(cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return (alpha * colour + (1 - alpha) * crop).astype(np.uint8)


def gate_strip(result: DetectionResult, max_rows: int = STRIP_ROWS) -> np.ndarray:
    """RGB image: one row per frame (its highest-scoring face, up to `max_rows` frames evenly chosen: `strip_faces`),
    columns = the crop, the CNN gate of stages 1..K, the transformer gate of stages 1..K, then (for comparison) the
    CNN stream's Grad-CAM of the "fake" logit."""
    if not result.gates:
        raise ValueError(f"{result.source}: no gates to draw (status {result.status}; score with explain=True)")
    chosen = strip_faces(result.faces, max_rows)
    return _strip(result, chosen, [f"frame {result.faces[i].frame_index}  score {result.faces[i].score:.3f}"
                                   for i in chosen])


def person_strip(result: DetectionResult, person) -> np.ndarray | None:
    """The gate strip of one person's highest-scoring face (None without gates or a scored face)."""
    if not result.gates or person.best_face is None:
        return None
    face = result.faces[person.best_face]
    return _strip(result, [person.best_face], [f"person {person.id}  frame {face.frame_index}  "
                                               f"score {face.score:.3f}"])


def _strip(result: DetectionResult, faces: list[int], captions: list[str]) -> np.ndarray:
    """Rows of tiles for the given faces (indices in result.faces), under a header naming the columns."""
    rows = []
    for index, caption in zip(faces, captions):
        g = result.gates[index]
        crop = cv2.resize(g["crop"], (TILE, TILE), interpolation=cv2.INTER_AREA)
        tiles = [crop] + [overlay(crop, m) for m in g["cnn"]] + [overlay(crop, m) for m in g["vit"]]
        if g.get("gradcam") is not None:
            tiles.append(overlay(crop, g["gradcam"]))
        row = np.concatenate(tiles, axis=1)
        _caption(row, caption)
        rows.append(row)
    first = result.gates[faces[0]]
    titles = (["face"] + [f"CNN gate s{k + 1}" for k in range(len(first["cnn"]))]
              + [f"ViT gate s{k + 1}" for k in range(len(first["vit"]))]
              + (["Grad-CAM (CNN)"] if first.get("gradcam") is not None else []))
    header = np.full((HEADER, rows[0].shape[1], 3), 255, dtype=np.uint8)
    for column, title in enumerate(titles):
        cv2.putText(header, title, (column * TILE + 4, HEADER - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return np.concatenate([header] + rows, axis=0)


def persons_overview(result: DetectionResult) -> np.ndarray | None:
    """The overview frame with each person seen there boxed and numbered (None without persons)."""
    if result.overview is None or result.overview_frame is None:
        return None
    image = result.overview.copy()
    for person in result.persons:
        if result.overview_frame not in person.frame_indices:
            continue
        box = person.boxes[person.frame_indices.index(result.overview_frame)]
        x0, y0, x1, y1 = (int(round(v * result.overview_scale)) for v in box)
        hex_colour = person_colour(person.id)
        colour = tuple(int(hex_colour[k:k + 2], 16) for k in (1, 3, 5))
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, 2)
        cv2.putText(image, f"P{person.id}", (x0 + 3, max(14, y0 - 5)), cv2.FONT_HERSHEY_SIMPLEX, 0.55, colour, 2,
                    cv2.LINE_AA)
    return image


def person_images(result: DetectionResult) -> dict:
    """JPEG bytes of what shows the persons: {"overview": bytes | None, "persons": {id: {"thumbnail", "heatmap"}}}."""
    images = {"overview": _jpeg(persons_overview(result)), "persons": {}}
    for person in result.persons:
        images["persons"][person.id] = {"thumbnail": _jpeg(person.thumbnail),
                                        "heatmap": _jpeg(person_strip(result, person))}
    return images


def _jpeg(image: np.ndarray | None) -> bytes | None:
    if image is None:
        return None
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
    return data.tobytes() if ok else None


def _caption(image: np.ndarray, text: str) -> None:
    """White text on a dark band at the top left, readable over any face."""
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
    band = image[: height + baseline + 4, : width + 6]
    band[:] = (0.35 * band).astype(np.uint8)
    cv2.putText(image, text, (3, height + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)


def save_gate_strip(result: DetectionResult, path: str | Path) -> Path:
    return save_image(gate_strip(result), path)


def save_image(image: np.ndarray, path: str | Path) -> Path:
    """An RGB image written atomically (format by the suffix)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
    return path
