"""Persons of a video: the faces found in its sampled frames grouped into people.

Two cues, the cheap one first:
1. **Position.** A face is linked to the face of the previous sampled frame whose box it overlaps most (IoU at least
   LINK_IOU; each face used once, best overlaps first). Linked faces form a *track*.
2. **Appearance** (dlib's 128-D face descriptor, the ResNet of `face-recognition-models`). Overlap can join two
   people (a cut to another shot, two people crossing or swapping places between two sampled frames), so each track's
   first, middle and last faces are compared, and where two are further apart than SPLIT_DISTANCE the track is
   bisected to the frame where the identity changes and cut there. The pieces are then joined across gaps (a
   person who leaves and returns) when the means of their end faces' descriptors are closer than JOIN_DISTANCE,
   never two pieces seen in the same frame.

Descriptors are computed only for the faces these comparisons need (three per track, a few more per identity change,
one per piece to join), and only when the face is large enough for them to mean something (MIN_DESCRIPTOR_FACE_PX);
a smaller face is grouped by position alone, and its person says so. The thresholds are measured on the test
fixtures by `benchmarks/bench_persons.py` (docs/protocol.md, "Persons").
"""
from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field

import numpy as np

from .detect import box_iou

# Measured by benchmarks/bench_persons.py on 12 single-person clips and 4 photos (docs/protocol.md, "Persons"):
LINK_IOU = 0.3  # one face's boxes in consecutive sampled frames: IoU ≥ 0.40 in 99 % of 372 links (min 0.18)
SPLIT_DISTANCE = 0.55  # two faces further apart are different people: 0.6 % of one person's face pairs are
# (max 0.59), 4.2 % of two people's are not (dlib's own 0.6 lets 10 % of two people's pairs through)
JOIN_DISTANCE = 0.45  # pieces whose end-face means are closer are one person: 0.17 % of one person's mean pairs
# are further, 0.6 % of two people's are closer (closest two people 0.40)
MIN_DESCRIPTOR_FACE_PX = 32  # face box's shorter side: smaller, one person's distance to itself passes 0.45
DESCRIPTOR_CHIP_PX = 150  # dlib's face chip for its descriptor network
IDENTITY_BY_APPEARANCE = "appearance"  # grouping confirmed by descriptors
IDENTITY_BY_POSITION = "position"  # faces too small, or a single face: grouped by overlap alone


@dataclass
class PersonTrack:
    """One person: where it was seen. `faces[k]` = (sampled-frame position, index of the face in that frame's list)."""

    id: int
    faces: list[tuple[int, int]] = field(default_factory=list)
    identity: str = IDENTITY_BY_APPEARANCE


def face_side(face) -> float:
    """Shorter side of a face's box, pixels of the frame it was found in."""
    return float(min(face.box[2] - face.box[0], face.box[3] - face.box[1]))


class FaceDescriber:
    """dlib's 128-D face descriptor of a face in a frame (the models load on first use, once per process)."""

    _lock = threading.Lock()
    _models: tuple | None = None

    @classmethod
    def _load(cls):
        with cls._lock:
            if cls._models is None:
                import dlib

                with warnings.catch_warnings():  # face_recognition_models imports the deprecated pkg_resources
                    warnings.simplefilter("ignore")
                    import face_recognition_models as files
                cls._models = (dlib.face_recognition_model_v1(files.face_recognition_model_location()),
                               dlib.shape_predictor(files.pose_predictor_five_point_model_location()))
            return cls._models

    def describe(self, frame: np.ndarray, face) -> np.ndarray | None:
        """The descriptor, or None for a face smaller than MIN_DESCRIPTOR_FACE_PX. Faces with dlib's 68 landmarks
        are aligned by them; others (RetinaFace's five keypoints follow another layout) by dlib's 5-point model on
        the finder's box."""
        import dlib

        if face_side(face) < MIN_DESCRIPTOR_FACE_PX:
            return None
        network, five_points = self._load()
        frame = np.ascontiguousarray(frame)  # dlib's bindings refuse views (a shrunk or rotated frame can be one)
        x0, y0, x1, y1 = (int(round(float(v))) for v in face.detector_box)
        rect = dlib.rectangle(x0, y0, x1, y1)
        if len(face.landmarks) >= 68:
            shape = dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in face.landmarks[:68]])
        else:
            shape = five_points(frame, rect)
        chip = dlib.get_face_chip(frame, shape, DESCRIPTOR_CHIP_PX, 0.25)
        return np.asarray(network.compute_face_descriptor(chip), dtype=np.float64)


def link_tracks(faces_per_frame: list[list]) -> list[list[tuple[int, int]]]:
    """Tracks by position: each face joins the track whose face in the previous sampled frame it overlaps most
    (IoU ≥ LINK_IOU, best overlaps first, one face per track); others start a track."""
    tracks: list[list[tuple[int, int]]] = []
    previous: dict[int, int] = {}  # face index in the previous frame -> its track
    for position, faces in enumerate(faces_per_frame):
        current: dict[int, int] = {}
        if position > 0:
            before = faces_per_frame[position - 1]
            pairs = sorted(((box_iou(faces[i].box, before[j].box), i, j) for i in range(len(faces))
                            for j in range(len(before))), reverse=True)
            used = set()
            for iou, i, j in pairs:
                if iou < LINK_IOU:
                    break
                if i in current or j in used or j not in previous:
                    continue
                current[i] = previous[j]
                used.add(j)
                tracks[previous[j]].append((position, i))
        for i in range(len(faces)):
            if i not in current:
                current[i] = len(tracks)
                tracks.append([(position, i)])
        previous = current
    return tracks


