"""Per-person results: who in a video is scored how (the persons come from `hcsi.faces.persons`).

A person's score is the mean of its scored faces' scores. The video's own score stays the paper's (max over faces per
frame, mean over frames); `aggregate="persons"` scores a video as the maximum over its persons instead
(docs/protocol.md, "Persons").
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .protocol import VideoFaces

AGGREGATES = ("paper", "persons")  # how a video's score is made from its faces
AGGREGATE_MEANING = {
    "paper": "the paper's protocol: the highest face score in each sampled frame, averaged over the frames",
    "persons": "the highest person score (a person's score: the mean of its face scores)",
}
NOT_SCORED = "not_scored"


@dataclass
class PersonResult:
    """One person of an input: where it was seen, its score and, with a calibration, its probability and verdict."""

    id: int
    frame_indices: list[int]  # sampled frames where it was seen
    boxes: list[list[int]]  # its face box in each of them (x0, y0, x1, y1), pixels of the decoded frame
    time_ranges: list[list[float]]  # [first, last] seconds of each run of consecutive sampled frames it is in
    face_scores: list[float | None]  # per frame where seen: the score of its face (None: not scored)
    identity: str  # "appearance" (descriptors confirmed the grouping) or "position" (box overlap alone)
    score: float | None = None  # mean of its face scores; None when no face of it was scored
    probability: float | None = None
    verdict: str | None = None  # with a calibration: manipulated / inconclusive / no_evidence, or cannot_judge
    cannot_judge: list[dict] = field(default_factory=list)
    thumbnail: np.ndarray | None = None  # its largest face (not in to_dict: written as an image)
    best_face: int | None = None  # index in DetectionResult.faces of its highest-scoring face

    @property
    def faces_scored(self) -> int:
        return sum(s is not None for s in self.face_scores)

    def to_dict(self) -> dict:
        return {"id": self.id, "frames": self.frame_indices, "boxes": self.boxes, "time_ranges": self.time_ranges,
                "score": self.score, "probability": self.probability, "verdict": self.verdict,
                "cannot_judge": self.cannot_judge, "faces_found": len(self.frame_indices),
                "faces_scored": self.faces_scored, "face_scores": self.face_scores, "identity": self.identity}


def time_ranges(positions: list[int], times: list[float]) -> list[list[float]]:
    """Runs of consecutive sampled-frame positions as [first, last] times in seconds."""
    ranges: list[list[float]] = []
    previous = None
    for position in positions:
        time = float(times[position]) if position < len(times) else 0.0
        if previous is not None and position == previous + 1:
            ranges[-1][1] = time
        else:
            ranges.append([time, time])
        previous = position
    return ranges


def person_results(faces: VideoFaces, crop_scores: np.ndarray | None, min_crop_px: int) -> list[PersonResult]:
    """Each person's frames, boxes, times and score from its scored faces (`crop_scores[k]` scores crop k; None:
    nothing was scored). A person none of whose faces was scored, or whose crops are smaller than `min_crop_px`,
    cannot be judged, with the reason."""
    persons = []
    for person in faces.persons:
        scores = [None if crop < 0 or crop_scores is None else float(crop_scores[crop]) for crop in person.crops]
        result = PersonResult(person.id, [faces.frame_indices[p] for p in person.positions], person.boxes,
                              time_ranges(person.positions, faces.frame_times), scores, person.identity,
                              thumbnail=person.thumbnail)
        scored = [(s, crop) for s, crop in zip(scores, person.crops) if s is not None]
        if scored:
            result.score = float(np.mean([s for s, _ in scored]))
            result.best_face = max(scored)[1]
            sides = [min(b[2] - b[0], b[3] - b[1]) for b in (faces.boxes[crop] for _, crop in scored)]
            if float(np.median(sides)) < min_crop_px:
                result.cannot_judge.append({"code": "face_too_small", "message": f"its face crops are about "
                                            f"{np.median(sides):.0f} px (median), below {min_crop_px} px"})
        elif crop_scores is not None:
            result.cannot_judge.append({"code": NOT_SCORED, "message": "none of its faces was scored: in every "
                                        "frame it was smaller than half the largest face's area (the protocol "
                                        "scores only faces at least that large) or could not be cropped"})
        persons.append(result)
    return persons


def aggregate_persons(persons: list[PersonResult]) -> float | None:
    """A video's score as the highest of its persons' scores (None when no person has one)."""
    scores = [p.score for p in persons if p.score is not None]
    return max(scores) if scores else None


FACE_COVER = 0.3  # share of a face box a mask (or a given fake box) must cover for it to be the manipulated face


def _manipulated_in_most_frames(flags: list[bool]) -> int:
    """A person is the manipulated one when it is so in at least half of the frames where it was seen."""
    return int(sum(flags) >= len(flags) / 2) if flags else 0


def person_labels_from_masks(faces: VideoFaces, mask_frames: list[np.ndarray]) -> dict[int, int]:
    """{person id: 1 if the mask covers its face, else 0}: `mask_frames[k]` is the mask of sampled frame k (white =
    manipulated; resized to the video's frames when their sizes differ)."""
    if len(mask_frames) != len(faces.frame_indices):
        raise ValueError(f"the mask video gives {len(mask_frames)} sampled frames, the video "
                         f"{len(faces.frame_indices)}: not frame-aligned")
    width, height = faces.frame_size
    labels = {}
    for person in faces.persons:
        flags = []
        for position, box in zip(person.positions, person.boxes):
            mask = mask_frames[position]
            if mask.ndim == 3:
                mask = mask.max(axis=2)
            sy, sx = mask.shape[0] / height, mask.shape[1] / width
            x0, y0, x1, y1 = (int(round(v)) for v in (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy))
            window = mask[max(0, y0):max(0, y1), max(0, x0):max(0, x1)]
            flags.append(window.size > 0 and float((window > 127).mean()) >= FACE_COVER)
        labels[person.id] = _manipulated_in_most_frames(flags)
    return labels


def person_labels_from_boxes(faces: VideoFaces, fake_boxes) -> dict[int, int]:
    """{person id: 1 if one of `fake_boxes` covers at least FACE_COVER of its face box in most frames, else 0}."""
    return {person.id: _manipulated_in_most_frames([any(box_cover(box, fake) >= FACE_COVER for fake in fake_boxes)
                                                    for box in person.boxes]) for person in faces.persons}


def box_cover(box, cover) -> float:
    """The share of `box` inside `cover` (both x0, y0, x1, y1)."""
    width = min(box[2], cover[2]) - max(box[0], cover[0])
    height = min(box[3], cover[3]) - max(box[1], cover[1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return float(width * height / area) if width > 0 and height > 0 and area > 0 else 0.0
