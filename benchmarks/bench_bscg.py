"""Latency and peak memory of one BSCG block at stage-1 size (N = 56² nodes, d = 64): SDPA vs explicit softmax.

Usage: python benchmarks/bench_bscg.py [--device cpu|cuda] [--batches 1 8] [--out-dir DIR]
Writes <out-dir>/bscg-<device>.json (default benchmarks/results); `python benchmarks/report.py` renders the tables.
Each (path, batch, mode) runs in a fresh process so that CPU peak memory is that of the measurement alone.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, device_slug, provenance, write_results
from hcsi.profiling import reset_peak_resident_memory, resident_memory_mb  # noqa: E402

NODES, DIM = 56 * 56, 64


def measure_one(path: str, batch: int, mode: str, device: str, iters: int) -> dict:
    from hcsi.models import BidirectionalSpatialCrossGating

    dev = torch.device(device)
    torch.manual_seed(0)
    block = BidirectionalSpatialCrossGating(DIM, use_sdpa=(path == "sdpa")).to(dev)
    q_c = torch.nn.functional.normalize(torch.randn(batch, NODES, DIM, device=dev), dim=-1)
    q_t = torch.nn.functional.normalize(torch.randn(batch, NODES, DIM, device=dev), dim=-1)
    training = mode == "train"
    q_c.requires_grad_(training)
    q_t.requires_grad_(training)

    def step():
        with torch.set_grad_enabled(training):
            g_c, g_t = block(q_c, q_t)
            if training:
                (g_c.sum() + g_t.sum()).backward()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        base = resident_memory_mb("VmRSS")
        if base is None or not reset_peak_resident_memory():
            raise RuntimeError("CPU peak memory needs Linux /proc (VmRSS, clear_refs)")
    times = []
    for _ in range(2 + iters):  # two untimed warm-up steps; memory counts from before them
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    if dev.type == "cuda":
        extra = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    else:
        extra = resident_memory_mb("VmHWM") - base
    return {"path": path, "batch": batch, "mode": mode, "latency_ms": round(statistics.median(times[2:]), 3),
            "extra_peak_memory_mb": round(extra, 1)}


def agreement(device: str) -> float:
    """Largest difference between the SDPA and explicit contexts at stage-1 size on this device."""
    from hcsi.models import BidirectionalSpatialCrossGating

    dev = torch.device(device)
    block = BidirectionalSpatialCrossGating(DIM).to(dev)
    q_c = torch.nn.functional.normalize(torch.randn(2, NODES, DIM, device=dev), dim=-1)
    q_t = torch.nn.functional.normalize(torch.randn(2, NODES, DIM, device=dev), dim=-1)
    with torch.no_grad():
        fast = block.attended_contexts(q_c, q_t)
        slow = block.attended_contexts_reference(q_c, q_t)
    return max((a - b).abs().max().item() for a, b in zip(fast, slow))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: path,batch,mode measured in a child process
    args = parser.parse_args()
    if args.one:
        path, batch, mode = args.one.split(",")
        print(json.dumps(measure_one(path, int(batch), mode, args.device, args.iters)))
        return
    records = []
    for batch in args.batches:
        for mode in ("inference", "train"):
            for path in ("sdpa", "explicit"):
                child = subprocess.run(
                    [sys.executable, __file__, "--device", args.device, "--iters", str(args.iters),
                     "--one", f"{path},{batch},{mode}"], capture_output=True, text=True)
                if child.returncode != 0:
                    record = {"path": path, "batch": batch, "mode": mode, "error": child.stderr.strip()[-500:]}
                else:
                    record = json.loads(child.stdout.strip().splitlines()[-1])
                print(record, flush=True)
                records.append(record)
    result = {**provenance("python benchmarks/bench_bscg.py " + " ".join(sys.argv[1:])),
              "device": "cpu" if args.device == "cpu" else torch.cuda.get_device_name(),
              "threads": torch.get_num_threads(), "nodes": NODES, "dim": DIM,
              "max_abs_diff_sdpa_vs_explicit": agreement(args.device), "records": records}
    print("wrote", write_results(f"bscg-{device_slug(args.device)}", [result], args.out_dir))


if __name__ == "__main__":
    main()
