"""`hcsi serve` as a service: jobs per minute over a real server process, and the time to answer the history list
with 10,000 jobs in the store.

Usage: python benchmarks/bench_serve.py [--model hcsi_net_small] [--frames 32] [--jobs 12] [--history 10000]
Writes benchmarks/results/serve-<device>.json; `python benchmarks/report.py` renders the table.

1. Throughput: the shared clips (../shared/data, cycled to --jobs uploads, each made distinct by a trailing byte
   pattern so that none is deduplicated) are posted to /v1/jobs at once; jobs/min = jobs / (last finished − first
   posted). Random weights (timing only), CPU. Three set-ups: SQLite with the server's own worker; PostgreSQL
   (a throwaway server, as in the tests) with an API node and 1, then 2 `hcsi worker` processes, the cores shared
   among the workers (OMP_NUM_THREADS).
2. History: a store filled with --history synthetic finished jobs, then GET /v1/jobs (newest 50), with a status
   filter, and with a text search; median of 20 requests each, over HTTP on loopback.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' throwaway PostgreSQL server
from common import RESULTS, SHARED_DATA, provenance, write_results  # noqa: E402
from postgres import PostgresServer, unavailable_reason  # noqa: E402

from hcsi.models import build_model, save_checkpoint  # noqa: E402
from hcsi.serve.store_sqlite import SQLiteJobStore  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]


def start_server(checkpoint: Path, data_dir: Path, *options: str, threads: int | None = None
                 ) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(PROJECT / "src"), **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    process = subprocess.Popen([sys.executable, "-m", "hcsi.cli", "serve", "--checkpoint", str(checkpoint),
                                "--data-dir", str(data_dir), "--port", str(port), "--device", "cpu", *options],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(900):
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise TimeoutError("the server did not start")


def start_worker(checkpoint: Path, data_dir: Path, database: str, threads: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(PROJECT / "src"), OMP_NUM_THREADS=str(threads))
    return subprocess.Popen([sys.executable, "-m", "hcsi.cli", "worker", "--checkpoint", str(checkpoint),
                             "--data-dir", str(data_dir), "--database", database, "--device", "cpu"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def service(checkpoint: Path, data_dir: Path, frames: int, n_jobs: int, workers: int, database: str | None):
    """The service's URL: `hcsi serve` with its own worker on SQLite, or an API node and `workers` hcsi worker
    processes on PostgreSQL (the machine's cores shared among the workers)."""
    options = ("--frames", str(frames), "--queue", str(n_jobs))
    if database is None:
        processes = [start_server(checkpoint, data_dir, *options)]
    else:
        processes = [start_server(checkpoint, data_dir, *options, "--workers", "0", "--database", database,
                                  threads=1)]
        threads = max(1, (os.cpu_count() or 1) // workers)
        processes += [(start_worker(checkpoint, data_dir, database, threads), None) for _ in range(workers)]
    try:
        yield processes[0][1]
    finally:
        for process, _ in processes:
            process.terminate()
            process.wait(timeout=60)


def fresh_database(url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + "/" + name


def throughput(checkpoint: Path, frames: int, n_jobs: int, data: Path, workers: int = 1,
               database: str | None = None) -> dict:
    with open(data / "manifest.csv") as f:
        clips = [data / r["file"] for r in csv.DictReader(f) if r["file"].endswith(".mp4")]
    uploads = [(clips[i % len(clips)], clips[i % len(clips)].read_bytes() + i.to_bytes(4, "big"))
               for i in range(n_jobs)]
    with tempfile.TemporaryDirectory() as tmp, \
            service(checkpoint, Path(tmp) / "data", frames, n_jobs, workers, database) as url:
        start = time.perf_counter()
        ids = [httpx.post(f"{url}/v1/jobs", files={"file": (path.name, data_bytes)}, data={"force": "true"},
                          timeout=600).json()["id"] for path, data_bytes in uploads]  # never a stored result
        pending, statuses = set(ids), {}
        while pending:
            for job_id in list(pending):
                job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=60).json()
                if job["status"] in ("done", "failed"):
                    statuses[job_id] = job["status"]
                    pending.discard(job_id)
            time.sleep(0.5)
        wall = time.perf_counter() - start
    setup = ("SQLite, hcsi serve with its own worker" if database is None else
             f"PostgreSQL, one API node (--workers 0) and {workers} hcsi worker process(es)")
    return {"setup": setup, "workers": workers, "jobs": n_jobs, "frames": frames, "wall_s": round(wall, 1),
            "jobs_per_min": round(60 * n_jobs / wall, 2), "failed": sum(s == "failed" for s in statuses.values()),
            "clips": sorted({p.name for p, _ in uploads})}


def history(checkpoint: Path, n_jobs: int) -> dict:
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteJobStore(Path(tmp) / "data")
        start = time.perf_counter()
        for i in range(n_jobs):
            store.create(f"clip_{i:05d}.mp4", f"{rng.getrandbits(256):064x}", 1000 + i, ".mp4", 32, "{}",
                         "hcsi_net_small")
            claimed, token = store.claim_next()
            score = rng.random()
            store.finish(claimed["id"], token, {"status": "ok", "score": score, "label": "fake" if score >= 0.5
                                                else "real", "reason": ""}, None)
        fill_s = time.perf_counter() - start
        store.close()
        process, url = start_server(checkpoint, Path(tmp) / "data")
        try:
            timings = {}
            for name, params in (("newest 50", {"limit": 50}), ("status=done, newest 50", {"status": "done"}),
                                 ("text search", {"q": "clip_0999"}), ("page 100 of 50", {"limit": 50,
                                                                                          "offset": 4950})):
                seconds = []
                for _ in range(20):
                    begin = time.perf_counter()
                    answer = httpx.get(f"{url}/v1/jobs", params=params, timeout=60)
                    seconds.append(time.perf_counter() - begin)
                    assert answer.status_code == 200, answer.text
                timings[name] = {"median_ms": round(1000 * statistics.median(seconds), 1),
                                 "total_matching": answer.json()["total"]}
        finally:
            process.terminate()
            process.wait(timeout=60)
    return {"jobs_in_store": n_jobs, "fill_s": round(fill_s, 1), "list": timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="hcsi_net_small")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "model.safetensors"
        save_checkpoint(build_model(args.model, pretrained=False), checkpoint)
        record = {**provenance("python benchmarks/bench_serve.py " + " ".join(sys.argv[1:])), "device": "cpu",
                  "cores": os.cpu_count(), "model": args.model, "throughput": []}
        record["throughput"].append(throughput(checkpoint, args.frames, args.jobs, args.data))
        print(record["throughput"][-1], flush=True)
        reason = unavailable_reason()
        if reason is None:
            postgres = PostgresServer()
            try:
                for workers in (1, 2):
                    database = fresh_database(postgres.url, f"bench_{workers}_workers")
                    record["throughput"].append(throughput(checkpoint, args.frames, args.jobs, args.data, workers,
                                                           database))
                    print(record["throughput"][-1], flush=True)
            finally:
                postgres.close()
        else:
            record["postgresql_skipped"] = reason
        record["history"] = history(checkpoint, args.history)
        print(record["history"], flush=True)
    print("wrote", write_results("serve-cpu", [record], out_dir=args.out_dir or RESULTS))


if __name__ == "__main__":
    main()
