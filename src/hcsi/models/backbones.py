"""timm backbones run stage by stage, so that the cross-stream gates can change what the next stage receives.

`features_only` cannot be used: it does not expose EfficientNet-B4's 272-channel cut of Table I, and it cannot feed a
modified map back into the next stage. Each adapter keeps the unmodified timm model as `self.net` (state-dict keys
stay timm's, prefixed by `net.`) and only decides where a stage starts and ends.
"""
from __future__ import annotations

import socket
from contextlib import contextmanager, nullcontext
from urllib.parse import urlparse

import timm
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from timm.layers.padding import get_same_padding
from timm.models.efficientnet import EfficientNet
from timm.models.swin_transformer import SwinTransformer
from torch import nn

NUM_STAGES = 5


class StagedBackbone(nn.Module):
    """A timm model split into five stages. Subclasses define `run_stage`.

    Attributes:
        net: the timm model, built without its classifier (num_classes=0).
        layout: "nchw" for CNN maps (B×C×H×W), "nhwc" for transformer token grids (B×H×W×C).
        stage_shapes: (channels, height, width) of each stage's output at the configured input size.
    """

    layout: str

    def __init__(self, net: nn.Module, input_size: int) -> None:
        super().__init__()
        self.net = net
        self.input_size = input_size
        self.stage_shapes = self._probe_stage_shapes(input_size)

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """All five stages without interaction: equals `self.net.forward_features(x)`."""
        for index in range(NUM_STAGES):
            x = self.run_stage(index, x)
        return x

    @property
    def num_features(self) -> int:
        return self.stage_shapes[-1][0]

    @property
    def imagenet_head_params(self) -> int:
        """Parameters of the ImageNet classifier timm would attach (the paper's parameter count includes it)."""
        classes = self.net.pretrained_cfg.get("num_classes", 1000)
        return self.num_features * classes + classes

    @torch.no_grad()
    def _probe_stage_shapes(self, input_size: int) -> list[tuple[int, int, int]]:
        was_training = self.training
        self.eval()  # keep BatchNorm running statistics untouched
        x = torch.zeros(1, 3, input_size, input_size)
        shapes = []
        for index in range(NUM_STAGES):
            x = self.run_stage(index, x)
            if self.layout == "nchw":
                shapes.append((x.shape[1], x.shape[2], x.shape[3]))
            else:
                shapes.append((x.shape[3], x.shape[1], x.shape[2]))
        self.train(was_training)
        return shapes


class StagedEfficientNet(StagedBackbone):
    """timm EfficientNet family: stem + blocks[..e1] | ..e2 | ..e3 | ..e4 | rest + conv_head + bn2 (bn1/bn2 include SiLU)."""

    layout = "nchw"

    def __init__(self, net: EfficientNet, input_size: int, stage_ends: tuple[int, ...]) -> None:
        num_blocks = len(net.blocks)
        ends = list(stage_ends) + [num_blocks - 1]
        if any(b <= a for a, b in zip(ends, ends[1:])) or ends[0] < 0 or ends[-2] >= num_blocks - 1:
            raise ValueError(
                f"cnn_stage_ends {tuple(stage_ends)} must increase and leave at least one of the "
                f"{num_blocks} blocks for stage 5"
            )
        starts = [0] + [e + 1 for e in ends[:-1]]
        self.stage_blocks = [list(range(s, e + 1)) for s, e in zip(starts, ends)]
        super().__init__(net, input_size)

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        if index == 0:
            x = net.bn1(net.conv_stem(x))
        for block in self.stage_blocks[index]:
            x = net.blocks[block](x)
        if index == NUM_STAGES - 1:
            x = net.bn2(net.conv_head(x))
        return x


class StagedSwin(StagedBackbone):
    """timm Swin: patch_embed + layers[0] | layers[1] | layers[2] | layers[3] | norm. Token grids stay NHWC."""

    layout = "nhwc"

    def __init__(self, net: SwinTransformer, input_size: int) -> None:
        if len(net.layers) != NUM_STAGES - 1:
            raise ValueError(f"a staged Swin needs 4 layers, this one has {len(net.layers)}")
        super().__init__(net, input_size)

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        if index == 0:
            x = net.patch_embed(x)
        if index < len(net.layers):
            return net.layers[index](x)
        return net.norm(x)


