"""The network alone on this machine's CPU, every way of running it that could be the default: 32 face crops of one
video through SBI's EfficientNet-B4 (380 px) and HCSI-Net (224 px) with PyTorch eager (the reference), channels-last,
TorchScript frozen with oneDNN fusion (`torch.jit.freeze` + `optimize_for_inference`), `torch.compile` (inductor),
bf16 autocast, and ONNX Runtime from the export `hcsi detect` caches. Per way: seconds per 32 crops, the one-time
cost (trace, compile or export) and the largest p(fake) difference from eager (the default must stay within 1e-4).

Usage: python benchmarks/bench_cpu_network.py [--runs 3] [--models sbi_efficientnet_b4,hcsi_net]
Writes benchmarks/results/cpu-network.json; `python benchmarks/report.py` renders the table.

Random weights with batch-norm statistics from noise (`with_batch_statistics`, so that crops score differently and
the differences mean something); the crops are the faces of ../shared/data's DFDC clip (1920×1080), 32 frames.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_DATA, provenance, write_results  # noqa: E402

from hcsi.detect.backends import cached_onnx_model  # noqa: E402
from hcsi.evaluate.protocol import extract_test_faces  # noqa: E402
from hcsi.faces import create_face_detector  # noqa: E402
from hcsi.models import build_model, with_batch_statistics  # noqa: E402
from hcsi.normalization import image_to_tensor  # noqa: E402

CLIP = "dfdc/abofeumbvv.mp4"


def _eager(model, x):
    return model, x


def _channels_last(model, x):
    return model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)


def _frozen(model, x):
    with torch.no_grad():
        traced = torch.jit.trace(model, x[:2], check_trace=False)
    return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval())), x


def _compiled(model, x):
    return torch.compile(model), x


def _onnxruntime(model, x):
    return cached_onnx_model(model, "bench-" + model.config.name), x


WAYS = {"eager": _eager, "channels-last": _channels_last, "torchscript frozen (oneDNN fusion)": _frozen,
        "torch.compile (inductor)": _compiled, "bf16 autocast": _eager, "onnxruntime": _onnxruntime}


def probabilities(runner, x, bf16: bool = False) -> np.ndarray:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return runner(x).float().softmax(dim=1)[:, 1].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="sbi_efficientnet_b4,hcsi_net")
    parser.add_argument("--batch-sizes", default="",
                        help="instead: ONNX Runtime over 64 crops (the faces of two clips) at each of these batch "
                             "sizes (comma-separated), written to cpu-network-batch.json")
    args = parser.parse_args()
    if args.batch_sizes:
        return batch_sizes(args)
    torch.set_num_threads(os.cpu_count() or 1)
    records = []
    with tempfile.TemporaryDirectory() as folder:
        os.environ["HCSI_ONNX_CACHE_DIR"] = folder
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = with_batch_statistics(build_model(name))
            config = model.config
            faces = extract_test_faces(SHARED_DATA / CLIP, create_face_detector(), 32, config.input_size)
            x = torch.stack([image_to_tensor(c, config.mean, config.std) for c in faces.crops])
            reference = probabilities(model, x)
            for way, prepare in WAYS.items():
                record = {"model": name, "input_size": config.input_size, "crops": len(x), "way": way}
                try:
                    start = time.perf_counter()
                    runner, inputs = prepare(copy.deepcopy(model), x)
                    found = probabilities(runner, inputs, bf16=way == "bf16 autocast")  # first call: compiles
                    record["one_time_s"] = time.perf_counter() - start
                    times = []
                    for _ in range(args.runs):
                        start = time.perf_counter()
                        found = probabilities(runner, inputs, bf16=way == "bf16 autocast")
                        times.append(time.perf_counter() - start)
                    record |= {"seconds": statistics.median(times), "max_abs_diff": float(np.abs(found - reference)
                                                                                           .max()),
                               "score_spread": float(np.ptp(reference))}
                except Exception as error:  # a way that does not work for this model is a result too
                    record["error"] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
                    traceback.print_exc()
                records.append(record)
                print(record, flush=True)
                torch._dynamo.reset()
    result = {"device": "cpu", "cores": len(os.sched_getaffinity(0)), "threads": torch.get_num_threads(),
              **provenance("python benchmarks/bench_cpu_network.py"), "runs": args.runs, "records": records}
    print("wrote", write_results("cpu-network", [result], RESULTS))


def batch_sizes(args) -> None:
    """Seconds per 32 crops through ONNX Runtime when 64 crops go in batches of each size (hcsi detect pools the
    crops of consecutive videos into batches of --batch-size)."""
    torch.set_num_threads(os.cpu_count() or 1)
    records = []
    with tempfile.TemporaryDirectory() as folder:
        os.environ["HCSI_ONNX_CACHE_DIR"] = folder
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = with_batch_statistics(build_model(name))
            config = model.config
            faces = extract_test_faces(SHARED_DATA / CLIP, create_face_detector(), 32, config.input_size)
            x = torch.stack([image_to_tensor(c, config.mean, config.std) for c in faces.crops * 2])
            runner = cached_onnx_model(model, "bench-" + name)
            for size in map(int, args.batch_sizes.split(",")):
                times = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    for first in range(0, len(x), size):
                        probabilities(runner, x[first:first + size])
                    times.append(time.perf_counter() - start)
                records.append({"model": name, "input_size": config.input_size, "way": "onnxruntime",
                                "batch_size": size, "crops": len(x), "seconds_per_32": statistics.median(times) / 2})
                print(records[-1], flush=True)
    result = {"device": "cpu", "cores": len(os.sched_getaffinity(0)), "threads": torch.get_num_threads(),
              **provenance("python benchmarks/bench_cpu_network.py --batch-sizes " + args.batch_sizes),
              "runs": args.runs, "records": records}
    print("wrote", write_results("cpu-network-batch", [result], RESULTS))


if __name__ == "__main__":
    main()
