"""`hcsi detect` on this machine's CPU: wall time per clip for SBI's EfficientNet-B4 (380 px) and HCSI-Net (224 px),
each backend (PyTorch eager, ONNX Runtime from the cached export).

Usage: python benchmarks/bench_detect.py [--frames 32] [--runs 2]
Writes benchmarks/results/detect-cpu.json; `python benchmarks/report.py` renders the table.

Random weights (timing only; the backends' agreement is tested in tests/test_backends.py). Clips from ../shared/data:
the DFDC clip (1920×1080) and LivePortrait's s18 (1280×720). Per clip and set-up: `Detector.score` (decode, faces,
persons, network), median of --runs after one warm-up; the faces alone (`extract_test_faces`) are timed once per
clip so that the network's share shows. The one-time ONNX export is reported separately.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_DATA, provenance, write_results  # noqa: E402

from hcsi.detect import Detector  # noqa: E402
from hcsi.evaluate.protocol import extract_test_faces  # noqa: E402
from hcsi.faces import create_face_detector  # noqa: E402
from hcsi.models import build_model, save_checkpoint  # noqa: E402

MODELS = ("sbi_efficientnet_b4", "hcsi_net")
CLIPS = {"1080p (DFDC abofeumbvv)": "dfdc/abofeumbvv.mp4", "720p (LivePortrait s18)": "liveportrait/s18.mp4"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    clips = {name: SHARED_DATA / rel for name, rel in CLIPS.items() if (SHARED_DATA / rel).is_file()}
    finder = create_face_detector()
    faces_s = {}
    for name, path in clips.items():
        start = time.perf_counter()
        found = extract_test_faces(path, finder, args.frames, 224)
        faces_s[name] = {"seconds": time.perf_counter() - start, "crops": len(found.crops)}
    records = []
    with tempfile.TemporaryDirectory() as folder:
        os.environ["HCSI_ONNX_CACHE_DIR"] = str(Path(folder) / "onnx")
        for model_name in MODELS:
            checkpoint = Path(folder) / f"{model_name}.safetensors"
            save_checkpoint(build_model(model_name), checkpoint)
            for backend in ("torch", "onnxruntime"):
                start = time.perf_counter()
                detector = Detector.from_checkpoint(checkpoint, device="cpu", frames=args.frames, backend=backend)
                ready_s = time.perf_counter() - start
                detector.score(next(iter(clips.values())), frames=2)  # warm-up
                for clip, path in clips.items():
                    times = []
                    for _ in range(args.runs):
                        start = time.perf_counter()
                        result = detector.score(path)
                        times.append(time.perf_counter() - start)
                    records.append({"model": model_name, "input_size": detector.model.config.input_size,
                                    "backend": detector.backend, "clip": clip, "frames": args.frames,
                                    "crops": len(result.faces), "seconds": statistics.median(times),
                                    "faces_seconds": faces_s[clip]["seconds"], "load_and_export_s": ready_s})
                    print(records[-1], flush=True)
    result = {"device": "cpu", "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__,
              **provenance("python benchmarks/bench_detect.py"), "runs": args.runs, "records": records}
    print("wrote", write_results("detect-cpu", [result], RESULTS))


if __name__ == "__main__":
    main()
