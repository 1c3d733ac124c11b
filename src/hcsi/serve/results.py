"""What the service answers about a job: the stored result record, the job as the API shows it, the case report,
and the history as CSV. No answer names a server path: uploads are named by the client's file name, the
checkpoint and calibration by their SHA-256."""
from __future__ import annotations

import csv
import datetime
import io
import json
import math
from pathlib import Path

from ..detect.explain import person_images
from ..detect.report import case_report_html, picture_facts, with_person_images
from .store import JobStore

CSV_COLUMNS = ("id", "created", "finished", "status", "verdict", "score", "file_name", "sha256", "size", "frames",
               "model", "priority", "attempts", "reason", "analyst_label", "label_note", "label_by", "labelled_at",
               "provenance")
PRIORITY_NAMES = {0: "interactive", 1: "batch"}


def result_record(result, job: dict, media: Path, settings: dict, heatmap: bool) -> dict:
    """A finished analysis (a DetectionResult) as stored and answered: the detector's fields with the upload's
    identity instead of its server path, and each person's thumbnail and gate strip as data URLs."""
    record = with_person_images(result.to_dict(), person_images(result))

    def scrub(text: str | None) -> str | None:  # answers name the uploaded file, never a server path
        for server_name in (str(media), media.name):
            text = text.replace(server_name, job["file_name"]) if text else text
        return text

    record["reason"], record["verdict_meaning"] = scrub(record.get("reason")), scrub(record.get("verdict_meaning"))
    record["cannot_judge"] = [{**r, "message": scrub(r["message"])} for r in record.get("cannot_judge", [])]
    if record.get("provenance"):
        record["provenance"]["reason"] = scrub(record["provenance"]["reason"])
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
        for key in ("file_name", "reason", "label_note", "label_by"):  # a client's text never starts a formula
            if str(row[key]).startswith(("=", "+", "-", "@")):
                row[key] = "'" + row[key]
        for key in ("created", "finished", "labelled_at"):
            if row[key] is not None:
                row[key] = datetime.datetime.fromtimestamp(row[key], datetime.timezone.utc).isoformat(
                    timespec="seconds")
        writer.writerow(row)
    return out.getvalue()


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> list[float] | None:
    """The Wilson score 95 % interval of a proportion (None without trials)."""
    if not trials:
        return None
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def label_summary(jobs: list[dict], settings: dict) -> dict:
    """How the verdicts of finished jobs made with these settings (checkpoint and calibration) compare with the
    analysts' labels: counts, and precision, recall and FPR of "called fake" (verdict manipulated, or label fake
    without a calibration) against labels fake / real, with Wilson 95 % intervals. Unsure labels are counted only."""
    mine = [j for j in jobs if j["status"] == "done" and j["analyst_label"]
            and all(json.loads(j["settings"]).get(k) == settings.get(k) for k in ("checkpoint_sha256", "calibration"))]
    counts = {label: sum(j["analyst_label"] == label for j in mine) for label in ("fake", "real", "unsure")}
    called = {j["id"]: j["verdict"] in ("manipulated", "fake") for j in mine}
    tp = sum(called[j["id"]] for j in mine if j["analyst_label"] == "fake")
    fp = sum(called[j["id"]] for j in mine if j["analyst_label"] == "real")
    fn, tn = counts["fake"] - tp, counts["real"] - fp

    def rate(k: int, n: int) -> dict:
        return {"value": k / n if n else None, "ci95": wilson_interval(k, n), "of": n}

    labelled_done = sum(1 for j in jobs if j["analyst_label"] and j["status"] == "done")
    return {"labelled": counts, "other_settings": labelled_done - len(mine),
            "called_fake": "verdict manipulated" if settings.get("calibration", "uncalibrated") != "uncalibrated"
            else "label fake (uncalibrated)",
            "true_positives": tp, "false_positives": fp, "false_negatives": fn, "true_negatives": tn,
            "precision": rate(tp, tp + fp), "recall": rate(tp, tp + fn), "fpr": rate(fp, fp + tn)}