class PretrainedWeightsUnavailable(RuntimeError):
    """timm could not provide ImageNet weights for model `name` (e.g. no network and nothing in the cache)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(
            f"could not load ImageNet weights for {name!r} through timm: {reason}. Without network access, build "
            "with pretrained=False and pass backbone weight files (backbone_weights={'cnn': path, 'vit': path}) or "
            "a full checkpoint.")
        self.name, self.reason = name, reason


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub (where timm's weights live; HF_ENDPOINT) accepts a connection within `timeout`."""
    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def hub_offline():
    """huggingface_hub in offline mode for the block: cached files load, nothing is requested (no retries)."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def create_timm_model(name: str, pretrained: bool, **kwargs) -> nn.Module:
    """timm.create_model without a classifier. For ImageNet weights with the Hub out of reach, only the local cache
    is tried (at once, instead of a minute of retries); a failed load raises PretrainedWeightsUnavailable."""
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE or not hub_reachable()
    try:
        with hub_offline() if offline else nullcontext():
            return timm.create_model(name, pretrained=True, num_classes=0, **kwargs)
    except Exception as error:
        reason = ("the Hugging Face Hub cannot be reached and they are not in its local cache" if offline
                  else str(error))
        raise PretrainedWeightsUnavailable(name, reason) from error


class FixedPadConv2d(nn.Conv2d):
    """A convolution that zero-pads its input by fixed amounts (left, right, top, bottom) and then convolves without
    padding: TensorFlow "same" padding frozen at the values of one input size, as efficientnet_pytorch's
    Conv2dStaticSamePadding does. State-dict keys are those of the nn.Conv2d it replaces."""

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int]) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=0,
                         dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None)
        self.load_state_dict(conv.state_dict())
        self.pads = tuple(int(p) for p in pads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pads))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pads={self.pads}"


def _replace_module(net: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, child, module)


@torch.no_grad()
def freeze_same_padding(net: nn.Module, input_size: int) -> None:
    """Replace every dynamic "same"-padded convolution of `net` (timm's Conv2dSame) by a FixedPadConv2d holding the
    padding it applies to a square input of side `input_size`. At that size nothing changes; at other sizes the
    network pads as efficientnet_pytorch does (static padding computed for its nominal image size)."""
    convs = {name: m for name, m in net.named_modules() if isinstance(m, Conv2dSame)}
    input_sides: dict[str, tuple[int, int]] = {}

    def record_input_side(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            input_sides[name] = tuple(args[0].shape[-2:])
        return hook

    hooks = [m.register_forward_pre_hook(record_input_side(name)) for name, m in convs.items()]
    was_training = net.training
    try:
        net.eval()(torch.zeros(1, 3, input_size, input_size))
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    for name, conv in convs.items():
        height, width = input_sides[name]
        pad_h = get_same_padding(int(height), conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        pad_w = get_same_padding(int(width), conv.kernel_size[1], conv.stride[1], conv.dilation[1])
        pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)  # left, right, top, bottom
        _replace_module(net, name, FixedPadConv2d(conv, pads))


def unpad_stem(net: EfficientNet) -> None:
    """DeepfakeBench's EfficientNet-B4 stem: a plain 3×3 stride-2 convolution without any padding."""
    stem = net.conv_stem
    plain = nn.Conv2d(stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride, padding=0, bias=False)
    plain.load_state_dict(stem.state_dict())
    net.conv_stem = plain


def build_staged_backbone(
    name: str, pretrained: bool, input_size: int, cnn_stage_ends: tuple[int, ...] = (1, 2, 4, 5), *,
    drop_path: float = 0.0, bn_momentum: float | None = None, padding_frozen_at: int | None = None,
    stem: str = "timm",
) -> StagedBackbone:
    """Build timm model `name` and wrap it in the stage adapter of its family (the timm module that defines it).

    Args:
        name: timm model name, optionally with a pretrained tag ("tf_efficientnet_b4.ap_in1k").
        drop_path: stochastic depth (drop connect) rate of the blocks, scaled by block depth as in timm.
        bn_momentum: BatchNorm momentum of an EfficientNet; None keeps timm's.
        padding_frozen_at: EfficientNet only: freeze "same" padding at this input side (`freeze_same_padding`).
        stem: EfficientNet only: "timm" keeps timm's stem; "unpadded" is DeepfakeBench's (`unpad_stem`).
    """
    family = timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]
    extra = {"drop_path_rate": drop_path} if drop_path else {}
    if family == "swin_transformer":
        return StagedSwin(create_timm_model(name, pretrained, img_size=input_size, **extra), input_size)
    if family == "efficientnet":
        if bn_momentum is not None:
            extra["bn_momentum"] = bn_momentum
        net = create_timm_model(name, pretrained, **extra)
        if padding_frozen_at is not None:
            freeze_same_padding(net, padding_frozen_at)
        if stem == "unpadded":
            unpad_stem(net)
        elif stem != "timm":
            raise ValueError(f"unknown CNN stem {stem!r}; expected 'timm' or 'unpadded'")
        return StagedEfficientNet(net, input_size, cnn_stage_ends)
    raise ValueError(
        f"timm model {name!r} (family {family!r}) has no stage adapter; supported families: "
        "efficientnet (CNN stream) and swin_transformer (transformer stream)"
    )
