"""`hcsi serve`: a REST API and a single-page UI around one `Detector`, loaded once.

POST /v1/analyze (multipart: file, optional frames) -> JSON with the score, per-frame scores, faces and heatmap link
GET  /v1/results/{id}, GET /v1/results/{id}/heatmap.png, GET /health, GET / (the page), GET /docs (OpenAPI, Swagger
UI from local files: it works offline)

Requests wait in a bounded queue in front of the detector; when it is full the answer is 503 with Retry-After.
Uploads are copied to a temporary file under a random name with a size limit, identified by their bytes, and removed
afterwards whatever happens. Result ids are random (secrets.token_urlsafe). With a token, every request needs it
(header `Authorization: Bearer <token>` or `X-API-Token`, or `?token=` for the page, the docs and images); only
Swagger UI's own script and style files are public.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import cv2
from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from ..checks import require_at_least, require_positive
from ..detect.api import Detector
from ..detect.explain import gate_strip

CHUNK = 1 << 20
MAX_RESULTS = 1000  # results kept in memory, oldest dropped first

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
    """What the app serves: one `Detector` behind a bounded queue, and the results it gave (the last MAX_RESULTS,
    in memory). `workers` analyses run at once; up to `queue_size` more wait; any further request gets 503."""

    def __init__(self, detector: Detector, max_upload_mb: float = 500, workers: int = 1, queue_size: int = 8):
        require_at_least("workers", workers, 1)
        require_at_least("queue_size", queue_size, 0)
        require_positive("max_upload_mb", max_upload_mb)
        self.detector = detector
        self.max_upload_mb = max_upload_mb
        self.max_bytes = int(max_upload_mb * 2**20)
        self.capacity = workers + queue_size
        self.pending = 0  # requests being analysed or waiting; changed on the event loop only
        self.results: OrderedDict[str, dict] = OrderedDict()
        self.heatmaps: dict[str, bytes] = {}
        self._executor = ThreadPoolExecutor(max_workers=workers)
        # one Detector instance: its face detector and model run one call at a time
        self._detector_lock = threading.Lock()

    def health(self) -> dict:
        return {"status": "ok", "model": self.detector.model.config.name, "pending": self.pending,
                "capacity": self.capacity}

    def analyse(self, path: str, frames: int) -> tuple[dict, bytes | None]:
        """Score one file (in a worker thread): the result's dict and its gate-heatmap strip as PNG bytes."""
        with self._detector_lock:
            result = self.detector.score(path, explain=True, frames=frames)
        heatmap = None
        if result.gates:
            ok, png = cv2.imencode(".png", cv2.cvtColor(gate_strip(result), cv2.COLOR_RGB2BGR))
            heatmap = png.tobytes() if ok else None
        return result.to_dict(), heatmap

    async def save_upload(self, request: Request) -> tuple[str, int | None, str]:
        """The multipart upload copied to a temporary file: its path, the requested frames and the client's file
        name (for messages only)."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes + CHUNK:
            raise HTTPException(413, f"upload larger than the limit of {self.max_upload_mb:g} MB")
        try:
            form = await request.form(max_files=1, max_fields=4)
        except Exception as error:  # malformed multipart bodies
            raise HTTPException(400, f"could not parse the multipart form: {error}") from error
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(400, "expected a multipart form with a 'file' field holding the video or image")
        frames = form.get("frames")
        if frames is not None and (not str(frames).isdigit() or not 1 <= int(frames) <= 300):
            raise HTTPException(400, "frames must be an integer from 1 to 300")
        head = await upload.read(16)
        if not head:
            raise HTTPException(400, "the uploaded file is empty")
        suffix = sniff_suffix(head)
        if suffix is None:
            raise HTTPException(415, "unsupported file type: the content is not a known video or image format")
        fd, path = tempfile.mkstemp(prefix="hcsi-upload-", suffix=suffix)  # our name, never the client's
        size = len(head)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(head)
                while chunk := await upload.read(CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise HTTPException(413, f"upload larger than the limit of {self.max_upload_mb:g} MB")
                    out.write(chunk)
        except BaseException:
            Path(path).unlink(missing_ok=True)
            raise
        finally:
            await form.close()
        shown_name = Path(str(upload.filename or "")).name or "the upload"  # the client's name, for messages only
        return path, int(frames) if frames is not None else None, shown_name

    async def analyze(self, request: Request) -> JSONResponse:
        """POST /v1/analyze: 503 when the queue is full; otherwise the upload is scored, kept and answered."""
        if self.pending >= self.capacity:
            return JSONResponse({"detail": "busy: the analysis queue is full, retry later"}, status_code=503,
                                headers={"Retry-After": "5"})
        self.pending += 1
        path = None
        try:
            path, frames, shown_name = await self.save_upload(request)
            loop = asyncio.get_running_loop()
            record, heatmap = await loop.run_in_executor(self._executor, self.analyse, path,
                                                         frames or self.detector.frames)
            for server_name in (path, Path(path).name):  # answers name the uploaded file, never a server path
                record["reason"] = record["reason"].replace(server_name, shown_name)
        finally:
            self.pending -= 1
            if path is not None:
                Path(path).unlink(missing_ok=True)
        self.keep(record, heatmap)
        status = 200 if record["status"] in ("ok", "no_face") else 422
        return JSONResponse(record, status_code=status)

    def keep(self, record: dict, heatmap: bytes | None) -> None:
        """Give `record` a random id and its heatmap's URL, and keep both (dropping the oldest beyond MAX_RESULTS)."""
        result_id = secrets.token_urlsafe(16)
        record.pop("path", None)  # the temporary file's name means nothing to the client
        record["id"] = result_id
        record["heatmap_url"] = f"/v1/results/{result_id}/heatmap.png" if heatmap else None
        self.results[result_id] = record
        if heatmap:
            self.heatmaps[result_id] = heatmap
        while len(self.results) > MAX_RESULTS:
            old, _ = self.results.popitem(last=False)
            self.heatmaps.pop(old, None)

    def result(self, result_id: str) -> dict:
        if result_id not in self.results:
            raise HTTPException(404, "no such result")
        return self.results[result_id]

    def heatmap(self, result_id: str) -> Response:
        if result_id not in self.heatmaps:
            raise HTTPException(404, "no heatmap for this result")
        return Response(self.heatmaps[result_id], media_type="image/png")


