"""`hcsi detect` on this machine's CPU: wall time per clip for SBI's EfficientNet-B4 (380 px) and HCSI-Net (224 px),
each backend (PyTorch eager, ONNX Runtime from the cached export), with the face stage of the next clips overlapping
the network (`Detector.score_many`'s default) and without.

Usage: python benchmarks/bench_detect.py [--frames 32] [--copies 3]
Writes benchmarks/results/detect-cpu.json; `python benchmarks/report.py` renders the table.

Random weights (timing only; the backends' agreement is tested in tests/test_backends.py). Clips from ../shared/data:
a batch of 1080p clips (the DFDC clip, --copies times: the only 1080p clip there) and one of 720p ones (LivePortrait's
s18 and s32, --copies times each). Per batch and set-up: `Detector.score_many` over the batch (decode, faces,
persons, network) after a warm-up, divided by the clips; the faces alone (`extract_test_faces`) are timed over the
same batch, so that the network's share and what the overlap hides show. The one-time ONNX export is reported
separately.
"""
from __future__ import annotations

import argparse
import os
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
BATCHES = {"1080p (DFDC abofeumbvv)": ["dfdc/abofeumbvv.mp4"],
           "720p (LivePortrait s18, s32)": ["liveportrait/s18.mp4", "liveportrait/s32.mp4"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--copies", type=int, default=3, help="how many times each clip is in its batch")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    batches = {name: [SHARED_DATA / rel for rel in clips] * args.copies for name, clips in BATCHES.items()}
    finder = create_face_detector()
    faces_s = {}
    for name, clips in batches.items():
        start = time.perf_counter()
        for path in clips:
            extract_test_faces(path, finder, args.frames, 224)
        faces_s[name] = (time.perf_counter() - start) / len(clips)
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
                detector.score(batches[next(iter(batches))][0], frames=2)  # warm-up
                for name, clips in batches.items():
                    for overlap in (False, True):
                        start = time.perf_counter()
                        results = list(detector.score_many(clips, overlap=overlap))
                        seconds = (time.perf_counter() - start) / len(clips)
                        records.append({"model": model_name, "input_size": detector.model.config.input_size,
                                        "backend": detector.backend, "clips": name, "n_clips": len(clips),
                                        "overlap": overlap, "frames": args.frames,
                                        "crops": sum(len(r.faces) for r in results) / len(clips),
                                        "seconds": seconds, "faces_seconds": faces_s[name],
                                        "load_and_export_s": ready_s})
                        print(records[-1], flush=True)
    result = {"device": "cpu", "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__,
              **provenance("python benchmarks/bench_detect.py"), "copies": args.copies, "records": records}
    print("wrote", write_results("detect-cpu", [result], RESULTS))


if __name__ == "__main__":
    main()
