"""Published SBI / DeepfakeBench checkpoints: strict import, parity with efficientnet_pytorch (the network those files
were made with), bad files, and the imported model through detect / evaluate / serve / export and stage 2.

A randomly initialised EfficientNet-B4 gives nearly the same output for every input, so a parity test on it would
pass with a wrong mapping. The reference networks here get BatchNorm statistics from a few batches and a classifier
scaled so that p(fake) spreads over (0, 1); the tests check that spread, and that a wrong padding or one tensor
left behind breaks the parity.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from efficientnet_pytorch import EfficientNet
from media import fixture
from safetensors import safe_open
from torch import nn

from hcsi.cli import main
from hcsi.detect import Detector
from hcsi.evaluate.protocol import aggregate_video, extract_test_faces
from hcsi.models import HCSINet, get_config, save_checkpoint
from hcsi.files import file_sha256
from hcsi.models.published import build_published_model
from hcsi.models.builder import model_from_checkpoint
from hcsi.normalization import IMAGENET_MEAN, IMAGENET_STD

PARITY = 1e-4  # largest allowed difference in p(fake)


def structured_images(n: int, size: int, seed: int) -> torch.Tensor:
    """n images in [0, 1] with large-scale structure (smooth colour fields plus a little noise)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 12, 12, generator=generator)
    smooth = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (smooth + 0.1 * torch.rand(n, 3, size, size, generator=generator)).clamp(0, 1)


@torch.no_grad()
def calibrate(net: nn.Module, features, classifier: nn.Linear, batches: list[torch.Tensor],
              probe: torch.Tensor) -> None:
    """BatchNorm statistics from `batches`; then a classifier whose fake-minus-real logit has std 3 and mean 0 on
    `probe` (features(x) gives the pooled features)."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batches
    net.train()
    for batch in batches:
        features(batch)
    net.eval()
    pooled = features(probe)
    direction = torch.randn(classifier.in_features, generator=torch.Generator().manual_seed(1))
    logit = pooled @ direction
    scale = 3.0 / logit.std()
    classifier.weight.zero_()
    classifier.weight[1] = direction * scale
    classifier.bias.zero_()
    classifier.bias[1] = -logit.mean() * scale


class DeepfakeBenchB4(nn.Module):
    """DeepfakeBench's SBI network (training/networks/efficientnetb4.py) rebuilt with efficientnet_pytorch: B4 with
    its stem replaced by an unpadded 3×3 stride-2 convolution, features pooled, then `last_layer` (dropout off)."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.efficientnet = EfficientNet.from_name("efficientnet-b4")
        self.efficientnet._conv_stem = nn.Conv2d(3, 48, kernel_size=3, stride=2, bias=False)
        self.efficientnet._fc = nn.Identity()
        self.last_layer = nn.Linear(1792, num_classes)

    def features(self, x):
        return nn.functional.adaptive_avg_pool2d(self.efficientnet.extract_features(x), 1).flatten(1)

    def forward(self, x):
        return self.last_layer(self.features(x))


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def p_fake(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).softmax(dim=1)[:, 1]


@pytest.fixture(scope="module")
def sbi(tmp_path_factory):
    """SBI's network (efficientnet_pytorch B4, 2 classes) with spread-out outputs, saved in SBI's layout."""
    torch.manual_seed(0)
    reference = EfficientNet.from_name("efficientnet-b4", num_classes=2)
    probe = structured_images(6, 380, seed=1)
    calibrate(reference, lambda x: reference.extract_features(x).mean(dim=(2, 3)), reference._fc,
              [structured_images(4, 380, seed=s) for s in (10, 11)], probe)
    path = tmp_path_factory.mktemp("sbi") / "FFc23.tar"
    state = {"net." + k: v for k, v in reference.state_dict().items()}
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "rho": 0.05}]},
                "epoch": 99}, path)
    return {"reference": reference.eval(), "path": path, "probe": probe, "expected": p_fake(reference, probe)}


