"""The job store's backends by the database URL: SQLite in the data directory (default) or PostgreSQL."""
from __future__ import annotations

from pathlib import Path

from .store import JobStore


def open_store(data_dir: str | Path, database: str | None = None, **options) -> JobStore:
    """SQLite in `data_dir` (default), or the PostgreSQL server at `database` (postgresql://...) with the files
    in `data_dir`, which every node of the service shares."""
    if database is None or database.startswith("sqlite"):
        from .store_sqlite import SQLiteJobStore

        return SQLiteJobStore(data_dir, **options)
    if database.startswith(("postgresql://", "postgres://")):
        from .store_postgres import PostgresJobStore

        return PostgresJobStore(database, data_dir, **options)
    raise ValueError(f"--database {database}: expected postgresql://USER@HOST:PORT/DB (or leave it out for SQLite "
                     "in the data directory)")
