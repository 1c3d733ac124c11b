"""The job store on a PostgreSQL server (psycopg 3): any number of API nodes and workers share one database and one
data directory (a network file system or a mounted bucket).

Why our own SQL rather than a queue library (procrastinate, pgqueuer): the jobs table is also the service's history
(filters, paging, deduplication, retention, the CSV export) and holds the verdicts, so a queue library would add a
second schema beside it and its own worker model while the claim itself is one statement. A worker claims the next
job with `SELECT ... FOR UPDATE SKIP LOCKED` (workers never wait for each other's rows) and holds it under a lease
that it renews while it works; a job whose worker died is claimed again once the lease has run out, as another
attempt. Lease times come from the nodes' clocks, which must agree to well within the lease (NTP).

A lost connection (the server restarted, the network dropped) makes the current request a StoreUnavailable (503;
a worker retries) and the next one reconnects.
"""
from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

from .store import MIGRATIONS, JobStore, StoreUnavailable

SCHEMA_LOCK = 0x68637369  # pg_advisory_xact_lock key: one node upgrades the schema at a time


class _Placeholders:
    """A psycopg connection that takes the shared SQL's `?` placeholders."""

    def __init__(self, connection) -> None:
        self.connection = connection

    def execute(self, sql: str, params=()):
        return self.connection.execute(sql.replace("?", "%s"), params)


class PostgresJobStore(JobStore):
    """Jobs in the PostgreSQL database at `url`, files in `data_dir`."""

    skip_locked = " FOR UPDATE SKIP LOCKED"
    like = "ILIKE"

    def __init__(self, url: str, data_dir: str | Path, keep_media: bool = False, timeout_s: float = 5.0,
                 **options) -> None:
        if importlib.util.find_spec("psycopg") is None:
            raise RuntimeError("--database postgresql://... needs psycopg 3: pip install 'psycopg[binary]'")
        super().__init__(data_dir, keep_media=keep_media, **options)
        self.url, self.timeout_s = url, timeout_s
        self._lock = threading.Lock()
        self._connection = None
        self._migrate()

    def _connect(self):
        import psycopg
        from psycopg.rows import dict_row

        if self._connection is None or self._connection.closed or self._connection.broken:
            if self._connection is not None:
                self._connection.close()
            self._connection = psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                                               connect_timeout=max(1, int(self.timeout_s)))
        return self._connection

    def _transaction(self, statements):
        import psycopg

        with self._lock:
            try:
                connection = self._connect()
                with connection.transaction():
                    return statements(_Placeholders(connection))
            except psycopg.OperationalError as error:  # server down, connection lost, disk full
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise StoreUnavailable(f"job store unavailable: {reason}") from error

    def _migrate(self) -> None:
        def upgrade(db):
            db.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS hcsi_schema (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM hcsi_schema").fetchone()
            version = row["version"] if row else 0
            if row is None:
                db.execute("INSERT INTO hcsi_schema (version) VALUES (0)")
            for target in range(version, len(MIGRATIONS)):
                for statement in filter(str.strip, MIGRATIONS[target].split(";")):
                    db.execute(statement)
            db.execute("UPDATE hcsi_schema SET version = ?", (max(version, len(MIGRATIONS)),))

        self._transaction(upgrade)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
