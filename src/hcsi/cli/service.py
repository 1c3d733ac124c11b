"""`hcsi serve` (API and page, with or without workers), `hcsi worker` (analyses only, on the service's database)
and `hcsi submit` (a batch sent to a running service)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from ..provenance import read_trust_anchors
from .deployment import NO_CHECKPOINT
from .options import (
    aggregate_option,
    backend_option,
    at_least,
    checkpoint_option,
    decision_option,
    device_option,
    face_detector_option,
    frames_option,
    positive_float,
    require_hcsi_checkpoint,
    trust_anchors_option,
)


def _detector(args: argparse.Namespace, command: str):
    from ..detect import Detector

    require_hcsi_checkpoint(args.checkpoint, command)
    trust_anchors = read_trust_anchors(args.trust_anchors) if args.trust_anchors is not None else None
    return Detector.from_checkpoint(args.checkpoint, device=args.device, frames=args.frames,
                                    face_detector=args.face_detector, calibration=args.calibration,
                                    strict_fpr=args.strict_fpr, lenient_fpr=args.lenient_fpr,
                                    threshold=args.threshold, aggregate=args.aggregate, backend=args.backend,
                                    trust_anchors=trust_anchors)


def _log_json_lines() -> None:
    import logging

    handler = logging.StreamHandler()  # one JSON line per job event on stderr
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("hcsi.serve").addHandler(handler)
    logging.getLogger("hcsi.serve").setLevel(logging.INFO)


def _serve(args: argparse.Namespace) -> int:
    if not args.checkpoint:
        print(NO_CHECKPOINT.replace("hcsi detect", "hcsi serve"), file=sys.stderr)
        return 2
    require_hcsi_checkpoint(args.checkpoint, "serve")  # before torch and the web stack are imported
    import uvicorn

    from ..serve import create_app

    token = args.token or os.environ.get("HCSI_API_TOKEN")
    app = create_app(_detector(args, "serve"), max_upload_mb=args.max_upload_mb, token=token, workers=args.workers,
                     queue_size=args.queue, data_dir=args.data_dir, keep_media=args.keep_media,
                     keep_days=args.keep_days, database=args.database, lease_s=args.lease_s,
                     max_attempts=args.max_attempts)
    _log_json_lines()
    if args.workers == 0 and not args.database:
        print("hcsi serve: --workers 0 on SQLite: nothing in this process analyses the jobs, and hcsi worker needs "
              "--database postgresql://...; they stay queued", file=sys.stderr)
    where = "PostgreSQL" if args.database else "SQLite"
    print(f"hcsi serve: http://{args.host}:{args.port}/ (API docs at /docs); jobs in {where}, files in "
          f"{args.data_dir}; {args.workers} worker(s)" + ("; API token required" if token else ""), file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _worker(args: argparse.Namespace) -> int:
    """Analyses only: `--workers` threads over the shared database until SIGTERM or SIGINT; exits 1 when a worker
    thread dies (so that a supervisor restarts the process)."""
    if not args.database:
        raise ValueError("--database postgresql://... (or HCSI_DATABASE) is needed: with SQLite, the jobs belong "
                         "to the one hcsi serve process whose data directory holds them, and its --workers analyse "
                         "them")
    if not args.checkpoint:
        print(NO_CHECKPOINT.replace("hcsi detect", "hcsi worker"), file=sys.stderr)
        return 2
    require_hcsi_checkpoint(args.checkpoint, "worker")  # before torch is imported
    from ..serve.backends import open_store
    from ..serve.service import detector_settings
    from ..serve.worker import Workers

    detector = _detector(args, "worker")
    store = open_store(args.data_dir, args.database, keep_media=args.keep_media, lease_s=args.lease_s,
                       max_attempts=args.max_attempts)
    workers = Workers(detector, store, detector_settings(detector), count=args.workers, keep_days=args.keep_days)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    _log_json_lines()
    workers.start()
    print(f"hcsi worker: {args.workers} worker(s) on {args.database.split('@')[-1]}, files in {args.data_dir}",
          file=sys.stderr)
    while not stop.wait(1.0):
        if workers.states()["dead"]:
            print("hcsi worker: a worker thread died; stopping so that a supervisor restarts this process",
                  file=sys.stderr)
            break
    workers.stop()
    store.close()
    return 0 if stop.is_set() else 1


def _submit(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..detect.inputs import expand_inputs
    from ..files import atomic_path
    from ..serve.client import ServiceClient, submit_files

    entries = expand_inputs(args.paths)
    paths = [Path(e.path) for e in entries if not e.skipped and not e.problem]
    rows = [{"path": e.path, "status": "skipped" if e.skipped else "error", "reason": e.problem, "score": None}
            for e in entries if e.skipped or e.problem]
    client = ServiceClient(args.server, args.token or os.environ.get("HCSI_API_TOKEN"))
    with tqdm(total=2 * len(paths), desc="upload + analysis", unit="step") as bar:
        for row in submit_files(client, paths, args.frames, args.force, on_upload=lambda: bar.update(1)):
            bar.update(1)
            rows.append(row)
            if row["status"] not in ("ok", "no_face"):
                tqdm.write(f"{row['path']}: {row['status']}: {row.get('reason', '')}", file=sys.stderr)
            with atomic_path(args.out) as tmp:  # rewritten after every file: an interrupted batch keeps its rows
                Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = sum(r["status"] in ("ok", "no_face") for r in rows)
    print(f"{done} of {len(rows)} input(s) analysed; results in {args.out}", file=sys.stderr)
    return 0 if done == len(rows) else 1


def _store_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--data-dir", default="hcsi-serve",
                         help="uploads until analysed, results and heatmaps, and (without --database) the SQLite "
                              "job database; with --database every node must see the same folder (default "
                              "./hcsi-serve)")
    options.add_argument("--database", default=os.environ.get("HCSI_DATABASE"), metavar="URL",
                         help="postgresql://USER@HOST:PORT/DB: jobs in PostgreSQL, shared by several API nodes and "
                              "workers (or env HCSI_DATABASE; default: SQLite in the data directory, one process)")
    options.add_argument("--keep-media", action="store_true", help="keep uploads after their analysis")
    options.add_argument("--keep-days", type=positive_float,
                         help="remove finished jobs (and their files) older than this many days")
    options.add_argument("--lease-s", type=positive_float, default=60.0,
                         help="a running job whose worker stops renewing it for this long is run again (default 60)")
    options.add_argument("--max-attempts", type=at_least(1), default=3,
                         help="runs of one job before it is given up as failed (default 3)")
    return options


def add_commands(commands: argparse._SubParsersAction) -> None:
    """serve, worker, submit."""
    shared = [checkpoint_option(required=False), frames_option(), device_option(), face_detector_option(),
              decision_option(), aggregate_option(), backend_option(), trust_anchors_option(), _store_options()]
    serve = commands.add_parser("serve", help="REST API and web page around a trained checkpoint", parents=shared)
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    serve.add_argument("--port", type=at_least(1), default=8000)
    serve.add_argument("--workers", type=at_least(0), default=1,
                       help="analyses run at once in this process (0: an API node; `hcsi worker` analyses)")
    serve.add_argument("--queue", type=at_least(0), default=8,
                       help="jobs that may wait beyond the workers, in the whole store; beyond that: 503")
    serve.add_argument("--max-upload-mb", type=positive_float, default=500)
    serve.add_argument("--token", help="API token required on every request (or env HCSI_API_TOKEN)")
    serve.set_defaults(run=_serve)

    worker = commands.add_parser("worker", help="analyse the jobs of hcsi serve API nodes (shared PostgreSQL)",
                                 parents=shared)
    worker.add_argument("--workers", type=at_least(1), default=1, help="analyses run at once in this process")
    worker.set_defaults(run=_worker)

    submit = commands.add_parser("submit", help="send files to a running hcsi serve and collect the results",
                                 description="Uploads every file as a batch job, follows them with a progress "
                                             "bar, and writes one JSON line per input like hcsi detect.")
    submit.add_argument("paths", nargs="+", help="files, folders or glob patterns")
    submit.add_argument("--server", required=True, help="the service's URL, e.g. http://gpu-box:8000")
    submit.add_argument("--token", help="API token (or env HCSI_API_TOKEN)")
    submit.add_argument("--out", default="results.jsonl", help="results file (default results.jsonl)")
    submit.add_argument("--frames", type=at_least(1), help="frames per video (default: the server's)")
    submit.add_argument("--force", action="store_true", help="analyse again files the server has analysed before")
    submit.set_defaults(run=_submit)
