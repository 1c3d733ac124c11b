"""Uploads: a multipart body streamed into the data directory under a name of our making, its size limited while it
streams (the multipart parser never spools more than the limit), its type read from its first bytes, its SHA-256
computed on the way. Every refusal is an `UploadRefused` with its HTTP status and a reason for the metrics."""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

CHUNK = 1 << 20
FORM_FIELDS = ("file", "frames", "force", "priority")
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, headers and the small fields around the file

# (offset, magic bytes, suffix): what an upload's first bytes must match
SIGNATURES = [
    (0, b"\xff\xd8\xff", ".jpg"), (0, b"\x89PNG\r\n\x1a\n", ".png"), (0, b"BM", ".bmp"),
    (0, b"GIF8", ".gif"), (0, b"II*\x00", ".tif"), (0, b"MM\x00*", ".tif"), (4, b"ftyp", ".mp4"),
    (0, b"\x1a\x45\xdf\xa3", ".mkv"), (0, b"\x00\x00\x01\xba", ".mpg"),
]


class UploadRefused(Exception):
    """An upload refused before any job exists: `status` (HTTP), `reason` (a metrics label), `detail` (for the
    client)."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


@dataclass
class Upload:
    staged: Path  # in the uploads folder under a staging name
    frames: int | None  # None: the server's default
    file_name: str  # the client's, for display only
    sha256: str
    size: int
    force: bool
    priority: str


def sniff_suffix(head: bytes) -> str | None:
    """The file type of an upload from its first bytes (never from its name or declared type)."""
    if head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"AVI "):
        return ".webp" if head[8:12] == b"WEBP" else ".avi"
    for offset, magic, suffix in SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return suffix
    return None


def limited_request(request: Request, max_bytes: int, too_large: str) -> Request:
    """The request with a body that stops with 413 as soon as more than `max_bytes` (plus the form's overhead) have
    arrived, whatever Content-Length said (chunked bodies have none)."""
    limit, received = max_bytes + MULTIPART_OVERHEAD, 0

    async def receive():
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise UploadRefused(413, "too_large", too_large)
        return message

    return Request(request.scope, receive)


def _fields(form, default_priority: str) -> tuple[int | None, bool, str]:
    unexpected = sorted(set(form.keys()) - set(FORM_FIELDS))
    if unexpected:
        raise UploadRefused(400, "unexpected_field", f"unexpected form fields {unexpected}; the form takes "
                                                     f"{', '.join(FORM_FIELDS)}")
    frames = form.get("frames")
    # ASCII digits only: str.isdigit() accepts "²", which int() refuses
    if frames is not None and (not re.fullmatch(r"[0-9]{1,3}", str(frames)) or not 1 <= int(frames) <= 300):
        raise UploadRefused(422, "bad_frames", "frames must be an integer from 1 to 300")
    force = str(form.get("force") or "false")
    if force not in ("true", "false"):
        raise UploadRefused(400, "bad_force", "force must be true or false")
    priority = str(form.get("priority") or default_priority)
    if priority not in ("interactive", "batch"):
        raise UploadRefused(400, "bad_priority", "priority must be interactive or batch")
    return (int(frames) if frames is not None else None), force == "true", priority


async def _stream_to(upload, staging_dir: Path, max_bytes: int, too_large: str) -> tuple[Path, str, int]:
    """The file field written under a staging name: (path, SHA-256, size)."""
    head = await upload.read(16)
    if not head:
        raise UploadRefused(400, "empty", "the uploaded file is empty")
    suffix = sniff_suffix(head)
    if suffix is None:
        raise UploadRefused(415, "unsupported_type", "unsupported file type: the content is not a known video or "
                                                     "image format")
    staged = staging_dir / f".staging-{secrets.token_hex(8)}{suffix}"  # our name, never the client's
    digest, size = hashlib.sha256(head), len(head)
    try:
        with open(staged, "wb") as out:
            out.write(head)
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise UploadRefused(413, "too_large", too_large)
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return staged, digest.hexdigest(), size


async def receive_upload(request: Request, staging_dir: Path, max_upload_mb: float,
                         default_priority: str = "batch") -> Upload:
    """The multipart upload (fields file, frames, force, priority) staged in `staging_dir`."""
    max_bytes = int(max_upload_mb * 2**20)
    too_large = f"upload larger than the limit of {max_upload_mb:g} MB"
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD:
        raise UploadRefused(413, "too_large", too_large)
    try:
        form = await limited_request(request, max_bytes, too_large).form(max_files=1, max_fields=len(FORM_FIELDS))
    except UploadRefused:
        raise
    except OSError as error:  # the parser spools large files to a temporary file: a full disk, not a bad body
        raise UploadRefused(503, "storage", f"could not store the upload: {error.strerror or error}") from error
    except Exception as error:  # malformed multipart bodies
        raise UploadRefused(400, "malformed", f"could not parse the multipart form: {error}") from error
    try:
        frames, force, priority = _fields(form, default_priority)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise UploadRefused(400, "no_file", "expected a multipart form with a 'file' field holding the video or "
                                                "image")
        staged, sha256, size = await _stream_to(upload, staging_dir, max_bytes, too_large)
    except OSError as error:  # a full disk: nothing is stored, the client may retry
        raise UploadRefused(503, "storage", f"could not store the upload: {error.strerror or error}") from error
    finally:
        await form.close()
    shown_name = Path(str(upload.filename or "")).name or "the upload"
    return Upload(staged, frames, shown_name, sha256, size, force, priority)
