"""Per-person results: who in a video is scored how (the persons come from `hcsi.faces.persons`).

A person's score is the mean of its scored faces' scores. The video's own score stays the paper's (max over faces per
frame, mean over frames); `aggregate="persons"` scores a video as the maximum over its persons instead
(docs/protocol.md, "Persons").
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..evaluate.protocol import VideoFaces

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
