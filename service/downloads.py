"""Responses for content that never changes once a job has succeeded: strong ETags (304 on a
match), cached for a year, and stored files streamed from the artifact store with byte ranges,
so a large download costs the API a chunk of memory and can be resumed."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

from fastapi import Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from service.errors import RangeNotSatisfiable
from service.exports import CHUNK_BYTES, StoredFile
from service.settings import ServiceSettings
from service.storage import ArtifactStore

IMMUTABLE = "private, max-age=31536000, immutable"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _headers(etag: str, filename: str | None) -> dict[str, str]:
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
    if filename:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return headers


def _not_modified(request: Request, etag: str) -> bool:
    return etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]


def immutable(
    request: Request, data: bytes, media_type: str, filename: str | None = None
) -> Response:
    """Content built in memory (a PNG, a page of JSON): its ETag is its digest."""
    etag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
    headers = _headers(etag, filename)
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) bytes a single `Range: bytes=…` asks for; None for the whole file (no
    header, or several ranges, which may be answered whole). 416 when it lies outside."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(size - 1, int(last) if last else size - 1)
    if start >= size or start > end:
        raise RangeNotSatisfiable(
            f"the file has {size:,} bytes; ask for a range within them",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end


def _stream(artifacts: ArtifactStore, key: str, start: int, length: int) -> Iterator[bytes]:
    with artifacts.open(key) as f:
        f.seek(start)
        while length > 0:
            chunk = f.read(min(CHUNK_BYTES, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


def stored(
    request: Request, artifacts: ArtifactStore, settings: ServiceSettings, key: str,
    file: StoredFile, media_type: str, filename: str | None = None,
) -> Response:  # fmt: skip
    """A stored file, streamed: 304 when the client has it, 206 for a byte range; a large one
    redirects (307) to a presigned URL when the settings and the store allow it, so its bytes
    go from the blob store to the client without the API."""
    headers = _headers(file.etag, filename) | {"Accept-Ranges": "bytes"}
    if _not_modified(request, file.etag):
        return Response(status_code=304, headers=headers)
    minimum = settings.s3_presign_min_bytes
    if minimum is not None and file.bytes >= minimum:
        url = artifacts.presigned_url(key, settings.s3_presign_seconds, media_type, filename)
        if url is not None:  # the URL expires: the redirect is not cached like the file
            return RedirectResponse(url, 307, {"ETag": file.etag, "Cache-Control": "no-store"})
    wanted = None
    if request.headers.get("if-range", file.etag) == file.etag:
        wanted = byte_range(request.headers.get("range"), file.bytes)
    start, end = wanted or (0, file.bytes - 1)
    headers["Content-Length"] = str(end - start + 1)
    status = 200
    if wanted:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{file.bytes}"
    return StreamingResponse(
        _stream(artifacts, key, start, end - start + 1),
        status_code=status,
        media_type=media_type,
        headers=headers,
    )
