"""`robustness(...)`: the video-level protocol under the DeeperForensics-1.0 perturbations, every (perturbation,
level) cell plus the clean one, resumable, with CPU workers and sharded under torchrun like `evaluate`.

Each video is decoded once; its sampled frames are perturbed for every cell before face detection (as a degraded
video would reach a user), then faces are found, cropped and scored as in `hcsi evaluate`.

Output folder:
    settings.json           what the cached scores depend on (weights, model config, frames, detector, amp, seed)
    cache/<cell>/<hash>.json  one finished (video, cell), written atomically; a rerun skips it
    robustness.json         [{perturbation, level, auc, ap, n_videos, n_failed, backends}] ("clean" has level 0;
                            backends: the engines that scored its videos)
    robustness.md           AUC (%) table: rows perturbations, columns levels, the mean per level, the clean AUC
    robustness.png / .svg   AUC against level, one line per perturbation, clean as a reference line
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..distributed import Distributed
from ..faces import create_face_detector, sample_frames
from ..files import atomic_path, save_figure, write_json_atomic
from ..perturbations import LEVELS, PERTURBATIONS, perturb
from .datasets import TestVideo
from .metrics import detection_metrics
from .protocol import (
    STATUS_ERROR,
    STATUS_OK,
    VideoFaces,
    aggregate_video,
    crops_at,
    decoding_failure,
    default_batch_size,
    engine_name,
    faces_in_frames,
    failure_reason,
    score_crops,
)
from .run import ScoringOptions, cache_path, claim_out_dir, map_in_workers, scoring_settings, worker_detector

CLEAN = ("clean", 0)


@dataclass
class RobustnessOptions(ScoringOptions):
    perturbations: tuple[str, ...] = tuple(PERTURBATIONS)  # DeeperForensics-1.0's seven
    levels: tuple[int, ...] = LEVELS  # severity levels 1-5
    seed: int = 0  # perturbation randomness (block positions, noise) is seeded with (seed, video, cell)
    detect_on: str = "perturbed"  # "perturbed": faces found in each perturbed frame (as a user's degraded video);
    # "clean": found once in the clean frames and cut at the same boxes from the perturbed ones (cheaper; measures
    # the classifier alone, not the face detector's robustness)
    cells: list[tuple[str, int]] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [p for p in self.perturbations if p not in PERTURBATIONS]
        if unknown or not self.perturbations:
            raise ValueError(f"unknown perturbation(s) {unknown}; known: {', '.join(PERTURBATIONS)}")
        if not self.levels or any(level not in LEVELS for level in self.levels):
            raise ValueError(f"levels must be among {LEVELS}, got {self.levels}")
        if self.detect_on not in ("perturbed", "clean"):
            raise ValueError(f"detect_on must be 'perturbed' or 'clean', got {self.detect_on!r}")
        self.cells = [CLEAN] + [(p, level) for p in self.perturbations for level in sorted(set(self.levels))]


def cell_name(cell: tuple[str, int]) -> str:
    return cell[0] if cell == CLEAN else f"{cell[0]}-{cell[1]}"


def cell_cache(out_dir: Path, video: TestVideo, cell: tuple[str, int]) -> Path:
    return out_dir / "cache" / cell_name(cell) / cache_path(out_dir, video).name


def cell_rng(seed: int, video: TestVideo, cell: tuple[str, int]) -> np.random.Generator:
    """The same draws for the same (seed, video, cell) in every run and process."""
    perturbation_index = list(PERTURBATIONS).index(cell[0]) if cell != CLEAN else len(PERTURBATIONS)
    return np.random.default_rng([seed, zlib.crc32(video.key.encode()), perturbation_index, cell[1]])


def _faces_of_cells(job) -> tuple[TestVideo, list[tuple[tuple[str, int], VideoFaces]]]:
    """Decode the video once, then perturb, detect and crop for every cell; failures become statuses."""
    video, cells, frames, input_size, seed, detect_on = job
    try:
        sampled = sample_frames(video.path, frames)
    except Exception as error:  # every cell of this video fails the same way
        return video, [(cell, decoding_failure(video.path, error)) for cell in cells]
    results = []
    clean_faces = None
    for cell in cells:
        try:
            shown = sampled.frames if cell == CLEAN else perturb(sampled.frames, *cell, cell_rng(seed, video, cell))
            if detect_on == "clean":
                if clean_faces is None:
                    clean_faces = faces_in_frames(sampled.frames, sampled.indices, worker_detector(), input_size)
                faces = crops_at(shown, clean_faces, input_size)
            else:
                faces = faces_in_frames(shown, sampled.indices, worker_detector(), input_size)
            if faces.status != STATUS_OK:
                faces.reason = f"{video.path}: {faces.reason}"
        except Exception as error:
            faces = VideoFaces(frame_indices=list(sampled.indices), status=STATUS_ERROR,
                               reason=f"{video.path}: {cell_name(cell)}: {type(error).__name__}: {error}")
        results.append((cell, faces))
    return video, results


def _jobs(videos, options, out_dir, input_size):
    for video in videos:
        todo = [cell for cell in options.cells if not cell_cache(out_dir, video, cell).is_file()]
        if todo:
            yield video, todo, options.frames, input_size, options.seed, options.detect_on


def score_cells(model, videos: list[TestVideo], out_dir: Path, options: RobustnessOptions,
                device: torch.device, progress: bool = True) -> int:
    """Score every (video, cell) without a cache entry; returns how many videos needed work."""
    jobs = list(_jobs(videos, options, out_dir, model.config.input_size))
    batch_size = options.batch_size or default_batch_size(device)
    bar = tqdm(total=len(videos), initial=len(videos) - len(jobs), desc="robustness", unit="video",
               disable=not progress, dynamic_ncols=True)
    for video, results in map_in_workers(_faces_of_cells, jobs, options.workers, options.detector,
                                              str(device)):
        for cell, faces in results:
            status, reason = faces.status, faces.reason
            try:
                score, frames = aggregate_video(faces, score_crops(model, faces.crops, device, batch_size,
                                                                   options.amp))
            except Exception as error:
                score, frames = None, []
                status, reason = STATUS_ERROR, failure_reason(video.path, "scoring", error)
            write_json_atomic(cell_cache(out_dir, video, cell),
                              {"key": video.key, "label": video.label, "status": status, "reason": reason,
                               "score": score, "frames_used": len(frames),
                               "backend": engine_name(model)})
        bar.update(1)
    bar.close()
    return len(jobs)


def summarize_cells(videos: list[TestVideo], out_dir: Path, options: RobustnessOptions) -> list[dict]:
    """One row per cell from the cache; writes robustness.json, .md and the figure."""
    rows = []
    for cell in options.cells:
        records = []
        for video in videos:
            path = cell_cache(out_dir, video, cell)
            if not path.is_file():
                raise FileNotFoundError(f"{path} missing for {video.key}: the run has not finished; rerun it")
            records.append(json.loads(path.read_text()))
        scored = [(r["label"], r["score"] if r["status"] == STATUS_OK else options.failure_score) for r in records]
        scored = [(label, score) for label, score in scored if score is not None]
        metrics = detection_metrics([label for label, _ in scored], [score for _, score in scored])
        rows.append({"perturbation": cell[0], "level": cell[1], "auc": metrics["auc"], "ap": metrics["ap"],
                     "n_videos": len(records), "n_failed": sum(r["status"] != STATUS_OK for r in records),
                     "backends": sorted({r.get("backend", "torch") for r in records})})
    write_json_atomic(out_dir / "robustness.json", rows, indent=1)
    with atomic_path(out_dir / "robustness.md") as tmp:
        Path(tmp).write_text(robustness_table(rows))
    robustness_plot(rows, out_dir / "robustness")
    return rows


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def robustness_table(rows: list[dict]) -> str:
    """Markdown: AUC (%) per perturbation (rows) and level (columns), the mean per level, and the clean AUC."""
    clean = next(r for r in rows if r["level"] == 0)
    levels = sorted({r["level"] for r in rows if r["level"]})
    names = list(dict.fromkeys(r["perturbation"] for r in rows if r["level"]))
    auc = {(r["perturbation"], r["level"]): r["auc"] for r in rows}
    lines = [f"Video-level AUC (%) under DeeperForensics-1.0 perturbations; clean: {_percent(clean['auc'])} "
             f"({clean['n_videos']} videos).", "",
             "| perturbation | " + " | ".join(f"level {level}" for level in levels) + " |",
             "|---" * (len(levels) + 1) + "|"]
    for name in names:
        code = PERTURBATIONS[name].code
        lines.append(f"| {name} ({code}) | " + " | ".join(_percent(auc.get((name, level))) for level in levels) + " |")
    means = []
    for level in levels:
        values = [auc[(name, level)] for name in names if auc.get((name, level)) is not None]
        means.append(sum(values) / len(values) if values else None)
    lines.append("| **mean** | " + " | ".join(_percent(m) for m in means) + " |")
    return "\n".join(lines) + "\n"


def robustness_plot(rows: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = next(r for r in rows if r["level"] == 0)
    fig, ax = plt.subplots(figsize=(7.4, 4.2))
    for name in dict.fromkeys(r["perturbation"] for r in rows if r["level"]):
        points = [(r["level"], 100 * r["auc"]) for r in rows if r["perturbation"] == name and r["auc"] is not None]
        if points:
            ax.plot(*zip(*points), marker="o", lw=1.5, label=name)
    if clean["auc"] is not None:
        ax.axhline(100 * clean["auc"], color="black", ls="--", lw=1, label="clean")
    ax.set(xlabel="severity level (DeeperForensics-1.0)", ylabel="video-level AUC (%)", xticks=list(LEVELS),
           title="robustness to perturbations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    written = save_figure(fig, out)
    plt.close(fig)
    return written


def robustness(model: torch.nn.Module, videos: list[TestVideo], out_dir: str | Path,
               options: RobustnessOptions | None = None, ctx: Distributed | None = None,
               progress: bool = True, scorer=None) -> list[dict] | None:
    """Score every cell of every video (video i on rank i mod world size); rank 0 writes the outputs and returns
    the rows (other ranks return None). `scorer`: what runs the network when not `model` (its ONNX Runtime
    export)."""
    options = options or RobustnessOptions()
    ctx = ctx or Distributed()
    out_dir = Path(out_dir)
    (out_dir / "cache").mkdir(parents=True, exist_ok=True)
    settings = scoring_settings(model, options) | {"seed": options.seed, "detect_on": options.detect_on}
    claim_out_dir(out_dir, settings, ctx)
    model = model.to(ctx.device).eval()
    score_cells(model if scorer is None else scorer, videos[ctx.rank::ctx.world_size], out_dir, options,
                device=ctx.device, progress=progress and ctx.is_main)
    ctx.barrier()
    if not ctx.is_main:
        return None
    return summarize_cells(videos, out_dir, options)


def perturbation_preview(path: str | Path, out: str | Path, crop_size: int = 160, seed: int = 0) -> Path:
    """A grid of the face crop of the first sampled frame of `path`: one row per perturbation, the clean crop and
    levels 1-5 as columns. Each perturbation is applied to the whole frame (as in `robustness`), then the largest
    face found in the clean frame is cut as `robustness --detect-on clean` cuts it (`faces_in_frames`, `crops_at`),
    so that the columns show the same region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = sample_frames(path, 1).frames[0]
    faces = faces_in_frames([frame], [0], create_face_detector(), crop_size)
    if not faces.crops:
        raise ValueError(f"{path}: no face found in its first sampled frame")

    def crop(image):
        return crops_at([image], faces, crop_size).crops[0]

    video = TestVideo("preview", "preview", Path(path).stem, Path(path), 0)
    fig, axes = plt.subplots(len(PERTURBATIONS), len(LEVELS) + 1,
                             figsize=(1.35 * (len(LEVELS) + 1) + 1.2, 1.4 * len(PERTURBATIONS)), squeeze=False)
    for row, (name, perturbation) in enumerate(PERTURBATIONS.items()):
        tiles = [crop(frame)] + [crop(perturb([frame], name, level, cell_rng(seed, video, (name, level)))[0])
                                 for level in LEVELS]
        for column, tile in enumerate(tiles):
            ax = axes[row][column]
            ax.imshow(tile)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("clean" if column == 0 else f"level {column}", fontsize=8)
            if column:
                ax.set_xlabel(f"{perturbation.values[column - 1]}", fontsize=7, labelpad=2)
        axes[row][0].set_ylabel(f"{name}\n({perturbation.code})", fontsize=8)
    fig.suptitle("DeeperForensics-1.0 perturbations (value under each tile)", fontsize=9)
    fig.tight_layout()
    [out] = save_figure(fig, out, suffixes=(Path(out).suffix,))
    plt.close(fig)
    return out
