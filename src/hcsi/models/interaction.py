"""Hierarchical Cross-Stream Interaction (HCSI) at one stage: Shared Descriptor Projection (SDP, Eq. 3-6) and
Bi-directional Spatial Cross-Gating (BSCG, Eq. 7-14) of HCSI-Net (Brodarič et al., IWBF 2025, Section III)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def normalized_coordinate_grid(height: int, width: int, device=None, dtype=None) -> torch.Tensor:
    """p^k of Eq. 4: (x_n, y_n) in [-1, 1]² for each node, in the row-major order in which maps are flattened."""
    ys = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=-1)  # N × 2


class SharedDescriptorProjection(nn.Module):
    """SDP: project CNN nodes and ViT tokens into one d-dimensional, ℓ2-normalised descriptor space (Eq. 3-6).

    Args:
        cnn_channels: C_c^k, channels of the CNN stage output.
        vit_channels: C_t^k, embedding width of the transformer stage output.
        descriptor_dim: d (paper: 64).
        beta_pos: β_pos, weight of the positional descriptor in Eq. 6.
        learn_beta_pos: make β_pos a trainable parameter (initialised at `beta_pos`).
    """

    def __init__(
        self, cnn_channels: int, vit_channels: int, descriptor_dim: int = 64, beta_pos: float = 0.5,
        learn_beta_pos: bool = False,
    ) -> None:
        super().__init__()
        self.cnn_proj = nn.Conv2d(cnn_channels, descriptor_dim, kernel_size=1)  # φ_c^k
        self.vit_proj = nn.Linear(vit_channels, descriptor_dim)  # φ_t^k
        self.cnn_pos_proj = nn.Linear(2, descriptor_dim)  # ψ_c^k
        self.vit_pos_proj = nn.Linear(2, descriptor_dim)  # ψ_t^k
        beta = torch.tensor(float(beta_pos))
        if learn_beta_pos:
            self.beta_pos = nn.Parameter(beta)
        else:
            self.register_buffer("beta_pos", beta, persistent=False)

    def forward(self, cnn_map: torch.Tensor, vit_tokens: torch.Tensor, grid: tuple[int, int]):
        """cnn_map: F_c^k, B×C_c×H×W; vit_tokens: F_t^k, B×N×C_t on the same H×W grid. Returns Q_c, Q_t: B×N×d."""
        d_c = F.normalize(self.cnn_proj(cnn_map).flatten(2).transpose(1, 2), dim=-1)  # D_c^k, Eq. 3
        d_t = F.normalize(self.vit_proj(vit_tokens), dim=-1)  # D_t^k, Eq. 3
        p = normalized_coordinate_grid(*grid, device=cnn_map.device, dtype=d_c.dtype)  # p^k, Eq. 4
        p_c = F.normalize(self.cnn_pos_proj(p), dim=-1)  # P_c^k, Eq. 5
        p_t = F.normalize(self.vit_pos_proj(p), dim=-1)  # P_t^k, Eq. 5
        q_c = F.normalize(d_c + self.beta_pos * p_c, dim=-1)  # Q_c^k, Eq. 6
        q_t = F.normalize(d_t + self.beta_pos * p_t, dim=-1)  # Q_t^k, Eq. 6
        return q_c, q_t


class BidirectionalSpatialCrossGating(nn.Module):
    """BSCG: one similarity S = Q_c Q_tᵀ / (τ√d) read both ways gives each node a gate in [0, 1] (Eq. 7-12).

    The attended contexts A Q (Eq. 9-10) are computed by `F.scaled_dot_product_attention`, which never keeps the
    N_c×N_t matrix (at stage 1 that is 3136² per image); `attended_contexts_reference` is the explicit-softmax
    computation of the same equations, kept to test it against.

    Args:
        descriptor_dim: d.
        temperature: τ of Eq. 7.
        learn_temperature: learn log τ (initialised at `temperature`).
        use_sdpa: compute contexts with SDPA (True) or the explicit reference path (False).
    """

    def __init__(
        self, descriptor_dim: int = 64, temperature: float = 0.0125, learn_temperature: bool = False,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        self.descriptor_dim = descriptor_dim
        self.use_sdpa = use_sdpa
        log_tau = torch.tensor(math.log(temperature))
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_temperature", log_tau, persistent=False)
        self.cnn_context_norm = nn.LayerNorm(descriptor_dim)  # LN in V_c^k, Eq. 10
        self.vit_context_norm = nn.LayerNorm(descriptor_dim)  # LN in V_t^k, Eq. 10

    def similarity_scale(self) -> torch.Tensor:
        """1 / (τ√d), the factor of Eq. 7."""
        return torch.exp(-self.log_temperature) / math.sqrt(self.descriptor_dim)

    def attended_contexts(self, q_c: torch.Tensor, q_t: torch.Tensor):
        """A_{c→t} Q_t and A_{t→c} Q_c (Eq. 7-10 before LN) through SDPA. Inputs and outputs: B×N×d.

        softmax_row(S) = softmax(scale·Q_c Q_tᵀ) and softmax_row(Sᵀ) = softmax(scale·Q_t Q_cᵀ): the same S read in
        both directions. The scale multiplies the queries so that a learnt τ still receives a gradient.
        """
        scale = self.similarity_scale()
        # B×1×N×d (one head), contiguous: the fused CUDA kernels need a unit stride on d, and Q_c comes out of
        # the 1×1 convolution transposed; without it SDPA silently falls back to its N×N math path.
        q_c4, q_t4 = q_c.unsqueeze(1).contiguous(), q_t.unsqueeze(1).contiguous()
        context_c = F.scaled_dot_product_attention(q_c4 * scale, q_t4, q_t4, scale=1.0)
        context_t = F.scaled_dot_product_attention(q_t4 * scale, q_c4, q_c4, scale=1.0)
        return context_c.squeeze(1), context_t.squeeze(1)

    def attended_contexts_reference(self, q_c: torch.Tensor, q_t: torch.Tensor):
        """The same contexts with S materialised: the direct transcription of Eq. 7-10."""
        s = self.similarity_scale() * q_c @ q_t.transpose(1, 2)  # S^k, Eq. 7: B×N_c×N_t
        a_c2t = torch.softmax(s, dim=-1)  # A_{c→t} = softmax_row(S), Eq. 8-9
        a_t2c = torch.softmax(s.transpose(1, 2), dim=-1)  # A_{t→c} = softmax_row(Sᵀ), Eq. 8-9
        return a_c2t @ q_t, a_t2c @ q_c

    def forward(self, q_c: torch.Tensor, q_t: torch.Tensor):
        """Q_c: B×N_c×d, Q_t: B×N_t×d -> gates g_c: B×N_c×1 and g_t: B×N_t×1 in [0, 1]."""
        contexts = self.attended_contexts if self.use_sdpa else self.attended_contexts_reference
        context_c, context_t = contexts(q_c, q_t)
        v_c = self.cnn_context_norm(context_c)  # V_c^k, Eq. 10
        v_t = self.vit_context_norm(context_t)  # V_t^k, Eq. 10
        s_c = (q_c * v_c).sum(dim=-1, keepdim=True)  # s_c^k = <Q_c, V_c>, Eq. 11
        s_t = (q_t * v_t).sum(dim=-1, keepdim=True)  # s_t^k = <Q_t, V_t>, Eq. 11
        return torch.sigmoid(s_c), torch.sigmoid(s_t)  # g_c^k, g_t^k, Eq. 12


class CrossStreamInteraction(nn.Module):
    """The HCSI module of one stage: SDP, BSCG, and multiplicative gating of the original stage outputs (Eq. 13-14).

    Args:
        cnn_channels, vit_channels: channels of the two stage outputs.
        descriptor_dim, beta_pos, learn_beta_pos: see `SharedDescriptorProjection`.
        temperature, learn_temperature, use_sdpa: see `BidirectionalSpatialCrossGating`.
    """

    def __init__(
        self, cnn_channels: int, vit_channels: int, descriptor_dim: int = 64, beta_pos: float = 0.5,
        learn_beta_pos: bool = False, temperature: float = 0.0125, learn_temperature: bool = False,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        self.projection = SharedDescriptorProjection(
            cnn_channels, vit_channels, descriptor_dim, beta_pos, learn_beta_pos
        )
        self.cross_gating = BidirectionalSpatialCrossGating(descriptor_dim, temperature, learn_temperature, use_sdpa)

    def forward(self, cnn_map: torch.Tensor, vit_grid: torch.Tensor):
        """cnn_map: F_c^k, B×C_c×H×W; vit_grid: F_t^k as a B×H×W×C_t token grid.

        Returns the gated maps F_c^k' and F_t^k' (same layouts), the CNN gate G_c^k (B×1×H×W) and the ViT gate
        g_t^k (B×N×1).
        """
        batch, _, height, width = cnn_map.shape
        if vit_grid.shape[1:3] != (height, width):
            raise ValueError(
                f"CNN stage grid {height}×{width} and transformer grid {vit_grid.shape[1]}×{vit_grid.shape[2]} differ"
            )
        q_c, q_t = self.projection(cnn_map, vit_grid.flatten(1, 2), (height, width))
        g_c, g_t = self.cross_gating(q_c, q_t)
        gate_c = g_c.transpose(1, 2).reshape(batch, 1, height, width)  # G_c^k, Eq. 13
        gated_cnn = cnn_map * gate_c  # F_c^k' = F_c^k ⊙ G_c^k, Eq. 14
        gated_vit = vit_grid * g_t.view(batch, height, width, 1)  # F_t^k' = F_t^k ⊙ g_t^k, Eq. 14
        return gated_cnn, gated_vit, gate_c, g_t
