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
from ..files import differing, write_json_atomic
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
    norm = dict(mean=model.config.mean, std=model.config.std, val_fraction=data.val_fraction, crop_box=data.crop_box)
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
    return {k: v for k, v in differing(saved, _flat_settings(config)).items() if k not in RESUMABLE_CHANGES}


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


def _optimizer(config: TrainConfig, model: HCSINet) -> tuple[torch.optim.Optimizer, SAM | None]:
    """AdamW, or SGD wrapped in SAM, over two parameter groups when optim.vit_lr_scale is not 1: the transformer
    stream's parameters at lr × vit_lr_scale, every other parameter at lr."""
    o = config.optim
    groups: list[dict[str, Any]] = [{"params": list(model.parameters())}]
    if o.vit_lr_scale != 1.0 and model.vit is not None:
        vit = {id(p) for p in model.vit.parameters()}
        groups = [{"params": [p for p in model.parameters() if id(p) not in vit]},
                  {"params": list(model.vit.parameters()), "lr": o.lr * o.vit_lr_scale}]
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay), None
    base = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
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
    """The run itself: set up (or resume), then per epoch train and validate, until done or asked to stop."""
    _check_run_dir(Path(config.run.out), config)
    trainer = Trainer(config, ctx)
    trainer.resume()
    trainer.wrap_model()
    status = "finished"
    log = RunLog(trainer.run_dir, ctx.is_main, trainer.progress.global_step)
    try:
        with StopRequest() as stop:
            for epoch in range(trainer.progress.epoch, config.schedule.epochs):
                if not trainer.train_one_epoch(epoch, stop, log, progress_bar):
                    trainer.save_state()
                    status = "interrupted"
                    break
                trainer.end_epoch(epoch, log)
    finally:
        log.close()  # also when a step raises: the log file is flushed and closed
    return trainer.finish(status)


def _seed_everything(seed: int, deterministic: bool) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False


def _steps_per_epoch(config: TrainConfig, train_set: SBIDataset, world_size: int) -> int:
    run = config.run
    steps = len(train_set) // (run.batch_pairs * world_size)
    if steps == 0:
        raise ValueError(f"{config.data.store}: split {config.data.train_split!r} has {len(train_set)} faces, fewer "
                         f"than one step of run.batch_pairs={run.batch_pairs} × {world_size} process(es)")
    return steps if run.max_steps_per_epoch is None else min(steps, run.max_steps_per_epoch)


