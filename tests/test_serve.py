"""`hcsi serve`: API with FastAPI's TestClient, bad uploads, token, and a bounded load test on loopback."""
import glob
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
from fastapi.testclient import TestClient
from media import fixture

from hcsi.cli import main
from hcsi.detect import Detector
from hcsi.models import build_model, save_checkpoint
from hcsi.serve import create_app


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_checkpoint(build_model("hcsi_net_small", input_size=64), path)
    return Detector.from_checkpoint(path, device="cpu", frames=2)


def leftover_uploads() -> list[str]:
    return glob.glob(f"{tempfile.gettempdir()}/hcsi-upload-*")


def test_analyze_returns_score_frames_faces_and_a_heatmap(detector):
    client = TestClient(create_app(detector))
    assert client.get("/health").json()["status"] == "ok"
    with open(fixture("face_recognition/two_people.jpg"), "rb") as f:
        response = client.post("/v1/analyze", files={"file": ("../../etc/passwd", f, "text/plain")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok" and len(body["faces"]) == 2
    assert body["score"] == pytest.approx(detector.score(fixture("face_recognition/two_people.jpg")).score, abs=1e-4)
    assert "path" not in body and len(body["id"]) >= 20
    assert body["calibration"] == "uncalibrated" and body["probability"] is None  # no calibration: says so
    assert client.get(f"/v1/results/{body['id']}").json()["score"] == body["score"]
    heatmap = client.get(body["heatmap_url"])
    assert heatmap.status_code == 200 and heatmap.content[:4] == b"\x89PNG"
    assert client.get("/v1/results/not-an-id").status_code == 404
    for long_id in ("a" * 4000, "%2e%2e"):  # an id is looked up in the store, never used as a file name first
        assert client.get(f"/v1/results/{long_id}").status_code == 404
        assert client.get(f"/v1/results/{long_id}/heatmap.png").status_code == 404
    page = client.get("/").text
    assert "<html" in page and "://" not in page  # nothing loaded from elsewhere
    assert client.get("/docs").status_code == 200
    assert not leftover_uploads()


def test_a_video_upload_with_frames(detector):
    client = TestClient(create_app(detector))
    with open(fixture("ghost/elon.mp4"), "rb") as f:
        body = client.post("/v1/analyze", files={"file": ("clip.mp4", f)}, data={"frames": "3"}).json()
    assert body["frames_sampled"] == 3 and len(body["frame_scores"]) == 3


def test_bad_uploads_get_a_clear_4xx_and_the_server_keeps_serving(detector, tmp_path):
    client = TestClient(create_app(detector, max_upload_mb=0.5))
    cases = {
        "empty": ({"file": ("a.mp4", b"")}, 400, "empty"),
        "text": ({"file": ("a.mp4", b"hello, this is not a video")}, 415, "unsupported file type"),
        "truncated": ({"file": ("a.mp4", fixture("ghost/dance.mp4").read_bytes()[:3000])}, 422, "unreadable"),
        "too big": ({"file": ("a.mp4", fixture("ghost/dance.mp4").read_bytes() + bytes(600_000))}, 413, "limit"),
    }
    for name, (files, status, words) in cases.items():
        response = client.post("/v1/analyze", files=files)
        assert response.status_code == status, (name, response.text)
        assert words in response.text, name
        assert "hcsi-upload" not in response.text and tempfile.gettempdir() not in response.text, name
    truncated = client.post("/v1/analyze", files={"file": ("holiday.mp4",
                                                             fixture("ghost/dance.mp4").read_bytes()[:3000])}).json()
    assert truncated["reason"].startswith("holiday.mp4")  # the upload's own name, not the server's temp file
    assert client.post("/v1/analyze", data={"frames": "2"}).status_code == 400  # no file field
    malformed = client.post("/v1/analyze", content=b"--xyz\r\nContent-Disposition: form-data; name=\"file\"\r\n",
                            headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert 400 <= malformed.status_code < 500
    with open(fixture("face_recognition/obama.jpg"), "rb") as f:
        for frames in ("0", "²", "301", "1e3"):  # "²".isdigit() is true, int("²") fails: a 500 before
            f.seek(0)
            answer = client.post("/v1/analyze", files={"file": ("x.jpg", f)}, data={"frames": frames})
            assert answer.status_code == 422 and "frames must be an integer" in answer.text, frames
    assert client.get("/health").status_code == 200
    assert not leftover_uploads()


def test_a_token_is_required_on_every_request_when_set(detector):
    client = TestClient(create_app(detector, token="s3cret"))
    assert client.get("/health").status_code == 401
    assert client.get("/").status_code == 401
    assert client.get("/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/?token=s3cret").status_code == 200
    assert client.get("/health", headers={"X-API-Token": "wrong"}).status_code == 401
    # non-ASCII tokens were a 500 (compare_digest refuses non-ASCII str); every refusal names the scheme
    for answer in (client.get("/health?token=s%C3%A9cret"),
                   client.get("/health", headers={"X-API-Token": "sé".encode()}),
                   client.get("/health", headers={"Authorization": "Bearer ünïcode".encode()})):
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"


def test_serve_refuses_to_start_without_a_checkpoint(capsys):
    assert main(["serve"]) == 2
    assert "needs a trained checkpoint" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app):
    """The app served by uvicorn on a free loopback port for the block; yields the port."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_twenty_concurrent_uploads_are_all_answered_and_the_queue_bounds_them(detector):
    image = fixture("face_recognition/obama.jpg").read_bytes()
    with serving(create_app(detector, workers=1, queue_size=3)) as port:
        def upload(_):
            with httpx.Client(timeout=300) as client:
                r = client.post(f"http://127.0.0.1:{port}/v1/analyze", files={"file": ("a.jpg", image)})
                return r.status_code, r.headers.get("retry-after")

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(upload, range(20)))
    codes = [code for code, _ in answers]
    assert set(codes) <= {200, 503} and codes.count(200) >= 4  # 1 running + 3 waiting at least
    assert all(retry == "5" for code, retry in answers if code == 503)
    assert not leftover_uploads()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def _browser():
    """Playwright's sync API with Debian's Chromium; the test is skipped on a machine without it."""
    import os

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def test_the_page_in_a_real_browser_uploads_a_clip_and_shows_the_verdict(detector):
    playwright = _browser()
    with serving(create_app(detector, token="t0k")) as port, playwright as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/?token=t0k")
        page.fill("#frames", "3")
        page.set_input_files("#file", str(fixture("ghost/elon.mp4")))
        page.wait_for_selector("#score", timeout=240_000)
        score = float(page.inner_text("#score"))
        expected = detector.score(fixture("ghost/elon.mp4"), frames=3).score
        assert abs(score - expected) < 0.001  # the page shows what the API computed
        assert page.inner_text("#label") == ("FAKE" if expected >= 0.5 else "REAL")
        assert "uncalibrated: a raw score, not a probability" in page.inner_text("#uncalibrated")
        assert page.locator("#frame-plot circle").count() == 3
        page.wait_for_function("document.getElementById('heatmap').naturalWidth > 0", timeout=60_000)
        browser.close()


def test_the_api_docs_render_in_a_browser_with_the_network_blocked(detector, tmp_path):
    """Swagger UI's files come from the package, not a CDN: /docs works offline (and behind a token)."""
    playwright = _browser()
    blocked: list[str] = []
    with serving(create_app(detector, token="t0k")) as port, playwright as p:
        local = f"http://127.0.0.1:{port}/"

        def only_this_server(route):
            if route.request.url.startswith(local):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.route("**/*", only_this_server)
        page.goto(f"{local}docs?token=t0k")
        page.wait_for_selector(".opblock-summary-path[data-path=\"/v1/analyze\"]", timeout=60_000)
        assert "hcsi" in page.inner_text(".swagger-ui .info .title")
        page.screenshot(path=str(tmp_path / "docs.png"))
        browser.close()
    assert not blocked, f"the docs page asked for outside resources: {blocked}"


def test_a_calibrated_server_answers_tiers_and_refuses_other_frames(detector):
    import numpy as np

    from hcsi.evaluate.calibration import fit_calibration

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(200, int), np.ones(200, int)]
    calibration = fit_calibration(labels, np.r_[rng.uniform(0, 0.6, 200), rng.uniform(0.3, 1, 200)],
                                  settings=detector.scoring_settings())
    calibrated = Detector(detector.model, device="cpu", frames=2, calibration=calibration)
    client = TestClient(create_app(calibrated))
    image = fixture("face_recognition/obama.jpg").read_bytes()
    body = client.post("/v1/analyze", files={"file": ("a.jpg", image)}).json()
    assert body["verdict"] in ("manipulated", "inconclusive", "no_evidence") and body["label"] is None
    assert body["decided_by"]["kind"] == "operating_points" and body["verdict_meaning"]
    assert body["calibration"].startswith("sha256:") and body["probability"] is not None
    refused = client.post("/v1/jobs", files={"file": ("b.jpg", image + b"x")}, data={"frames": "3"})
    assert refused.status_code == 422 and "calibration was fitted at 2 frames" in refused.json()["detail"]
    listed = client.get("/v1/jobs", params={"verdict": body["verdict"]}).json()
    assert [j["id"] for j in listed["jobs"]] == [body["id"]]


def test_analysts_label_jobs_see_how_verdicts_hold_and_recalibrate_from_them(detector, tmp_path, capsys):
    import json as json_module

    from hcsi.evaluate.calibration import Calibration

    client = TestClient(create_app(detector, data_dir=tmp_path / "data", queue_size=20))
    images = [fixture(f"face_recognition/{name}.jpg").read_bytes() for name in ("obama", "biden", "two_people")]
    ids = [client.post("/v1/analyze", files={"file": (f"case{n}.jpg", images[n % 3] + bytes([n]))}).json()["id"]
           for n in range(8)]
    for n, job_id in enumerate(ids):
        answer = client.put(f"/v1/jobs/{job_id}/label", json={"label": "fake" if n % 2 else "real",
                                                               "note": f"case {n}", "by": "ana"})
        assert answer.status_code == 200 and answer.json()["analyst_label"] in ("fake", "real")
    assert client.put(f"/v1/jobs/{ids[0]}/label", json={"label": "maybe"}).status_code == 422
    assert client.put("/v1/jobs/" + "x" * 22 + "/label", json={"label": "fake"}).status_code == 404
    summary = client.get("/v1/labels/summary").json()
    assert summary["labelled"] == {"fake": 4, "real": 4, "unsure": 0} and summary["recall"]["of"] == 4
    called = sum(client.get(f"/v1/jobs/{i}").json()["verdict"] == "fake" for i in ids)  # untrained: any number
    assert summary["called_fake"] == "label fake (uncalibrated)" and summary["precision"]["of"] == called
    assert summary["true_positives"] + summary["false_negatives"] == 4 and summary["recall"]["ci95"] is not None
    assert client.get("/v1/jobs", params={"label": "fake"}).json()["total"] == 4
    exported = client.get("/v1/jobs.csv", params={"label": "real"}).text.splitlines()
    assert len(exported) == 5 and exported[0].endswith("analyst_label,label_note,label_by,labelled_at,provenance")

    store = client.app.state.service.store  # one job labelled for another checkpoint: left out, counted
    settings = json_module.loads(store.get(ids[0])["settings"])
    store._db.execute("UPDATE jobs SET settings = ? WHERE id = ?",
                      (json_module.dumps({**settings, "checkpoint_sha256": "0" * 64}), ids[0]))
    out = tmp_path / "from-jobs.json"
    with pytest.warns(UserWarning, match="only 3 real and 4 fake videos"):
        assert main(["calibrate", "--checkpoint", str(detector.checkpoint_path), "--from-jobs",
                     str(tmp_path / "data"), "--out", str(out)]) == 0  # while the server holds the folder
    assert "on 7 labelled job(s) at 2 frames" in capsys.readouterr().err
    calibration = Calibration.load(out, detector.checkpoint_sha256)
    assert calibration.settings == detector.scoring_settings() and calibration.n_fake == 4
    Detector(detector.model, device="cpu", frames=2, calibration=calibration)  # accepted by what made the jobs
    assert client.put(f"/v1/jobs/{ids[1]}/label", json={"label": None}).json()["analyst_label"] is None
