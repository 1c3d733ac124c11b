"""Workers: threads that claim jobs from the store and analyse them one at a time in front of one detector.

A worker survives whatever goes wrong around an analysis (the store unavailable, a failing purge, a job deleted
between its claim and its read): the error is logged and counted (`hcsi_worker_errors`) and the loop goes on; a
job whose bookkeeping failed keeps its lease until it runs out and is claimed again. While it analyses, a worker
renews its job's lease (with each progress report, and from a keeper thread when progress is slow); when the claim
is gone (the job was deleted, or re-claimed after this worker stalled) the analysis stops at its next progress
report and its result is discarded. Each worker beats a heart at every loop and progress report; `states()` says
which are alive, dead (the thread ended) or stuck (no beat for `stuck_after_s`).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time

import cv2

from ..detect.api import Detector
from ..detect.explain import gate_strip
from .metrics import ServiceMetrics
from .results import result_record
from .store import JobStore, StoreUnavailable

LOG = logging.getLogger("hcsi.serve")
PURGE_EVERY_S = 3600


class ClaimLost(Exception):
    """The job this worker analyses was deleted or claimed by another worker: stop, record nothing."""


class LeaseKeeper:
    """Renews a claim's lease every third of the lease while an analysis runs; `lost` is set when the claim is gone."""

    def __init__(self, store: JobStore, job_id: str, token: str) -> None:
        self.store, self.job_id, self.token = store, job_id, token
        self.lost, self._done = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"hcsi-lease-{job_id[:6]}", daemon=True)

    def _keep(self) -> None:
        while not self._done.wait(self.store.lease_s / 3):
            try:
                if not self.store.renew(self.job_id, self.token):
                    self.lost.set()
                    return
            except StoreUnavailable as error:  # try again at the next third; the lease may still hold
                LOG.warning(json.dumps({"event": "lease_renewal_failed", "job": self.job_id, "error": str(error)}))

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=10)


class Workers:
    """`count` worker threads over `store` and `detector`; `settings` go into every result; `metrics` are this
    process's (the workers' states among them)."""

    def __init__(self, detector: Detector, store: JobStore, settings: dict, count: int = 1,
                 keep_days: float | None = None, stuck_after_s: float = 900.0) -> None:
        self.detector, self.store, self.settings = detector, store, settings
        self.metrics = ServiceMetrics(store, self.states)
        self.count, self.keep_days, self.stuck_after_s = count, keep_days, stuck_after_s
        self._detector_lock = threading.Lock()  # one face detector and one model: one analysis at a time
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._threads: list[threading.Thread] = []
        self._beats: dict[str, float] = {}
        self._last_purge = 0.0

    def start(self) -> None:
        for n in range(self.count):
            thread = threading.Thread(target=self._loop, name=f"hcsi-worker-{n}", daemon=True)
            self._beats[thread.name] = time.time()
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def wake(self) -> None:
        self._wake.set()

    def states(self) -> dict[str, int]:
        """This process's workers: alive, dead (thread ended without being stopped), stuck (no beat lately)."""
        now, states = time.time(), {"alive": 0, "dead": 0, "stuck": 0}
        for thread in self._threads:
            if not thread.is_alive():
                states["dead"] += not self._stopping.is_set()
            elif now - self._beats[thread.name] > self.stuck_after_s:
                states["stuck"] += 1
            else:
                states["alive"] += 1
        return states

    def _beat(self) -> None:
        self._beats[threading.current_thread().name] = time.time()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._beat()
            try:
                self._purge_if_due()
                claimed = self.store.claim_next()
            except Exception as error:  # the store is unavailable or broken: log, count, wait, go on
                self._survived("claim", error)
                claimed = None
            if claimed is None:
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                self.run(*claimed)
            except Exception as error:  # bookkeeping failed: the job's lease runs out and it is claimed again
                self._survived("run", error, claimed[0]["id"])

    def _survived(self, where: str, error: Exception, job_id: str | None = None) -> None:
        self.metrics.worker_error(where)
        LOG.error(json.dumps({"event": "worker_error", "where": where, "job": job_id,
                              "error": f"{type(error).__name__}: {error}"}))
        self._stopping.wait(1.0)

    def _purge_if_due(self) -> None:
        if self.keep_days is not None and time.time() - self._last_purge > PURGE_EVERY_S:
            self._last_purge = time.time()
            removed = self.store.purge_older_than(self.keep_days)
            LOG.info(json.dumps({"event": "retention", "removed_jobs": removed, "keep_days": self.keep_days}))

    def run(self, job: dict | None, token: str) -> None:
        """Analyse one claimed job and record its result or its failure."""
        if job is None:  # deleted between the claim and its read
            return
        start = time.perf_counter()
        LOG.info(json.dumps({"event": "job_started", "job": job["id"], "attempt": job["attempts"],
                             "worker": f"{os.getpid()}/{threading.current_thread().name}"}))
        with LeaseKeeper(self.store, job["id"], token) as lease:
            try:
                record, heatmap = self._analyse(job, token, lease)
                finished = self.store.finish(job["id"], token, record, heatmap)
                status = record["status"]
            except ClaimLost:
                status, finished = "discarded", False  # deleted: its files went with it; re-claimed: not ours
            except StoreUnavailable:  # the result could not be recorded: the job is claimed again later
                raise
            except Exception as error:  # this job fails with the reason; the worker goes on
                status = "error"
                finished = self.store.fail(job["id"], token, f"{job['file_name']}: analysis failed: "
                                                             f"{type(error).__name__}: {error}")
        seconds = time.perf_counter() - start
        self.metrics.observe(seconds)
        LOG.info(json.dumps({"event": "job_finished", "job": job["id"], "status": status, "seconds": round(seconds, 3),
                             "sha256": job["sha256"], "recorded": finished,
                             "worker": f"{os.getpid()}/{threading.current_thread().name}"}))

    def _analyse(self, job: dict, token: str, lease: LeaseKeeper) -> tuple[dict, bytes | None]:
        media = self.store.media_path(job["sha256"], job["suffix"])

        def progress(stage: str, done: int, total: int) -> None:
            self._beat()
            try:
                held = self.store.set_progress(job["id"], token,
                                               {"stage": stage, "frames_done": done, "frames_total": total})
            except StoreUnavailable:  # progress is best effort; the lease keeper keeps renewing
                held = True
            if lease.lost.is_set() or not held:
                lease.lost.set()
                raise ClaimLost(job["id"])  # the detector reports it as the input's error: checked below

        with self._detector_lock:
            progress("waiting for the detector", 0, 0)
            result = self.detector.score(media, explain=True, frames=job["frames"], progress=progress)
        if lease.lost.is_set():
            raise ClaimLost(job["id"])
        heatmap = None
        if result.gates:
            ok, png = cv2.imencode(".png", cv2.cvtColor(gate_strip(result), cv2.COLOR_RGB2BGR))
            heatmap = png.tobytes() if ok else None
        return result_record(result, job, media, self.settings, heatmap is not None), heatmap
