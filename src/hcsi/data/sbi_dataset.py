"""SBI training pairs and the SBI validation set, read from a preprocessed face store (`hcsi preprocess`)."""
from __future__ import annotations

import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..faces.frames import MediaError
from ..normalization import IMAGENET_MEAN, IMAGENET_STD, image_to_tensor
from ..sbi import SBIConfig, SelfBlendedImageGenerator

TRAIN_FRAMES_PER_VIDEO = 8  # SBI: 8 evenly spaced frames of each training video
VALIDATION_SEED = 5  # SBI seeds its validation pass with 5; any fixed value makes it repeatable
MAX_REDRAWS = 10  # a sample whose synthesis fails is replaced by another face this many times at most
CROP_BOXES = ("auto", "retinaface", "face")  # the box the final training crop is cut around (`training_crop_box`)


@dataclass(frozen=True)
class StoredFace:
    """The largest face of one stored frame: its context-crop file, landmarks and box in crop pixels."""

    crop: Path
    landmarks: np.ndarray
    box: tuple[float, float, float, float]
    video_id: str
    frame_index: int


def held_out_videos(video_ids: list[str], val_fraction: float) -> set[str]:
    """The ids, spread evenly over the sorted list, that make up `val_fraction` of it (at least one when > 0):
    the validation split of a store made without splits (`hcsi preprocess --dataset folder`)."""
    ids = sorted(video_ids)
    if val_fraction <= 0 or len(ids) < 2:
        return set()
    count = min(len(ids) - 1, max(1, round(val_fraction * len(ids))))
    picks = np.linspace(0, len(ids) - 1, count + 2)[1:-1].round().astype(int)
    return {ids[i] for i in picks}


def training_crop_box(store: str | Path, crop_box: str = "auto") -> str:
    """The box a store's training crops are cut around: "retinaface" (each face's stored RetinaFace box, as SBI's
    sbi.py crops) or "face" (hcsi's face box: detector ∪ landmark box, top raised towards the forehead). "auto" is
    "retinaface" when the store was made with RetinaFace boxes (`hcsi preprocess --retinaface-boxes`)."""
    if crop_box not in CROP_BOXES:
        raise ValueError(f"crop box must be one of {', '.join(CROP_BOXES)}, got {crop_box!r}")
    settings = Path(store) / "store.json"
    finder = json.loads(settings.read_text()).get("retinaface") if settings.is_file() else None
    if crop_box == "retinaface" and finder is None:
        raise ValueError(f"{store}: crop box 'retinaface' asked for, but the store holds no RetinaFace boxes (made "
                         "without --retinaface-boxes); preprocess again with them, or use data.crop_box=face")
    if crop_box == "auto":
        return "retinaface" if finder is not None else "face"
    return crop_box


def load_stored_faces(store: str | Path, split: str | None, frames_per_video: int | None,
                      val_fraction: float = 0.0, crop_box: str = "face") -> list[StoredFace]:
    """Faces of the finished videos of `split` (None: all), `frames_per_video` evenly spaced frames per video
    among those with a face (None: every such frame), each with the box its training crop is cut around
    (`crop_box`: "face", or "retinaface", which leaves out the frames whose face has no RetinaFace box, as SBI
    leaves out frames without one).

    Videos stored without a split (folder datasets) count as "train", except the `val_fraction` share that
    `held_out_videos` picks, which counts as "val".
    """
    store = Path(store)
    index_path = store / "index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path} not found: run `hcsi preprocess` with --out {store} first")
    videos = json.loads(index_path.read_text())["videos"]
    held_out = held_out_videos([v for v, e in videos.items() if e["split"] is None and e["status"] == "ok"],
                               val_fraction)
    faces = []
    for video_id, entry in sorted(videos.items()):
        video_split = entry["split"] or ("val" if video_id in held_out else "train")
        if entry["status"] != "ok" or (split is not None and video_split != split):
            continue
        meta_path = store / "videos" / video_id / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} is missing although {index_path} lists {video_id!r} as finished: "
                                    "the store is inconsistent; rerun `hcsi preprocess` on it")
        meta = json.loads(meta_path.read_text())
        frames = [f for f in meta["frames"] if f["faces"]]
        if crop_box == "retinaface":
            frames = [f for f in frames if f["faces"][0].get("retina_box") is not None]
        if frames_per_video is not None:
            keep = np.unique(np.linspace(0, len(frames) - 1, frames_per_video, dtype=int))
            frames = [frames[i] for i in keep]
        for frame in frames:
            face = frame["faces"][0]
            box = face["retina_box"] if crop_box == "retinaface" else face["box"]
            faces.append(StoredFace(store / "videos" / video_id / face["file"],
                                    np.asarray(face["landmarks"], dtype=np.float32),
                                    tuple(float(v) for v in np.ravel(box)), video_id, frame["index"]))
    if not faces:
        hint = (" (a store without splits needs val_fraction > 0 for a val split: the argument of SBIDataset / "
                "sbi_validation_set, data.val_fraction in a training config)") if split == "val" else ""
        raise ValueError(f"{store}: no finished video with faces for split {split!r}{hint}")
    return faces


