"""What the service answers about a job: the stored result record, the job as the API shows it, the case report,
and the history as CSV. No answer names a server path: uploads are named by the client's file name, the
checkpoint and calibration by their SHA-256."""
from __future__ import annotations

import csv
import datetime
import io
import json
from pathlib import Path

from ..detect.report import case_report_html, picture_facts
from .store import JobStore

CSV_COLUMNS = ("id", "created", "finished", "status", "verdict", "score", "file_name", "sha256", "size", "frames",
               "model", "priority", "attempts", "reason")
PRIORITY_NAMES = {0: "interactive", 1: "batch"}


def result_record(result, job: dict, media: Path, settings: dict, heatmap: bool) -> dict:
    """A finished analysis (a DetectionResult) as stored and answered: the detector's fields with the upload's
    identity instead of its server path."""
    record = result.to_dict()
    for server_name in (str(media), media.name):  # answers name the uploaded file, never a server path
        record["reason"] = record["reason"].replace(server_name, job["file_name"])
    record.pop("path", None)
    if record.get("calibration") not in (None, "uncalibrated"):
        record["calibration"] = settings["calibration"]  # its SHA-256, not the server's file name
    record.update(id=job["id"], file_name=job["file_name"], sha256=job["sha256"], size=job["size"],
                  analysed_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  settings={**settings, "frames": job["frames"]},
                  **picture_facts(media),  # duration or image size; its SHA-256 and size are the job's
                  heatmap_url=f"/v1/jobs/{job['id']}/heatmap.png" if heatmap else None,
                  report_url=f"/v1/jobs/{job['id']}/report.html")
    return record


def job_view(store: JobStore, job: dict, with_result: bool = True) -> dict:
    """A job as the API shows it: its row, links, and (with_result) the result once it is finished."""
    view = {k: v for k, v in job.items() if k != "settings"}
    view["settings"] = json.loads(job["settings"])
    view["priority"] = PRIORITY_NAMES.get(job["priority"], job["priority"])
    view["url"] = f"/v1/jobs/{job['id']}"
    view["result"] = view["report_url"] = None
    if with_result and job["status"] in ("done", "failed"):
        view["result"] = store.result(job["id"])
        view["report_url"] = f"/v1/jobs/{job['id']}/report.html" if view["result"] else None
    return view


def finished_record(store: JobStore, job: dict) -> dict:
    """What /v1/analyze answers: the stored result of a finished job (or the failure's reason)."""
    record = store.result(job["id"])
    if record is None:
        record = {"id": job["id"], "status": "error", "reason": job["reason"], "score": None}
    return record


def report_html(store: JobStore, job: dict, commit: str | None) -> str | None:
    """The case report of a finished job; None when it has no result."""
    record = store.result(job["id"])
    if record is None:
        return None
    heatmap = store.heatmap_path(job["id"])
    settings = record.get("settings", {})
    about = {"file_name": record.get("file_name"), "sha256": record.get("sha256"), "size": record.get("size"),
             "duration_s": record.get("duration_s"), "image_size": record.get("image_size"),
             "analysed_at": record.get("analysed_at"),
             "model": settings.get("model"), "checkpoint_sha256": settings.get("checkpoint_sha256"),
             "commit": commit, "settings": {k: v for k, v in settings.items()
                                           if k not in ("model", "checkpoint_sha256")}}
    return case_report_html(record, about, heatmap.read_bytes() if heatmap is not None else None)


def history_csv(jobs: list[dict]) -> str:
    """The history as CSV (one row per job, CSV_COLUMNS, times as UTC ISO 8601; file names and reasons that would
    start a spreadsheet formula get a leading apostrophe)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for job in jobs:
        row = dict(job, priority=PRIORITY_NAMES.get(job["priority"], job["priority"]))
        for key in ("file_name", "reason"):  # a client's text never starts a spreadsheet formula
            if str(row[key]).startswith(("=", "+", "-", "@")):
                row[key] = "'" + row[key]
        for key in ("created", "finished"):
            if row[key] is not None:
                row[key] = datetime.datetime.fromtimestamp(row[key], datetime.timezone.utc).isoformat(
                    timespec="seconds")
        writer.writerow(row)
    return out.getvalue()
