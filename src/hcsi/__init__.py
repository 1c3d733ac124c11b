"""hcsi: HCSI-Net face-deepfake detection toolkit (Brodarič et al., IWBF 2025)."""

__version__ = "0.1.0"
