"""A client of `hcsi serve` for batches (`hcsi submit`): upload files as batch jobs, follow them, and give each
file's result as `hcsi detect` would (plus the job's id). A file the server refuses (unsupported type, too large)
gets an error row and the batch goes on; a busy server (503) is asked again after its Retry-After."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

BUSY_RETRIES = 120


class ServerError(RuntimeError):
    """The server cannot be used at all (unreachable, wrong token): the batch stops."""


class ServiceClient:
    def __init__(self, server: str, token: str | None = None, timeout_s: float = 600.0) -> None:
        try:
            url = httpx.URL(server)
        except httpx.InvalidURL as error:
            raise ServerError(f"--server {server!r}: not a URL ({error})") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ServerError(f"--server {server!r}: expected http://HOST:PORT or https://HOST")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=timeout_s)

    def _request(self, method: str, url: str, **options) -> httpx.Response:
        try:
            answer = self.http.request(method, url, **options)
        except httpx.HTTPError as error:
            raise ServerError(f"{self.http.base_url}: {type(error).__name__}: {error}") from error
        if answer.status_code == 401:
            raise ServerError(f"{self.http.base_url}: the server wants an API token (--token or HCSI_API_TOKEN), "
                              "or the one given is wrong")
        return answer

    def upload(self, path: Path, frames: int | None, force: bool) -> tuple[dict | None, str]:
        """(the job, "") or (None, why the server refused this file)."""
        fields = {"priority": "batch", "force": "true" if force else "false"}
        if frames is not None:
            fields["frames"] = str(frames)
        for _ in range(BUSY_RETRIES):
            with open(path, "rb") as media:
                answer = self._request("POST", "/v1/jobs", files={"file": (path.name, media)}, data=fields)
            if answer.status_code != 503:
                break
            time.sleep(float(answer.headers.get("retry-after", 5)))
        if answer.status_code in (200, 202):
            return answer.json(), ""
        return None, f"{path}: the server refused it ({answer.status_code}): {_detail(answer)}"

    def job(self, job_id: str) -> dict | None:
        answer = self._request("GET", f"/v1/jobs/{job_id}")
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return answer.json()


def _detail(answer: httpx.Response) -> str:
    try:
        return str(answer.json().get("detail", answer.text))
    except ValueError:
        return answer.text[:200]


def _row(path: Path, job: dict | None, reason: str = "") -> dict:
    """A file's line in results.jsonl: the server's result, or an error with the reason."""
    if job is None:
        return {"path": str(path), "status": "error", "reason": reason, "score": None}
    if job.get("result"):
        return {"path": str(path), **job["result"]}
    return {"path": str(path), "id": job["id"], "status": "error", "score": None,
            "reason": job.get("reason") or f"job {job['id']} {job['status']} without a result"}


def submit_files(client: ServiceClient, paths: list[Path], frames: int | None = None, force: bool = False,
                 on_upload: Callable[[], None] = lambda: None, poll_s: float = 0.5) -> Iterator[dict]:
    """Upload every file, then yield one row per file as its job finishes (refusals at once)."""
    pending: dict[str, Path] = {}
    for path in paths:
        job, reason = client.upload(path, frames, force)
        on_upload()
        if job is None:
            yield _row(path, None, reason)
        elif job["status"] in ("done", "failed"):
            yield _row(path, job)  # analysed before with the same settings
        else:
            pending[job["id"]] = path
    while pending:
        for job_id, path in list(pending.items()):
            job = client.job(job_id)
            if job is None:
                yield _row(path, None, f"{path}: job {job_id} was deleted on the server before it finished")
                del pending[job_id]
            elif job["status"] in ("done", "failed"):
                yield _row(path, job)
                del pending[job_id]
        if pending:
            time.sleep(poll_s)
