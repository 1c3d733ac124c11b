"""Backbone weight files and full checkpoints load without network access and without unpickling objects."""
import collections

import pytest
import timm
import torch

from hcsi.models import build_model, read_state_dict, save_checkpoint


def test_checkpoint_round_trip_through_safetensors(small_model, tmp_path):
    path = tmp_path / "run" / "model.safetensors"
    save_checkpoint(small_model, path, metadata={"epoch": "3"})
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    restored = build_model("hcsi_net_small", checkpoint=str(path))
    for (name, a), b in zip(small_model.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), name


def test_backbone_weights_load_from_a_timm_state_dict_with_its_imagenet_head(tmp_path):
    reference = timm.create_model("efficientnet_b0", pretrained=False)  # with its 1000-class classifier
    path = tmp_path / "b0.pth"
    torch.save({"state_dict": reference.state_dict()}, path)
    model = build_model("cnn_only_small", backbone_weights={"cnn": str(path)})
    for name, tensor in model.cnn.net.state_dict().items():
        assert torch.equal(tensor, reference.state_dict()[name]), name


def test_backbone_weights_taken_from_a_single_stream_checkpoint(tmp_path):
    single = build_model("vit_only_small")
    path = tmp_path / "vit_stage1.safetensors"
    save_checkpoint(single, path)
    joint = build_model("hcsi_net_small", backbone_weights={"vit": str(path)})
    for name, tensor in single.vit.state_dict().items():
        assert torch.equal(tensor, joint.vit.state_dict()[name]), name


def test_mismatched_weights_name_the_file_and_the_problem(tmp_path):
    path = tmp_path / "wrong.safetensors"
    save_checkpoint(build_model("cnn_only_small"), path)
    with pytest.raises(ValueError, match="wrong.safetensors.*missing keys"):
        build_model("vit_only_small", backbone_weights={"vit": str(path)})
    with pytest.raises(ValueError, match="wrong.safetensors"):
        build_model("hcsi_net_small", checkpoint=str(path))
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        read_state_dict(tmp_path / "absent.pth")


def test_arbitrary_pickled_objects_are_not_loaded(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": collections.Counter(a=1)}, path)  # not a tensor dict, needs unpickling a class
    with pytest.raises(ValueError, match="evil.pth"):
        read_state_dict(path)


def test_pretrained_without_network_says_what_to_do(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("cannot reach huggingface.co")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="backbone_weights"):
        build_model("cnn_only_small", pretrained=True)


def test_a_checkpoint_of_another_input_size_names_the_setting_and_model_from_checkpoint(tmp_path):
    from hcsi.models import model_from_checkpoint

    path = tmp_path / "small64.safetensors"
    save_checkpoint(build_model("hcsi_net_small", input_size=64), path)
    with pytest.raises(ValueError, match=r"input_size=64 \(this model: 224\).*model_from_checkpoint"):
        build_model("hcsi_net_small", checkpoint=str(path))
    assert model_from_checkpoint(path).config.input_size == 64


def test_atomically_written_files_get_the_usual_permissions(tmp_path):
    """The temporary file is private (mkstemp); the finished one has the mode a plain open() would give it."""
    import os

    from hcsi.files import write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        with open(tmp_path / "b.json", "w") as f:
            f.write("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == (tmp_path / "b.json").stat().st_mode & 0o777 == 0o644
