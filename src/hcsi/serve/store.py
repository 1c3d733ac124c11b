"""The service's job store: one SQLite database (WAL) and the files of its jobs, in one data directory.

    <data-dir>/hcsi.db              jobs: state, file identity, settings, verdict, timings (schema version in
                                    PRAGMA user_version, upgraded by MIGRATIONS in order)
    <data-dir>/uploads/<sha256>     an upload until it is analysed (then deleted unless keep_media)
    <data-dir>/results/<id>.json    a finished job's result; <id>.png its gate-heatmap strip

Every state change is one transaction. A job is `queued`, then `running` (claimed by one worker with a fresh claim
token), then `done` or `failed`; a job that was running when the process died is queued again when the store opens
(`recover`), and a worker can only finish the claim it holds, so no job is lost and none is finished twice. One data
directory belongs to one server process.
"""
from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
import time
from pathlib import Path

from ..files import atomic_path, write_json_atomic

STATUSES = ("queued", "running", "done", "failed")
MIGRATIONS = [  # index i upgrades schema version i to i + 1
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        started REAL,
        finished REAL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
        reason TEXT NOT NULL DEFAULT '',
        file_name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        suffix TEXT NOT NULL,
        frames INTEGER NOT NULL,
        settings TEXT NOT NULL,
        model TEXT NOT NULL,
        score REAL,
        verdict TEXT,
        progress TEXT NOT NULL DEFAULT '{}',
        claim TEXT,
        attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_created ON jobs (created);
    CREATE INDEX jobs_status ON jobs (status, created);
    CREATE INDEX jobs_identity ON jobs (sha256, settings, status);
    """,
]
COLUMNS = ("id", "created", "started", "finished", "status", "reason", "file_name", "sha256", "size", "suffix",
           "frames", "settings", "model", "score", "verdict", "progress", "attempts")
JOB_ID = re.compile(r"[A-Za-z0-9_-]{22}")  # secrets.token_urlsafe(16): the only ids a job gets


class StoreUnavailable(RuntimeError):
    """The database is locked or the disk is full: the request cannot be stored now (503), nothing is lost."""


class JobStore:
    """Jobs in SQLite plus their files; safe to use from several threads of one process."""

    def __init__(self, data_dir: str | Path, keep_media: bool = False, timeout_s: float = 5.0) -> None:
        self.root = Path(data_dir)
        self.uploads, self.results = self.root / "uploads", self.root / "results"
        for folder in (self.root, self.uploads, self.results):
            folder.mkdir(parents=True, exist_ok=True)
        self.keep_media = keep_media
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "hcsi.db", timeout=timeout_s, check_same_thread=False,
                                   isolation_level=None)  # explicit BEGIN ... COMMIT below
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()
        self.recover()

    # -- plumbing ---------------------------------------------------------------------------------------------------
    def _transaction(self, statements):
        """Run `statements(cursor)` in one IMMEDIATE transaction; locked or full databases raise StoreUnavailable."""
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

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        for target in range(version, len(MIGRATIONS)):
            def upgrade(db, target=target):
                for statement in filter(str.strip, MIGRATIONS[target].split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {target + 1}")
            self._transaction(upgrade)

    @staticmethod
    def _job(row: sqlite3.Row | None) -> dict | None:
        if row is None:
            return None
        job = {k: row[k] for k in COLUMNS}
        job["progress"] = json.loads(job["progress"])
        return job

    # -- life cycle -------------------------------------------------------------------------------------------------
    def recover(self) -> int:
        """Queue again the jobs that were running when the previous process stopped; returns how many."""
        return self._transaction(lambda db: db.execute(
            "UPDATE jobs SET status = 'queued', claim = NULL, progress = '{}' WHERE status = 'running'").rowcount)

    def media_path(self, sha256: str, suffix: str) -> Path:
        return self.uploads / f"{sha256}{suffix}"

    def create(self, file_name: str, sha256: str, size: int, suffix: str, frames: int, settings: str,
               model: str) -> dict:
        """A queued job for an upload already stored at `media_path(sha256, suffix)`."""
        job_id = secrets.token_urlsafe(16)  # 128 random bits: ids cannot be guessed (JOB_ID's form)
        now = time.time()
        self._transaction(lambda db: db.execute(
            "INSERT INTO jobs (id, created, status, file_name, sha256, size, suffix, frames, settings, model) "
            "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
            (job_id, now, file_name, sha256, size, suffix, frames, settings, model)))
        return self.get(job_id)

    def find_done(self, sha256: str, settings: str) -> dict | None:
        """The newest finished job for these bytes with these settings (deduplication)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE sha256 = ? AND settings = ? AND status = 'done' "
                                   "ORDER BY finished DESC LIMIT 1", (sha256, settings)).fetchone()
        return self._job(row)

    def claim_next(self) -> tuple[dict, str] | None:
        """The oldest queued job, now running under a fresh claim token, or None."""
        token = secrets.token_hex(8)

        def claim(db):
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'running', started = ?, claim = ?, attempts = attempts + 1 "
                       "WHERE id = ?", (time.time(), token, row["id"]))
            return row["id"]

        job_id = self._transaction(claim)
        return None if job_id is None else (self.get(job_id), token)

    def set_progress(self, job_id: str, token: str, progress: dict) -> None:
        self._transaction(lambda db: db.execute("UPDATE jobs SET progress = ? WHERE id = ? AND claim = ?",
                                                (json.dumps(progress), job_id, token)))

    def finish(self, job_id: str, token: str, result: dict, heatmap: bytes | None) -> bool:
        """Store a finished job's result (files first, atomically; then the row). False when the claim is no
        longer this worker's (the job was recovered or deleted meanwhile): nothing is recorded twice."""
        write_json_atomic(self.results / f"{job_id}.json", result)
        if heatmap:
            with atomic_path(self.results / f"{job_id}.png") as tmp:
                Path(tmp).write_bytes(heatmap)
        failed = result.get("status") not in ("ok", "no_face")
        updated = self._transaction(lambda db: db.execute(
            "UPDATE jobs SET status = ?, finished = ?, score = ?, verdict = ?, reason = ?, claim = NULL "
            "WHERE id = ? AND claim = ? AND status = 'running'",
            ("failed" if failed else "done", time.time(), result.get("score"),
             result.get("verdict") or result.get("label"), result.get("reason", ""), job_id, token)).rowcount)
        if updated:
            self._drop_media(job_id)
        elif self.get(job_id) is None:  # deleted while it ran: nothing of the case stays behind
            self._remove_results(job_id)
        return bool(updated)

    def _remove_results(self, job_id: str) -> None:
        for path in (self.results / f"{job_id}.json", self.results / f"{job_id}.png"):
            path.unlink(missing_ok=True)

    def fail(self, job_id: str, token: str, reason: str) -> bool:
        updated = self._transaction(lambda db: db.execute(
            "UPDATE jobs SET status = 'failed', finished = ?, reason = ?, claim = NULL "
            "WHERE id = ? AND claim = ? AND status = 'running'", (time.time(), reason, job_id, token)).rowcount)
        if updated:
            self._drop_media(job_id)
        return bool(updated)

    def drop_unreferenced_media(self, sha256: str, suffix: str) -> None:
        """Delete the upload of these bytes unless a job refers to it."""
        with self._lock:
            jobs = self._db.execute("SELECT COUNT(*) FROM jobs WHERE sha256 = ?", (sha256,)).fetchone()[0]
        if not jobs:
            self.media_path(sha256, suffix).unlink(missing_ok=True)

    def _drop_media(self, job_id: str) -> None:
        """Delete a finished job's upload unless keep_media, or another unfinished job still needs the same bytes."""
        job = self.get(job_id)
        if self.keep_media or job is None:
            return
        with self._lock:
            waiting = self._db.execute("SELECT COUNT(*) FROM jobs WHERE sha256 = ? AND status IN ('queued', "
                                       "'running')", (job["sha256"],)).fetchone()[0]
        if not waiting:
            self.media_path(job["sha256"], job["suffix"]).unlink(missing_ok=True)

    # -- reading ----------------------------------------------------------------------------------------------------
    def get(self, job_id: str) -> dict | None:
        with self._lock:
            return self._job(self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def result(self, job_id: str) -> dict | None:
        """A job's result; None for an unfinished or deleted job, or an id that is not of the store's making (a
        client's id never becomes part of a file name)."""
        path = self.results / f"{job_id}.json" if JOB_ID.fullmatch(job_id) else None
        return json.loads(path.read_text()) if path is not None and path.is_file() else None

    def heatmap_path(self, job_id: str) -> Path | None:
        """A finished job's heatmap file; None when there is none or the id is not of the store's making."""
        path = self.results / f"{job_id}.png" if JOB_ID.fullmatch(job_id) else None
        return path if path is not None and path.is_file() else None

    def list(self, status: str | None = None, verdict: str | None = None, text: str | None = None,
             since: float | None = None, until: float | None = None, limit: int = 50,
             offset: int = 0) -> tuple[list[dict], int]:
        """Jobs newest first with the filters (text matches the file name or the SHA-256), and how many match."""
        where, values = [], []
        for column, value in (("status", status), ("verdict", verdict)):
            if value:
                where.append(f"{column} = ?")
                values.append(value)
        if text:
            where.append("(file_name LIKE ? ESCAPE '\\' OR sha256 LIKE ? ESCAPE '\\')")
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            values += [pattern, pattern]
        if since is not None:
            where.append("created >= ?")
            values.append(since)
        if until is not None:
            where.append("created < ?")
            values.append(until)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs{clause}", values).fetchone()[0]
            rows = self._db.execute(f"SELECT * FROM jobs{clause} ORDER BY created DESC LIMIT ? OFFSET ?",
                                    [*values, limit, offset]).fetchall()
        return [self._job(r) for r in rows], total

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
        return {**dict.fromkeys(STATUSES, 0), **{r["status"]: r["n"] for r in rows}}

    # -- removal ----------------------------------------------------------------------------------------------------
    def delete(self, job_id: str) -> bool:
        """Remove a job, its result and heatmap, and its upload when no other job needs it."""
        job = self.get(job_id)
        if job is None:
            return False
        self._transaction(lambda db: db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)))
        self._remove_results(job_id)
        with self._lock:
            others = self._db.execute("SELECT COUNT(*) FROM jobs WHERE sha256 = ?", (job["sha256"],)).fetchone()[0]
        if not others:
            self.media_path(job["sha256"], job["suffix"]).unlink(missing_ok=True)
        return True

    def purge_older_than(self, days: float) -> int:
        """Delete finished jobs (and their files) created more than `days` ago; returns how many."""
        cutoff = time.time() - days * 86400
        with self._lock:
            old = [r["id"] for r in self._db.execute(
                "SELECT id FROM jobs WHERE created < ? AND status IN ('done', 'failed')", (cutoff,)).fetchall()]
        return sum(self.delete(job_id) for job_id in old)

    def close(self) -> None:
        with self._lock:
            self._db.close()