def create_app(detector: Detector, max_upload_mb: float = 500, token: str | None = None, workers: int = 1,
               queue_size: int = 8) -> FastAPI:
    """The app around a `ScoringService` (see it for `workers` and `queue_size`); with `token`, every request but
    Swagger UI's own files needs it."""
    service = ScoringService(detector, max_upload_mb=max_upload_mb, workers=workers, queue_size=queue_size)
    app = FastAPI(title="hcsi", description="HCSI-Net face-deepfake detection", version="0.1.0", docs_url=None,
                  redoc_url=None)
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=swagger_ui_assets()), name="docs-assets")

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if token is not None and not request.url.path.startswith(DOCS_ASSETS_URL + "/"):  # public library files
            given = request.headers.get("x-api-token") or request.query_params.get("token")
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:]
            if not given or not secrets.compare_digest(given, token):
                return JSONResponse({"detail": "missing or wrong API token"}, status_code=401)
        return await call_next(request)

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        """Swagger UI from local files (no CDN: the page works offline); a ?token= is passed on to the schema."""
        given = request.query_params.get("token")
        schema = app.openapi_url + (f"?token={quote(given)}" if given else "")
        return get_swagger_ui_html(openapi_url=schema, title="hcsi API",
                                   swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png")

    @app.get("/health")
    def health() -> dict:
        return service.health()

    @app.post("/v1/analyze")
    async def analyze(request: Request) -> JSONResponse:
        return await service.analyze(request)

    @app.get("/v1/results/{result_id}")
    def get_result(result_id: str) -> dict:
        return service.result(result_id)

    @app.get("/v1/results/{result_id}/heatmap.png")
    def get_heatmap(result_id: str) -> Response:
        return service.heatmap(result_id)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        from .page import PAGE

        return PAGE

    return app
