"""`hcsi serve`: a REST API and a single-page UI around one `Detector`, loaded once, with its jobs in a store.

POST   /v1/jobs (multipart: file, optional frames, force) -> 202 {id, url}; 200 with the stored job when the same
       bytes were already analysed with the same model and settings (unless force)
GET    /v1/jobs/{id} (status, progress, result), GET /v1/jobs (history: filters and paging), DELETE /v1/jobs/{id}
GET    /v1/jobs/{id}/heatmap.png, /v1/jobs/{id}/report.html (the case report)
POST   /v1/analyze: the synchronous shortcut (a job, waited for; answers as before), GET /v1/results/{id}[...]
GET    /health, /metrics (Prometheus), / (the page), /docs (OpenAPI, Swagger UI from local files: works offline)

Jobs live in a SQLite store in the data directory (`hcsi.serve.store`), so results, history and queued uploads
survive restarts; `workers` threads take queued jobs one at a time in front of one detector. When queued + running
jobs reach workers + queue_size, a new upload gets 503 with Retry-After and nothing is stored. Uploads are streamed
into the data directory with a size limit, identified by their bytes (SHA-256), their type sniffed from the content,
the client's file name kept for display only. With a token, every request needs it (header `Authorization: Bearer
<token>` or `X-API-Token`, or `?token=` for the page, docs, images and reports); only Swagger UI's files are public.
"""
from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import cv2
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ..checks import require_at_least, require_positive
from ..detect.api import Detector
from ..detect.explain import gate_strip
from ..detect.report import case_report_html, video_duration
from .store import STATUSES, JobStore, StoreUnavailable

CHUNK = 1 << 20
LOG = logging.getLogger("hcsi.serve")

# (offset, magic bytes, suffix): what an upload's first bytes must match
SIGNATURES = [
    (0, b"\xff\xd8\xff", ".jpg"), (0, b"\x89PNG\r\n\x1a\n", ".png"), (0, b"BM", ".bmp"),
    (0, b"GIF8", ".gif"), (0, b"II*\x00", ".tif"), (0, b"MM\x00*", ".tif"), (4, b"ftyp", ".mp4"),
    (0, b"\x1a\x45\xdf\xa3", ".mkv"), (0, b"\x00\x00\x01\xba", ".mpg"),
]


DOCS_ASSETS_URL = "/docs-assets"


