"""Named HCSI-Net configurations (the full model, the Table III ablations, other backbone pairs) and their registry."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..normalization import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class HCSINetConfig:
    """Everything that defines one HCSI-Net variant. The paper's values are the defaults.

    Where the paper is silent (τ, β_pos) the field comment says what was chosen; docs/protocol.md gives the reasons.
    """

    name: str
    cnn: str | None = "efficientnet_b4"  # timm name of the CNN stream; None drops the stream (Table III "ViT branch")
    vit: str | None = "swin_base_patch4_window7_224"  # timm name of the transformer stream; None drops it
    cnn_stage_ends: tuple[int, ...] = (1, 2, 4, 5)  # index of the last CNN block in stages 1-4 (Table I cut points)
    cnn_drop_path: float = 0.0  # stochastic depth (drop connect) of the CNN blocks (SBI's B4: 0.2)
    cnn_bn_momentum: float | None = None  # BatchNorm momentum of the CNN; None: timm's 0.1 (efficientnet_pytorch: 0.01)
    cnn_padding_frozen_at: int | None = None  # freeze the CNN's TF "same" padding at this input side, as
    # efficientnet_pytorch does (its static padding is computed for 380 px); None: timm's padding
    cnn_stem: str = "timm"  # "timm", or "unpadded": DeepfakeBench's 3×3 stride-2 stem convolution without padding
    cnn_mean: tuple[float, float, float] | None = None  # normalisation the CNN stream was trained with, where it
    cnn_std: tuple[float, float, float] | None = None  # differs from the model input's (mean/std); None: the input's
    interaction: bool = True  # SDP + BSCG after every stage; False = late fusion only (Table III "No interaction")
    input_size: int = 224  # square face-crop side in pixels; Swin is built for exactly this size
    descriptor_dim: int = 64  # d, the shared descriptor dimension (paper: 64)
    temperature: float = 0.0125  # τ in Eq. 7 (paper: not given); 1/(τ√d) = 10 lets one match outweigh 3136 nodes
    learn_temperature: bool = False  # learn log τ instead of keeping it fixed
    beta_pos: float = 0.5  # β_pos in Eq. 6 (paper: not given); position guides, appearance dominates
    learn_beta_pos: bool = False  # learn β_pos instead of keeping it fixed
    use_sdpa: bool = True  # attended contexts through F.scaled_dot_product_attention (False: explicit softmax reference)
    head_hidden: tuple[int, ...] = (1024, 512)  # hidden widths of the fusion MLP (paper: 2816 -> 1024 -> 512 -> 2)
    head_dropout: float = 0.5  # dropout after each hidden layer of the head (paper: 0.5)
    head_input_dropout: float = 0.0  # dropout on the pooled features before the head (SBI's B4: 0.4)
    num_classes: int = 2  # real / fake logits (paper: 2)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # input normalisation expected by the ImageNet backbones
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.cnn is None and self.vit is None:
            raise ValueError(f"config {self.name!r}: needs at least one stream (cnn or vit)")
        if self.interaction and (self.cnn is None or self.vit is None):
            raise ValueError(f"config {self.name!r}: interaction needs both streams; set interaction=False")
        if len(self.cnn_stage_ends) != 4:
            raise ValueError(f"config {self.name!r}: cnn_stage_ends needs 4 block indices, got {self.cnn_stage_ends}")
        if (self.cnn_mean is None) != (self.cnn_std is None):
            raise ValueError(f"config {self.name!r}: give both cnn_mean and cnn_std, or neither")
        if self.temperature <= 0:
            raise ValueError(f"config {self.name!r}: temperature must be > 0, got {self.temperature}")


_REGISTRY: dict[str, HCSINetConfig] = {}


def register_config(config: HCSINetConfig) -> HCSINetConfig:
    """Add a named config to the registry; a second config under the same name is an error."""
    if config.name in _REGISTRY:
        raise KeyError(f"a model config named {config.name!r} is already registered")
    _REGISTRY[config.name] = config
    return config


def list_models() -> list[str]:
    """Names of all registered configs, sorted."""
    return sorted(_REGISTRY)


def get_config(name: str, **overrides) -> HCSINetConfig:
    """The registered config `name`, with any field replaced by `overrides` (e.g. input_size=256)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return dataclasses.replace(_REGISTRY[name], **overrides)