def read_crop(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise MediaError(f"{path}: stored face crop is missing or unreadable; rerun `hcsi preprocess`")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class SBIDataset(Dataset):
    """Real / self-blended fake pairs with the same crop, as normalised 3×S×S tensors.

    Args:
        store: output folder of `hcsi preprocess`.
        split: "train", "val", "test" or None (all videos).
        frames_per_video: evenly spaced frames per video (SBI: 8 for training); None takes every stored frame.
        train: random flip, joint post-augmentation and random crop margins (SBI training); False gives SBI's
            validation behaviour (fixed 12.5 % margins, no flip, no post-augmentation).
        config: SBI parameters (image_size among them).
        seed: sample i of epoch e is drawn from the generator seeded with (seed, e, i): repeatable, and different
            in every training epoch (call `set_epoch`); with train=False the epoch is ignored.
        val_fraction: share of the videos of a store without splits that form the "val" split.
        pair_augmentation: applied to each (real, fake) uint8 pair after synthesis, e.g. `PostProcessingAugmentation`
            (the paper's stage-2 augmentations); called as f(real, fake, rng) -> (real, fake).
        crop_box: the box the final crop is cut around (`training_crop_box`); `self.crop_box` is the one used.
    """

    def __init__(self, store: str | Path, split: str | None = "train",
                 frames_per_video: int | None = TRAIN_FRAMES_PER_VIDEO, train: bool = True,
                 config: SBIConfig | None = None, seed: int = 0, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 val_fraction: float = 0.0, pair_augmentation=None, crop_box: str = "auto") -> None:
        self.crop_box = training_crop_box(store, crop_box)
        self.faces = load_stored_faces(store, split, frames_per_video, val_fraction, self.crop_box)
        self.generator = SelfBlendedImageGenerator(config or SBIConfig())
        self.pair_augmentation = pair_augmentation
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.mean, self.std = mean, std
        # samples whose synthesis failed and were drawn again, shared with DataLoader worker processes
        self._redrawn = multiprocessing.Value("i", 0)

    @property
    def redrawn_samples(self) -> int:
        """Samples replaced by another draw because SBI synthesis failed on them, since the last reset."""
        return self._redrawn.value

    def reset_redrawn_samples(self) -> None:
        with self._redrawn.get_lock():
            self._redrawn.value = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch = self.epoch if self.train else 0  # validation draws the same fakes every epoch, as SBI's does
        rng = np.random.default_rng([self.seed, epoch, i])
        for attempt in range(MAX_REDRAWS + 1):
            face = self.faces[i]
            image = read_crop(face.crop)  # a missing crop is a broken store: that error is not redrawn
            try:
                sample = self.generator(image, face.landmarks, face.box, rng, train=self.train)
                break
            except Exception as error:  # e.g. an empty mask or a degenerate box: draw another face, as SBI does
                if attempt == MAX_REDRAWS:
                    raise RuntimeError(f"SBI synthesis failed {MAX_REDRAWS + 1} times in a row, last on "
                                       f"{face.crop}: {type(error).__name__}: {error}") from error
                with self._redrawn.get_lock():
                    self._redrawn.value += 1
                i = int(rng.integers(len(self.faces)))
        real, fake = sample.real, sample.fake
        if self.pair_augmentation is not None:
            real, fake = self.pair_augmentation(real, fake, rng)
        return image_to_tensor(real, self.mean, self.std), image_to_tensor(fake, self.mean, self.std)


def sbi_validation_set(store: str | Path, config: SBIConfig | None = None, **kwargs) -> SBIDataset:
    """SBI validation: the val split's real faces, fixed seed, no random augmentation, test-time crop. The only
    data on which checkpoints may be chosen."""
    return SBIDataset(store, "val", frames_per_video=kwargs.pop("frames_per_video", TRAIN_FRAMES_PER_VIDEO),
                      train=False, config=config, seed=VALIDATION_SEED, **kwargs)


def sbi_collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """N pairs -> 2N images [all reals; all fakes] and labels [0]*N + [1]*N (1 = fake)."""
    reals, fakes = zip(*batch)
    images = torch.stack(reals + fakes)
    labels = torch.cat([torch.zeros(len(reals), dtype=torch.long), torch.ones(len(fakes), dtype=torch.long)])
    return images, labels
