"""Input normalisation shared by the model, the datasets and the demo: one definition of the statistics."""
from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what timm's ImageNet EfficientNet and Swin weights expect
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_to_tensor(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """RGB uint8 H×W×3 -> float32 3×H×W, scaled to [0, 1] and normalised per channel."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
