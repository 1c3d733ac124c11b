"""The README cannot drift from the code: every `hcsi` command line in it parses, the ones that need no dataset run
as written (placeholders such as clip.mp4, face.jpg and best.safetensors made in a scratch folder), and its first
Python snippet runs."""
import os
import re
import shlex
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from skimage import data as skimage_data

from hcsi.cli import build_parser
from hcsi.models import build_model, save_checkpoint

PROJECT = Path(__file__).resolve().parents[1]
README = (PROJECT / "README.md").read_text()

# README lines that run as written in the scratch folder, in this order (later ones use earlier outputs)
RUN_AS_WRITTEN = [
    "hcsi sbi-preview --input face.jpg --n 16 --out grid.png",
    "hcsi perturb-preview --input face.jpg --out perturbations.png",
    "hcsi preprocess --dataset folder --root my_videos --out store",
    "hcsi import-weights --format sbi FFc23.tar --out weights/sbi_ffc23.safetensors",
    "hcsi detect clip.mp4 photos/ --checkpoint weights/sbi_ffc23.safetensors",
    "hcsi compare --auc ff++=99.31 cdf=90.45 dfd=97.84 dfdc=74.61 dfdcp=84.85 ffiw=87.73 --json",
    'hcsi detect clip.mp4 photos/ "cases/**/*.mov" --checkpoint best.safetensors --out results.jsonl '
    "--explain heatmaps/",
    "hcsi export --checkpoint best.safetensors --format onnx --out hcsi.onnx",
    "hcsi detect clip.mp4 --backend onnxruntime --model hcsi.onnx",
]


def shell_lines() -> list[str]:
    """Command lines of the README's shell blocks, continuations joined, comments removed."""
    lines, in_block, language = [], False, ""
    for raw in README.splitlines():
        if raw.startswith("```"):
            in_block, language = not in_block, raw[3:].strip()
            continue
        if in_block and language == "":
            lines.append(raw)
    joined = "\n".join(lines).replace("\\\n", " ")
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in joined.splitlines() if line.strip()]


def hcsi_arguments(line: str) -> list[str] | None:
    """The arguments after `hcsi` (or `torchrun ... -m hcsi.cli`) of a synopsis line: [optional groups] dropped,
    a|b alternatives reduced to the first; None for lines that are not hcsi commands or elide arguments (...)."""
    if " ... " in f" {line} ":
        return None
    line = re.sub(r"\[[^\]]*\]", "", line)
    tokens = shlex.split(line)
    if tokens[:1] == ["hcsi"]:
        tokens = tokens[1:]
    elif tokens[:1] == ["torchrun"] and "hcsi.cli" in tokens:
        tokens = tokens[tokens.index("hcsi.cli") + 1:]
    else:
        return None
    return [t.split("|")[0] if "|" in t and not t.startswith("-") and "=" not in t else t for t in tokens]


def test_every_command_line_of_the_readme_parses():
    commands = [(line, hcsi_arguments(line)) for line in shell_lines()]
    commands = [(line, args) for line, args in commands if args is not None]
    assert len(commands) >= 20
    parser = build_parser()
    for line, args in commands:
        try:
            parser.parse_args(args)
        except SystemExit as error:
            pytest.fail(f"README line does not parse (exit {error.code}): {line}")


def _clip(path: Path, image: np.ndarray, frames: int = 6) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.height, stream.width = image.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(image, 2 * k, axis=1), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """The README's placeholders: face.jpg, clip.mp4, photos/, my_videos/, best.safetensors, FFc23.tar."""
    from efficientnet_pytorch import EfficientNet

    root = tmp_path_factory.mktemp("readme")
    face = skimage_data.astronaut()[:, 64:448]  # a portrait that ships with scikit-image
    cv2.imwrite(str(root / "face.jpg"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    _clip(root / "clip.mp4", face)
    (root / "photos").mkdir()
    cv2.imwrite(str(root / "photos" / "portrait.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    (root / "my_videos").mkdir()
    (root / "my_videos" / "clip.mp4").symlink_to(root / "clip.mp4")
    save_checkpoint(build_model("hcsi_net_small", input_size=64), root / "best.safetensors")
    sbi = EfficientNet.from_name("efficientnet-b4", num_classes=2)
    torch.save({"model": {"net." + k: v for k, v in sbi.state_dict().items()}, "epoch": 0}, root / "FFc23.tar")
    return root


def test_the_readme_commands_that_need_no_dataset_run_as_written(scratch):
    lines = shell_lines()
    env = dict(os.environ, PYTHONPATH=str(PROJECT / "src"))
    for command in RUN_AS_WRITTEN:
        assert command in lines, f"the README no longer says: {command}"
        args = [sys.executable, "-m", "hcsi.cli", *shlex.split(command)[1:]]
        result = subprocess.run(args, cwd=scratch, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}\n{result.stderr[-2000:]}"
    assert (scratch / "grid.png").is_file() and (scratch / "store" / "store.json").is_file()
    assert (scratch / "perturbations.png").is_file()
    assert (scratch / "results.jsonl").read_text().count("\n") == 3  # the clip, the photo, the empty pattern
    assert any((scratch / "heatmaps").glob("*.png")) and (scratch / "hcsi.onnx").is_file()


def test_the_readme_model_snippet_runs():
    snippet = README.split("```python\n", 1)[1].split("```", 1)[0]
    assert "build_model(" in snippet
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # builds the full model and runs it once
    assert namespace["logits"].shape == (1, 2)
