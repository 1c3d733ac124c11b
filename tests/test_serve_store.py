"""The job store on both backends (SQLite; PostgreSQL started by the test), the workers around it, and the upload
limit: claims in priority order, leases that run out, attempts that give up, deletion that stops an analysis,
workers that survive store errors and report when they die."""
import asyncio
import threading
import time

import pytest
from postgres import PostgresServer, unavailable_reason

from hcsi.serve.backends import open_store
from hcsi.serve.store import StoreUnavailable

MEDIA = f"{7:064x}"


@pytest.fixture(scope="module")
def postgres():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer()
    yield server
    server.close()


def new_database(server) -> str:
    """A fresh database on the test server (each test its own)."""
    import psycopg

    name = f"t{time.time_ns()}"
    with psycopg.connect(server.url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def open_test_store(request, tmp_path):
    """A factory of stores on a fresh database of the parameter's backend."""
    opened = []
    database = new_database(request.getfixturevalue("postgres")) if request.param == "postgresql" else None

    def make(**options):
        store = open_store(tmp_path / "data", database, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def queue(store, n: int = 1, priority: str = "batch", sha256: str = MEDIA) -> list[dict]:
    store.media_path(sha256, ".jpg").write_bytes(b"x")
    return [store.create(f"case{k}.jpg", sha256, 1, ".jpg", 2, "{}", "m", priority) for k in range(n)]


def test_claims_go_interactive_first_then_oldest_first(open_test_store):
    store = open_test_store()
    batch = queue(store, 2)
    interactive = queue(store, 1, "interactive")
    order = [store.claim_next()[0]["id"] for _ in range(3)]
    assert order == [interactive[0]["id"], batch[0]["id"], batch[1]["id"]]
    assert store.claim_next() is None


def test_a_lapsed_lease_is_claimed_again_and_given_up_after_max_attempts(open_test_store):
    store = open_test_store(lease_s=1.0, max_attempts=2)
    job = queue(store)[0]
    first, first_claim = store.claim_next()
    assert store.claim_next() is None  # the lease holds
    time.sleep(1.2)
    second, second_claim = store.claim_next()  # the first worker stalled: another attempt
    assert second["id"] == job["id"] and second["attempts"] == 2
    assert not store.finish(job["id"], first_claim, {"status": "ok", "score": 0.1, "reason": ""}, None)
    assert not store.renew(job["id"], first_claim) and store.renew(job["id"], second_claim)
    time.sleep(1.2)
    assert store.claim_next() is None  # two attempts stopped: given up, not run a third time
    failed = store.get(job["id"])
    assert failed["status"] == "failed" and "stopped 2 times" in failed["reason"]
    assert not store.media_path(MEDIA, ".jpg").exists()


def test_renewals_keep_a_claim_and_deletion_ends_it(open_test_store):
    store = open_test_store(lease_s=1.0)  # generous beside the pauses: a slow machine keeps the claim too
    job = queue(store)[0]
    _, claim = store.claim_next()
    for _ in range(4):
        time.sleep(0.4)
        assert store.set_progress(job["id"], claim, {"stage": "finding faces"})
    assert store.claim_next() is None  # renewed by progress: nobody else may take it
    assert store.delete(job["id"])
    assert not store.renew(job["id"], claim) and not store.set_progress(job["id"], claim, {})
    assert not store.finish(job["id"], claim, {"status": "ok", "score": 0.9, "reason": ""}, b"png")
    assert list(store.results.iterdir()) == [] and not store.media_path(MEDIA, ".jpg").exists()


def test_the_history_filters_and_exports_every_match(open_test_store):
    from hcsi.serve.results import history_csv

    store = open_test_store()
    jobs = queue(store, 3)
    jobs.append(store.create("=HYPERLINK(x).jpg", MEDIA, 1, ".jpg", 2, "{}", "m"))
    rows, total = store.list(text="CASE1")  # case-insensitive on both backends
    assert total == 1 and rows[0]["id"] == jobs[1]["id"]
    store.set_label(jobs[0]["id"], "real", "looks fine", "ana")
    labelled, total = store.list(label="labelled", limit=None)
    assert total == 1 and labelled[0]["label_by"] == "ana" and store.list(label="unlabelled")[1] == 3
    every, total = store.list(limit=None)
    assert total == 4 and len(every) == 4
    lines = history_csv(every).splitlines()
    assert lines[0].startswith("id,created,finished,status") and len(lines) == 5 and ",batch," in lines[1]
    assert ",'=HYPERLINK(x).jpg," in lines[1]  # newest first; no formula for a spreadsheet to run


def test_concurrent_claims_on_postgresql_take_each_job_exactly_once(postgres, tmp_path):
    database = new_database(postgres)
    stores = [open_store(tmp_path / "data", database) for _ in range(4)]
    ids = {job["id"] for job in queue(stores[0], 40)}
    claimed, lock = [], threading.Lock()

    def drain(store):
        while (got := store.claim_next()) is not None:
            with lock:
                claimed.append(got[0]["id"])

    threads = [threading.Thread(target=drain, args=(store,)) for store in stores]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(claimed) == sorted(ids)  # every job once, none twice (SKIP LOCKED, one transaction per claim)
    for store in stores:
        store.close()


def test_a_postgresql_store_reconnects_after_a_server_restart(postgres, tmp_path):
    store = open_store(tmp_path / "data", new_database(postgres))
    job = queue(store)[0]
    postgres.restart()
    answers = []
    for _ in range(3):
        try:
            answers.append(store.get(job["id"]))
        except StoreUnavailable as error:  # the old connection is found dead once: 503, then a new one
            assert "job store unavailable" in str(error)
    assert answers and answers[-1]["id"] == job["id"]
    store.close()


# -- workers (SQLite; the claim logic above is the same on both) ----------------------------------------------------
class SlowDetector:
    """Stands in for `Detector`: reports progress `steps` times, `pause` seconds apart."""

    frames = 2

    def __init__(self, steps: int = 40, pause: float = 0.05) -> None:
        self.steps, self.pause, self.calls = steps, pause, 0

    def score(self, media, explain=False, frames=None, progress=None):
        for step in range(self.steps):
            self.calls += 1
            progress("finding faces", step, self.steps)
            time.sleep(self.pause)
        return Finished()


class Finished:
    gates, persons, overview, overview_frame = None, [], None, None

    def to_dict(self):
        return {"path": "x", "status": "ok", "reason": "", "score": 0.8, "label": "fake"}


def workers_over(store, detector, **options):
    from hcsi.serve.worker import Workers

    return Workers(detector, store, {"model": "m", "calibration": "uncalibrated"}, **options)


def wait_for(condition, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise TimeoutError


def test_deleting_a_running_job_stops_its_analysis(tmp_path):
    store = open_store(tmp_path / "data")
    detector = SlowDetector(steps=200)
    workers = workers_over(store, detector)
    job = queue(store)[0]
    workers.start()
    try:
        wait_for(lambda: detector.calls >= 3)
        assert store.delete(job["id"])
        calls = detector.calls
        time.sleep(0.5)
        assert detector.calls <= calls + 1  # stopped at its next progress report, not after 200
        assert store.get(job["id"]) is None and list(store.results.iterdir()) == []
    finally:
        workers.stop()
        store.close()


def test_a_worker_survives_store_errors_and_reruns_a_job_it_could_not_record(tmp_path, monkeypatch):
    store = open_store(tmp_path / "data", lease_s=0.5)
    workers = workers_over(store, SlowDetector(steps=1, pause=0))
    claims = store.claim_next

    def broken_once(*_a, _calls=[0]):
        _calls[0] += 1
        if _calls[0] == 1:
            raise RuntimeError("disk I/O error")
        return claims()

    monkeypatch.setattr(store, "claim_next", broken_once)
    finish = store.finish

    def unrecorded_once(*args, _calls=[0]):
        _calls[0] += 1
        if _calls[0] == 1:
            raise StoreUnavailable("job store unavailable: database is locked")
        return finish(*args)

    monkeypatch.setattr(store, "finish", unrecorded_once)
    job = queue(store)[0]
    workers.start()
    try:
        wait_for(lambda: store.get(job["id"])["status"] == "done")
        assert store.get(job["id"])["attempts"] == 2  # run again once its lease ran out
        assert workers.states() == {"alive": 1, "dead": 0, "stuck": 0}
        exposition = workers.metrics.exposition().decode()
        assert 'hcsi_worker_errors_total{where="claim"} 1.0' in exposition
        assert 'hcsi_worker_errors_total{where="run"} 1.0' in exposition
    finally:
        workers.stop()
        store.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_health_reports_dead_and_stuck_workers(tmp_path, monkeypatch):
    store = open_store(tmp_path / "data")
    workers = workers_over(store, SlowDetector(steps=100, pause=0.05), count=2, stuck_after_s=0.5)

    def dies(*_):
        raise SystemExit  # not an Exception: the guard lets it end the thread, as a bug in the loop would
    queue(store)
    workers.start()
    try:
        wait_for(lambda: store.counts()["running"] == 1)
        monkeypatch.setattr(workers, "_purge_if_due", dies)  # the idle worker dies at its next loop
        wait_for(lambda: workers.states()["dead"] == 1)
        assert workers.states() == {"alive": 1, "dead": 1, "stuck": 0}
        monkeypatch.setattr(workers, "_beat", lambda: None)  # the running one stops reporting progress
        wait_for(lambda: workers.states()["stuck"] == 1)
        assert 'hcsi_workers{state="dead"} 1.0' in workers.metrics.exposition().decode()
    finally:
        workers.stop()
        store.close()


def test_an_upload_is_stopped_at_the_limit_while_it_streams(tmp_path):
    """A chunked body (no Content-Length) of 50 MB against a 1 MB limit: refused after about 1 MB has arrived,
    before the multipart parser has spooled the rest."""
    from starlette.requests import Request

    from hcsi.serve.uploads import UploadRefused, receive_upload

    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + b"\xff\xd8\xff"
    sent = 0

    async def receive():
        nonlocal sent
        chunk = head if sent == 0 else b"\0" * 65536
        sent += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": sent < 50 * 2**20}

    scope = {"type": "http", "method": "POST", "path": "/v1/jobs", "query_string": b"",
             "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())]}
    with pytest.raises(UploadRefused) as refused:
        asyncio.run(receive_upload(Request(scope, receive), tmp_path, max_upload_mb=1))
    assert refused.value.status == 413 and sent < 2 * 2**20
    assert list(tmp_path.iterdir()) == []


def test_deduplication_keys_on_the_calibration_bytes_and_no_answer_names_a_server_path(tmp_path):
    from hcsi.evaluate.calibration import Calibration, OperatingPoint
    from hcsi.serve.service import calibration_sha256

    path = tmp_path / "secret-folder" / "model.calibration.json"
    path.parent.mkdir()
    settings = {"frames": 2, "face_detector": "hog540", "input_size": 64, "amp": False}
    first = Calibration("temperature", {"temperature": 2.0}, [OperatingPoint(0.05, 0.7, 0.05, 0.8)], 10, 10, {},
                        "c" * 64, settings)
    first.save(path)
    before = calibration_sha256(Calibration.load(path))
    Calibration("temperature", {"temperature": 3.0}, first.operating_points, 10, 10, {}, "c" * 64,
                settings).save(path)
    after = calibration_sha256(Calibration.load(path))
    assert before != after  # re-calibrated to the same path: another key, so no stale verdict is reused
    assert str(tmp_path) not in before + after