def swagger_ui_assets() -> Path:
    """Swagger UI's JavaScript and CSS as shipped in the fastapi-offline wheel (MIT), so /docs needs no CDN."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"

def sniff_suffix(head: bytes) -> str | None:
    """The file type of an upload from its first bytes (never from its name or declared type)."""
    if head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"AVI "):
        return ".webp" if head[8:12] == b"WEBP" else ".avi"
    for offset, magic, suffix in SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return suffix
    return None


class ScoringService:
    """One `Detector` behind a job store: uploads become jobs, `workers` threads analyse them one at a time in front
    of the detector, results and heatmaps go to the store. At most `workers + queue_size` jobs are queued or running;
    beyond that an upload is refused (503) and nothing is stored. `keep_days` removes older finished jobs."""

    def __init__(self, detector: Detector, store: JobStore, max_upload_mb: float = 500, workers: int = 1,
                 queue_size: int = 8, keep_days: float | None = None):
        require_at_least("workers", workers, 1)
        require_at_least("queue_size", queue_size, 0)
        require_positive("max_upload_mb", max_upload_mb)
        if keep_days is not None:
            require_positive("keep_days", keep_days)
        self.detector, self.store = detector, store
        self.max_upload_mb = max_upload_mb
        self.max_bytes = int(max_upload_mb * 2**20)
        self.workers, self.capacity, self.keep_days = workers, workers + queue_size, keep_days
        self.metrics = ServiceMetrics(store)
        self._detector_lock = threading.Lock()  # one face detector and one model: one analysis at a time
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._submit_lock = threading.Lock()
        from ..train.checkpoints import git_commit

        self.commit = git_commit()  # for case reports: asked once, not per report
        config = detector.model.config
        self.settings = {"model": config.name, "checkpoint_sha256": detector.checkpoint_sha256,
                         "face_detector": detector.face_detector.name,
                         "calibration": detector.calibration.source if detector.calibration else "uncalibrated",
                         "operating_fpr": detector.operating_point.target_fpr if detector.operating_point else None}

    # -- workers ----------------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.keep_days is not None:
            removed = self.store.purge_older_than(self.keep_days)
            LOG.info(json.dumps({"event": "retention", "removed_jobs": removed, "keep_days": self.keep_days}))
        for n in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"hcsi-worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _work(self) -> None:
        last_purge = time.time()
        while not self._stopping.is_set():
            if self.keep_days is not None and time.time() - last_purge > 3600:
                self.store.purge_older_than(self.keep_days)
                last_purge = time.time()
            try:
                claimed = self.store.claim_next()
            except StoreUnavailable:
                claimed = None
            if claimed is None:
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            self._run(*claimed)

    def _run(self, job: dict, token: str) -> None:
        start = time.perf_counter()
        media = self.store.media_path(job["sha256"], job["suffix"])

        def progress(stage: str, done: int, total: int) -> None:
            self.store.set_progress(job["id"], token, {"stage": stage, "frames_done": done, "frames_total": total})

        try:
            with self._detector_lock:
                result = self.detector.score(media, explain=True, frames=job["frames"], progress=progress)
            heatmap = None
            if result.gates:
                ok, png = cv2.imencode(".png", cv2.cvtColor(gate_strip(result), cv2.COLOR_RGB2BGR))
                heatmap = png.tobytes() if ok else None
            record = result.to_dict()
            for server_name in (str(media), media.name):  # answers name the uploaded file, never a server path
                record["reason"] = record["reason"].replace(server_name, job["file_name"])
            record.pop("path", None)
            record.update(id=job["id"], file_name=job["file_name"], sha256=job["sha256"], size=job["size"],
                          analysed_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                          settings={**self.settings, "frames": job["frames"]},
                          duration_s=video_duration(media),  # its SHA-256 and size are the job's
                          heatmap_url=f"/v1/jobs/{job['id']}/heatmap.png" if heatmap else None,
                          report_url=f"/v1/jobs/{job['id']}/report.html")
            finished = self.store.finish(job["id"], token, record, heatmap)
            status = record["status"]
        except Exception as error:  # this job fails with the reason; the service goes on
            status = "error"
            finished = self.store.fail(job["id"], token, f"{job['file_name']}: analysis failed: "
                                                         f"{type(error).__name__}: {error}")
        seconds = time.perf_counter() - start
        self.metrics.observe(seconds)
        LOG.info(json.dumps({"event": "job_finished", "job": job["id"], "status": status, "seconds": round(seconds, 3),
                             "sha256": job["sha256"], "recorded": finished}))

    # -- requests ---------------------------------------------------------------------------------------------------
    def refuse(self, status: int, reason: str, detail: str) -> HTTPException:
        """An upload refused at job creation (nothing stored), counted by reason; 503s say when to retry."""
        self.metrics.refused(reason)
        return HTTPException(status, detail, headers={"Retry-After": "5"} if status == 503 else None)

    async def save_upload(self, request: Request) -> tuple[Path, int, str, str, int, bool]:
        """The multipart upload streamed into the store's uploads folder under a staging name: (staged path, frames,
        the client's file name (for display only), SHA-256, size, force)."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes + CHUNK:
            raise self.refuse(413, "too_large", f"upload larger than the limit of {self.max_upload_mb:g} MB")
        try:
            form = await request.form(max_files=1, max_fields=4)
        except OSError as error:  # the parser spools large files to a temporary file: a full disk, not a bad body
            raise self.refuse(503, "storage", f"could not store the upload: {error.strerror or error}") from error
        except Exception as error:  # malformed multipart bodies
            raise self.refuse(400, "malformed", f"could not parse the multipart form: {error}") from error
        staged = None
        try:
            unexpected = sorted(set(form.keys()) - {"file", "frames", "force"})
            if unexpected:
                raise self.refuse(400, "unexpected_field", f"unexpected form fields {unexpected}; the form takes "
                                                           "file, frames and force")
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise self.refuse(400, "no_file", "expected a multipart form with a 'file' field holding the video "
                                                  "or image")
            frames = form.get("frames")
            # ASCII digits only: str.isdigit() accepts "²", which int() refuses
            if frames is not None and (not re.fullmatch(r"[0-9]{1,3}", str(frames)) or not 1 <= int(frames) <= 300):
                raise self.refuse(422, "bad_frames", "frames must be an integer from 1 to 300")
            force = str(form.get("force") or "false")
            if force not in ("true", "false"):
                raise self.refuse(400, "bad_force", "force must be true or false")
            head = await upload.read(16)
            if not head:
                raise self.refuse(400, "empty", "the uploaded file is empty")
            suffix = sniff_suffix(head)
            if suffix is None:
                raise self.refuse(415, "unsupported_type", "unsupported file type: the content is not a known video "
                                                           "or image format")
            staged = self.store.uploads / f".staging-{secrets.token_hex(8)}{suffix}"  # our name, never the client's
            digest, size = hashlib.sha256(head), len(head)
            with open(staged, "wb") as out:
                out.write(head)
                while chunk := await upload.read(CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise self.refuse(413, "too_large",
                                          f"upload larger than the limit of {self.max_upload_mb:g} MB")
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as error:  # a full disk: nothing is stored, the client may retry
            if staged is not None:
                staged.unlink(missing_ok=True)
            raise self.refuse(503, "storage", f"could not store the upload: {error.strerror or error}") from error
        except BaseException:
            if staged is not None:
                staged.unlink(missing_ok=True)
            raise
        finally:
            await form.close()
        shown_name = Path(str(upload.filename or "")).name or "the upload"
        return staged, int(frames) if frames is not None else self.detector.frames, shown_name, digest.hexdigest(), \
            size, force == "true"

    async def submit(self, request: Request) -> tuple[dict, bool]:
        """Store an upload as a queued job, or find the stored job for the same bytes and settings: (job, new)."""
        staged, frames, name, sha256, size, force = await self.save_upload(request)
        try:
            settings = json.dumps({**self.settings, "frames": frames}, sort_keys=True)
            with self._submit_lock:
                if not force:
                    existing = self.store.find_done(sha256, settings)
                    if existing is not None:
                        return existing, False
                counts = self.store.counts()
                if counts["queued"] + counts["running"] >= self.capacity:
                    raise self.refuse(503, "busy", "busy: the analysis queue is full, retry later")
                media = self.store.media_path(sha256, staged.suffix)
                os.replace(staged, media)  # the same bytes share one file
                try:
                    job = self.store.create(name, sha256, size, staged.suffix, frames, settings,
                                            self.settings["model"])
                except StoreUnavailable:
                    self.store.drop_unreferenced_media(sha256, staged.suffix)  # nothing stored for a refused upload
                    raise
        except StoreUnavailable as error:
            raise self.refuse(503, "store", str(error)) from error
        finally:
            staged.unlink(missing_ok=True)
        self._wake.set()
        LOG.info(json.dumps({"event": "job_queued", "job": job["id"], "sha256": sha256, "size": size}))
        return job, True

    def job_view(self, job: dict, with_result: bool = True) -> dict:
        """A job as the API shows it: its row, links, and (with_result) the result once it is finished."""
        view = {k: v for k, v in job.items() if k != "settings"}
        view["settings"] = json.loads(job["settings"])
        view["url"] = f"/v1/jobs/{job['id']}"
        view["result"] = view["report_url"] = None
        if with_result and job["status"] in ("done", "failed"):
            view["result"] = self.store.result(job["id"])
            view["report_url"] = f"/v1/jobs/{job['id']}/report.html" if view["result"] else None
        return view

    def get(self, job_id: str) -> dict:
        job = self.store.get(job_id)
        if job is None:
            raise HTTPException(404, "no such job")
        return job

    def result_record(self, job: dict) -> dict:
        """What /v1/analyze answers: the stored result of a finished job (or the failure's reason)."""
        record = self.store.result(job["id"])
        if record is None:
            record = {"id": job["id"], "status": "error", "reason": job["reason"], "score": None}
        return record

    async def wait(self, job_id: str) -> dict:
        while True:
            job = self.get(job_id)
            if job["status"] in ("done", "failed"):
                return job
            await asyncio.sleep(0.1)

    def report(self, job_id: str) -> str:
        job = self.get(job_id)
        record = self.store.result(job_id)
        if record is None:
            raise HTTPException(404, f"job {job_id} has no result yet (status {job['status']})")
        heatmap = self.store.heatmap_path(job_id)
        about = {"file_name": record.get("file_name"), "sha256": record.get("sha256"), "size": record.get("size"),
                 "duration_s": record.get("duration_s"), "analysed_at": record.get("analysed_at"),
                 "model": record.get("settings", {}).get("model"),
                 "checkpoint_sha256": record.get("settings", {}).get("checkpoint_sha256"),
                 "commit": self.commit, "settings": {k: v for k, v in record.get("settings", {}).items()
                                                   if k not in ("model", "checkpoint_sha256", "calibration")}}
        return case_report_html(record, about, heatmap.read_bytes() if heatmap is not None else None)



class ServiceMetrics:
    """Prometheus metrics of one service (its own registry): jobs by status and queue depth read from the store
    when scraped, the analysis-duration histogram, and uploads refused by reason."""

    def __init__(self, store: JobStore) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram
        from prometheus_client.core import GaugeMetricFamily

        self.registry = CollectorRegistry()
        self.duration = Histogram("hcsi_analysis_seconds", "Time to analyse one job", registry=self.registry,
                                  buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600))
        self.refusals = Counter("hcsi_uploads_refused", "Uploads refused at job creation", ["reason"],
                                registry=self.registry)

        class StoreCollector:
            def collect(self):
                counts = store.counts()
                jobs = GaugeMetricFamily("hcsi_jobs", "Jobs in the store by status", labels=["status"])
                for status in STATUSES:
                    jobs.add_metric([status], counts[status])
                yield jobs
                yield GaugeMetricFamily("hcsi_queue_depth", "Jobs waiting for a worker", value=counts["queued"])

        self.registry.register(StoreCollector())

    def observe(self, seconds: float) -> None:
        self.duration.observe(seconds)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "additionalProperties": False, "properties": {
        "file": {"type": "string", "format": "binary", "minLength": 1,
                 "description": "the video or image (type read from its bytes)"},
        "frames": {"type": "integer", "minimum": 1, "maximum": 300, "description": "evenly spaced frames to score"},
        "force": {"type": "boolean", "description": "analyse again even if these bytes were analysed before"}}}}}}}


