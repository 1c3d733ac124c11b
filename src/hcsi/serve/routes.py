"""`hcsi serve`'s HTTP face: a REST API and a single-page UI over a `ScoringService`.

POST   /v1/jobs (multipart: file, optional frames, force, priority) -> 202 {id, url}; 200 with the stored job when
       the same bytes were already analysed with the same checkpoint, calibration and settings (unless force)
GET    /v1/jobs/{id} (status, progress, result), GET /v1/jobs (history: filters and paging), GET /v1/jobs.csv (the
       filtered history as CSV), DELETE /v1/jobs/{id} (also stops its analysis)
GET    /v1/jobs/{id}/heatmap.png, /v1/jobs/{id}/report.html (the case report); PUT /v1/jobs/{id}/label (an
       analyst's fake / real / unsure, a note, who), GET /v1/labels/summary (labels against verdicts)
POST   /v1/analyze: the synchronous shortcut (an interactive job, waited for up to wait_s; answers as before),
       GET /v1/results/{id}[/heatmap.png]
GET    /health (503 when a worker died or is stuck, or the store is unreachable), /metrics (Prometheus), / (the
       page), /docs (OpenAPI, Swagger UI from local files: works offline)

With a token, every request needs it (header `Authorization: Bearer <token>` or `X-API-Token`, or `?token=` for
the page, docs, images and reports); only Swagger UI's files are public.
"""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from .results import finished_record, history_csv, job_view, label_summary, report_html
from .service import ScoringService
from .store import StoreUnavailable
from .uploads import UploadRefused

DOCS_ASSETS_URL = "/docs-assets"
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "additionalProperties": False, "properties": {
        "file": {"type": "string", "format": "binary", "minLength": 1,
                 "description": "the video or image (type read from its bytes)"},
        "frames": {"type": "integer", "minimum": 1, "maximum": 300, "description": "evenly spaced frames to score"},
        "force": {"type": "boolean", "description": "analyse again even if these bytes were analysed before"},
        "priority": {"type": "string", "enum": ["interactive", "batch"],
                     "description": "interactive jobs are analysed before batch jobs (default: batch on /v1/jobs, "
                                    "interactive on /v1/analyze)"}}}}}}}
ERRORS = {400: "malformed form or JSON body, empty file or a bad field", 401: "missing or wrong API token",
          404: "no such job", 413: "upload larger than the limit", 415: "content is not a known video or image",
          422: "frames not a whole number from 1 to 300; on /v1/analyze also: recognised but unreadable (the "
               "analysis failed; the job is stored as failed)",
          503: "busy (queue full) or the store is unavailable; retry later"}


Status = Literal["queued", "running", "done", "failed"] | None  # the history's filters
Verdict = Literal["manipulated", "inconclusive", "no_evidence", "cannot_judge", "fake", "real"] | None
LabelFilter = Literal["fake", "real", "unsure", "unlabelled"] | None
ProvenanceFilter = Literal["none", "invalid", "valid", "trusted", "error"] | None  # Content Credentials' state


class AnalystLabel(BaseModel):
    """An analyst's judgement of a job (label null clears it)."""

    model_config = ConfigDict(extra="forbid")
    label: Literal["fake", "real", "unsure"] | None
    note: str = Field("", max_length=2000)
    by: str = Field("", max_length=200, description="who labelled it")


def swagger_ui_assets() -> Path:
    """Swagger UI's JavaScript and CSS as shipped in the fastapi-offline wheel (MIT), so /docs needs no CDN."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def errors(*codes: int) -> dict:
    """Documented error answers: {"detail": text}; a 422 may also be FastAPI's list of invalid query fields."""
    def problem(code: int) -> dict:
        detail = {"type": "string"} if code != 422 else {"anyOf": [{"type": "string"}, {"type": "array"}]}
        return {"type": "object", "required": ["detail"], "properties": {"detail": detail}}

    return {code: {"description": ERRORS[code], "content": {"application/json": {"schema": problem(code)}}}
            for code in codes}


def store_call(function, *args):
    """A store call whose unavailability is a 503 with Retry-After."""
    try:
        return function(*args)
    except StoreUnavailable as error:
        raise HTTPException(503, str(error), headers={"Retry-After": "5"}) from error


def known_job(service: ScoringService, job_id: str) -> dict:
    job = store_call(service.store.get, job_id)
    if job is None:
        raise HTTPException(404, "no such job")
    return job


