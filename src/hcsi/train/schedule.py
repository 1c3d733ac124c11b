"""Learning-rate schedules of both recipes: constant, then a linear fall to 0 (SBI: over the last quarter of the
epochs, stepped per epoch; paper's stage 2: over the whole run), with an optional linear warm-up."""
from __future__ import annotations

import torch

from .config import ScheduleSection


def lr_factor(step: int, steps_per_epoch: int, schedule: ScheduleSection) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based)."""
    epoch_progress = step / steps_per_epoch
    if schedule.per == "epoch":
        epoch_progress = float(int(epoch_progress))
    decay_begins = schedule.decay_start * schedule.epochs
    factor = 1.0
    if decay_begins < schedule.epochs and epoch_progress >= decay_begins:
        factor = max(0.0, (schedule.epochs - epoch_progress) / (schedule.epochs - decay_begins))
    if schedule.warmup_steps > 0:
        factor *= min(1.0, (step + 1) / schedule.warmup_steps)
    return factor


def linear_decay_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                           schedule: ScheduleSection) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps_per_epoch, schedule))
