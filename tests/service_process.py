"""`hcsi serve` and `hcsi worker` in processes of their own, for the service's tests."""
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

PROJECT = Path(__file__).resolve().parents[1]
TOKEN = "t0k"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """A service process: `process` and its `log` file."""

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


class Server(Node):
    """`hcsi serve` in its own process on a free loopback port."""

    def __init__(self, checkpoint: Path, data_dir: Path, *options: str, max_file_bytes: int | None = None) -> None:
        """`max_file_bytes`: no file the process writes may grow beyond it (RLIMIT_FSIZE; Python ignores SIGXFSZ,
        so a write past it fails with OSError as on a full disk)."""
        self.port, self.data_dir = free_port(), data_dir
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(PROJECT / "src"), OMP_NUM_THREADS="1")
        self.log = open(data_dir.parent / f"server-{self.port}.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hcsi.cli", "serve", "--checkpoint", str(checkpoint), "--data-dir", str(data_dir),
             "--port", str(self.port), "--device", "cpu", "--token", TOKEN, *options],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes)))
            if max_file_bytes else None)
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.process.poll() is None, Path(self.log.name).read_text()
            try:
                if httpx.get(f"{self.url}/health", headers=AUTH, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(Path(self.log.name).read_text())

    def post(self, path: str, data: bytes, name: str = "photo.jpg", **fields) -> httpx.Response:
        return httpx.post(self.url + path, headers=AUTH, files={"file": (name, data)}, data=fields, timeout=300)

    def get(self, path: str, **params) -> httpx.Response:
        return httpx.get(self.url + path, headers=AUTH, params=params, timeout=60)

    def wait_done(self, job_id: str, timeout: float = 300) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            answer = self.get(f"/v1/jobs/{job_id}")
            if answer.status_code != 503:  # the store briefly unavailable: ask again
                job = answer.json()
                if job["status"] in ("done", "failed"):
                    return job
            time.sleep(0.2)
        raise TimeoutError(job_id)



class Worker(Node):
    """`hcsi worker` in its own process (ready once it says so on stderr); its JSON log lines are `events()`."""

    def __init__(self, checkpoint: Path, data_dir: Path, database: str, *options: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(PROJECT / "src"), OMP_NUM_THREADS="1")
        self.log_path = data_dir.parent / f"worker-{time.time_ns()}.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hcsi.cli", "worker", "--checkpoint", str(checkpoint), "--data-dir", str(data_dir),
             "--database", database, "--device", "cpu", *options], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        while "hcsi worker:" not in self.log_path.read_text():
            assert self.process.poll() is None and time.time() < deadline, self.log_path.read_text()
            time.sleep(0.2)

    def events(self, name: str) -> list[dict]:
        import json

        return [event for line in self.log_path.read_text().splitlines() if line.startswith("{")
                and (event := json.loads(line)).get("event") == name]