class Trainer:
    """Everything one run holds between steps, built from its config: the model (and the DDP/compiled wrapper that
    runs it), optimizer, schedule, loss and batch augmentations, the datasets, the progress and the checkpoints.

    `_train` drives it: `resume()` and `wrap_model()`, then per epoch `train_one_epoch` and `end_epoch`, then `finish`.
    """

    def __init__(self, config: TrainConfig, ctx: Distributed) -> None:
        run = config.run
        self.config, self.ctx = config, ctx
        self.run_dir = Path(run.out)
        self.device = device = ctx.device
        _seed_everything(run.seed + ctx.rank, run.deterministic)
        self.model = build_training_model(config)
        self.train_set, self.val_set = build_datasets(config, self.model)
        self.steps_per_epoch = _steps_per_epoch(config, self.train_set, ctx.world_size)
        if ctx.is_main and not (self.run_dir / "config.yaml").is_file():  # once model and data are known to work
            save_config(config, self.run_dir / "config.yaml")

        self.channels_last = run.channels_last and device.type == "cuda"
        self.model.to(device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer, self.sam = _optimizer(config, self.model)
        self.scheduler = linear_decay_scheduler(self.optimizer, self.steps_per_epoch, config.schedule)
        self.scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and run.amp == "fp16")
        self.progress = Progress()
        self.last_metrics: dict[str, float] = {}
        self.first_losses: list[float] = []
        self.mixup, self.criterion, self.erasing = _batch_augmentations(config, self.model, device)
        self.selection = {"split": config.data.val_split, "store": str(config.data.store),
                          "metric": "frame-level ROC-AUC on SBI fakes of the split's real faces (never a target "
                                    "test set)"}
        self.training_crop = {"box": self.train_set.crop_box, "asked": config.data.crop_box,
                              "faces": len(self.train_set)}  # which rule cut the crops (docs/protocol.md)
        if ctx.is_main:
            rule = ("each face's stored RetinaFace box (SBI's sbi.py)" if self.train_set.crop_box == "retinaface"
                    else "hcsi's face box (detector ∪ landmarks)")
            print(f"training crops are cut around {rule}: data.crop_box={config.data.crop_box}, "
                  f"{len(self.train_set)} training faces", file=sys.stderr, flush=True)
        self.top_k = TopKCheckpoints(self.run_dir / "checkpoints", run.keep_top_k, self.selection)
        self.commit = git_commit()
        self.sampler = DistributedSampler(self.train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                          seed=run.seed, drop_last=True)

    # --- state ---

    def resume(self) -> None:
        """Load the latest resume state of the run folder, if any."""
        ctx, run_dir = self.ctx, self.run_dir
        resume_dir = latest_resume_state(run_dir)
        if resume_dir is not None:
            load_checkpoint(self.model, resume_dir / "model.safetensors")
            state = load_training_state(resume_dir)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            rng_states = state["rng"]
            restore_rng(rng_states[ctx.rank] if len(rng_states) == ctx.world_size else rng_states[0])
            self.progress = Progress(**state["progress"])
            self.last_metrics = state.get("last_val", {})
            if ctx.is_main:
                progress = self.progress
                where = ("finished: nothing left to train" if progress.epoch >= self.config.schedule.epochs else
                         f"at epoch {progress.epoch + 1}, step {progress.step_in_epoch} of {self.steps_per_epoch}")
                print(f"resuming {run_dir} ({progress.global_step} steps done) {where}", file=sys.stderr, flush=True)

    def wrap_model(self) -> None:
        """`net`, what the steps run: the model, wrapped for DDP and torch.compile when the run asks for them. Call it
        after `resume`, so that DDP starts from the loaded weights."""
        ctx = self.ctx
        self.net: nn.Module = self.model
        if ctx.enabled:
            device = self.device
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        if self.config.run.compile:
            self.net = torch.compile(self.net)
        self.net.train()

    def save_state(self) -> None:
        """Write a resume state (model, optimizer, schedule, scaler, every rank's RNG, progress); all ranks call it."""
        rng_states = self.ctx.gather([capture_rng()])
        if self.ctx.is_main:
            state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "scaler": self.scaler.state_dict(), "rng": rng_states, "progress": vars(self.progress),
                     "last_val": self.last_metrics}
            save_resume_state(self.run_dir, self.model, state,
                              {**vars(self.progress), "model": self.model.config.name, "git_commit": self.commit})
        self.ctx.barrier()

    def metadata(self, epoch: int) -> dict[str, Any]:
        """What a checkpoint of the current state, after `epoch` epochs, records about itself."""
        return {"model": self.model.config.name, "epoch": epoch, "step": self.progress.global_step,
                "metrics": self.last_metrics, "seed": self.config.run.seed, "git_commit": self.commit,
                "selected_on": self.selection, "training_crop": self.training_crop,
                "train_config": self.config.to_dict()}

    # --- one step ---

    def _loss(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with _autocast(self.config, self.device):
            logits = self.net(images)
        return self.criterion(logits.float(), targets)

    def _clip_gradients(self) -> None:
        if self.config.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Augment the batch (random erasing, MixUp/CutMix), one SAM or AdamW update, one schedule step; the loss."""
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.erasing is not None:
            images = self.erasing(images)
        targets = labels
        if self.mixup is not None:
            images, targets = self.mixup(images, labels)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        loss = self._loss(images, targets)
        if self.sam is not None:
            loss.backward()
            self.sam.first_step()
            self._loss(images, targets).backward()
            self._clip_gradients()
            self.sam.second_step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            self._clip_gradients()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return loss.item()

    # --- one epoch ---

    def _epoch_loader(self, epoch: int, start: int) -> DataLoader:
        """This epoch's training batches from step `start` on (the epoch's shuffle does not depend on `start`)."""
        run = self.config.run
        self.train_set.set_epoch(epoch)
        self.train_set.reset_redrawn_samples()
        self.sampler.set_epoch(epoch)
        indices = list(self.sampler)[: self.steps_per_epoch * run.batch_pairs]
        return DataLoader(self.train_set, batch_size=run.batch_pairs, sampler=indices[start * run.batch_pairs:],
                          num_workers=self.config.data.workers, collate_fn=sbi_collate, drop_last=True,
                          pin_memory=self.config.data.pin_memory and self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(run.seed))

    def train_one_epoch(self, epoch: int, stop: StopRequest, log: RunLog, progress_bar: bool) -> bool:
        """Train the rest of `epoch`, logging every LOG_EVERY_STEPS steps and saving a resume state every
        run.save_every_steps; False when a stop was requested (the caller saves the state)."""
        ctx, run, epochs = self.ctx, self.config.run, self.config.schedule.epochs
        start = self.progress.step_in_epoch
        batches = iter(self._epoch_loader(epoch, start))
        bar = tqdm(total=self.steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{epochs}",
                   disable=not (progress_bar and ctx.is_main), dynamic_ncols=True, leave=False)
        images_per_step = 2 * run.batch_pairs * ctx.world_size
        window_losses: list[float] = []
        window_start = time.perf_counter()
        for step_in_epoch in range(start, self.steps_per_epoch):
            try:
                images, labels = next(batches)
            except Exception:
                if stop.requested:  # Ctrl-C also reached the loader's worker processes
                    break
                raise
            loss = self.train_step(images, labels)
            if not math.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss} at epoch {epoch + 1}, step "
                                         f"{self.progress.global_step + 1}; lower optim.lr or set optim.grad_clip")
            self.progress = Progress(epoch, step_in_epoch + 1, self.progress.global_step + 1)
            window_losses.append(loss)
            if len(self.first_losses) < LOG_EVERY_STEPS:
                self.first_losses.append(loss)
            lr = self.optimizer.param_groups[0]["lr"]
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            if self.progress.global_step % LOG_EVERY_STEPS == 0 or step_in_epoch + 1 == self.steps_per_epoch:
                speed = images_per_step * len(window_losses) / max(time.perf_counter() - window_start, 1e-9)
                bar.set_postfix(loss=f"{np.mean(window_losses):.4f}", lr=f"{lr:.2e}", img_s=f"{speed:.1f}")
                log.write(epoch=epoch + 1, step=self.progress.global_step, kind="train",
                          loss=f"{np.mean(window_losses):.6f}", lr=f"{lr:.6g}", images_per_s=f"{speed:.2f}")
                window_losses, window_start = [], time.perf_counter()
            if ctx.any(stop.requested):
                break
            if self.progress.global_step % run.save_every_steps == 0:
                self.save_state()
        bar.close()
        return not ctx.any(stop.requested)

    def end_epoch(self, epoch: int, log: RunLog) -> None:
        """Validate on the SBI split, keep the checkpoint if it is among the top k, log, save a resume state."""
        ctx = self.ctx
        redrawn = sum(ctx.gather([self.train_set.redrawn_samples]))  # SBI synthesis failures, drawn again
        self.last_metrics = metrics = validate(self.model, self.val_set, self.config, ctx)
        epochs = self.config.schedule.epochs
        if ctx.is_main:
            self.top_k.consider(self.model, self.metadata(epoch + 1))
            log.write(epoch=epoch + 1, step=self.progress.global_step, kind="val", val_auc=f"{metrics['val_auc']:.6f}",
                      val_loss=f"{metrics['val_loss']:.6f}", redrawn_samples=redrawn)
            print(f"epoch {epoch + 1}/{epochs}: SBI val AUC {metrics['val_auc']:.4f} "
                  f"(loss {metrics['val_loss']:.4f}, {metrics['val_images']} images)"
                  + (f"; {redrawn} training samples drawn again after a failed synthesis" if redrawn else ""),
                  flush=True)
        self.progress = Progress(epoch + 1, 0, self.progress.global_step)
        self.save_state()

    def finish(self, status: str) -> dict[str, Any]:
        """Write final.safetensors (when finished) and summary.json; return the summary."""
        run_dir, progress = self.run_dir, self.progress
        summary = {"status": status, "run_dir": str(run_dir), "epochs_done": progress.epoch,
                   "global_step": progress.global_step, "steps_per_epoch": self.steps_per_epoch,
                   "last_val": self.last_metrics, "first_train_losses": self.first_losses,
                   "best_checkpoint": str(run_dir / "checkpoints" / "best.safetensors") if self.top_k.entries else None,
                   "top_k": self.top_k.entries, "git_commit": self.commit}
        if self.ctx.is_main and status == "finished":
            metadata = self.metadata(progress.epoch)
            save_checkpoint(self.model, run_dir / "final.safetensors", {"metadata": json.dumps(metadata)})
            write_json_atomic(run_dir / "final.json", metadata, indent=1)
        if self.ctx.is_main:
            write_json_atomic(run_dir / "summary.json", summary, indent=1)
        return summary


def _batch_augmentations(config: TrainConfig, model: HCSINet,
                         device: torch.device) -> tuple[Mixup | None, nn.Module, RandomErasing | None]:
    """(MixUp/CutMix or None, the loss that fits it, random erasing or None) from config.augment."""
    a = config.augment
    mixup = None
    if a.mixup_alpha > 0 or a.cutmix_alpha > 0:
        mixup = Mixup(mixup_alpha=a.mixup_alpha, cutmix_alpha=a.cutmix_alpha, prob=a.mix_prob,
                      label_smoothing=a.label_smoothing, num_classes=model.config.num_classes)
        criterion: nn.Module = SoftTargetCrossEntropy()
    else:
        criterion = nn.CrossEntropyLoss(label_smoothing=a.label_smoothing)
    erasing = RandomErasing(a.random_erasing, mode="pixel", device=str(device)) if a.random_erasing > 0 else None
    return mixup, criterion, erasing
