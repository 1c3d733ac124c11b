"""Training: the paper's two-stage SBI recipe (stage 1: each backbone alone; stage 2: HCSI-Net end to end)."""
from .config import TrainConfig, load_config

__all__ = ["TrainConfig", "load_config"]