_SMALL_PAIR = dict(cnn="efficientnet_b0", vit="swin_tiny_patch4_window7_224")

register_config(HCSINetConfig(name="hcsi_net"))
register_config(HCSINetConfig(name="late_fusion", interaction=False))
register_config(HCSINetConfig(name="cnn_only", vit=None, interaction=False))
register_config(HCSINetConfig(name="vit_only", cnn=None, interaction=False))
register_config(HCSINetConfig(name="hcsi_net_small", **_SMALL_PAIR))
register_config(HCSINetConfig(name="late_fusion_small", interaction=False, **_SMALL_PAIR))
register_config(HCSINetConfig(name="cnn_only_small", cnn="efficientnet_b0", vit=None, interaction=False))
register_config(HCSINetConfig(name="vit_only_small", cnn=None, vit="swin_tiny_patch4_window7_224", interaction=False))
# Stage 1 of the training recipe: each backbone alone with a linear classifier on its pooled features (SBI's model).
register_config(HCSINetConfig(name="cnn_stage1", vit=None, interaction=False, head_hidden=()))
register_config(HCSINetConfig(name="vit_stage1", cnn=None, interaction=False, head_hidden=()))
register_config(HCSINetConfig(name="cnn_stage1_small", cnn="efficientnet_b0", vit=None, interaction=False,
                              head_hidden=()))
register_config(HCSINetConfig(name="vit_stage1_small", cnn=None, vit="swin_tiny_patch4_window7_224",
                              interaction=False, head_hidden=()))

# Published SBI-trained EfficientNet-B4 detectors, rebuilt exactly (`hcsi import-weights`; docs/protocol.md,
# "Published checkpoints"). timm's tf_efficientnet_b4 is the structure of efficientnet_pytorch's B4: TF "same"
# padding, BatchNorm eps 1e-3. SBI (Shiohara & Yamasaki, CVPR 2022): 380-px crops fed as x/255 without mean/std,
# dropout 0.4 before a 2-class linear layer, drop connect 0.2, BatchNorm momentum 0.01; AdvProp ImageNet start.
_SBI_B4 = dict(cnn="tf_efficientnet_b4.ap_in1k", vit=None, interaction=False, head_hidden=(), cnn_drop_path=0.2,
               cnn_bn_momentum=0.01)
register_config(HCSINetConfig(name="sbi_efficientnet_b4", input_size=380, head_input_dropout=0.4,
                              mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), **_SBI_B4))
# DeepfakeBench's SBI detector: the same network with an unpadded stem (so the static padding of efficientnet_pytorch,
# computed for 380 px, no longer matches the map sizes), 256-px crops with ImageNet mean/std, no dropout.
register_config(HCSINetConfig(name="deepfakebench_efficientnet_b4", input_size=256, cnn_padding_frozen_at=380,
                              cnn_stem="unpadded", **_SBI_B4))
# Stage 2 of the recipe started from an SBI stage-1 CNN: the CNN stream keeps SBI's input scaling (x/255) while
# the model input and the Swin stream use ImageNet statistics.
_SBI_CNN_STREAM = dict(cnn="tf_efficientnet_b4.ap_in1k", cnn_mean=(0.0, 0.0, 0.0), cnn_std=(1.0, 1.0, 1.0))
register_config(HCSINetConfig(name="hcsi_net_sbi_cnn", **_SBI_CNN_STREAM))
register_config(HCSINetConfig(name="late_fusion_sbi_cnn", interaction=False, **_SBI_CNN_STREAM))
