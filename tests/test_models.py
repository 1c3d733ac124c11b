"""The HCSI-Net family: Table I stage shapes, staged backbones vs timm, gates, gradients, variants, head, counts."""
import pytest
import timm
import torch

from hcsi.models import (
    NUM_STAGES,
    BidirectionalSpatialCrossGating,
    HCSINetConfig,
    build_model,
    build_staged_backbone,
    get_config,
    list_models,
    register_config,
)

TABLE_I = {  # stage: (grid, CNN channels, ViT channels) for EfficientNet-B4 + Swin-B at 224
    1: (56, 32, 128), 2: (28, 56, 256), 3: (14, 160, 512), 4: (7, 272, 1024), 5: (7, 1792, 1024),
}
SMALL_PAIR = {  # efficientnet_b0 + swin_tiny at 224, same cut points
    1: (56, 24, 96), 2: (28, 40, 192), 3: (14, 112, 384), 4: (7, 192, 768), 5: (7, 1280, 768),
}
# Documented in docs/protocol.md: the faithful model, and the count the paper reports (with both unused heads).
FULL_PARAMS = 108_045_570
FULL_PARAMS_PAPER_EQUIVALENT = 110_863_570


def shapes_of(model):
    return {
        k + 1: (model.cnn.stage_shapes[k][1], model.cnn.stage_shapes[k][0], model.vit.stage_shapes[k][0])
        for k in range(NUM_STAGES)
    }


@pytest.mark.slow
def test_full_model_stage_shapes_equal_table_one(full_model):
    assert shapes_of(full_model) == TABLE_I
    assert full_model.fused_features == 2816


def test_small_pair_stage_shapes(small_model):
    assert shapes_of(small_model) == SMALL_PAIR


@pytest.mark.parametrize(
    "name", ["efficientnet_b0", "swin_tiny_patch4_window7_224",
             pytest.param("efficientnet_b4", marks=pytest.mark.slow),
             pytest.param("swin_base_patch4_window7_224", marks=pytest.mark.slow)],
)
def test_staged_run_reproduces_timm_forward_features(name):
    staged = build_staged_backbone(name, pretrained=False, input_size=224).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(staged(x), staged.net.forward_features(x))


def _all_gates_one(monkeypatch):
    def ones(self, q_c, q_t):
        return torch.ones_like(q_c[..., :1]), torch.ones_like(q_t[..., :1])

    monkeypatch.setattr(BidirectionalSpatialCrossGating, "forward", ones)


@pytest.mark.parametrize("fixture", ["small_model", pytest.param("full_model", marks=pytest.mark.slow)])
def test_identity_gates_reproduce_timm_forward_features(fixture, request, monkeypatch):
    model = request.getfixturevalue(fixture).eval()
    _all_gates_one(monkeypatch)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        cnn_map, vit_grid, gates = model.forward_features(x)
        assert len(gates.cnn) == NUM_STAGES
        assert torch.equal(cnn_map, model.cnn.net.forward_features(x))
        assert torch.equal(vit_grid, model.vit.net.forward_features(x))


def test_gates_lie_in_unit_interval_with_documented_shapes(small_model):
    small_model.eval()
    with torch.no_grad():
        logits, gates = small_model(torch.randn(3, 3, 224, 224), return_gates=True)
    assert logits.shape == (3, 2)
    assert len(gates.cnn) == len(gates.vit) == NUM_STAGES
    for k, (grid, _, _) in SMALL_PAIR.items():
        g_c, g_t = gates.cnn[k - 1], gates.vit[k - 1]
        assert g_c.shape == (3, 1, grid, grid)
        assert g_t.shape == (3, grid * grid, 1)
        for g in (g_c, g_t):
            assert g.min() >= 0 and g.max() <= 1
            assert g.std() > 0  # gates vary over space


def test_sdpa_model_equals_reference_model(small_model):
    small_model.eval()
    reference = build_model("hcsi_net_small", use_sdpa=False).eval()
    reference.load_state_dict(small_model.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a, gates_a = small_model(x, return_gates=True)
        b, gates_b = reference(x, return_gates=True)
    assert torch.allclose(a, b, atol=1e-5)
    for g1, g2 in zip(gates_a.cnn + gates_a.vit, gates_b.cnn + gates_b.vit):
        assert torch.allclose(g1, g2, atol=1e-5)


def test_head_pools_both_streams_and_applies_the_mlp(small_model):
    small_model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        cnn_map, vit_grid, _ = small_model.forward_features(x)
        z = torch.cat([cnn_map.mean(dim=(2, 3)), vit_grid.flatten(1, 2).mean(dim=1)], dim=1)  # Eq. 15
        assert torch.allclose(small_model(x), small_model.head(z), atol=1e-6)  # Eq. 16
    layers = [type(m).__name__ for m in small_model.head.mlp]
    assert layers == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert [m.p for m in small_model.head.mlp if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]


@pytest.mark.parametrize(
    "name", [n if n.endswith("_small") else pytest.param(n, marks=pytest.mark.slow) for n in list_models()]
)
def test_every_variant_runs_forward_and_backward_and_every_parameter_gets_a_gradient(name):
    model = build_model(name, cnn_drop_path=0.0).train()  # stochastic depth may skip a block for the whole batch
    size = get_config(name).input_size
    logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 2)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    config = get_config(name)
    assert (model.interactions is not None) == config.interaction
    assert (model.cnn is None) == (config.cnn is None) and (model.vit is None) == (config.vit is None)


