"""SDP (Eq. 3-6), BSCG (Eq. 7-12) and gating (Eq. 13-14) against direct reference computations."""
import math

import pytest
import torch
import torch.nn.functional as F

from hcsi.models import (
    BidirectionalSpatialCrossGating,
    CrossStreamInteraction,
    SharedDescriptorProjection,
    normalized_coordinate_grid,
)


def unit(v):
    return v / v.norm(dim=-1, keepdim=True)


def test_coordinate_grid_spans_minus_one_to_one_in_flatten_order():
    p = normalized_coordinate_grid(3, 4)
    assert p.shape == (12, 2)
    # node n = row * W + col, with x along the width and y along the height
    assert p[0].tolist() == [-1.0, -1.0]
    assert p[3].tolist() == [1.0, -1.0]
    assert p[11].tolist() == [1.0, 1.0]
    assert torch.allclose(p[5], torch.tensor([-1 / 3, 0.0]))


def test_shared_descriptor_projection_matches_equations_3_to_6():
    sdp = SharedDescriptorProjection(cnn_channels=5, vit_channels=7, descriptor_dim=8, beta_pos=0.3)
    f_c, f_t = torch.randn(2, 5, 3, 4), torch.randn(2, 12, 7)
    q_c, q_t = sdp(f_c, f_t, (3, 4))

    w_c = sdp.cnn_proj.weight[:, :, 0, 0]
    d_c = unit(torch.einsum("dc,bchw->bhwd", w_c, f_c).reshape(2, 12, 8) + sdp.cnn_proj.bias)
    d_t = unit(f_t @ sdp.vit_proj.weight.T + sdp.vit_proj.bias)
    p = torch.tensor([[-1 + 2 * x / 3, -1 + 2 * y / 2] for y in range(3) for x in range(4)])
    p_c = unit(p @ sdp.cnn_pos_proj.weight.T + sdp.cnn_pos_proj.bias)
    p_t = unit(p @ sdp.vit_pos_proj.weight.T + sdp.vit_pos_proj.bias)
    assert torch.allclose(q_c, unit(d_c + 0.3 * p_c), atol=1e-6)
    assert torch.allclose(q_t, unit(d_t + 0.3 * p_t), atol=1e-6)
    assert torch.allclose(q_c.norm(dim=-1), torch.ones(2, 12))


def reference_gates(bscg, q_c, q_t, tau):
    """Eq. 7-12 written out node by node for the CNN side and with a full matrix for the ViT side."""
    d = q_c.shape[-1]
    s = q_c @ q_t.transpose(1, 2) / (tau * math.sqrt(d))
    g_c = torch.empty(q_c.shape[0], q_c.shape[1], 1)
    for b in range(q_c.shape[0]):
        for n in range(q_c.shape[1]):
            weights = torch.exp(s[b, n]) / torch.exp(s[b, n]).sum()
            v = bscg.cnn_context_norm(weights @ q_t[b])
            g_c[b, n, 0] = 1 / (1 + torch.exp(-(q_c[b, n] * v).sum()))
    a_t2c = torch.exp(s.transpose(1, 2)) / torch.exp(s.transpose(1, 2)).sum(-1, keepdim=True)
    v_t = F.layer_norm(a_t2c @ q_c, (d,), bscg.vit_context_norm.weight, bscg.vit_context_norm.bias)
    g_t = torch.sigmoid((q_t * v_t).sum(-1, keepdim=True))
    return g_c, g_t


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_cross_gating_matches_equations_7_to_12(use_sdpa):
    tau = 0.2
    bscg = BidirectionalSpatialCrossGating(descriptor_dim=16, temperature=tau, use_sdpa=use_sdpa)
    with torch.no_grad():
        bscg.cnn_context_norm.weight.uniform_(0.5, 1.5)
        bscg.vit_context_norm.bias.uniform_(-0.2, 0.2)
    q_c, q_t = unit(torch.randn(2, 12, 16)), unit(torch.randn(2, 9, 16))  # N_c != N_t on purpose
    g_c, g_t = bscg(q_c, q_t)
    ref_c, ref_t = reference_gates(bscg, q_c, q_t, tau)
    assert g_c.shape == (2, 12, 1) and g_t.shape == (2, 9, 1)
    assert torch.allclose(g_c, ref_c, atol=1e-5)
    assert torch.allclose(g_t, ref_t, atol=1e-5)


def test_sdpa_path_equals_explicit_softmax_path_at_stage_one_size():
    bscg = BidirectionalSpatialCrossGating(descriptor_dim=64)
    q_c, q_t = unit(torch.randn(2, 56 * 56, 64)), unit(torch.randn(2, 56 * 56, 64))
    fast = bscg.attended_contexts(q_c, q_t)
    slow = bscg.attended_contexts_reference(q_c, q_t)
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)
    bscg.use_sdpa = True
    gates_fast = bscg(q_c, q_t)
    bscg.use_sdpa = False
    gates_slow = bscg(q_c, q_t)
    for a, b in zip(gates_fast, gates_slow):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_learnt_temperature_and_beta_receive_gradients_through_sdpa():
    stage = CrossStreamInteraction(8, 12, descriptor_dim=16, learn_beta_pos=True, learn_temperature=True)
    f_c, f_t = torch.randn(2, 8, 4, 4), torch.randn(2, 4, 4, 12)
    out_c, out_t, _, _ = stage(f_c, f_t)
    (out_c.sum() + out_t.sum()).backward()
    assert stage.cross_gating.log_temperature.grad is not None
    assert stage.projection.beta_pos.grad is not None
    assert stage.cross_gating.log_temperature.grad.abs() > 0


def test_gating_multiplies_the_original_stage_outputs():
    stage = CrossStreamInteraction(8, 12, descriptor_dim=16)
    f_c, f_t = torch.randn(2, 8, 4, 5), torch.randn(2, 4, 5, 12)
    out_c, out_t, gate_c, gate_t = stage(f_c, f_t)
    q_c, q_t = stage.projection(f_c, f_t.flatten(1, 2), (4, 5))
    g_c, _ = stage.cross_gating(q_c, q_t)
    assert gate_c.shape == (2, 1, 4, 5) and gate_t.shape == (2, 20, 1)
    assert torch.equal(gate_c, g_c.reshape(2, 4, 5).unsqueeze(1))  # Eq. 13: node n = row * W + col
    assert torch.allclose(out_c, f_c * gate_c)  # Eq. 14
    assert torch.allclose(out_t, f_t * gate_t.reshape(2, 4, 5, 1))


def test_mismatched_stage_grids_are_refused():
    stage = CrossStreamInteraction(8, 12, descriptor_dim=16)
    with pytest.raises(ValueError, match="grid"):
        stage(torch.randn(1, 8, 4, 4), torch.randn(1, 2, 2, 12))


def test_model_feeds_sdpa_with_unit_stride_descriptors(small_model, monkeypatch):
    """Fused SDPA kernels (flash / memory-efficient) need stride 1 on the last dim, else CUDA falls back to N×N math."""
    seen = []
    original = F.scaled_dot_product_attention

    def checking_sdpa(q, k, v, *args, **kwargs):
        seen.append(all(t.stride(-1) == 1 and t.is_contiguous() for t in (q, k, v)))
        return original(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", checking_sdpa)
    with torch.no_grad():
        small_model.eval()(torch.randn(1, 3, 224, 224))
    assert len(seen) >= 10 and all(seen)
