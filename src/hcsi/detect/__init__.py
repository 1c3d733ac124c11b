"""For analysts: score videos and images with a trained checkpoint, explain with gate heatmaps.

The names below load on first use, so that `hcsi detect` can check its arguments (hcsi.detect.inputs) before torch
and the models are imported."""
__all__ = ["DetectionResult", "Detector", "FaceResult"]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