@pytest.fixture(scope="module")
def sbi_imported(sbi, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "sbi_ffc23.safetensors"
    assert main(["import-weights", str(sbi["path"]), "--format", "sbi", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def deepfakebench(tmp_path_factory):
    torch.manual_seed(0)
    reference = DeepfakeBenchB4()
    probe = normalise(structured_images(6, 256, seed=2), IMAGENET_MEAN, IMAGENET_STD)
    calibrate(reference, reference.features, reference.last_layer,
              [normalise(structured_images(4, 256, seed=s), IMAGENET_MEAN, IMAGENET_STD) for s in (20, 21)], probe)
    path = tmp_path_factory.mktemp("dfb") / "ckpt_best.pth"
    torch.save({"backbone." + k: v for k, v in reference.state_dict().items()}, path)
    return {"reference": reference.eval(), "path": path, "probe": probe, "expected": p_fake(reference, probe)}


def test_sbi_checkpoint_imports_to_the_same_probabilities(sbi, sbi_imported):
    expected = sbi["expected"]
    assert expected.max() - expected.min() > 0.5, "the reference collapsed: the parity would prove nothing"
    model = model_from_checkpoint(sbi_imported)
    assert model.config.name == "sbi_efficientnet_b4" and model.config.input_size == 380
    assert model.config.mean == (0.0, 0.0, 0.0) and model.config.std == (1.0, 1.0, 1.0)  # x/255, as SBI feeds it
    assert (p_fake(model, sbi["probe"]) - expected).abs().max() < PARITY
    with safe_open(str(sbi_imported), "pt") as f:
        metadata = f.metadata()
    assert metadata["source_file"] == "FFc23.tar" and metadata["source_format"] == "sbi"
    assert metadata["source_sha256"] == file_sha256(sbi["path"]) and metadata["imported_at"][:4].isdigit()


def test_parity_fails_with_a_wrong_padding_or_a_tensor_left_behind(sbi):
    imported = build_published_model(sbi["path"], "sbi")
    # padding frozen as at 224 px: differs from 380's in a single convolution (stage 3's stride-2 depthwise conv)
    wrong_padding = HCSINet(get_config("sbi_efficientnet_b4", cnn_padding_frozen_at=224)).eval()
    wrong_padding.load_state_dict(imported.state_dict())
    assert (p_fake(wrong_padding, sbi["probe"]) - sbi["expected"]).abs().max() > 100 * PARITY
    with torch.no_grad():
        imported.cnn.net.blocks[3][2].bn2.running_var.fill_(1.0)  # as if that tensor had not been copied
    assert (p_fake(imported, sbi["probe"]) - sbi["expected"]).abs().max() > 100 * PARITY


def test_deepfakebench_checkpoint_imports_to_the_same_probabilities(deepfakebench, tmp_path):
    expected = deepfakebench["expected"]
    assert expected.max() - expected.min() > 0.5, "the reference collapsed: the parity would prove nothing"
    out = tmp_path / "dfb.safetensors"
    assert main(["import-weights", str(deepfakebench["path"]), "--format", "deepfakebench", "--out", str(out)]) == 0
    model = model_from_checkpoint(out)
    assert model.config.input_size == 256 and model.config.mean == IMAGENET_MEAN  # its training normalisation
    assert (p_fake(model, deepfakebench["probe"]) - expected).abs().max() < PARITY
    # the same weights with timm's own padding (stem padded, "same" padding recomputed per size) compute otherwise
    padded = HCSINet(get_config("deepfakebench_efficientnet_b4", cnn_stem="timm", cnn_padding_frozen_at=None)).eval()
    padded.load_state_dict(model.state_dict())
    assert (p_fake(padded, deepfakebench["probe"]) - expected).abs().max() > 100 * PARITY
    # saved from DataParallel / DDP: "module." in front of every key
    wrapped = tmp_path / "ddp.pth"
    torch.save({"module." + k: v for k, v in torch.load(deepfakebench["path"]).items()}, wrapped)
    again = build_published_model(wrapped, "deepfakebench")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


class RunsCodeWhenUnpickled:
    def __reduce__(self):
        return print, ("PAYLOAD RAN",)


def _write_and_import(tmp_path, name: str, data, fmt: str = "sbi") -> tuple[int, str]:
    source, out = tmp_path / name, tmp_path / f"{name}.safetensors"
    if isinstance(data, bytes):
        source.write_bytes(data)
    else:
        torch.save(data, source)
    return main(["import-weights", str(source), "--format", fmt, "--out", str(out)]), out


@pytest.mark.parametrize("case", ["truncated", "not a checkpoint", "needs code", "other architecture",
                                  "extra key", "missing key", "other layout"])
def test_bad_files_get_one_line_exit_2_and_nothing_written(case, sbi, tmp_path, capsys):
    good = torch.load(sbi["path"])
    state = dict(good["model"])
    if case == "truncated":
        data = sbi["path"].read_bytes()[:100_000]
    elif case == "not a checkpoint":
        data = b"<html>404 Not Found</html>"
    elif case == "needs code":
        data = {"model": state, "payload": RunsCodeWhenUnpickled()}
    elif case == "other architecture":
        data = {"model": {"net." + k: v for k, v in EfficientNet.from_name("efficientnet-b0", num_classes=2)
                          .state_dict().items()}}
    elif case == "extra key":
        data = {"model": state | {"net.adjust_channel.weight": torch.zeros(1)}}
    elif case == "missing key":
        data = {"model": {k: v for k, v in state.items() if k != "net._blocks.7._bn1.running_var"}}
    else:
        data = {"model": state}
    code, out = _write_and_import(tmp_path, "source.pth", data, "deepfakebench" if case == "other layout" else "sbi")
    printed = capsys.readouterr()
    error = printed.err.strip()
    assert "PAYLOAD RAN" not in printed.out
    assert code == 2 and not out.exists() and not list(tmp_path.glob("*.tmp"))
    assert len(error.splitlines()) == 1 and "source.pth" in error
    expected = {"truncated": "truncated",
                "not a checkpoint": "expected a PyTorch checkpoint written by torch.save (SBI's FFraw.tar or "
                                    "FFc23.tar: a zip archive, or a pickle from PyTorch before 1.6), but it is text "
                                    "beginning '<html>404 Not Fo'",
                "needs code": "nothing was executed", "other architecture": "keys of another shape",
                "extra key": "1 unmapped keys: net.adjust_channel.weight",
                "missing key": "1 missing keys: net._blocks.7._bn1.running_var",
                "other layout": "use --format sbi"}[case]
    assert expected in error


def test_onnx_export_of_the_imported_model_agrees_with_efficientnet_pytorch(sbi, sbi_imported, tmp_path):
    import onnxruntime

    path = tmp_path / "sbi.onnx"
    assert main(["export", "--checkpoint", str(sbi_imported), "--format", "onnx", "--out", str(path)]) == 0
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"images": sbi["probe"][:3].numpy()})[0]
    assert np.abs(probabilities[:, 1] - sbi["expected"][:3].numpy()).max() < PARITY


def _reference_video_score(reference: nn.Module, crops: list[np.ndarray], faces) -> float:
    """SBI's own inference on the crops: x/255, efficientnet_pytorch, softmax[:, 1], max per frame, mean."""
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    score, _ = aggregate_video(faces, p_fake(reference, x).double().numpy())
    return score


def test_detector_scores_a_clip_as_efficientnet_pytorch_does_on_the_same_crops(sbi, sbi_imported):
    clip = fixture("ghost/elon.mp4")
    detector = Detector.from_checkpoint(sbi_imported, device="cpu", frames=3)
    result = detector.score(clip)
    faces = extract_test_faces(clip, detector.face_detector, 3, 380)
    assert result.status == "ok" and len(faces.crops) >= 3
    assert faces.crops[0].shape == (380, 380, 3)  # cropped and resized as the checkpoint expects
    assert result.score == pytest.approx(_reference_video_score(sbi["reference"], faces.crops, faces), abs=PARITY)


def test_imported_checkpoint_runs_through_detect_evaluate_and_serve(sbi, sbi_imported, tmp_path, capsys):
    from fastapi.testclient import TestClient
    from skimage import data as skimage_data

    from hcsi.serve import create_app

    # the Detector API on a photo that ships with scikit-image (no shared data needed)
    detector = Detector.from_checkpoint(sbi_imported, device="cpu", frames=2)
    photo = skimage_data.astronaut()
    result = detector.score(photo)
    assert result.status == "ok" and len(result.faces) == 1
    faces = extract_test_faces_of_array(photo, detector)
    assert result.score == pytest.approx(_reference_video_score(sbi["reference"], faces.crops, faces), abs=PARITY)

    # hcsi detect and hcsi serve
    image = tmp_path / "astronaut.png"
    from PIL import Image

    Image.fromarray(photo).save(image)
    out = tmp_path / "detections.jsonl"
    assert main(["detect", str(image), "--checkpoint", str(sbi_imported), "--device", "cpu",
                 "--out", str(out)]) == 0
    row = json.loads(out.read_text().splitlines()[0])
    assert row["status"] == "ok" and row["score"] == pytest.approx(result.score, abs=1e-6)
    client = TestClient(create_app(detector))
    with open(image, "rb") as f:
        body = client.post("/v1/analyze", files={"file": ("astronaut.png", f)}).json()
    assert body["status"] == "ok" and body["score"] == pytest.approx(result.score, abs=1e-6)

    # hcsi evaluate on a real/ + fake/ folder
    root = tmp_path / "folder"
    (root / "real").mkdir(parents=True)
    (root / "fake").mkdir()
    (root / "real" / "astronaut.png").symlink_to(image)
    (root / "fake" / "astronaut.png").symlink_to(image)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(sbi_imported), "--dataset", "folder", "--root", str(root),
                 "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["n_videos"] == 2 and summary["n_failed"] == 0 and summary["auc"] == 0.5  # same image twice


def extract_test_faces_of_array(photo: np.ndarray, detector: Detector):
    from hcsi.evaluate.protocol import faces_in_frames

    return faces_in_frames([photo], [0], detector.face_detector, detector.model.config.input_size)


@pytest.mark.slow
def test_stage_two_starts_from_the_imported_sbi_network(sbi_imported, tmp_path):
    from hcsi.models import build_model
    from hcsi.train.config import load_config
    from hcsi.train.loop import build_training_model

    vit_stage1 = tmp_path / "vit_stage1.safetensors"
    save_checkpoint(build_model("vit_stage1"), vit_stage1)
    config = load_config(Path(__file__).parents[1] / "configs" / "hcsi_net_from_sbi.yaml",
                         [f"model.init_cnn={sbi_imported}", f"model.init_vit={vit_stage1}"])
    model = build_training_model(config)
    assert model.config.cnn_mean == (0.0, 0.0, 0.0)  # the CNN stream keeps SBI's x/255 input
    imported = model_from_checkpoint(sbi_imported).cnn.net.state_dict()
    for name, tensor in model.cnn.net.state_dict().items():
        assert torch.equal(tensor, imported[name]), name
    stage1 = model_from_checkpoint(vit_stage1).vit.net.state_dict()
    for name, tensor in model.vit.net.state_dict().items():
        assert torch.equal(tensor, stage1[name]), name
