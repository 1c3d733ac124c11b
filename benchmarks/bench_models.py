"""Latency, throughput and peak memory of whole models, one `hcsi profile --json` process per variant.

Usage: python benchmarks/bench_models.py [--device cpu|cuda] [--models NAME ...] [--batch 1] [--dtype fp32]
                                         [--compile] [--warmup 3] [--iters 10] [--out-dir DIR] [--suffix S]
Each model runs at its own input size (224 for HCSI-Net, 380 for SBI's B4).
Writes <out-dir>/models-<device>-bs<B>-<dtype>[-compile][-S].json; `python benchmarks/report.py` renders the tables.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, device_slug, provenance, write_results

from hcsi.models import list_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=list_models())
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--suffix", help="appended to the results file name (a subset of models beside the full set)")
    args = parser.parse_args()

    records = []
    for name in args.models:
        command = [sys.executable, "-m", "hcsi.cli", "profile", "--json", "--model", name, "--device", args.device,
                   "--batch", str(args.batch), "--dtype", args.dtype, "--warmup", str(args.warmup),
                   "--iters", str(args.iters)] + (["--compile"] if args.compile else [])
        child = subprocess.run(command, capture_output=True, text=True)
        if child.returncode != 0:
            record = {"model": name, "error": child.stderr.strip()[-800:]}
        else:
            record = json.loads(child.stdout.strip().splitlines()[-1])
            record.pop("paper")
        print({k: record.get(k) for k in ("model", "latency_ms", "throughput_img_s", "peak_memory_mb", "error")},
              flush=True)
        records.append(record)
    tag = f"models-{device_slug(args.device)}-bs{args.batch}-{args.dtype}" + ("-compile" if args.compile else "")
    tag += f"-{args.suffix}" if args.suffix else ""
    result = {**provenance("python benchmarks/bench_models.py " + " ".join(sys.argv[1:])), "records": records}
    print("wrote", write_results(tag, [result], args.out_dir))


if __name__ == "__main__":
    main()
