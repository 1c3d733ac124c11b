"""The service around one `Detector`: its settings (what a result depends on), admission of uploads as jobs
(deduplication, the queue limit), and the workers of this process (none on an API-only node)."""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

from ..checks import require_at_least, require_positive
from ..detect.api import Detector
from .store import JobStore, StoreUnavailable
from .uploads import UploadRefused, receive_upload
from .worker import Workers

LOG = logging.getLogger("hcsi.serve")


def calibration_sha256(calibration) -> str:
    """The SHA-256 of the calibration file as read (of its canonical JSON when it came from no file)."""
    source = Path(calibration.source) if calibration.source else None
    if source is not None and source.is_file():
        return hashlib.sha256(source.read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(calibration.to_dict(), sort_keys=True).encode()).hexdigest()


def detector_settings(detector: Detector) -> dict:
    """What a result depends on besides the bytes and the frames: the key of deduplication (no server paths)."""
    config, calibration = detector.model.config, detector.calibration
    return {"model": config.name, "input_size": config.input_size, "checkpoint_sha256": detector.checkpoint_sha256,
            "face_detector": detector.face_detector.name, "aggregate": detector.aggregate,
            "calibration": f"sha256:{calibration_sha256(calibration)}" if calibration else "uncalibrated",
            "decided_by": detector.decision.to_dict(),
            "trust_anchors": (f"sha256:{hashlib.sha256(detector.trust_anchors.encode()).hexdigest()}"
                              if detector.trust_anchors else "none")}  # a provenance state depends on them


class ScoringService:
    """Uploads become jobs in `store`; `workers` threads of this process analyse them (0: an API node, the jobs
    are analysed by `hcsi worker` processes on the same database). At most `workers + queue_size` jobs are queued
    or running in the whole store; beyond that an upload is refused (503) and nothing is stored. `keep_days`
    removes older finished jobs."""

    def __init__(self, detector: Detector, store: JobStore, max_upload_mb: float = 500, workers: int = 1,
                 queue_size: int = 8, keep_days: float | None = None, stuck_after_s: float = 900.0):
        require_at_least("workers", workers, 0)
        require_at_least("queue_size", queue_size, 0)
        require_positive("max_upload_mb", max_upload_mb)
        if keep_days is not None:
            require_positive("keep_days", keep_days)
        self.detector, self.store = detector, store
        self.max_upload_mb, self.capacity, self.keep_days = max_upload_mb, max(workers + queue_size, 1), keep_days
        self.settings = detector_settings(detector)
        self.workers = Workers(detector, store, self.settings, count=workers, keep_days=keep_days,
                               stuck_after_s=stuck_after_s)
        self.metrics = self.workers.metrics
        self._submit_lock = threading.Lock()
        from ..train.checkpoints import git_commit

        self.commit = git_commit()  # for case reports: asked once, not per report

    def start(self) -> None:
        self.workers.start()

    def stop(self) -> None:
        self.workers.stop()

    def health(self) -> tuple[dict, bool]:
        """(what /health answers, whether all is well): this process's workers and the store's pending jobs."""
        states = self.workers.states()
        try:
            counts = self.store.counts()
            pending, store_ok = counts["queued"] + counts["running"], True
        except StoreUnavailable:
            pending, store_ok = None, False
        healthy = store_ok and not states["dead"] and not states["stuck"]
        return {"status": "ok" if healthy else "unhealthy", "model": self.settings["model"], "pending": pending,
                "capacity": self.capacity, "store": "ok" if store_ok else "unavailable",
                "workers": {"configured": self.workers.count, **states}}, healthy

    async def submit(self, request, default_priority: str = "batch") -> tuple[dict, bool]:
        """Store an upload as a queued job, or find the stored job for the same bytes and settings: (job, new).
        Refusals raise UploadRefused (counted by reason)."""
        try:
            upload = await receive_upload(request, self.store.uploads, self.max_upload_mb, default_priority)
        except UploadRefused as refusal:
            self.metrics.refused(refusal.reason)
            raise
        try:
            if self.detector.calibration is not None and upload.frames not in (None, self.detector.frames):
                raise UploadRefused(422, "frames_calibration", f"this server's calibration was fitted at "
                                    f"{self.detector.frames} frames per video; a mean over {upload.frames} spreads "
                                    "differently, so its probabilities and tiers would not hold: leave frames out")
            frames = upload.frames or self.detector.frames
            settings = json.dumps({**self.settings, "frames": frames}, sort_keys=True)
            job, new = await asyncio.to_thread(self._admit, upload, frames, settings)
        except StoreUnavailable as error:
            self.metrics.refused("store")
            raise UploadRefused(503, "store", str(error)) from error
        except UploadRefused as refusal:
            self.metrics.refused(refusal.reason)
            raise
        finally:
            upload.staged.unlink(missing_ok=True)
        if new:
            self.workers.wake()
            LOG.info(json.dumps({"event": "job_queued", "job": job["id"], "sha256": upload.sha256,
                                 "size": upload.size, "priority": upload.priority}))
        return job, new

    def _admit(self, upload, frames: int, settings: str) -> tuple[dict, bool]:
        with self._submit_lock:
            if not upload.force:
                existing = self.store.find_done(upload.sha256, settings)
                if existing is not None:
                    return existing, False
            counts = self.store.counts()
            if counts["queued"] + counts["running"] >= self.capacity:
                raise UploadRefused(503, "busy", "busy: the analysis queue is full, retry later")
            suffix = upload.staged.suffix
            os.replace(upload.staged, self.store.media_path(upload.sha256, suffix))  # the same bytes share one file
            try:
                return self.store.create(upload.file_name, upload.sha256, upload.size, suffix, frames, settings,
                                         self.settings["model"], upload.priority), True
            except StoreUnavailable:
                self.store.drop_unreferenced_media(upload.sha256, suffix)  # nothing stored for a refused upload
                raise

    async def wait(self, job_id: str, timeout_s: float) -> dict | None:
        """The job once finished; None when it is deleted meanwhile. Returns the unfinished job after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = await asyncio.to_thread(self.store.get, job_id)
            if job is None or job["status"] in ("done", "failed") or time.monotonic() >= deadline:
                return job
            await asyncio.sleep(0.1)
