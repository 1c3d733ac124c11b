"""`create_app`: the service (`service.py`) over a job store (`store.py` and its backends), its workers
(`worker.py`) and its HTTP face (`routes.py`), put together."""
from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import FastAPI

from ..detect.api import Detector
from .routes import build_app
from .service import ScoringService
from .backends import open_store


def create_app(detector: Detector, max_upload_mb: float = 500, token: str | None = None, workers: int = 1,
               queue_size: int = 8, data_dir: str | Path | None = None, keep_media: bool = False,
               keep_days: float | None = None, database: str | None = None, lease_s: float = 60.0,
               max_attempts: int = 3, stuck_after_s: float = 900.0) -> FastAPI:
    """The app around a `ScoringService` (see it for `workers`, `queue_size` and `keep_days`) over the job store:
    SQLite in `data_dir` (default: a fresh temporary folder, for tests and embedding; `hcsi serve` uses
    ./hcsi-serve) or the PostgreSQL `database` with its files in `data_dir`. With `token`, every request but
    Swagger UI's own files needs it. The workers start here and stop with the app."""
    store = open_store(data_dir or tempfile.mkdtemp(prefix="hcsi-serve-"), database, keep_media=keep_media,
                       lease_s=lease_s, max_attempts=max_attempts)
    service = ScoringService(detector, store, max_upload_mb=max_upload_mb, workers=workers, queue_size=queue_size,
                             keep_days=keep_days, stuck_after_s=stuck_after_s)
    service.start()
    return build_app(service, token)
