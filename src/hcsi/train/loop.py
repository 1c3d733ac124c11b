"""`train(config)`: one training run of either recipe stage, resumable, on one process or under torchrun (DDP).

Per step: 16 real/SBI pairs → (stage 2) random erasing, MixUp/CutMix → loss → SGD+SAM or AdamW (AMP on CUDA) →
lr schedule. Per epoch: frame-level ROC-AUC on the SBI validation split, top-k checkpoints by it, resume state.
"""
from __future__ import annotations

import csv
import json
import math
import random
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from timm.data import Mixup
from timm.data.random_erasing import RandomErasing
from timm.loss import SoftTargetCrossEntropy
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..data.augment import PostProcessingAugmentation
from ..data.sbi_dataset import VALIDATION_SEED, SBIDataset, sbi_collate
from ..files import write_json_atomic
from ..models import HCSINet, build_model, get_config, load_checkpoint, save_checkpoint
from ..models.backbones import PretrainedWeightsUnavailable
from .checkpoints import (
    TopKCheckpoints,
    capture_rng,
    git_commit,
    latest_resume_state,
    load_training_state,
    restore_rng,
    save_resume_state,
)
from .config import TrainConfig, config_from_dict, load_config, save_config
from ..distributed import Distributed, setup_distributed, shutdown_distributed
from .sam import SAM
from .schedule import linear_decay_scheduler

LOG_EVERY_STEPS = 10
LOG_FIELDS = ["time", "epoch", "step", "kind", "loss", "lr", "images_per_s", "val_auc", "val_loss",
              "redrawn_samples"]


