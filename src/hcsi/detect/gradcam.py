"""Grad-CAM of the CNN stream (captum's LayerGradCam on its last feature map), shown beside the gates for
comparison: a post-hoc attribution of the "fake" logit, unlike the gates, which the model itself computes."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def grad_cam_maps(model: nn.Module, images: torch.Tensor) -> list[np.ndarray]:
    """One map in [0, 1] per image (the CNN stream's final resolution) for class 1 ("fake")."""
    from captum.attr import LayerGradCam

    if getattr(model, "cnn", None) is None:
        raise ValueError(f"model {model.config.name!r} has no CNN stream for Grad-CAM")
    layer = model.cnn.net.bn2  # conv_head + BN + SiLU: the last CNN feature map before pooling
    with torch.enable_grad():
        maps = LayerGradCam(model, layer).attribute(images.detach().requires_grad_(True), target=1,
                                                    relu_attributions=True)
    out = []
    for m in maps[:, 0].detach().float().cpu().numpy():
        peak = m.max()
        out.append(m / peak if peak > 0 else m)
    return out
