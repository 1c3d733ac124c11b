"""Export a trained HCSI-Net to ONNX or TorchScript: input "images" (B×3×S×S, normalised as in training, any batch
size), output "probabilities" (B×2 softmax; column 1 = fake), so a deployment needs no hcsi model code."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..files import atomic_path

ONNX_OPSET = 18


class ProbabilityModel(nn.Module):
    """The model followed by a softmax: what the exported file computes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).softmax(dim=1)


def _example(model: nn.Module, batch: int = 2) -> torch.Tensor:
    size = model.config.input_size
    return torch.randn(batch, 3, size, size)


def export_model(model: nn.Module, path: str | Path, fmt: str) -> Path:
    """Write `model` (an HCSINet, moved to the CPU, eval mode) as fmt "onnx" or "torchscript", atomically."""
    path = Path(path)
    wrapped = ProbabilityModel(model.cpu().eval()).eval()
    example = _example(model)
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic that is constant for a fixed S
        if fmt == "onnx":
            torch.onnx.export(wrapped, (example,), tmp, input_names=["images"], output_names=["probabilities"],
                              dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
                              opset_version=ONNX_OPSET, dynamo=False)
        elif fmt == "torchscript":
            torch.jit.save(torch.jit.trace(wrapped, example), tmp)
        else:
            raise ValueError(f"unknown export format {fmt!r}; expected onnx or torchscript")
    return path


class OnnxRuntimeModel:
    """An exported ONNX file behind the interface `Detector` needs: config (input size, normalisation) and a call
    that maps normalised images to logits. The config comes from the checkpoint metadata stored in the file."""

    def __init__(self, path: str | Path) -> None:
        import onnxruntime

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=onnxruntime.get_available_providers())
        except Exception as error:
            raise ValueError(f"{path}: not a loadable ONNX model ({error})") from error
        meta = self.session.get_modelmeta().custom_metadata_map
        if "hcsi_config" not in meta:
            raise ValueError(f"{path}: no hcsi model config in its metadata (export it with `hcsi export`)")
        from ..models.weights import config_from_json

        self.config = config_from_json(meta["hcsi_config"])
        self.checkpoint_sha256 = meta.get("hcsi_checkpoint_sha256")  # of the checkpoint it was exported from
        self.path = path

    def to(self, device):
        return self

    def eval(self):
        return self

    def __call__(self, images: torch.Tensor, return_gates: bool = False):
        if return_gates:
            raise ValueError("gate heatmaps need the PyTorch model; the ONNX file outputs probabilities only")
        probabilities = self.session.run(None, {"images": images.cpu().numpy()})[0]
        return torch.from_numpy(np.log(np.clip(probabilities, 1e-12, 1.0)))  # softmax of these = probabilities


def add_onnx_metadata(path: str | Path, config_json: str, checkpoint_sha256: str | None = None) -> None:
    """Store the model config in the ONNX file so that `OnnxRuntimeModel` knows the input size and normalisation,
    and the SHA-256 of the checkpoint it came from, so that the checkpoint's calibration can be applied to it."""
    import onnx

    model = onnx.load(str(path))
    for key, value in (("hcsi_config", config_json), ("hcsi_checkpoint_sha256", checkpoint_sha256)):
        if value:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    with atomic_path(path) as tmp:
        onnx.save(model, tmp)
