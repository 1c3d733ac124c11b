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


def labelled_jobs(data_dir: str | Path, database: str | None = None) -> list[dict]:
    """Every finished job with an analyst's label (fake / real / unsure), read without taking the data directory
    from a running server (SQLite is opened read-only)."""
    query = "SELECT * FROM jobs WHERE status = 'done' AND analyst_label IS NOT NULL ORDER BY created"
    if database is None or database.startswith("sqlite"):
        import sqlite3

        path = Path(data_dir) / "hcsi.db"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no hcsi serve job database there (--from-jobs takes the --data-dir of "
                                    "hcsi serve)")
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
            db.row_factory = sqlite3.Row
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version < 3:
                return []  # made before analysts could label jobs
            return [dict(row) for row in db.execute(query).fetchall()]
    store = open_store(data_dir, database)  # PostgreSQL: no lock to respect
    try:
        return store.list(status="done", label="labelled", limit=None)[0]
    finally:
        store.close()
