"""Training: config, schedule, SAM, checkpoints, resume after a kill, Ctrl-C, DDP on gloo, the tiny CPU recipe."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from media import fixture
from safetensors.torch import load_file

from hcsi.data.preprocess import PreprocessOptions, preprocess
from hcsi.data.sources import folder_videos
from hcsi.models import build_model, save_checkpoint
from hcsi.train.checkpoints import TopKCheckpoints
from hcsi.train.config import ScheduleSection, load_config
from hcsi.train.loop import build_training_model, train
from hcsi.train.sam import SAM
from hcsi.train.schedule import lr_factor

# Real talking-head clips (cut fixtures of tests/fixtures, linked from a temp folder).
TRAIN_CLIPS = ["liveportrait/d0", "liveportrait/d3", "liveportrait/d6", "liveportrait/d11", "liveportrait/d12",
               "liveportrait/d18", "liveportrait/d19", "liveportrait/d20", "liveportrait/s18", "liveportrait/s32",
               "ghost/dance", "ghost/orig_reencoded"]
PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """12 real clips preprocessed with 16 frames each; no splits (a folder dataset)."""
    root = tmp_path_factory.mktemp("clips")
    for clip in TRAIN_CLIPS:
        os.symlink(fixture(f"{clip}.mp4"), root / f"{clip.replace('/', '_')}.mp4")
    out = root / "store"
    preprocess(folder_videos(root), out, PreprocessOptions(frames=16), workers=2, progress=False)
    return out


def micro_overrides(store, out, **extra) -> list[str]:
    """A few steps of hcsi_net_small on 64-px crops with every random part of stage 2 switched on."""
    settings = {
        "data.store": store, "data.val_fraction": 0.2, "data.frames_per_video": 4, "data.val_frames_per_video": 3,
        "data.workers": 0, "model.name": "hcsi_net_small", "model.pretrained": False, "model.input_size": 64,
        "schedule.epochs": 2, "run.max_steps_per_epoch": 4, "run.batch_pairs": 2, "run.save_every_steps": 2,
        "run.device": "cpu", "run.out": out, "run.keep_top_k": 1, "model.init_cnn": None, "model.init_vit": None,
    } | extra
    return [f"{k}={'null' if v is None else v}" for k, v in settings.items()]


def run_cli(args: list[str], **popen) -> subprocess.Popen:
    # the same thread count as this process: float sums (and so the weights) depend on it
    env = dict(os.environ, PYTHONPATH=str(PROJECT / "src"), OMP_NUM_THREADS=str(torch.get_num_threads()))
    return subprocess.Popen([sys.executable, "-m", "hcsi.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "final.safetensors"))


def test_config_reads_yaml_and_overrides_and_refuses_unknown_or_mistyped_settings(tmp_path):
    config = load_config(PROJECT / "configs" / "hcsi_net.yaml", ["optim.lr=1e-4", "run.max_steps_per_epoch=3"])
    assert config.optim.lr == 1e-4 and config.optim.name == "adamw" and config.run.max_steps_per_epoch == 3
    assert config.model.input_size == 224 and config.run.batch_pairs == 16 and config.optim.weight_decay == 1e-4
    stage1 = load_config(PROJECT / "configs" / "stage1_cnn.yaml")
    assert (stage1.optim.name, stage1.optim.lr, stage1.schedule.decay_start) == ("sam_sgd", 1e-3, 0.75)
    with pytest.raises(KeyError, match="optim.learning_rate"):
        load_config(None, ["optim.learning_rate=1"])
    with pytest.raises(ValueError, match="run.seed must be int"):
        load_config(None, ["run.seed=abc"])
    with pytest.raises(ValueError, match="fp16"):
        load_config(None, ["optim.name=sam_sgd", "run.amp=fp16"])
    with pytest.raises(FileNotFoundError, match="nothing.yaml"):
        load_config(tmp_path / "nothing.yaml")


def test_every_shipped_config_loads_and_names_a_registered_model():
    from hcsi.models import list_models

    for path in sorted((PROJECT / "configs").glob("*.yaml")):
        assert load_config(path).model.name in list_models(), path


def test_sbi_schedule_is_flat_then_falls_linearly_per_epoch():
    sbi = ScheduleSection(epochs=100, decay_start=0.75, per="epoch")
    steps = 360
    assert lr_factor(0, steps, sbi) == 1.0 and lr_factor(75 * steps - 1, steps, sbi) == 1.0
    assert lr_factor(75 * steps, steps, sbi) == 1.0  # epoch 75 starts the fall at its full value
    assert lr_factor(80 * steps + 359, steps, sbi) == pytest.approx(20 / 25)  # constant within an epoch
    assert lr_factor(99 * steps, steps, sbi) == pytest.approx(1 / 25)
    paper = ScheduleSection(epochs=4, decay_start=0.0, per="step")
    assert lr_factor(0, 10, paper) == 1.0
    assert lr_factor(20, 10, paper) == pytest.approx(0.5) and lr_factor(39, 10, paper) == pytest.approx(1 / 40)


def test_vit_lr_scale_gives_the_transformer_stream_its_own_lr(small_model):
    from hcsi.train.loop import _optimizer
    from hcsi.train.schedule import linear_decay_scheduler

    config = load_config(None, ["optim.lr=1e-3", "optim.vit_lr_scale=0.03", "schedule.warmup_steps=4"])
    optimizer, _ = _optimizer(config, small_model)
    rest, vit = optimizer.param_groups
    assert {id(p) for p in vit["params"]} == {id(p) for p in small_model.vit.parameters()}
    assert len(rest["params"]) + len(vit["params"]) == len(list(small_model.parameters()))
    scheduler = linear_decay_scheduler(optimizer, 10, config.schedule)
    assert (rest["lr"], vit["lr"]) == pytest.approx((1e-3 / 4, 3e-5 / 4))  # the schedule scales both groups
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert (rest["lr"], vit["lr"]) == pytest.approx((1e-3 * 0.985, 3e-5 * 0.985))  # warmed up, 3 of 200 steps
    assert len(_optimizer(load_config(None, ["optim.lr=1e-3"]), small_model)[0].param_groups) == 1
    with pytest.raises(ValueError, match="vit_lr_scale must be positive"):
        load_config(None, ["optim.vit_lr_scale=0"])


def test_sam_step_matches_a_direct_computation():
    torch.manual_seed(0)
    a, b = torch.randn(5, 5), torch.randn(5)

    def loss_at(w):
        return ((a @ w - b) ** 2).sum() + (w ** 4).sum()

    w0 = torch.randn(5)
    w = torch.nn.Parameter(w0.clone())
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.05)
    loss_at(w).backward()
    sam.first_step()
    loss_at(w).backward()
    sam.second_step()

    g = torch.func.grad(loss_at)(w0)
    g_adv = torch.func.grad(loss_at)(w0 + 0.05 * g / g.norm())
    torch.testing.assert_close(w.detach(), w0 - 0.1 * g_adv)


def test_top_k_keeps_the_best_epochs_and_a_copy_of_the_best(tmp_path, small_model):
    top = TopKCheckpoints(tmp_path, 2, {"split": "val"})
    for epoch, auc in [(1, 0.6), (2, 0.8), (3, 0.7), (4, 0.75)]:
        top.consider(small_model, {"epoch": epoch, "step": epoch * 10, "metrics": {"val_auc": auc}})
    kept = sorted(p.name for p in tmp_path.glob("epoch*.safetensors"))
    assert kept == ["epoch002-auc0.8000.safetensors", "epoch004-auc0.7500.safetensors"]
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["best"] == "epoch002-auc0.8000.safetensors" and index["selected_on"] == {"split": "val"}
    assert index["latest_of_top_k"] == "epoch004-auc0.7500.safetensors"
    assert json.loads((tmp_path / "best.json").read_text())["epoch"] == 2
    assert TopKCheckpoints(tmp_path, 2, {}).entries == index["checkpoints"]  # a resumed run reads them back


def test_a_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(store, tmp_path):
    config = PROJECT / "configs" / "hcsi_net.yaml"
    straight = train(config, micro_overrides(store, tmp_path / "straight"), progress_bar=False)
    assert straight["status"] == "finished" and straight["global_step"] == 8

    killed_dir = tmp_path / "killed"
    process = run_cli(["train", "--config", str(config), *micro_overrides(store, killed_dir)])
    pointer = killed_dir / "resume" / "latest.json"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if pointer.is_file() and json.loads(pointer.read_text())["global_step"] >= 2:
            break
        time.sleep(0.02)
    process.kill()
    process.communicate()
    state = json.loads(pointer.read_text())
    assert state["global_step"] < 8, "the run finished before it could be killed"
    assert not (killed_dir / "final.safetensors").exists()

    resumed = train(config, micro_overrides(store, killed_dir), progress_bar=False)
    assert resumed["status"] == "finished" and resumed["global_step"] == 8
    a, b = final_weights(tmp_path / "straight"), final_weights(killed_dir)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    with open(killed_dir / "log.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r["kind"] == "train"]
    assert steps == sorted(set(steps))  # steps redone after the resume are not logged twice
    assert resumed["last_val"] == pytest.approx(straight["last_val"])


def test_ctrl_c_writes_a_resume_state_and_the_rerun_finishes(store, tmp_path):
    config = PROJECT / "configs" / "hcsi_net.yaml"
    overrides = micro_overrides(store, tmp_path / "run", **{"run.save_every_steps": 1000, "schedule.epochs": 3})
    process = run_cli(["train", "--config", str(config), *overrides])
    log = tmp_path / "run" / "log.csv"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not (log.is_file() and ",val," in log.read_text()):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert "rerun the same command" in err
    state = json.loads((tmp_path / "run" / "resume" / "latest.json").read_text())
    assert 4 <= state["global_step"] < 12
    assert train(config, overrides, progress_bar=False)["global_step"] == 12


def test_two_gloo_processes_train_and_validate_every_pair_once(store, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(PROJECT / "src"), OMP_NUM_THREADS="1")
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "hcsi.cli", "train", "--config", str(PROJECT / "configs" / "hcsi_net.yaml"),
               *micro_overrides(store, out, **{"schedule.epochs": 1})]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished"
    # 10 train videos × 4 frames = 40 faces, 2 pairs per step on each of 2 processes: 10 steps, capped at 4
    assert summary["global_step"] == 4
    # the val split: 2 held-out videos × 3 frames = 6 pairs, shared 3 + 3 without padding -> 12 images
    assert summary["last_val"]["val_images"] == 12
    assert len(list((out / "checkpoints").glob("epoch*.safetensors"))) == 1


def test_stage_two_starts_from_the_stage_one_streams(store, tmp_path):
    streams = {}
    for stream, name in (("cnn", "cnn_stage1_small"), ("vit", "vit_stage1_small")):
        summary = train(PROJECT / "configs" / f"stage1_{stream}.yaml",
                        micro_overrides(store, tmp_path / stream, **{"model.name": name, "schedule.epochs": 1,
                                                                     "run.max_steps_per_epoch": 1}),
                        progress_bar=False)
        streams[stream] = summary["best_checkpoint"]
    config = load_config(PROJECT / "configs" / "hcsi_net.yaml",
                         micro_overrides(store, tmp_path / "joint", **{"model.init_cnn": streams["cnn"],
                                                                        "model.init_vit": streams["vit"]}))
    model = build_training_model(config)
    cnn = load_file(streams["cnn"])
    for key, value in model.cnn.net.state_dict().items():
        torch.testing.assert_close(value, cnn[f"cnn.net.{key}"], msg=key)
    meta = json.loads(Path(streams["vit"]).with_suffix(".json").read_text())
    assert meta["selected_on"]["split"] == "val" and meta["model"] == "vit_stage1_small"
    assert meta["train_config"]["optim"]["name"] == "sam_sgd" and "git_commit" in meta
    # the store keeps RetinaFace boxes (preprocess's default), so training crops were cut around them, and it says so
    assert meta["training_crop"]["box"] == "retinaface" and meta["training_crop"]["asked"] == "auto"


def test_bad_inputs_name_the_file_and_what_was_expected(store, tmp_path):
    config = PROJECT / "configs" / "hcsi_net.yaml"
    with pytest.raises(FileNotFoundError, match="index.json"):
        train(config, micro_overrides(tmp_path / "missing", tmp_path / "a"), progress_bar=False)
    with pytest.raises(ValueError, match="no finished video with faces for split 'val'.*val_fraction"):
        train(config, micro_overrides(store, tmp_path / "b", **{"data.val_fraction": 0.0}), progress_bar=False)

    vit = tmp_path / "vit.safetensors"
    save_checkpoint(build_model("vit_stage1_small", input_size=64), vit)
    with pytest.raises(ValueError, match="vit.safetensors.*does not match the cnn backbone"):
        train(config, micro_overrides(store, tmp_path / "c", **{"model.init_cnn": vit}), progress_bar=False)

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(vit.read_bytes()[: 5000])
    with pytest.raises(ValueError, match="corrupt.safetensors.*truncated or corrupt"):
        train(config, micro_overrides(store, tmp_path / "d", **{"model.init_checkpoint": corrupt}),
              progress_bar=False)

    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "late_fusion_small", "input_size": 64}}))
    with pytest.raises(ValueError, match="late_fusion_small"):
        train(config, micro_overrides(store, other), progress_bar=False)


def test_a_run_folder_is_never_rewritten_by_a_rerun_with_other_settings(store, tmp_path, capsys):
    from hcsi.cli import main

    config = PROJECT / "configs" / "hcsi_net.yaml"
    out = tmp_path / "run"
    overrides = micro_overrides(store, out, **{"schedule.epochs": 1, "run.max_steps_per_epoch": 1})
    assert train(config, overrides, progress_bar=False)["status"] == "finished"
    saved, weights = (out / "config.yaml").read_text(), (out / "final.safetensors").read_bytes()
    with open(out / "log.csv", newline="") as f:  # each epoch logs how many samples were drawn again
        assert [r["redrawn_samples"] for r in csv.DictReader(f) if r["kind"] == "val"] == ["0"]
    with pytest.raises(ValueError, match=r"optim.lr: 3e-05 there, 0.0001 now.*--new-run.*run-2"):
        train(config, overrides + ["optim.lr=1e-4"], progress_bar=False)
    capsys.readouterr()
    assert main(["train", "--config", str(config), *overrides, "optim.lr=1e-4"]) == 2
    assert "optim.lr" in capsys.readouterr().err
    assert (out / "config.yaml").read_text() == saved and (out / "final.safetensors").read_bytes() == weights

    # the same settings (how often resume states are written may change): reported finished, nothing retrained
    again = train(config, overrides + ["run.save_every_steps=5"], progress_bar=False)
    assert again["status"] == "finished" and "resuming" in capsys.readouterr().err
    assert (out / "config.yaml").read_text() == saved

    fresh = train(config, overrides + ["optim.lr=1e-4"], progress_bar=False, new_run=True)
    assert fresh["run_dir"] == str(tmp_path / "run-2") and fresh["status"] == "finished"
    assert "lr: 0.0001" in (tmp_path / "run-2" / "config.yaml").read_text()

    with pytest.raises(FileNotFoundError):  # a start that fails leaves no config.yaml behind
        train(config, micro_overrides(tmp_path / "no-store", tmp_path / "failed"), progress_bar=False)
    assert not (tmp_path / "failed" / "config.yaml").exists()


# configs/tiny.yaml on these 12 clips, measured over seeds 0-4 × 1, 2 and 3 threads (a stand-in for other CPUs' float
# order; the table is in docs/protocol.md, "Tiny config"): final SBI validation AUC 0.693 at worst, mean training
# loss of the last epoch 0.574 at worst. With learning broken on purpose (labels shuffled; loss detached from the network):
# AUC 0.536 and 0.445, last-epoch loss 0.714 and 0.788 (chance: ln 2 = 0.693). The bounds sit between, with a margin
# below the worst run that learnt.
LEARNT_AUC = 0.62
LEARNT_LAST_LOSS = 0.63


def test_tiny_config_learns_to_tell_sbi_fakes_on_the_cpu(store, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as CI's machines; the bounds hold at 1, 2 and 3 threads, so the cost is what is fixed
    try:
        # crops around hcsi's face box, the rule the bounds were measured with (the shipped MobileNet-0.25 misses
        # faces in some of these low-resolution clips, which leaves fewer training faces with RetinaFace boxes)
        summary = train(PROJECT / "configs" / "tiny.yaml", [f"data.store={store}", f"run.out={tmp_path / 'tiny'}",
                                                            "data.crop_box=face"], progress_bar=False)
    finally:
        torch.set_num_threads(threads)
    with open(tmp_path / "tiny" / "log.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "train"]
    last = np.mean([float(r["loss"]) for r in rows if r["epoch"] == str(summary["epochs_done"])])
    assert last < LEARNT_LAST_LOSS, last  # below chance on the training pairs, not only less over-confident
    assert summary["last_val"]["val_auc"] > LEARNT_AUC, summary["last_val"]


def test_offline_imagenet_weights_fail_at_once_and_name_the_config_keys(tmp_path, monkeypatch):
    import timm.models._hub as timm_hub
    from huggingface_hub import constants

    import hcsi.models.backbones as backbones

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # a user's shell: HF_HUB_OFFLINE not set
    monkeypatch.setattr(backbones, "hub_reachable", lambda timeout=3.0: False)  # and no network
    offline_when_asked = []

    def cache_only_download(*args, **kwargs):
        offline_when_asked.append(constants.HF_HUB_OFFLINE)
        raise OSError("not in the local cache")

    monkeypatch.setattr(timm_hub, "hf_hub_download", cache_only_download)
    stage1 = PROJECT / "configs" / "stage1_cnn.yaml"
    with pytest.raises(RuntimeError, match=r"model.init_cnn=FILE.*model.pretrained=false"):
        build_training_model(load_config(stage1, ["model.name=cnn_stage1_small", "model.input_size=64"]))
    assert offline_when_asked and all(offline_when_asked)  # only the cache was asked: no minute of retries

    weights = tmp_path / "b0.safetensors"
    save_checkpoint(build_model("cnn_stage1_small", input_size=64), weights)
    offline_when_asked.clear()
    model = build_training_model(load_config(stage1, ["model.name=cnn_stage1_small", "model.input_size=64",
                                                      f"model.init_cnn={weights}"]))
    assert model.cnn is not None and not offline_when_asked  # a weight file for every stream: no download at all