class StopRequest:
    """SIGINT / SIGTERM ask the run to stop after the current step (with a resume state); a second SIGINT stops
    at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class RunLog:
    """log.csv (always) and TensorBoard event files (when the tensorboard package is installed); rank 0 only."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int) -> None:
        self.enabled = enabled
        self.path = run_dir / "log.csv"
        self.writer = None
        if not enabled:
            return
        rows = []
        if self.path.is_file():  # drop rows past the resume point: those steps run again
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1)
        except ImportError:
            pass

    def write(self, **row: Any) -> None:
        if not self.enabled:
            return
        row["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS).writerow({k: row.get(k, "") for k in LOG_FIELDS})
        if self.writer is not None:
            for key in ("loss", "lr", "images_per_s", "val_auc", "val_loss"):
                if row.get(key) not in (None, ""):
                    self.writer.add_scalar(f"{row['kind']}/{key}", float(row[key]), int(row["step"]))
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Progress:
    epoch: int = 0  # epoch in progress (0-based)
    step_in_epoch: int = 0  # optimizer steps already taken in it
    global_step: int = 0


def build_training_model(config: TrainConfig) -> HCSINet:
    """The model of `config.model`, with its initial weights (ImageNet, stage-1 streams or a full checkpoint).

    ImageNet weights are fetched only for streams that no file initialises; when they cannot be had, the error
    names the config keys that give weight files instead."""
    m = config.model
    files = {k: v for k, v in {"cnn": m.init_cnn, "vit": m.init_vit}.items() if v}
    variant = get_config(m.name)
    streams = [s for s in ("cnn", "vit") if getattr(variant, s)]
    pretrained = m.pretrained and not m.init_checkpoint and any(s not in files for s in streams)
    try:
        return build_model(m.name, pretrained=pretrained, input_size=m.input_size, backbone_weights=files,
                           checkpoint=m.init_checkpoint)
    except PretrainedWeightsUnavailable as error:
        keys = " and ".join(f"model.init_{s}=FILE" for s in streams if s not in files)
        raise RuntimeError(
            f"model.pretrained is true, but the ImageNet weights of {error.name!r} could not be loaded "
            f"({error.reason}): set {keys} (a timm state dict of the backbone or a stage-1 checkpoint), "
            "e.g. as `key=value` after the config on the command line, or model.pretrained=false") from error


def build_datasets(config: TrainConfig, model: HCSINet) -> tuple[SBIDataset, SBIDataset]:
    data = config.data
    if not data.store:
        raise ValueError("training config: data.store is empty; set it to the --out folder of `hcsi preprocess`")
    sbi = config.sbi_config(config.model.input_size)
    norm = dict(mean=model.config.mean, std=model.config.std, val_fraction=data.val_fraction)
    augmentation = PostProcessingAugmentation(config.augment.post_processing_p) if config.augment.post_processing \
        else None
    train_set = SBIDataset(data.store, data.train_split, data.frames_per_video, train=True, config=sbi,
                           seed=config.run.seed, pair_augmentation=augmentation, **norm)
    val_set = SBIDataset(data.store, data.val_split, data.val_frames_per_video, train=False, config=sbi,
                         seed=VALIDATION_SEED, **norm)
    return train_set, val_set


# Settings that change how a run executes but not what it trains: a resumed run may change them.
RESUMABLE_CHANGES = frozenset({"data.workers", "data.pin_memory", "run.device", "run.save_every_steps",
                               "run.compile"})


def _flat_settings(config: TrainConfig) -> dict[str, Any]:
    """{"section.key": value} of a config ("sbi.<field>" for the SBI settings)."""
    return {f"{section}.{key}": value for section, values in config.to_dict().items() for key, value in values.items()}


def run_dir_mismatch(run_dir: Path, config: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """{setting: (recorded in run_dir/config.yaml, asked for now)} for every setting that may not change when the
    run in `run_dir` is resumed; empty when the folder holds no run yet or the settings agree."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return {}
    import yaml

    saved = _flat_settings(config_from_dict(yaml.safe_load(saved_path.read_text()), str(saved_path)))
    now = _flat_settings(config)
    return {k: (saved.get(k), now.get(k)) for k in sorted(saved.keys() | now.keys())
            if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k)}


def next_free_run_dir(run_dir: Path) -> Path:
    """`run_dir` when it holds no run yet, else the first of <run_dir>-2, -3, ... that holds none."""
    candidate, n = run_dir, 1
    while (candidate / "config.yaml").exists():
        n += 1
        candidate = run_dir.with_name(f"{run_dir.name}-{n}")
    return candidate


def _check_run_dir(run_dir: Path, config: TrainConfig) -> None:
    """A run folder belongs to one set of settings: a rerun resumes it (or reports it finished) only with the same
    ones, so that the weights in it were trained with what its config.yaml says."""
    changed = run_dir_mismatch(run_dir, config)
    if changed:
        differences = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in changed.items())
        raise ValueError(
            f"{run_dir} holds a run made with other settings ({differences}). Rerun with the settings of "
            f"{run_dir / 'config.yaml'} to resume it, add --new-run to train into {next_free_run_dir(run_dir)}, "
            "or set run.out to another folder")


def _autocast(config: TrainConfig, device: torch.device):
    if device.type != "cuda" or config.run.amp == "none":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if config.run.amp == "bf16" else torch.float16)


@torch.no_grad()
def validate(model: nn.Module, val_set: SBIDataset, config: TrainConfig, ctx: Distributed) -> dict[str, float]:
    """Frame-level ROC-AUC (fake = positive, score = softmax probability of "fake") and mean cross-entropy on the
    SBI validation split. Every rank scores a disjoint share of the pairs (no padding), results are gathered."""
    batch = config.run.batch_pairs
    count = len(val_set)
    if config.run.max_val_batches is not None:
        count = min(count, config.run.max_val_batches * batch * ctx.world_size)
    indices = list(range(ctx.rank, count, ctx.world_size))
    loader = DataLoader(val_set, batch_size=batch, sampler=indices, num_workers=config.data.workers,
                        collate_fn=sbi_collate, pin_memory=config.data.pin_memory and ctx.device.type == "cuda")
    was_training = model.training
    model.eval()
    records: list[tuple[int, int, float]] = []
    position = 0
    for images, labels in loader:
        images = images.to(ctx.device, non_blocking=True)
        with _autocast(config, ctx.device):
            probabilities = model(images).float().softmax(dim=1)[:, 1].cpu().tolist()
        n = len(labels) // 2
        for j in range(n):
            pair = indices[position + j]
            records += [(pair, 0, probabilities[j]), (pair, 1, probabilities[n + j])]
        position += n
    model.train(was_training)
    records = sorted(set(ctx.gather(records)))
    labels = np.array([r[1] for r in records])
    scores = np.clip(np.array([r[2] for r in records]), 1e-7, 1 - 1e-7)
    loss = -np.mean(labels * np.log(scores) + (1 - labels) * np.log(1 - scores))
    return {"val_auc": float(roc_auc_score(labels, scores)), "val_loss": float(loss), "val_images": len(records)}


def _optimizer(config: TrainConfig, model: nn.Module) -> tuple[torch.optim.Optimizer, SAM | None]:
    o = config.optim
    if o.name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay), None
    base = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return base, SAM(base, o.sam_rho)


def train(config: TrainConfig | str | Path, overrides: list[str] = (), progress_bar: bool = True,
          new_run: bool = False) -> dict[str, Any]:
    """Run (or resume) the training described by `config`; returns the run summary (also in run.out/summary.json).

    The summary's "status" is "finished" or "interrupted" (a resume state was written; rerun to continue). A rerun
    into a folder that holds a run made with other settings is refused (`RESUMABLE_CHANGES` may differ); with
    `new_run`, a folder that already holds a run is left alone and the run goes to the next free <run.out>-N.
    """
    if not isinstance(config, TrainConfig):
        config = load_config(config, list(overrides))
    ctx = setup_distributed(config.run.device)
    try:
        if new_run:
            chosen = next_free_run_dir(Path(config.run.out)) if ctx.is_main else None
            config.run.out = str(ctx.gather([chosen])[0])  # every process writes to the folder rank 0 chose
        return _train(config, ctx, progress_bar)
    finally:
        shutdown_distributed(ctx)


def _train(config: TrainConfig, ctx: Distributed, progress_bar: bool) -> dict[str, Any]:
    run = config.run
    run_dir = Path(run.out)
    _check_run_dir(run_dir, config)
    seed = run.seed + ctx.rank
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    if run.deterministic:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False

    model = build_training_model(config)
    train_set, val_set = build_datasets(config, model)
    steps_per_epoch = len(train_set) // (run.batch_pairs * ctx.world_size)
    if steps_per_epoch == 0:
        raise ValueError(f"{config.data.store}: split {config.data.train_split!r} has {len(train_set)} faces, fewer "
                         f"than one step of run.batch_pairs={run.batch_pairs} × {ctx.world_size} process(es)")
    if run.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, run.max_steps_per_epoch)
    if ctx.is_main and not (run_dir / "config.yaml").is_file():  # only once model and data are known to work
        save_config(config, run_dir / "config.yaml")

    device = ctx.device
    channels_last = run.channels_last and device.type == "cuda"
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer, sam = _optimizer(config, model)
    scheduler = linear_decay_scheduler(optimizer, steps_per_epoch, config.schedule)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and run.amp == "fp16")

    progress = Progress()
    last_metrics: dict[str, float] = {}
    resume_dir = latest_resume_state(run_dir)
    if resume_dir is not None:
        load_checkpoint(model, resume_dir / "model.safetensors")
        state = load_training_state(resume_dir)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        rng_states = state["rng"]
        restore_rng(rng_states[ctx.rank] if len(rng_states) == ctx.world_size else rng_states[0])
        progress = Progress(**state["progress"])
        last_metrics = state.get("last_val", {})
        if ctx.is_main:
            where = ("finished: nothing left to train" if progress.epoch >= config.schedule.epochs else
                     f"at epoch {progress.epoch + 1}, step {progress.step_in_epoch} of {steps_per_epoch}")
            print(f"resuming {run_dir} ({progress.global_step} steps done) {where}", file=sys.stderr, flush=True)

    net: nn.Module = model
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if run.compile:
        net = torch.compile(net)

    a = config.augment
    mixup = None
    if a.mixup_alpha > 0 or a.cutmix_alpha > 0:
        mixup = Mixup(mixup_alpha=a.mixup_alpha, cutmix_alpha=a.cutmix_alpha, prob=a.mix_prob,
                      label_smoothing=a.label_smoothing, num_classes=model.config.num_classes)
        criterion: nn.Module = SoftTargetCrossEntropy()
    else:
        criterion = nn.CrossEntropyLoss(label_smoothing=a.label_smoothing)
    erasing = RandomErasing(a.random_erasing, mode="pixel", device=str(device)) if a.random_erasing > 0 else None

    selection = {"split": config.data.val_split, "store": str(config.data.store),
                 "metric": "frame-level ROC-AUC on SBI fakes of the split's real faces (never a target test set)"}
    top_k = TopKCheckpoints(run_dir / "checkpoints", run.keep_top_k, selection)
    log = RunLog(run_dir, ctx.is_main, progress.global_step)
    commit = git_commit()

    def metadata(epoch: int, step: int, metrics: dict[str, float]) -> dict[str, Any]:
        return {"model": model.config.name, "epoch": epoch, "step": step, "metrics": metrics, "seed": run.seed,
                "git_commit": commit, "selected_on": selection, "train_config": config.to_dict()}

    def save_resume(p: Progress) -> None:
        rng_states = ctx.gather([capture_rng()])
        if ctx.is_main:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "rng": rng_states, "progress": vars(p),
                     "last_val": last_metrics}
            save_resume_state(run_dir, model, state, {**vars(p), "model": model.config.name,
                                                      "git_commit": commit})
        ctx.barrier()

    def loss_of(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with _autocast(config, device):
            logits = net(images)
        return criterion(logits.float(), targets)

    def clip() -> None:
        if config.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)

    def train_step(images: torch.Tensor, labels: torch.Tensor) -> float:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if erasing is not None:
            images = erasing(images)
        targets = labels
        if mixup is not None:
            images, targets = mixup(images, labels)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        loss = loss_of(images, targets)
        if sam is not None:
            loss.backward()
            sam.first_step()
            loss_of(images, targets).backward()
            clip()
            sam.second_step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            clip()
            scaler.step(optimizer)
            scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        return loss.item()

    first_losses: list[float] = []
    status = "finished"
    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=run.seed, drop_last=True)
    images_per_step = 2 * run.batch_pairs * ctx.world_size
    net.train()
    try:
        with StopRequest() as stop:
            for epoch in range(progress.epoch, config.schedule.epochs):
                train_set.set_epoch(epoch)
                train_set.reset_redrawn_samples()
                sampler.set_epoch(epoch)
                indices = list(sampler)[: steps_per_epoch * run.batch_pairs]
                start = progress.step_in_epoch
                loader = DataLoader(train_set, batch_size=run.batch_pairs, sampler=indices[start * run.batch_pairs:],
                                    num_workers=config.data.workers, collate_fn=sbi_collate, drop_last=True,
                                    pin_memory=config.data.pin_memory and device.type == "cuda",
                                    generator=torch.Generator().manual_seed(run.seed))
                bar = tqdm(total=steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{config.schedule.epochs}",
                           disable=not (progress_bar and ctx.is_main), dynamic_ncols=True, leave=False)
                window_losses: list[float] = []
                window_start = time.perf_counter()
                batches = iter(loader)
                for step_in_epoch in range(start, steps_per_epoch):
                    try:
                        images, labels = next(batches)
                    except Exception:
                        if stop.requested:  # Ctrl-C also reached the loader's worker processes
                            break
                        raise
                    loss = train_step(images, labels)
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"training loss became {loss} at epoch {epoch + 1}, step "
                                                 f"{progress.global_step + 1}; lower optim.lr or set optim.grad_clip")
                    progress = Progress(epoch, step_in_epoch + 1, progress.global_step + 1)
                    window_losses.append(loss)
                    if len(first_losses) < LOG_EVERY_STEPS:
                        first_losses.append(loss)
                    lr = optimizer.param_groups[0]["lr"]
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                    if progress.global_step % LOG_EVERY_STEPS == 0 or step_in_epoch + 1 == steps_per_epoch:
                        elapsed = time.perf_counter() - window_start
                        speed = images_per_step * len(window_losses) / max(elapsed, 1e-9)
                        bar.set_postfix(loss=f"{np.mean(window_losses):.4f}", lr=f"{lr:.2e}", img_s=f"{speed:.1f}")
                        log.write(epoch=epoch + 1, step=progress.global_step, kind="train",
                                  loss=f"{np.mean(window_losses):.6f}", lr=f"{lr:.6g}", images_per_s=f"{speed:.2f}")
                        window_losses, window_start = [], time.perf_counter()
                    if ctx.any(stop.requested):
                        break
                    if progress.global_step % run.save_every_steps == 0:
                        save_resume(progress)
                bar.close()
                if ctx.any(stop.requested):
                    save_resume(progress)
                    status = "interrupted"
                    break
                redrawn = sum(ctx.gather([train_set.redrawn_samples]))  # SBI synthesis failures, drawn again
                last_metrics = validate(model, val_set, config, ctx)
                if ctx.is_main:
                    top_k.consider(model, metadata(epoch + 1, progress.global_step, last_metrics))
                    log.write(epoch=epoch + 1, step=progress.global_step, kind="val",
                              val_auc=f"{last_metrics['val_auc']:.6f}", val_loss=f"{last_metrics['val_loss']:.6f}",
                              redrawn_samples=redrawn)
                    print(f"epoch {epoch + 1}/{config.schedule.epochs}: SBI val AUC {last_metrics['val_auc']:.4f} "
                          f"(loss {last_metrics['val_loss']:.4f}, {last_metrics['val_images']} images)"
                          + (f"; {redrawn} training samples drawn again after a failed synthesis" if redrawn else ""),
                          flush=True)
                progress = Progress(epoch + 1, 0, progress.global_step)
                save_resume(progress)
    finally:
        log.close()  # also when a step raises: the log file is flushed and closed

    summary = {"status": status, "run_dir": str(run_dir), "epochs_done": progress.epoch,
               "global_step": progress.global_step, "steps_per_epoch": steps_per_epoch,
               "last_val": last_metrics, "first_train_losses": first_losses,
               "best_checkpoint": str(run_dir / "checkpoints" / "best.safetensors") if top_k.entries else None,
               "top_k": top_k.entries, "git_commit": commit}
    if ctx.is_main and status == "finished":
        save_checkpoint(model, run_dir / "final.safetensors",
                        {"metadata": json.dumps(metadata(progress.epoch, progress.global_step, last_metrics))})
        write_json_atomic(run_dir / "final.json", metadata(progress.epoch, progress.global_step, last_metrics),
                          indent=1)
    if ctx.is_main:
        write_json_atomic(run_dir / "summary.json", summary, indent=1)
    return summary


