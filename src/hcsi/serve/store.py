"""The service's job store: the jobs in a database and their files in a data directory.

    database                        jobs: state, file identity, settings, verdict, timings, lease (schema upgraded
                                    by MIGRATIONS in order); SQLite in <data-dir>/hcsi.db (`store_sqlite`, one
                                    process) or a PostgreSQL server (`store_postgres`, any number of API nodes and
                                    workers)
    <data-dir>/uploads/<sha256>     an upload until it is analysed (then deleted unless keep_media)
    <data-dir>/results/<id>.json    a finished job's result; <id>.png its gate-heatmap strip

Every state change is one transaction. A job is `queued`, then `running` (claimed by one worker with a fresh claim
token and a lease that the worker renews while it works), then `done` or `failed`. A running job whose lease ran
out (its worker died) is claimed again by another worker, as another attempt; after `max_attempts` attempts it is
failed with the reason instead of being tried again. A worker can only finish or renew the claim it holds, so a job
deleted or re-claimed meanwhile is never recorded twice and a deleted job leaves no file behind. Interactive jobs
(the page, /v1/analyze) are claimed before batch jobs, each in the order they came.

The backends differ only in their connection, their transaction and how a claim skips rows other workers are
claiming (`SKIP LOCKED` on PostgreSQL; SQLite's single writer needs nothing); the SQL below is shared.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path

from ..files import atomic_path, write_json_atomic

STATUSES = ("queued", "running", "done", "failed")
PRIORITIES = {"interactive": 0, "batch": 1}  # claimed in this order
MIGRATIONS = [  # index i upgrades schema version i to i + 1; each statement runs on SQLite and PostgreSQL
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        created DOUBLE PRECISION NOT NULL,
        started DOUBLE PRECISION,
        finished DOUBLE PRECISION,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
        reason TEXT NOT NULL DEFAULT '',
        file_name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size BIGINT NOT NULL,
        suffix TEXT NOT NULL,
        frames INTEGER NOT NULL,
        settings TEXT NOT NULL,
        model TEXT NOT NULL,
        score DOUBLE PRECISION,
        verdict TEXT,
        progress TEXT NOT NULL DEFAULT '{}',
        claim TEXT,
        attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_created ON jobs (created);
    CREATE INDEX jobs_status ON jobs (status, created);
    CREATE INDEX jobs_identity ON jobs (sha256, settings, status)
    """,
    """
    ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE jobs ADD COLUMN lease_until DOUBLE PRECISION;
    CREATE INDEX jobs_claim ON jobs (status, priority, created)
    """,
    """
    ALTER TABLE jobs ADD COLUMN analyst_label TEXT;
    ALTER TABLE jobs ADD COLUMN label_note TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN label_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN labelled_at DOUBLE PRECISION
    """,
    """
    ALTER TABLE jobs ADD COLUMN provenance TEXT;
    CREATE INDEX jobs_provenance ON jobs (provenance, created)
    """,
]
ANALYST_LABELS = ("fake", "real", "unsure")
COLUMNS = ("id", "created", "started", "finished", "status", "reason", "file_name", "sha256", "size", "suffix",
           "frames", "settings", "model", "score", "verdict", "progress", "attempts", "priority", "analyst_label",
           "label_note", "label_by", "labelled_at", "provenance")
JOB_ID = re.compile(r"[A-Za-z0-9_-]{22}")  # secrets.token_urlsafe(16): the only ids a job gets
CLAIMABLE = "(status = 'queued' OR (status = 'running' AND lease_until < ?))"


class StoreUnavailable(RuntimeError):
    """The database is locked, unreachable or the disk is full: the request cannot be stored now (503), nothing is
    lost."""


def given_up_reason(attempts: int) -> str:
    return (f"given up: the analysis stopped {attempts} times before it finished (the process running it died or "
            "lost the job); it is not tried again")