def _errors(*codes: int) -> dict:
    text = {400: "malformed form, empty file or a bad field", 401: "missing or wrong API token",
            404: "no such job", 413: "upload larger than the limit", 415: "content is not a known video or image",
            422: "frames not a whole number from 1 to 300; on /v1/analyze also: recognised but unreadable (the "
                 "analysis failed; the job is stored as failed)",
            503: "busy (queue full) or the store is unavailable; retry later"}
    problem = {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}}
    return {code: {"description": text[code], "content": {"application/json": {"schema": problem}}} for code in codes}


def create_app(detector: Detector, max_upload_mb: float = 500, token: str | None = None, workers: int = 1,
               queue_size: int = 8, data_dir: str | Path | None = None, keep_media: bool = False,
               keep_days: float | None = None) -> FastAPI:
    """The app around a `ScoringService` (see it for `workers`, `queue_size` and `keep_days`) over the job store in
    `data_dir` (default: a fresh temporary folder, for tests and embedding; `hcsi serve` uses ./hcsi-serve); with
    `token`, every request but Swagger UI's own files needs it. The workers start here and stop with the app."""
    store = JobStore(data_dir or tempfile.mkdtemp(prefix="hcsi-serve-"), keep_media=keep_media)
    service = ScoringService(detector, store, max_upload_mb=max_upload_mb, workers=workers, queue_size=queue_size,
                             keep_days=keep_days)
    service.start()
    app = FastAPI(title="hcsi", description="HCSI-Net face-deepfake detection", version="0.2.0", docs_url=None,
                  redoc_url=None, on_shutdown=[service.stop])
    app.state.service = service
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=swagger_ui_assets()), name="docs-assets")
    unauthorised = _errors(401) if token is not None else {}

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if token is not None and not request.url.path.startswith(DOCS_ASSETS_URL + "/"):  # public library files
            given = request.headers.get("x-api-token") or request.query_params.get("token")
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:]
            # bytes, not str: compare_digest refuses non-ASCII text (a 500 before), and stays constant-time
            if not given or not secrets.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"detail": "missing or wrong API token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        """Errors as {"detail": ...}; a 405 lists in Allow every method the path supports (several routes may
        share a path, which Starlette's own answer leaves out)."""
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(sorted({method for route in app.routes if isinstance(route, APIRoute)
                                                 and route.matches(request.scope)[0] != Match.NONE
                                                 for method in route.methods}))
        return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=headers)

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        """Swagger UI from local files (no CDN: the page works offline); a ?token= is passed on to the schema."""
        given = request.query_params.get("token")
        schema = app.openapi_url + (f"?token={quote(given)}" if given else "")
        return get_swagger_ui_html(openapi_url=schema, title="hcsi API",
                                   swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png")

    @app.get("/health", responses=unauthorised)
    def health() -> dict:
        counts = store.counts()
        return {"status": "ok", "model": detector.model.config.name, "pending": counts["queued"] + counts["running"],
                "capacity": service.capacity}

    @app.post("/v1/jobs", status_code=202, openapi_extra=UPLOAD_BODY,
              responses={200: {"description": "the stored job for the same bytes and settings"},
                         **_errors(400, 413, 415, 422, 503), **unauthorised})
    async def create_job(request: Request) -> JSONResponse:
        """Queue an upload for analysis: 202 with the job's id and URL."""
        job, new = await service.submit(request)
        return JSONResponse(service.job_view(job), status_code=202 if new else 200)

    @app.get("/v1/jobs", responses={**_errors(400), **unauthorised})
    def list_jobs(status: Literal["queued", "running", "done", "failed"] | None = None,
                  verdict: Literal["fake", "real"] | None = None,
                  q: str | None = Query(None, max_length=200, description="text in the file name or SHA-256"),
                  since: float | None = Query(None, description="created at or after (Unix time)"),
                  until: float | None = Query(None, description="created before (Unix time)"),
                  limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=10**9)) -> dict:
        """History, newest first, with filters and paging."""
        try:
            jobs, total = store.list(status, verdict, q, since, until, limit, offset)
        except StoreUnavailable as error:
            raise HTTPException(503, str(error), headers={"Retry-After": "5"}) from error
        return {"jobs": [service.job_view(j, with_result=False) for j in jobs], "total": total, "limit": limit,
                "offset": offset}

    @app.get("/v1/jobs/{job_id}", responses={**_errors(404), **unauthorised})
    def get_job(job_id: str) -> dict:
        """A job's status, progress while running, and result when finished."""
        return service.job_view(service.get(job_id))

    @app.delete("/v1/jobs/{job_id}", status_code=204, responses={**_errors(404, 503), **unauthorised})
    def delete_job(job_id: str) -> Response:
        """Remove the job, its media, result and heatmap."""
        try:
            if not store.delete(job_id):
                raise HTTPException(404, "no such job")
        except StoreUnavailable as error:
            raise HTTPException(503, str(error)) from error
        return Response(status_code=204)

    @app.get("/v1/jobs/{job_id}/heatmap.png", response_class=Response,
             responses={200: {"content": {"image/png": {}}}, **_errors(404), **unauthorised})
    def job_heatmap(job_id: str) -> Response:
        path = store.heatmap_path(job_id)
        if path is None:
            raise HTTPException(404, "no heatmap for this job")
        return Response(path.read_bytes(), media_type="image/png")

    @app.get("/v1/jobs/{job_id}/report.html", response_class=HTMLResponse,
             responses={**_errors(404), **unauthorised})
    def job_report(job_id: str) -> HTMLResponse:
        """The case report: one self-contained HTML file (images embedded)."""
        return HTMLResponse(service.report(job_id))

    @app.post("/v1/analyze", openapi_extra=UPLOAD_BODY,
              responses={**_errors(400, 413, 415, 422, 503), **unauthorised})
    async def analyze(request: Request) -> JSONResponse:
        """The synchronous shortcut: a job, waited for; answers its result (stored like any job)."""
        job, _ = await service.submit(request)
        job = await service.wait(job["id"])
        record = service.result_record(job)
        return JSONResponse(record, status_code=200 if record["status"] in ("ok", "no_face") else 422)

    @app.get("/v1/results/{job_id}", responses={**_errors(404), **unauthorised})
    def get_result(job_id: str) -> dict:
        """A finished job's result (kept for clients of earlier versions)."""
        record = store.result(job_id)
        if record is None:
            raise HTTPException(404, "no such result")
        return record

    @app.get("/v1/results/{job_id}/heatmap.png", response_class=Response,
             responses={200: {"content": {"image/png": {}}}, **_errors(404), **unauthorised})
    def get_heatmap(job_id: str) -> Response:
        return job_heatmap(job_id)

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}}, **unauthorised})
    def metrics() -> Response:
        """Prometheus text format: jobs by status, queue depth, analysis durations, refused uploads."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        from .page import PAGE

        return PAGE

    return app
