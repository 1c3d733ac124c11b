"""`hcsi serve` as a service: jobs in SQLite over a real server process (uvicorn), deduplication, deletion, history,
metrics, case reports, 20 parallel submissions, and recovery after SIGKILL."""
import json
import os
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from media import fixture
from service_process import AUTH, PROJECT, TOKEN, Server, free_port

from hcsi.models import build_model, save_checkpoint

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_checkpoint(build_model("hcsi_net_small", input_size=64), path)
    return path


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    data = tmp_path_factory.mktemp("service") / "data"
    running = Server(checkpoint, data, "--frames", "2", "--queue", "40", "--keep-media")
    yield running
    running.stop()


def test_jobs_are_stored_deduplicated_listed_reported_and_deleted(server):
    image = fixture("face_recognition/obama.jpg").read_bytes()
    created = server.post("/v1/jobs", image, "obama.jpg")
    assert created.status_code == 202, created.text
    job = server.wait_done(created.json()["id"])
    assert job["status"] == "done" and job["result"]["score"] is not None and job["result"]["file_name"] == "obama.jpg"
    assert job["progress"]["stage"] == "scoring faces"
    again = server.post("/v1/jobs", image, "copy.jpg")
    assert again.status_code == 200 and again.json()["id"] == job["id"]  # the same bytes and settings: stored result
    forced = server.post("/v1/jobs", image, "copy.jpg", force="true")
    assert forced.status_code == 202 and forced.json()["id"] != job["id"]
    server.wait_done(forced.json()["id"])

    history = server.get("/v1/jobs", q="obama", status="done").json()
    assert history["total"] == 1 and history["jobs"][0]["id"] == job["id"]
    assert server.get("/v1/jobs", q=job["sha256"][:12]).json()["total"] == 2
    assert server.get("/v1/jobs", limit=1, offset=1).json()["jobs"][0]["id"] == job["id"]  # newest first
    metrics = server.get("/metrics").text
    assert 'hcsi_jobs{status="done"} 2.0' in metrics and "hcsi_analysis_seconds_count 2.0" in metrics
    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401  # the token covers everything
    assert httpx.get(f"{server.url}/v1/jobs/{job['id']}/report.html", timeout=10).status_code == 401

    report = server.get(f"/v1/jobs/{job['id']}/report.html").text
    assert job["sha256"] in report and "uncalibrated" in report and report.count('src="data:image/png;base64,') == 1
    assert "still image, 384×480 pixels" in report and "duration" not in report  # a still has no duration or curve
    assert "://" not in report.replace("data:image/png;base64,", "")  # nothing to fetch: opens offline

    data = Path(server.process.args[server.process.args.index("--data-dir") + 1])
    files = [data / "results" / f"{job['id']}.json", data / "results" / f"{job['id']}.png",
             data / "uploads" / f"{job['sha256']}.jpg"]
    assert all(f.is_file() for f in files)
    assert httpx.delete(f"{server.url}/v1/jobs/{job['id']}", headers=AUTH).status_code == 204
    assert server.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert not files[0].exists() and not files[1].exists() and files[2].exists()  # the forced job still needs it
    assert httpx.delete(f"{server.url}/v1/jobs/{forced.json()['id']}", headers=AUTH).status_code == 204
    assert not files[2].exists() and not list((data / "uploads").iterdir())
    refused = server.post("/v1/jobs", b"not a video at all", "notes.txt")
    assert refused.status_code == 415 and server.get("/v1/jobs").json()["total"] == 0  # nothing stored for it
    assert 'hcsi_uploads_refused_total{reason="unsupported_type"} 1.0' in server.get("/metrics").text


def test_twenty_parallel_submissions_all_finish_once(server):
    image = fixture("face_recognition/biden.jpg").read_bytes()
    uploads = [image + os.urandom(16) for _ in range(20)]  # bytes after the JPEG's end: 20 distinct files

    def submit(data):
        return server.post("/v1/jobs", data, "biden.jpg")

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(submit, uploads))
    assert [a.status_code for a in answers] == [202] * 20
    ids = [a.json()["id"] for a in answers]
    assert len(set(ids)) == 20
    for job_id in ids:
        assert server.wait_done(job_id)["status"] == "done"
    data = Path(server.process.args[server.process.args.index("--data-dir") + 1])
    with sqlite3.connect(data / "hcsi.db") as db:
        rows = db.execute("SELECT id, attempts FROM jobs WHERE file_name = 'biden.jpg'").fetchall()
    assert sorted(r[0] for r in rows) == sorted(ids) and all(r[1] == 1 for r in rows)