def build_app(service: ScoringService, token: str | None = None) -> FastAPI:
    """The FastAPI app over `service` (started already); its workers stop with the app."""
    app = FastAPI(title="hcsi", description="HCSI-Net face-deepfake detection", version="0.3.0", docs_url=None,
                  redoc_url=None, on_shutdown=[service.stop])
    app.state.service = service
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=swagger_ui_assets()), name="docs-assets")
    add_protocol(app, token)
    unauthorised = errors(401) if token is not None else {}
    add_job_routes(app, service, unauthorised)
    add_history_routes(app, service, unauthorised)
    add_upload_routes(app, service, unauthorised)
    add_service_routes(app, service, unauthorised)
    return app


def add_protocol(app: FastAPI, token: str | None) -> None:
    """The token check, errors as {"detail": ...}, and /docs."""

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
        """A 405 lists in Allow every method the path supports (several routes may share a path, which
        Starlette's own answer leaves out)."""
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(sorted({method for route in app.routes if isinstance(route, APIRoute)
                                                 and route.matches(request.scope)[0] != Match.NONE
                                                 for method in route.methods}))
        return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=headers)

    @app.exception_handler(UploadRefused)
    async def refused(request: Request, refusal: UploadRefused) -> JSONResponse:
        headers = {"Retry-After": "5"} if refusal.status == 503 else None
        return JSONResponse({"detail": refusal.detail}, status_code=refusal.status, headers=headers)

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        """Swagger UI from local files (no CDN: the page works offline); a ?token= is passed on to the schema."""
        given = request.query_params.get("token")
        schema = app.openapi_url + (f"?token={quote(given)}" if given else "")
        return get_swagger_ui_html(openapi_url=schema, title="hcsi API",
                                   swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png")


def add_job_routes(app: FastAPI, service: ScoringService, unauthorised: dict) -> None:
    """One job: read, delete, its heatmap and case report (and the older /v1/results routes)."""
    store = service.store

    @app.get("/v1/jobs/{job_id}", responses={**errors(404, 503), **unauthorised})
    def get_job(job_id: str) -> dict:
        """A job's status, progress while running, and result when finished."""
        return job_view(store, known_job(service, job_id))

    @app.delete("/v1/jobs/{job_id}", status_code=204, responses={**errors(404, 503), **unauthorised})
    def delete_job(job_id: str) -> Response:
        """Remove the job, its media, result and heatmap; a running analysis stops and leaves nothing behind."""
        if not store_call(store.delete, job_id):
            raise HTTPException(404, "no such job")
        return Response(status_code=204)

    @app.put("/v1/jobs/{job_id}/label", responses={**errors(400, 404, 422, 503), **unauthorised})
    def label_job(job_id: str, body: AnalystLabel) -> dict:
        """An analyst's label (fake, real, unsure; null clears it), with a note and who gave it."""
        job = store_call(store.set_label, job_id, body.label, body.note, body.by)
        if job is None:
            raise HTTPException(404, "no such job")
        return job_view(store, job, with_result=False)

    @app.get("/v1/jobs/{job_id}/heatmap.png", response_class=Response,
             responses={200: {"content": {"image/png": {}}}, **errors(404), **unauthorised})
    def job_heatmap(job_id: str) -> Response:
        path = store.heatmap_path(job_id)
        if path is None:
            raise HTTPException(404, "no heatmap for this job")
        return Response(path.read_bytes(), media_type="image/png")

    @app.get("/v1/jobs/{job_id}/report.html", response_class=HTMLResponse,
             responses={**errors(404, 503), **unauthorised})
    def job_report(job_id: str) -> HTMLResponse:
        """The case report: one self-contained HTML file (images embedded)."""
        job = known_job(service, job_id)
        html = report_html(store, job, service.commit)
        if html is None:
            raise HTTPException(404, f"job {job_id} has no result yet (status {job['status']})")
        return HTMLResponse(html)

    @app.get("/v1/results/{job_id}", responses={**errors(404), **unauthorised})
    def get_result(job_id: str) -> dict:
        """A finished job's result (kept for clients of earlier versions)."""
        record = store.result(job_id)
        if record is None:
            raise HTTPException(404, "no such result")
        return record

    @app.get("/v1/results/{job_id}/heatmap.png", response_class=Response,
             responses={200: {"content": {"image/png": {}}}, **errors(404), **unauthorised})
    def get_heatmap(job_id: str) -> Response:
        return job_heatmap(job_id)


def add_history_routes(app: FastAPI, service: ScoringService, unauthorised: dict) -> None:
    """The history: JSON pages and the CSV export, with the same filters."""
    store = service.store
    text_query = Query(None, max_length=200, description="text in the file name or SHA-256")
    since_query = Query(None, description="created at or after (Unix time)")
    until_query = Query(None, description="created before (Unix time)")

    @app.get("/v1/jobs", responses={**errors(400, 503), **unauthorised})
    def list_jobs(status: Status = None, verdict: Verdict = None, q: str | None = text_query,
                  since: float | None = since_query, until: float | None = until_query,
                  limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=10**9),
                  label: LabelFilter = None, provenance: ProvenanceFilter = None) -> dict:
        """History, newest first, with filters (label: an analyst's label, or unlabelled; provenance: the state of
        the file's Content Credentials) and paging."""
        jobs, total = store_call(store.list, status, verdict, q, since, until, limit, offset, label, provenance)
        return {"jobs": [job_view(store, j, with_result=False) for j in jobs], "total": total, "limit": limit,
                "offset": offset}

    @app.get("/v1/jobs.csv", response_class=Response,
             responses={200: {"content": {"text/csv": {}}}, **errors(400, 503), **unauthorised})
    def export_jobs(status: Status = None, verdict: Verdict = None, q: str | None = text_query,
                    since: float | None = since_query, until: float | None = until_query,
                    label: LabelFilter = None, provenance: ProvenanceFilter = None) -> Response:
        """The filtered history as CSV, newest first (every matching job, with the analysts' labels)."""
        jobs, _ = store_call(store.list, status, verdict, q, since, until, None, 0, label, provenance)
        return Response(history_csv(jobs), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="hcsi-jobs.csv"'})

    @app.get("/v1/labels/summary", responses={**errors(503), **unauthorised})
    def labels_summary() -> dict:
        """The analysts' labels against this server's verdicts (same checkpoint and calibration): counts, and
        precision, recall and FPR of "called fake" with Wilson 95 % intervals."""
        jobs, _ = store_call(store.list, None, None, None, None, None, None, 0, "labelled")  # not every job
        return label_summary(jobs, service.settings)


def add_upload_routes(app: FastAPI, service: ScoringService, unauthorised: dict) -> None:
    """Uploads: as a job to follow, or analysed while the client waits."""

    @app.post("/v1/jobs", status_code=202, openapi_extra=UPLOAD_BODY,
              responses={200: {"description": "the stored job for the same bytes and settings"},
                         **errors(400, 413, 415, 422, 503), **unauthorised})
    async def create_job(request: Request) -> JSONResponse:
        """Queue an upload for analysis: 202 with the job's id and URL."""
        job, new = await service.submit(request)
        return JSONResponse(job_view(service.store, job), status_code=202 if new else 200)

    @app.post("/v1/analyze", openapi_extra=UPLOAD_BODY,
              responses={202: {"description": "not finished within wait_s: the job, to follow at its url"},
                         **errors(400, 404, 413, 415, 422, 503), **unauthorised})
    async def analyze(request: Request, wait_s: float = Query(300, gt=0, le=3600, description=(
            "seconds to wait for the result"))) -> JSONResponse:
        """The synchronous shortcut: an interactive job, waited for; answers its result (stored like any job)."""
        job, _ = await service.submit(request, default_priority="interactive")
        finished = await service.wait(job["id"], wait_s)
        if finished is None:
            raise HTTPException(404, "the job was deleted while it was analysed")
        if finished["status"] not in ("done", "failed"):
            return JSONResponse(job_view(service.store, finished), status_code=202,
                                headers={"Location": f"/v1/jobs/{job['id']}"})
        record = finished_record(service.store, finished)
        return JSONResponse(record, status_code=200 if record["status"] in ("ok", "no_face") else 422)


def add_service_routes(app: FastAPI, service: ScoringService, unauthorised: dict) -> None:
    """Health, metrics and the page."""

    @app.get("/health", responses={503: {"description": "a worker died or is stuck, or the store is unreachable"},
                                   **unauthorised})
    def health() -> JSONResponse:
        answer, healthy = service.health()
        return JSONResponse(answer, status_code=200 if healthy else 503)

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}}, **unauthorised})
    def metrics() -> Response:
        """Prometheus text format: jobs by status, queue depth, workers by state, analysis durations, worker
        errors, refused uploads."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        from .page import PAGE

        return PAGE