class JobStore:
    """Jobs in a database plus their files in `data_dir`. Subclasses give `_transaction(statements)` (run
    `statements(db)` in one transaction, `db.execute(sql, params)` with `?` placeholders, rows by column name) and
    `_read(statements)`; `skip_locked` is appended to the claim's SELECT and `like` is the case-insensitive LIKE."""

    skip_locked = ""
    like = "LIKE"

    def __init__(self, data_dir: str | Path, keep_media: bool = False, lease_s: float = 60.0,
                 max_attempts: int = 3) -> None:
        self.root = Path(data_dir)
        self.uploads, self.results = self.root / "uploads", self.root / "results"
        for folder in (self.root, self.uploads, self.results):
            folder.mkdir(parents=True, exist_ok=True)
        self.keep_media, self.lease_s, self.max_attempts = keep_media, lease_s, max_attempts

    def _transaction(self, statements):
        raise NotImplementedError

    def _read(self, statements):
        return self._transaction(statements)

    @staticmethod
    def _job(row) -> dict | None:
        if row is None:
            return None
        job = {k: row[k] for k in COLUMNS}
        job["progress"] = json.loads(job["progress"])
        return job

    def close(self) -> None:
        """Release the connection (and, for SQLite, the data directory)."""

    # -- jobs -------------------------------------------------------------------------------------------------------
    def media_path(self, sha256: str, suffix: str) -> Path:
        return self.uploads / f"{sha256}{suffix}"

    def create(self, file_name: str, sha256: str, size: int, suffix: str, frames: int, settings: str,
               model: str, priority: str = "batch") -> dict:
        """A queued job for an upload already stored at `media_path(sha256, suffix)`."""
        job_id = secrets.token_urlsafe(16)  # 128 random bits: ids cannot be guessed (JOB_ID's form)
        self._transaction(lambda db: db.execute(
            "INSERT INTO jobs (id, created, status, file_name, sha256, size, suffix, frames, settings, model, "
            "priority) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, time.time(), file_name, sha256, size, suffix, frames, settings, model, PRIORITIES[priority])))
        return self.get(job_id)

    def find_done(self, sha256: str, settings: str) -> dict | None:
        """The newest finished job for these bytes with these settings (deduplication)."""
        return self._job(self._read(lambda db: db.execute(
            "SELECT * FROM jobs WHERE sha256 = ? AND settings = ? AND status = 'done' ORDER BY finished DESC "
            "LIMIT 1", (sha256, settings)).fetchone()))

    def claim_next(self) -> tuple[dict, str] | None:
        """The next claimable job (queued, or running with its lease run out), now running under a fresh claim
        token and lease, or None. Jobs already tried `max_attempts` times are failed on the way."""
        token, given_up = secrets.token_hex(8), []

        def claim(db):
            while True:
                now = time.time()
                row = db.execute(f"SELECT id, attempts, sha256 FROM jobs WHERE {CLAIMABLE} ORDER BY priority, "
                                 f"created LIMIT 1{self.skip_locked}", (now,)).fetchone()
                if row is None:
                    return None
                if row["attempts"] < self.max_attempts:
                    db.execute("UPDATE jobs SET status = 'running', started = ?, claim = ?, lease_until = ?, "
                               "attempts = attempts + 1, progress = '{}' WHERE id = ?",
                               (now, token, now + self.lease_s, row["id"]))
                    return row["id"]
                db.execute("UPDATE jobs SET status = 'failed', finished = ?, reason = ?, claim = NULL, "
                           "lease_until = NULL WHERE id = ?", (now, given_up_reason(row["attempts"]), row["id"]))
                given_up.append(row["id"])

        job_id = self._transaction(claim)
        for failed in given_up:
            self._drop_media(failed)
        return None if job_id is None else (self.get(job_id), token)

    def renew(self, job_id: str, token: str) -> bool:
        """Extend the lease of a claim this worker holds; False when the job was deleted or claimed by another."""
        return bool(self._transaction(lambda db: db.execute(
            "UPDATE jobs SET lease_until = ? WHERE id = ? AND claim = ? AND status = 'running'",
            (time.time() + self.lease_s, job_id, token)).rowcount))

    def set_progress(self, job_id: str, token: str, progress: dict) -> bool:
        """Record progress (and renew the lease); False when the claim is no longer this worker's."""
        return bool(self._transaction(lambda db: db.execute(
            "UPDATE jobs SET progress = ?, lease_until = ? WHERE id = ? AND claim = ? AND status = 'running'",
            (json.dumps(progress), time.time() + self.lease_s, job_id, token)).rowcount))

    def finish(self, job_id: str, token: str, result: dict, heatmap: bytes | None) -> bool:
        """Store a finished job's result (files first, atomically; then the row). False when the claim is no
        longer this worker's (the job was re-claimed or deleted meanwhile): nothing is recorded twice, and a deleted
        job's files are removed again."""
        write_json_atomic(self.results / f"{job_id}.json", result)
        if heatmap:
            with atomic_path(self.results / f"{job_id}.png") as tmp:
                Path(tmp).write_bytes(heatmap)
        failed = result.get("status") not in ("ok", "no_face")
        updated = self._transaction(lambda db: db.execute(
            "UPDATE jobs SET status = ?, finished = ?, score = ?, verdict = ?, reason = ?, provenance = ?, "
            "claim = NULL, lease_until = NULL WHERE id = ? AND claim = ? AND status = 'running'",
            ("failed" if failed else "done", time.time(), result.get("score"),
             result.get("verdict") or result.get("label"), result.get("reason", ""),
             (result.get("provenance") or {}).get("state"), job_id, token)).rowcount)
        if updated:
            self._drop_media(job_id)
        elif self.get(job_id) is None:  # deleted while it ran: nothing of the case stays behind
            self._remove_results(job_id)
        return bool(updated)

    def fail(self, job_id: str, token: str, reason: str) -> bool:
        updated = self._transaction(lambda db: db.execute(
            "UPDATE jobs SET status = 'failed', finished = ?, reason = ?, claim = NULL, lease_until = NULL "
            "WHERE id = ? AND claim = ? AND status = 'running'", (time.time(), reason, job_id, token)).rowcount)
        if updated:
            self._drop_media(job_id)
        return bool(updated)

    # -- files ------------------------------------------------------------------------------------------------------
    def _remove_results(self, job_id: str) -> None:
        for path in (self.results / f"{job_id}.json", self.results / f"{job_id}.png"):
            path.unlink(missing_ok=True)

    def _jobs_with(self, sha256: str, unfinished_only: bool = False) -> int:
        states = " AND status IN ('queued', 'running')" if unfinished_only else ""
        return self._read(lambda db: db.execute(f"SELECT COUNT(*) AS n FROM jobs WHERE sha256 = ?{states}",
                                                (sha256,)).fetchone()["n"])

    def drop_unreferenced_media(self, sha256: str, suffix: str) -> None:
        """Delete the upload of these bytes unless a job refers to it."""
        if not self._jobs_with(sha256):
            self.media_path(sha256, suffix).unlink(missing_ok=True)

    def _drop_media(self, job_id: str) -> None:
        """Delete a finished job's upload unless keep_media, or another unfinished job still needs the same bytes."""
        job = self.get(job_id)
        if not self.keep_media and job is not None and not self._jobs_with(job["sha256"], unfinished_only=True):
            self.media_path(job["sha256"], job["suffix"]).unlink(missing_ok=True)

    # -- reading ----------------------------------------------------------------------------------------------------
    def get(self, job_id: str) -> dict | None:
        if not JOB_ID.fullmatch(job_id):  # not of the store's making: no query needed
            return None
        return self._job(self._read(lambda db: db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()))

    def result(self, job_id: str) -> dict | None:
        """A job's result; None for an unfinished or deleted job, or an id that is not of the store's making (a
        client's id never becomes part of a file name)."""
        path = self.results / f"{job_id}.json" if JOB_ID.fullmatch(job_id) else None
        return json.loads(path.read_text()) if path is not None and path.is_file() else None

    def heatmap_path(self, job_id: str) -> Path | None:
        """A finished job's heatmap file; None when there is none or the id is not of the store's making."""
        path = self.results / f"{job_id}.png" if JOB_ID.fullmatch(job_id) else None
        return path if path is not None and path.is_file() else None

    def set_label(self, job_id: str, label: str | None, note: str = "", by: str = "") -> dict | None:
        """An analyst's label of a job (None clears it); the job, or None when there is no such job."""
        if label is not None and label not in ANALYST_LABELS:
            raise ValueError(f"label must be one of {', '.join(ANALYST_LABELS)}")
        if self.get(job_id) is None:
            return None
        stamp, note, by = (time.time(), note, by) if label is not None else (None, "", "")
        self._transaction(lambda db: db.execute(
            "UPDATE jobs SET analyst_label = ?, label_note = ?, label_by = ?, labelled_at = ? WHERE id = ?",
            (label, note, by, stamp, job_id)))
        return self.get(job_id)

    def list(self, status: str | None = None, verdict: str | None = None, text: str | None = None,
             since: float | None = None, until: float | None = None, limit: int | None = 50,
             offset: int = 0, label: str | None = None, provenance: str | None = None) -> tuple[list[dict], int]:
        """Jobs newest first with the filters (text matches the file name or the SHA-256; label: an analyst's
        label, "labelled" or "unlabelled"; provenance: the state of the file's Content Credentials), and how many
        match; `limit=None`: all of them."""
        where, values = [], []
        for column, value in (("status", status), ("verdict", verdict), ("provenance", provenance)):
            if value:
                where.append(f"{column} = ?")
                values.append(value)
        if label in ("unlabelled", "labelled"):
            where.append(f"analyst_label IS {'NOT ' if label == 'labelled' else ''}NULL")
        elif label:
            where.append("analyst_label = ?")
            values.append(label)
        if text:
            where.append(f"(file_name {self.like} ? ESCAPE '\\' OR sha256 {self.like} ? ESCAPE '\\')")
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            values += [pattern, pattern]
        for condition, value in (("created >= ?", since), ("created < ?", until)):
            if value is not None:
                where.append(condition)
                values.append(value)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        page = " LIMIT ? OFFSET ?" if limit is not None else ""
        paging = [limit, offset] if limit is not None else []

        def read(db):
            total = db.execute(f"SELECT COUNT(*) AS n FROM jobs{clause}", values).fetchone()["n"]
            rows = db.execute(f"SELECT * FROM jobs{clause} ORDER BY created DESC{page}", [*values, *paging])
            return total, rows.fetchall()

        total, rows = self._read(read)
        return [self._job(r) for r in rows], total

    def counts(self) -> dict[str, int]:
        rows = self._read(lambda db: db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall())
        return {**dict.fromkeys(STATUSES, 0), **{r["status"]: r["n"] for r in rows}}

    # -- removal ----------------------------------------------------------------------------------------------------
    def delete(self, job_id: str) -> bool:
        """Remove a job, its result and heatmap, and its upload when no other job needs it. A worker running it
        finds its claim gone at its next progress report or lease renewal and stops."""
        job = self.get(job_id)
        if job is None:
            return False
        if not self._transaction(lambda db: db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount):
            return False  # deleted by another request meanwhile
        self._remove_results(job_id)
        self.drop_unreferenced_media(job["sha256"], job["suffix"])
        return True

    def purge_older_than(self, days: float) -> int:
        """Delete finished jobs (and their files) created more than `days` ago; returns how many."""
        cutoff = time.time() - days * 86400
        old = self._read(lambda db: db.execute(
            "SELECT id FROM jobs WHERE created < ? AND status IN ('done', 'failed')", (cutoff,)).fetchall())
        return sum(self.delete(row["id"]) for row in old)

