"""Training configuration: typed sections read from YAML, with `key=value` overrides from the command line.

The defaults are the paper's stage-2 recipe (HCSI-Net fine-tuning); `configs/stage1_*.yaml` switch to SBI's stage-1
recipe. Where the paper is silent the comment says what was chosen; docs/protocol.md ("Training") gives the reasons.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from ..data.sbi_dataset import CROP_BOXES
from ..sbi import SBIConfig


@dataclass
class ModelSection:
    name: str = "hcsi_net"  # a registered model (hcsi.models.list_models())
    input_size: int = 224  # face-crop side in pixels (paper: 224; SBI's stage 1: 380 with B4)
    pretrained: bool = False  # ImageNet backbone weights through timm (needs the internet or a filled cache)
    init_cnn: str | None = None  # weights for the CNN stream: a stage-1 checkpoint or a timm state dict
    init_vit: str | None = None  # weights for the transformer stream, likewise
    init_checkpoint: str | None = None  # a full checkpoint of the same model to start from


@dataclass
class DataSection:
    store: str = ""  # output folder of `hcsi preprocess` (real faces of FF++ for the paper's recipe)
    train_split: str = "train"
    val_split: str = "val"
    val_fraction: float = 0.0  # for stores without splits (`--dataset folder`): share of videos held out for val
    frames_per_video: int = 8  # SBI: 8 evenly spaced frames of every training video
    val_frames_per_video: int = 8
    crop_box: str = "auto"  # training crops cut around: retinaface (the store's RetinaFace box, SBI), face, or auto
    workers: int = 4  # data-loading processes per training process (0: load in the training process)
    pin_memory: bool = True


@dataclass
class OptimSection:
    name: str = "adamw"  # adamw (paper's stage 2) | sam_sgd (SBI's recipe, stage 1)
    lr: float = 3e-5  # paper: AdamW 3e-5; SBI: 1e-3
    weight_decay: float = 1e-4  # paper: 1e-4; SBI: 0
    momentum: float = 0.9  # SGD momentum (sam_sgd only)
    sam_rho: float = 0.05  # SAM neighbourhood radius (sam_sgd only; SBI keeps SAM's default 0.05)
    grad_clip: float | None = None  # max gradient norm; None: no clipping (neither paper nor SBI clips)
    vit_lr_scale: float = 1.0  # the transformer stream's lr as a multiple of lr (both recipes: 1, one lr for all)


@dataclass
class ScheduleSection:
    epochs: int = 20  # paper: not given; 20 epochs of 360 steps (see docs/protocol.md)
    decay_start: float = 0.0  # fraction of the epochs after which the lr falls linearly to 0 (SBI: 0.75; paper: 0)
    per: str = "step"  # lr updated every "step" or every "epoch" (SBI steps its schedule per epoch)
    warmup_steps: int = 0  # linear warm-up from 0 (neither recipe warms up)


@dataclass
class AugmentSection:
    post_processing: bool = True  # paper's stage 2: resampling / blur / noise / JPEG and photometric jitter
    post_processing_p: float = 0.5  # probability of the distortion group and of the photometric group, each
    mixup_alpha: float = 0.2  # MixUp Beta(α, α); 0 disables (paper: MixUp used, α not given)
    cutmix_alpha: float = 1.0  # CutMix Beta(α, α); 0 disables (paper: CutMix used, α not given)
    mix_prob: float = 0.5  # share of batches that get MixUp or CutMix
    label_smoothing: float = 0.1  # "mild label smoothing"
    random_erasing: float = 0.25  # probability per image (timm RandomErasing, per-pixel noise)


@dataclass
class RunSection:
    out: str = "runs/hcsi_net"  # run folder: checkpoints, log, resolved config; rerunning resumes from it
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_pairs: int = 16  # real/fake pairs per step and process (paper and SBI: 16)
    amp: str = "bf16"  # none | bf16 | fp16 (autocast on CUDA only; the CPU always runs fp32)
    channels_last: bool = True  # on CUDA
    compile: bool = False  # torch.compile the model
    save_every_steps: int = 100  # resumable checkpoint every N steps (and at every epoch end)
    keep_top_k: int = 5  # best checkpoints by SBI validation AUC kept (SBI: 5)
    max_steps_per_epoch: int | None = None  # cut epochs short (quick experiments); None: the whole train split
    max_val_batches: int | None = None  # validate on part of the val split; None: all of it
    deterministic: bool = False  # cuDNN deterministic algorithms (SBI: True; slower)


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    run: RunSection = field(default_factory=RunSection)
    sbi: dict[str, Any] = field(default_factory=dict)  # SBIConfig fields to change (default: SBI's values)

    def __post_init__(self) -> None:
        sbi_fields = {f.name for f in dataclasses.fields(SBIConfig)} - {"image_size"}
        unknown = sorted(set(self.sbi) - sbi_fields)
        if unknown:
            raise KeyError(f"training config: unknown sbi setting(s) {unknown} (sbi.image_size follows "
                           f"model.input_size); known: {', '.join(sorted(sbi_fields))}")
        self.sbi = {k: tuple(v) if isinstance(v, list) else v for k, v in self.sbi.items()}
        self.sbi_config(224)  # SBIConfig checks the values
        checks = [
            (self.optim.name in ("adamw", "sam_sgd"), f"optim.name must be adamw or sam_sgd, got {self.optim.name!r}"),
            (self.schedule.per in ("step", "epoch"), f"schedule.per must be step or epoch, got {self.schedule.per!r}"),
            (0.0 <= self.schedule.decay_start <= 1.0, "schedule.decay_start must be in [0, 1]"),
            (self.schedule.epochs >= 1, "schedule.epochs must be >= 1"),
            (self.run.amp in ("none", "bf16", "fp16"), f"run.amp must be none, bf16 or fp16, got {self.run.amp!r}"),
            (not (self.run.amp == "fp16" and self.optim.name == "sam_sgd"),
             "run.amp=fp16 cannot be combined with optim.name=sam_sgd (SAM's two passes share one loss scale); "
             "use bf16 or none"),
            (self.run.batch_pairs >= 1, "run.batch_pairs must be >= 1"),
            (0.0 <= self.data.val_fraction < 1.0, "data.val_fraction must be in [0, 1)"),
            (self.model.input_size >= 32, f"model.input_size must be at least 32, got {self.model.input_size}"),
            (self.data.frames_per_video >= 1, "data.frames_per_video must be at least 1"),
            (self.data.val_frames_per_video >= 1, "data.val_frames_per_video must be at least 1"),
            (self.data.workers >= 0, "data.workers must be at least 0"),
            (self.data.crop_box in CROP_BOXES,
             f"data.crop_box must be one of {', '.join(CROP_BOXES)}, got {self.data.crop_box!r}"),
            (self.optim.lr > 0, f"optim.lr must be positive, got {self.optim.lr}"),
            (self.optim.weight_decay >= 0, "optim.weight_decay must be at least 0"),
            (0.0 <= self.optim.momentum < 1.0, "optim.momentum must be in [0, 1)"),
            (self.optim.sam_rho > 0, "optim.sam_rho must be positive"),
            (self.optim.vit_lr_scale > 0, f"optim.vit_lr_scale must be positive, got {self.optim.vit_lr_scale}"),
            (self.optim.grad_clip is None or self.optim.grad_clip > 0, "optim.grad_clip must be positive or null"),
            (self.schedule.warmup_steps >= 0, "schedule.warmup_steps must be at least 0"),
            (0.0 <= self.augment.label_smoothing < 1.0, "augment.label_smoothing must be in [0, 1)"),
            (self.augment.mixup_alpha >= 0 and self.augment.cutmix_alpha >= 0,
             "augment.mixup_alpha and augment.cutmix_alpha must be at least 0"),
            (0.0 <= self.augment.post_processing_p <= 1.0, "augment.post_processing_p must lie in [0, 1]"),
            (0.0 <= self.augment.mix_prob <= 1.0, "augment.mix_prob must lie in [0, 1]"),
            (0.0 <= self.augment.random_erasing <= 1.0, "augment.random_erasing must lie in [0, 1]"),
            (self.run.save_every_steps >= 1, "run.save_every_steps must be at least 1"),
            (self.run.keep_top_k >= 1, "run.keep_top_k must be at least 1"),
            (self.run.max_steps_per_epoch is None or self.run.max_steps_per_epoch >= 1,
             "run.max_steps_per_epoch must be at least 1 or null"),
            (self.run.max_val_batches is None or self.run.max_val_batches >= 1,
             "run.max_val_batches must be at least 1 or null"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"training config: {message}")

    def sbi_config(self, image_size: int) -> SBIConfig:
        return SBIConfig(image_size=image_size, **self.sbi)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _parse_value(text: str) -> Any:
    """A command-line value as YAML would read it: numbers, true/false, null, or a string."""
    return yaml.safe_load(text) if text != "" else ""


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """`value` as the field's type: YAML reads 3e-5 as a string and 1 as an int where a float is meant."""
    allowed = typing.get_args(hint) or (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ValueError(f"{where} must not be null")
    for kind in (bool, int, float, str):
        if kind in allowed and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
    try:
        if float in allowed and not isinstance(value, bool):
            return float(value)
        if int in allowed and isinstance(value, str):
            return int(value)
    except ValueError:
        pass
    names = " or ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise ValueError(f"{where} must be {names}, got {value!r}")


def _apply(section_name: str, section: Any, values: dict[str, Any], source: str) -> None:
    hints = get_type_hints(type(section))
    for key, value in values.items():
        if key not in hints:
            known = ", ".join(f.name for f in dataclasses.fields(section))
            raise KeyError(f"{source}: unknown setting {section_name}.{key}; known: {known}")
        setattr(section, key, _coerce(value, hints[key], f"{source}: {section_name}.{key}"))


def config_from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """A TrainConfig from nested {section: {key: value}}; unknown sections or keys are errors, not ignored."""
    config = TrainConfig.__new__(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        setattr(config, f.name, f.default_factory())
    for section_name, values in (data or {}).items():
        if section_name not in {f.name for f in dataclasses.fields(TrainConfig)}:
            raise KeyError(f"{source}: unknown section {section_name!r}; known: model, data, optim, schedule, "
                           "augment, run, sbi")
        if not isinstance(values, dict):
            raise ValueError(f"{source}: section {section_name!r} must be a mapping of settings")
        if section_name == "sbi":
            config.sbi = dict(values)
            continue
        _apply(section_name, getattr(config, section_name), values, source)
    config.__post_init__()
    return config


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML config (None: the defaults) and apply `section.key=value` overrides in order."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config {path} not found")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of sections (model, data, optim, ...)")
    for override in overrides:
        key, sep, value = override.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise ValueError(f"override {override!r}: expected section.key=value, e.g. optim.lr=1e-4")
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise ValueError(f"override {override!r}: {section!r} is not a section")
        data[section][name] = _parse_value(value)
    return config_from_dict(data, str(path) if path is not None else "config")


def save_config(config: TrainConfig, path: str | Path) -> None:
    from ..files import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