def test_a_second_server_on_the_same_data_directory_refuses_to_start(server, checkpoint):
    second = subprocess.run([sys.executable, "-m", "hcsi.cli", "serve", "--checkpoint", str(checkpoint), "--data-dir",
                             str(server.data_dir), "--port", str(free_port()), "--device", "cpu"],
                            env=dict(os.environ, PYTHONPATH=str(PROJECT / "src")), capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 2 and "is in use by another hcsi process" in second.stderr
    assert f"pid {server.process.pid}" in second.stderr
    assert server.get("/health").json()["status"] == "ok"  # the first one goes on


def test_jobs_survive_a_sigkill_and_run_again_exactly_once(checkpoint, tmp_path):
    data = tmp_path / "data"
    first = Server(checkpoint, data, "--frames", "16")
    try:
        ids = [first.post("/v1/jobs", fixture(f"liveportrait/{clip}.mp4").read_bytes(), f"{clip}.mp4").json()["id"]
               for clip in ("d0", "d12", "d18")]
        deadline = time.time() + 120  # kill while a job runs (whichever: a fast machine may be past the first)
        while time.time() < deadline and "running" not in [first.get(f"/v1/jobs/{i}").json()["status"] for i in ids]:
            time.sleep(0.05)
        first.kill()
    finally:
        first.stop()
    with sqlite3.connect(data / "hcsi.db") as db:
        before = dict(db.execute("SELECT id, status FROM jobs").fetchall())
    assert list(before.values()).count("running") == 1 and set(before.values()) <= {"running", "queued", "done"}
    assert list((data / "uploads").glob("*.mp4"))  # the queued uploads were kept
    second = Server(checkpoint, data, "--frames", "16")
    try:
        jobs = [second.wait_done(job_id) for job_id in ids]
    finally:
        second.stop()
    assert [j["status"] for j in jobs] == ["done"] * 3
    # the interrupted job ran again exactly once, every other job once
    assert all(j["attempts"] == (2 if before[j["id"]] == "running" else 1) for j in jobs)
    assert sorted(p.stem for p in (data / "results").glob("*.json")) == sorted(ids)
    assert not list((data / "uploads").iterdir())  # analysed: uploads deleted (no --keep-media)


def test_the_history_page_lists_jobs_opens_one_and_its_report_renders(server):
    from test_serve import CHROMIUM, CHROMIUM_FLAGS, _browser

    image = fixture("face_recognition/two_people.jpg").read_bytes()
    job = server.wait_done(server.post("/v1/jobs", image, "two_people.jpg").json()["id"])
    playwright = _browser()
    with playwright as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.goto(f"{server.url}/?token={TOKEN}")
        row = page.locator(f'#history tbody tr[data-id="{job["id"]}"]')
        row.wait_for(timeout=60_000)
        assert "two_people.jpg" in row.inner_text() and "done" in row.inner_text()
        page.fill("#search", "two_people")
        page.click("#refresh")
        page.wait_for_function("document.querySelectorAll('#history tbody tr').length === 1", timeout=30_000)
        row.click()
        page.wait_for_selector("#score", timeout=60_000)
        assert abs(float(page.inner_text("#score")) - job["result"]["score"]) < 1e-3
        page.wait_for_function("document.getElementById('heatmap').naturalWidth > 0", timeout=60_000)
        with page.expect_popup() as popup:
            page.click("#report-link")
        report = popup.value
        report.wait_for_load_state()
        assert "hcsi case report" in report.inner_text("h1") and job["sha256"] in report.content()
        report.wait_for_function(  # a still: heatmaps and its two persons, no curve
            "!document.querySelector('img[alt=\"per-frame scores\"]') && "
            "document.querySelectorAll('.person-thumbnail').length === 2 && "
            "[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=30_000)
        browser.close()


def test_the_page_follows_one_job_at_a_time_and_stops_when_it_is_deleted(checkpoint, tmp_path):
    """Two history clicks: only the second job is polled. Its deletion: the page says so and stops polling.
    (Playwright's events arrive while it is called: the pauses are page.wait_for_timeout, not time.sleep.)"""
    from test_serve import CHROMIUM, CHROMIUM_FLAGS, _browser

    server = Server(checkpoint, tmp_path / "data", "--workers", "0")  # an API node alone: its jobs stay queued
    image = fixture("face_recognition/obama.jpg").read_bytes()
    first, second = (server.post("/v1/jobs", image + bytes([n]), f"waiting{n}.jpg").json()["id"] for n in (1, 2))
    polled = []
    with _browser() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.on("request", lambda r: polled.append((time.time(), r.url.split("?")[0].rsplit("/", 1)[-1])))
        page.goto(f"{server.url}/?token={TOKEN}")
        for job_id in (first, second):
            page.locator(f'#history tbody tr[data-id="{job_id}"]').click(timeout=60_000)
            page.wait_for_timeout(1500)
        switched = time.time()
        page.wait_for_timeout(1500)
        assert not [t for t, name in polled if name == first and t > switched]  # the earlier loop ended
        assert [t for t, name in polled if name == second and t > switched]
        assert server.get(f"/v1/jobs/{second}").json()["status"] == "queued"
        httpx.delete(f"{server.url}/v1/jobs/{second}", headers=AUTH, timeout=30)
        page.wait_for_function("document.getElementById('verdict').textContent.includes('no longer exists')",
                               timeout=30_000)
        stopped = time.time()
        page.wait_for_timeout(2000)
        assert not [t for t, name in polled if name == second and t > stopped]
        browser.close()
    server.stop()


def test_analyze_waits_at_most_wait_s_jobs_export_as_csv_and_submit_writes_results(server, tmp_path):
    from hcsi.cli import main

    video = fixture("liveportrait/d0.mp4").read_bytes()
    answer = httpx.post(f"{server.url}/v1/analyze", params={"wait_s": 0.05}, headers=AUTH, timeout=60,
                        files={"file": ("slow.mp4", video + b"w")}, data={"frames": "32"})
    assert answer.status_code == 202 and answer.headers["location"] == answer.json()["url"]
    assert answer.json()["priority"] == "interactive" and answer.json()["status"] in ("queued", "running")
    exported = server.get("/v1/jobs.csv", q="slow.mp4")
    assert exported.headers["content-type"].startswith("text/csv")
    lines = exported.text.splitlines()
    assert lines[0].split(",")[:4] == ["id", "created", "finished", "status"] and len(lines) == 2
    assert lines[1].startswith(answer.json()["id"]) and ",interactive," in lines[1]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(fixture("face_recognition/obama.jpg").read_bytes() + b"s")
    (tmp_path / "in" / "notes.jpg").write_text("not an image")
    out = tmp_path / "results.jsonl"
    code = main(["submit", str(tmp_path / "in"), "--server", server.url, "--token", TOKEN, "--out", str(out)])
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert code == 1 and rows["a.jpg"]["status"] == "ok" and rows["a.jpg"]["score"] is not None
    assert rows["notes.jpg"]["status"] == "error" and "415" in rows["notes.jpg"]["reason"]
    job = server.get(f"/v1/jobs/{rows['a.jpg']['id']}").json()
    assert job["priority"] == "batch" and job["sha256"] == rows["a.jpg"]["sha256"]


def test_detect_writes_a_self_contained_case_report_per_input(checkpoint, tmp_path):
    from hcsi.cli import main

    assert main(["detect", str(fixture("ghost/elon.mp4")), "--checkpoint", str(checkpoint), "--device", "cpu",
                 "--frames", "2", "--report", str(tmp_path / "cases"), "--out", str(tmp_path / "rows.jsonl")]) == 0
    (report,) = (tmp_path / "cases").glob("*.html")
    text = report.read_text()
    assert "elon.mp4" in text and "(uncalibrated)" in text and text.count('src="data:image/png;base64,') == 2
    assert "setting: frames" in text and "checkpoint SHA-256" in text and "What this means" in text
    assert str(report) in (tmp_path / "rows.jsonl").read_text()


def test_a_locked_database_answers_503_and_loses_nothing(checkpoint, tmp_path):
    from fastapi.testclient import TestClient

    from hcsi.detect import Detector
    from hcsi.serve import create_app
    from hcsi.serve.store_sqlite import DataDirInUse, SQLiteJobStore

    app = create_app(Detector.from_checkpoint(checkpoint, device="cpu", frames=1), data_dir=tmp_path / "data")
    client = TestClient(app)
    image = fixture("face_recognition/obama.jpg").read_bytes()
    first = client.post("/v1/analyze", files={"file": ("a.jpg", image)}).json()
    holder = sqlite3.connect(tmp_path / "data" / "hcsi.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the database
    store = app.state.service.store
    store._db.execute("PRAGMA busy_timeout = 100")
    try:
        answer = client.post("/v1/jobs", files={"file": ("b.jpg", image + b"x")})
        assert answer.status_code == 503 and "job store unavailable" in answer.text
        assert answer.headers["retry-after"] == "5"
        with pytest.raises(DataDirInUse, match="in use by another hcsi process"):
            SQLiteJobStore(tmp_path / "data", timeout_s=0.1)  # the serving process holds the folder
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert client.get(f"/v1/jobs/{first['id']}").json()["status"] == "done"  # what was stored is still there
    assert not list((tmp_path / "data" / "uploads").iterdir())  # nothing kept of the refused upload


def test_a_full_disk_answers_503_and_loses_nothing(checkpoint, tmp_path):
    """A real server process whose files may not grow past 8 MB: an upload larger than that cannot be written (as
    on a full disk), is refused with 503 and leaves nothing behind; what was stored stays, later uploads work."""
    data = tmp_path / "data"
    server = Server(checkpoint, data, "--frames", "1", max_file_bytes=8_000_000)
    try:
        image = fixture("face_recognition/obama.jpg").read_bytes()
        first = server.wait_done(server.post("/v1/jobs", image, "a.jpg").json()["id"])
        too_big = image + bytes(9_000_000)  # still a JPEG by its first bytes
        answer = server.post("/v1/jobs", too_big, "big.jpg")
        assert answer.status_code == 503 and "could not store the upload" in answer.text, answer.text
        assert answer.headers["retry-after"] == "5"
        assert not list((data / "uploads").iterdir())  # no partial upload left
        assert server.get(f"/v1/jobs/{first['id']}").json()["status"] == "done"
        assert server.get("/v1/jobs").json()["total"] == 1  # nothing stored for the refused upload
        assert 'hcsi_uploads_refused_total{reason="storage"} 1.0' in server.get("/metrics").text
        again = server.post("/v1/jobs", image + b"x", "b.jpg")
        assert again.status_code == 202 and server.wait_done(again.json()["id"])["status"] == "done"
    finally:
        server.stop()


def test_the_api_passes_schemathesis(server, tmp_path):
    """An independent fuzzer (schemathesis) generates requests from /openapi.json, valid and invalid, and checks
    every answer against the schema: documented statuses, content types and bodies, Allow headers, valid requests
    accepted and invalid ones refused. tests/schemathesis.toml lets the uploads answer 415/422 to schema-valid bytes
    (their type is read from the content, which a schema cannot express)."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(PROJECT / "tests" /
                                                                                     "schemathesis.toml"),
         "run", f"{server.url}/openapi.json", "--checks", "all", "-H", f"Authorization: Bearer {TOKEN}",
         "--max-examples", "15", "--workers", "1", "--phases", "examples,coverage,fuzzing", "--seed", "1",
         "--request-timeout", "120"], capture_output=True, text=True, timeout=900,
        cwd=tmp_path)  # its crash cache (.schemathesis/) goes there, not into the working tree
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "passed" in result.stdout and "failures" not in result.stdout.lower().split("summary")[-1]


def test_retention_removes_old_finished_jobs_and_their_files_only(tmp_path):
    from hcsi.serve.store_sqlite import SQLiteJobStore

    store = SQLiteJobStore(tmp_path / "data")
    ids = []
    for n, age_days in enumerate((10, 3, 10)):
        store.media_path(f"{n:064x}", ".jpg").write_bytes(b"x")
        job = store.create(f"f{n}.jpg", f"{n:064x}", 1, ".jpg", 2, "{}", "m")
        store._db.execute("UPDATE jobs SET created = ? WHERE id = ?", (time.time() - age_days * 86400, job["id"]))
        ids.append(job["id"])
    claims = {}
    while (claimed := store.claim_next()) is not None:
        claims[claimed[0]["id"]] = claimed[1]
    for job_id in ids[:2]:  # the first two finish; the third is still running
        store.finish(job_id, claims[job_id], {"status": "ok", "score": 0.7, "label": "fake", "reason": ""}, b"png")
    assert store.purge_older_than(7) == 1  # old and finished: removed; recent, or old but running: kept
    assert store.get(ids[0]) is None and store.get(ids[1]) and store.get(ids[2])["status"] == "running"
    assert not (store.results / f"{ids[0]}.json").exists() and (store.results / f"{ids[1]}.json").exists()
    assert store.media_path(f"{2:064x}", ".jpg").exists()  # the running job's upload stays


def test_a_job_deleted_while_it_runs_leaves_no_result_behind(tmp_path):
    """DELETE during the analysis: the worker's result is discarded, no file stays, its routes answer 404."""
    from hcsi.serve.store_sqlite import SQLiteJobStore

    store = SQLiteJobStore(tmp_path / "data")
    store.media_path(f"{1:064x}", ".jpg").write_bytes(b"x")
    job = store.create("case.jpg", f"{1:064x}", 1, ".jpg", 2, "{}", "m")
    claimed, claim = store.claim_next()
    assert store.delete(claimed["id"])
    assert not store.finish(claimed["id"], claim, {"status": "ok", "score": 0.9, "label": "fake", "reason": ""},
                            b"png")
    assert list(store.results.iterdir()) == []
    assert store.result(job["id"]) is None and store.heatmap_path(job["id"]) is None
    assert store.result("a" * 5000) is None and store.heatmap_path("../../etc/passwd") is None  # never a file name
