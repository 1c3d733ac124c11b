"""For analysts: score videos and images with a trained checkpoint, explain with gate heatmaps."""
from .api import DetectionResult, Detector, FaceResult

__all__ = ["DetectionResult", "Detector", "FaceResult"]
