"""Several machines, played by processes on one: two API nodes (`hcsi serve --workers 0`) and two workers
(`hcsi worker`) on one PostgreSQL database (started by the test) and one shared data directory."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from media import fixture
from postgres import PostgresServer, unavailable_reason
from service_process import Server, Worker

from hcsi.models import build_model, save_checkpoint


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    postgres = PostgresServer()
    root = tmp_path_factory.mktemp("cluster")
    checkpoint = root / "model.safetensors"
    save_checkpoint(build_model("hcsi_net_small", input_size=64), checkpoint)
    data = root / "data"
    options = ("--database", postgres.url, "--lease-s", "3", "--frames", "2")
    apis = [Server(checkpoint, data, *options, "--workers", "0", "--queue", "100") for _ in range(2)]
    workers = [Worker(checkpoint, data, postgres.url, *options) for _ in range(2)]
    yield postgres, apis, workers, data
    for node in [*apis, *workers]:
        node.stop()
    postgres.close()


def submit(apis, uploads: list[tuple[str, bytes]], **fields) -> list[str]:
    """Each upload to the API nodes in turn, several at once; the job ids."""
    def post(numbered):
        n, (name, data) = numbered
        answer = apis[n % len(apis)].post("/v1/jobs", data, name, **fields)
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    with ThreadPoolExecutor(6) as pool:
        return list(pool.map(post, enumerate(uploads)))


def recorded(workers) -> list[str]:
    return [e["job"] for w in workers for e in w.events("job_finished") if e["recorded"]]


def test_thirty_jobs_across_two_apis_finish_exactly_once(cluster):
    postgres, apis, workers, data = cluster
    image = fixture("face_recognition/obama.jpg").read_bytes()
    ids = submit(apis, [(f"case{n}.jpg", image + n.to_bytes(2, "big")) for n in range(30)])
    jobs = [apis[n % 2].wait_done(job_id) for n, job_id in enumerate(ids)]
    assert [j["status"] for j in jobs] == ["done"] * 30 and all(j["attempts"] == 1 for j in jobs)
    assert sorted(recorded(workers)) == sorted(ids)  # each result written once
    assert {e["worker"].split("/")[0] for w in workers for e in w.events("job_started")} == {
        str(w.process.pid) for w in workers}  # both workers took part
    assert apis[0].get("/v1/jobs", limit=100).json()["total"] == apis[1].get("/v1/jobs").json()["total"] == 30
    health = apis[0].get("/health").json()
    assert health["status"] == "ok" and health["workers"]["configured"] == 0


def test_a_killed_workers_job_finishes_on_the_other_after_its_lease(cluster):
    postgres, apis, workers, data = cluster
    video = fixture("liveportrait/d12.mp4").read_bytes()
    job_id = submit(apis, [("long.mp4", video)], frames="16")[0]
    deadline = time.time() + 120
    while not any(e["job"] == job_id for w in workers for e in w.events("job_started")):
        assert time.time() < deadline
        time.sleep(0.05)
    runner = next(w for w in workers if any(e["job"] == job_id for e in w.events("job_started")))
    runner.kill()  # mid-analysis: no goodbye, its lease runs out
    other = next(w for w in workers if w is not runner)
    job = apis[0].wait_done(job_id, timeout=300)
    assert job["status"] == "done" and job["attempts"] == 2
    assert recorded([other]).count(job_id) == 1 and job_id not in recorded([runner])
    workers.remove(runner)


def test_a_postgresql_restart_under_load_loses_nothing(cluster):
    postgres, apis, workers, data = cluster
    image = fixture("face_recognition/biden.jpg").read_bytes()
    ids = submit(apis, [(f"load{n}.jpg", image + n.to_bytes(2, "big")) for n in range(10)])
    postgres.restart(down_s=2)  # while the workers claim and record
    jobs = [apis[n % 2].wait_done(job_id, timeout=300) for n, job_id in enumerate(ids)]
    assert [j["status"] for j in jobs] == ["done"] * 10
    assert all(w.process.poll() is None for w in workers)  # the workers reconnected, none died
    assert {p.stem for p in (data / "results").glob("*.json")} >= set(ids)
    assert not list((data / "uploads").iterdir())  # every upload analysed and removed