class _Descriptors:
    """Descriptors computed on demand and kept, keyed by (position, face index)."""

    def __init__(self, frames: list[np.ndarray], faces_per_frame: list[list], describer: FaceDescriber | None):
        self.frames, self.faces, self.describer = frames, faces_per_frame, describer
        self.known: dict[tuple[int, int], np.ndarray | None] = {}

    def __call__(self, key: tuple[int, int]) -> np.ndarray | None:
        if self.describer is None:
            return None
        if key not in self.known:
            position, index = key
            self.known[key] = self.describer.describe(self.frames[position], self.faces[position][index])
        return self.known[key]

    def same(self, a: tuple[int, int], b: tuple[int, int]) -> bool | None:
        """Whether two faces are one person by their descriptors (None: a face too small to tell)."""
        first, second = self(a), self(b)
        if first is None or second is None:
            return None
        return float(np.linalg.norm(first - second)) < SPLIT_DISTANCE


def split_where_identity_changes(track: list[tuple[int, int]], descriptors: _Descriptors) -> list[list]:
    """The track cut wherever consecutive faces turn out to be different people: its first, middle and last faces
    are compared, and each half whose ends disagree is bisected down to the two faces where the identity changes."""
    cuts: list[int] = []

    def find_changes(lo: int, hi: int) -> None:  # the faces at lo and hi differ
        if hi - lo == 1:
            cuts.append(hi)
            return
        mid = (lo + hi) // 2
        for a, b in ((lo, mid), (mid, hi)):
            if descriptors.same(track[a], track[b]) is False:
                find_changes(a, b)

    if len(track) > 1:
        mid = (len(track) - 1) // 2
        for a, b in ((0, mid), (mid, len(track) - 1)):
            if a != b and descriptors.same(track[a], track[b]) is False:
                find_changes(a, b)
    bounds = [0, *sorted(set(cuts)), len(track)]
    return [track[start:end] for start, end in zip(bounds, bounds[1:])]


def group_persons(frames: list[np.ndarray], faces_per_frame: list[list],
                  describer: FaceDescriber | None = None) -> list[PersonTrack]:
    """The persons of a video's sampled frames (`faces_per_frame[p]`: the faces found in `frames[p]`), every face in
    exactly one, numbered from 1 in order of first appearance (then left to right). `describer=None` groups by
    position alone (no appearance check)."""
    descriptors = _Descriptors(frames, faces_per_frame, describer)
    pieces = [piece for track in link_tracks(faces_per_frame) for piece in
              split_where_identity_changes(track, descriptors)]
    groups = _join_by_appearance(pieces, descriptors) if len(pieces) > 1 else [[0]] * len(pieces)

    def first_seen(group):
        position, index = min(face for p in group for face in pieces[p])
        return position, float(faces_per_frame[position][index].box[0])

    persons = []
    for number, group in enumerate(sorted(groups, key=first_seen), start=1):
        faces = sorted(face for p in group for face in pieces[p])
        checked = any(descriptors.known.get(face) is not None for face in faces)
        persons.append(PersonTrack(number, faces, IDENTITY_BY_APPEARANCE if checked else IDENTITY_BY_POSITION))
    return persons


def _join_by_appearance(pieces: list[list[tuple[int, int]]], descriptors: _Descriptors) -> list[list[int]]:
    """Pieces joined into persons: closest mean descriptors first, below JOIN_DISTANCE, never two groups that share
    a sampled frame."""
    frames_of = {k: {position for position, _ in piece} for k, piece in enumerate(pieces)}
    means = []
    for k, piece in enumerate(pieces):  # a piece seen beside every other one can join none: no descriptor needed
        joinable = any(not frames_of[k] & frames_of[other] for other in frames_of if other != k)
        known = [d for d in (descriptors(face) for face in _ends(piece)) if d is not None] if joinable else []
        means.append(np.mean(known, axis=0) if known else None)
    group_of = list(range(len(pieces)))
    members = {k: [k] for k in range(len(pieces))}
    pairs = sorted((float(np.linalg.norm(means[a] - means[b])), a, b) for a in range(len(pieces))
                   for b in range(a + 1, len(pieces)) if means[a] is not None and means[b] is not None)
    for distance, a, b in pairs:
        if distance >= JOIN_DISTANCE:
            break
        ga, gb = group_of[a], group_of[b]
        if ga == gb or frames_of[ga] & frames_of[gb]:
            continue
        for k in members[gb]:
            group_of[k] = ga
        members[ga] += members.pop(gb)
        frames_of[ga] |= frames_of.pop(gb)
    return list(members.values())


def _ends(piece: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The faces of a piece whose descriptors stand for it: its first and last (often computed already)."""
    return [piece[0]] if len(piece) == 1 else [piece[0], piece[-1]]
