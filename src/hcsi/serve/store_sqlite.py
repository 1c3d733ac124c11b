"""The job store in SQLite (WAL) in the data directory: nothing to set up, one server process per data directory.

The process that opens the store holds an exclusive lock on `<data-dir>/hcsi.lock` until it closes it, so a second
`hcsi serve` on the same directory refuses to start (it would otherwise re-queue the first one's running jobs).
Because no other process can hold a claim, the jobs that were running when the previous process stopped are queued
again at once (`recover`), each counted as an attempt when claimed.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from .store import MIGRATIONS, JobStore, StoreUnavailable

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


class DataDirInUse(RuntimeError):
    """Another process serves this data directory."""


def lock_data_dir(root: Path):
    """An exclusive, non-blocking lock on `root/hcsi.lock` (released when the file is closed or the process
    dies); raises DataDirInUse naming the process that holds it."""
    handle = open(root / "hcsi.lock", "a+")
    try:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise DataDirInUse(f"{root} is in use by another hcsi process (pid {holder}): stop it, or give this one "
                           "another --data-dir (several servers on one set of jobs need --database postgresql://...)")
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class SQLiteJobStore(JobStore):
    """Jobs in `<data-dir>/hcsi.db`; safe to use from several threads of the one process that locks the folder."""

    def __init__(self, data_dir: str | Path, keep_media: bool = False, timeout_s: float = 5.0, **options) -> None:
        super().__init__(data_dir, keep_media=keep_media, **options)
        self._dir_lock = lock_data_dir(self.root)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.root / "hcsi.db", timeout=timeout_s, check_same_thread=False,
                                       isolation_level=None)  # explicit BEGIN ... COMMIT below
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
            self.recover()
        except (sqlite3.OperationalError, StoreUnavailable) as error:
            self._dir_lock.close()
            raise StoreUnavailable(f"job store unavailable: {error}") from error

    def _transaction(self, statements):
        """Run `statements(db)` in one IMMEDIATE transaction; locked or full databases raise StoreUnavailable."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = statements(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result
            except sqlite3.OperationalError as error:  # "database is locked", "database or disk is full"
                raise StoreUnavailable(f"job store unavailable: {error}") from error

    def _read(self, statements):
        with self._lock:
            try:
                return statements(self._db)
            except sqlite3.OperationalError as error:
                raise StoreUnavailable(f"job store unavailable: {error}") from error

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        for target in range(version, len(MIGRATIONS)):
            def upgrade(db, target=target):
                for statement in filter(str.strip, MIGRATIONS[target].split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {target + 1}")
            self._transaction(upgrade)

    def recover(self) -> int:
        """Queue again the jobs that were running when the previous process stopped; returns how many."""
        return self._transaction(lambda db: db.execute(
            "UPDATE jobs SET status = 'queued', claim = NULL, lease_until = NULL, progress = '{}' "
            "WHERE status = 'running'").rowcount)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._dir_lock.close()