def test_backbones_carry_no_classifier(small_model):
    for stream in small_model.streams():
        assert stream.net.num_classes == 0
        assert not any(n.startswith(("classifier.", "head.fc.")) and p.numel() for n, p in
                       stream.net.named_parameters())


@pytest.mark.slow
def test_full_parameter_count_equals_documented_figures(full_model):
    counts = full_model.parameter_counts()
    assert sum(counts.values()) == FULL_PARAMS
    d = 64
    c_cnn, c_vit = [v[1] for v in TABLE_I.values()], [v[2] for v in TABLE_I.values()]
    projections = sum((c + 1) * d for c in c_cnn + c_vit) + 2 * NUM_STAGES * (2 * d + d) + 2 * NUM_STAGES * 2 * d
    assert counts["interaction"] == projections  # φ, ψ and the two LayerNorms of each stage
    assert counts["head"] == (2816 * 1024 + 1024) + 2 * 1024 + (1024 * 512 + 512) + 2 * 512 + (512 * 2 + 2)
    heads = (1792 * 1000 + 1000) + (1024 * 1000 + 1000)
    assert FULL_PARAMS + heads == FULL_PARAMS_PAPER_EQUIVALENT
    assert round(FULL_PARAMS_PAPER_EQUIVALENT / 1e6, 1) == 110.9  # the paper's figure
    timm_total = sum(p.numel() for n in ("efficientnet_b4", "swin_base_patch4_window7_224")
                     for p in timm.create_model(n, pretrained=False).parameters())
    assert timm_total + counts["interaction"] + counts["head"] == FULL_PARAMS_PAPER_EQUIVALENT


def test_registry_refuses_duplicate_names_and_lists_known_ones():
    assert {"hcsi_net", "late_fusion", "cnn_only", "vit_only", "hcsi_net_small"} <= set(list_models())
    with pytest.raises(KeyError, match="already registered"):
        register_config(HCSINetConfig(name="hcsi_net"))
    with pytest.raises(KeyError, match="hcsi_net_small"):
        get_config("no_such_model")


def test_invalid_configs_are_refused():
    with pytest.raises(ValueError, match="both streams"):
        HCSINetConfig(name="x", vit=None)
    with pytest.raises(ValueError, match="at least one stream"):
        HCSINetConfig(name="x", cnn=None, vit=None, interaction=False)
    with pytest.raises(ValueError, match="no stage adapter"):
        build_model(HCSINetConfig(name="x", cnn="resnet18", vit=None, interaction=False))


def test_input_size_is_configurable_and_checked():
    model = build_model("hcsi_net_small", input_size=256).eval()
    assert [s[1] for s in model.cnn.stage_shapes] == [64, 32, 16, 8, 8]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 256, 256)).shape == (1, 2)
        with pytest.raises(ValueError, match="256"):
            model(torch.randn(1, 3, 224, 224))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hcsi_net_sbi_cnn", "late_fusion_sbi_cnn"])
def test_tf_padded_b4_has_the_stage_cuts_of_table_one(name):
    model = build_model(name)
    assert type(model.cnn.net.conv_stem).__name__ == "Conv2dSame"  # TF "same" padding, as SBI's network
    assert [(s[1], s[0]) for s in model.cnn.stage_shapes] == [(grid, c) for grid, c, _ in TABLE_I.values()]
    assert [(s[1], s[0]) for s in model.vit.stage_shapes] == [(grid, c) for grid, _, c in TABLE_I.values()]


def test_cnn_stream_gets_its_own_input_normalisation(monkeypatch):
    """A CNN trained on x/255 (SBI) beside a Swin trained on ImageNet statistics: the model input is normalised
    for the Swin and the CNN stream receives x·std + mean, i.e. the unnormalised crop."""
    config = HCSINetConfig(name="x", cnn="tf_efficientnet_b0", vit="swin_tiny_patch4_window7_224",
                           cnn_mean=(0.0, 0.0, 0.0), cnn_std=(1.0, 1.0, 1.0))
    model = build_model(config).eval()
    _all_gates_one(monkeypatch)
    raw = torch.rand(2, 3, 224, 224)
    mean, std = torch.tensor(config.mean).view(1, 3, 1, 1), torch.tensor(config.std).view(1, 3, 1, 1)
    with torch.no_grad():
        cnn_map, vit_grid, _ = model.forward_features((raw - mean) / std)
        assert torch.allclose(cnn_map, model.cnn.net.forward_features(raw), atol=1e-5)
        assert torch.allclose(vit_grid, model.vit.net.forward_features((raw - mean) / std), atol=1e-5)
    with pytest.raises(ValueError, match="both cnn_mean and cnn_std"):
        HCSINetConfig(name="y", cnn_mean=(0.0, 0.0, 0.0))


def test_other_backbone_pairs_are_expressible_as_configs():
    config = HCSINetConfig(name="b2_swin_s", cnn="efficientnet_b2", vit="swin_small_patch4_window7_224")
    model = build_model(config).eval()
    with torch.no_grad():
        logits, gates = model(torch.randn(1, 3, 224, 224), return_gates=True)
    assert logits.shape == (1, 2) and len(gates.cnn) == NUM_STAGES
    assert model.fused_features == model.cnn.num_features + model.vit.num_features
