"""HCSI-Net: a CNN stream and a transformer stream coupled at five stages by cross-stream interaction, fused by an MLP.

Paper: M. Brodarič, M. Ivanovska, D. K. Jain, P. Peer, V. Štruc, "HCSI-Net: Hierarchical Cross-Stream Interaction for
Generalizable Deepfake Detection", IWBF 2025 (Section III, Eq. 1-16, Table I). Ablations of Table III are configs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .backbones import NUM_STAGES, StagedBackbone, build_staged_backbone
from .config import HCSINetConfig
from .interaction import CrossStreamInteraction


@dataclass
class StageGates:
    """Per-stage gates of both streams: cnn[k] is G_c^k (B×1×H×W), vit[k] is g_t^k (B×N×1). Empty without interaction."""

    cnn: list[torch.Tensor] = field(default_factory=list)
    vit: list[torch.Tensor] = field(default_factory=list)


class FusionHead(nn.Module):
    """MLP of Eq. 16: Linear -> BatchNorm -> ReLU -> Dropout for each hidden width, then a Linear to the logits."""

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (1024, 512), num_classes: int = 2,
                 dropout: float = 0.5, input_dropout: float = 0.0) -> None:
        super().__init__()
        self.input_dropout = nn.Dropout(input_dropout)  # outside `mlp`, so its layer indices (state-dict keys) stay
        layers: list[nn.Module] = []
        width = in_features
        for out in hidden:
            layers += [nn.Linear(width, out), nn.BatchNorm1d(out), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = out
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.input_dropout(z))


class HCSINet(nn.Module):
    """The HCSI-Net family: two streams with interaction (full model), without it (late fusion), or one stream.

    Args:
        config: the variant (see `hcsi.models.config`).
        pretrained: load ImageNet weights for the backbones through timm (needs network access).
    """

    def __init__(self, config: HCSINetConfig, pretrained: bool = False) -> None:
        super().__init__()
        self.config = config
        self.cnn: StagedBackbone | None = None
        self.vit: StagedBackbone | None = None
        if config.cnn:
            self.cnn = build_staged_backbone(
                config.cnn, pretrained, config.input_size, config.cnn_stage_ends, drop_path=config.cnn_drop_path,
                bn_momentum=config.cnn_bn_momentum, padding_frozen_at=config.cnn_padding_frozen_at,
                stem=config.cnn_stem)
        self._set_cnn_input_affine(config)
        if config.vit:
            self.vit = build_staged_backbone(config.vit, pretrained, config.input_size)
        self.interactions: nn.ModuleList | None = None
        if config.interaction:
            self.interactions = nn.ModuleList(self._build_interaction(k) for k in range(NUM_STAGES))
        self.fused_features = sum(s.num_features for s in self.streams())  # C_c^K + C_t^K (2816 for the full model)
        self.head = FusionHead(self.fused_features, config.head_hidden, config.num_classes, config.head_dropout,
                               config.head_input_dropout)

    def _set_cnn_input_affine(self, config: HCSINetConfig) -> None:
        """x_cnn = x·a + b re-normalises the model input (config.mean/std) to what the CNN stream was trained with
        (config.cnn_mean/cnn_std): a = std / cnn_std, b = (mean - cnn_mean) / cnn_std. Identity when not set."""
        self.cnn_input_affine = config.cnn is not None and config.cnn_mean is not None and (
            config.cnn_mean, config.cnn_std) != (config.mean, config.std)
        mean, std = torch.tensor(config.mean), torch.tensor(config.std)
        cnn_mean = torch.tensor(config.cnn_mean or config.mean)
        cnn_std = torch.tensor(config.cnn_std or config.std)
        self.register_buffer("cnn_input_scale", (std / cnn_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("cnn_input_shift", ((mean - cnn_mean) / cnn_std).view(1, 3, 1, 1), persistent=False)

    def _build_interaction(self, k: int) -> CrossStreamInteraction:
        (c_cnn, *grid_cnn), (c_vit, *grid_vit) = self.cnn.stage_shapes[k], self.vit.stage_shapes[k]
        if grid_cnn != grid_vit:
            raise ValueError(
                f"config {self.config.name!r}: stage {k + 1} grids differ at input {self.config.input_size}: "
                f"CNN {grid_cnn[0]}×{grid_cnn[1]}, transformer {grid_vit[0]}×{grid_vit[1]}; adjust cnn_stage_ends"
            )
        c = self.config
        return CrossStreamInteraction(
            cnn_channels=c_cnn, vit_channels=c_vit, descriptor_dim=c.descriptor_dim, beta_pos=c.beta_pos,
            learn_beta_pos=c.learn_beta_pos, temperature=c.temperature, learn_temperature=c.learn_temperature,
            use_sdpa=c.use_sdpa,
        )

    def streams(self) -> list[StagedBackbone]:
        return [s for s in (self.cnn, self.vit) if s is not None]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, StageGates]:
        """Run the streams stage by stage; after each stage the gated outputs are what the next stage receives.

        Returns F_c^K' (B×C×H×W, or None), F_t^K' (B×H×W×C, or None) and the per-stage gates.
        """
        cnn_x, vit_x = x, x
        if self.cnn_input_affine:
            cnn_x = x * self.cnn_input_scale + self.cnn_input_shift
        gates = StageGates()
        for k in range(NUM_STAGES):
            cnn_x = self.cnn.run_stage(k, cnn_x) if self.cnn is not None else None  # F_c^k, Eq. 1
            vit_x = self.vit.run_stage(k, vit_x) if self.vit is not None else None  # F_t^k, Eq. 2 (as a grid)
            if self.interactions is not None:
                cnn_x, vit_x, gate_c, gate_t = self.interactions[k](cnn_x, vit_x)  # Eq. 3-14
                gates.cnn.append(gate_c)
                gates.vit.append(gate_t)
        return cnn_x, vit_x, gates

    def forward_head(self, cnn_map: torch.Tensor | None, vit_grid: torch.Tensor | None) -> torch.Tensor:
        """Pool each stream (Eq. 15), concatenate and classify (Eq. 16)."""
        pooled = []
        if cnn_map is not None:
            pooled.append(cnn_map.mean(dim=(2, 3)))  # z_c = GAP(F_c^K'), Eq. 15
        if vit_grid is not None:
            pooled.append(vit_grid.mean(dim=(1, 2)))  # z_t = mean over the N^K tokens of F_t^K', Eq. 15
        return self.head(torch.cat(pooled, dim=1))  # o = MLP([z_c; z_t]), Eq. 16

    def forward(self, x: torch.Tensor, return_gates: bool = False):
        """x: B×3×S×S normalised face crops -> logits B×num_classes (index 1 = fake); with `return_gates`,
        (logits, StageGates)."""
        size = self.config.input_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2:] != (size, size):
            raise ValueError(
                f"model {self.config.name!r} expects input of shape B×3×{size}×{size}, got {tuple(x.shape)}; "
                f"resize the face crops or build the model with input_size={x.shape[-1]}"
            )
        cnn_map, vit_grid, gates = self.forward_features(x)
        logits = self.forward_head(cnn_map, vit_grid)
        return (logits, gates) if return_gates else logits

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component: cnn, vit, interaction, head."""
        def count(module: nn.Module | None) -> int:
            return sum(p.numel() for p in module.parameters()) if module is not None else 0

        return {"cnn": count(self.cnn), "vit": count(self.vit), "interaction": count(self.interactions),
                "head": count(self.head)}
