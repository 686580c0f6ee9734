"""Artifact store on an S3-compatible server (AWS S3, MinIO, …): workers on several machines
share blobs without a shared filesystem.

The local store's guarantees hold here too. A blob appears whole or not at all: `put` is one
PUT, `put_stream` a multipart upload completed only after its last part (aborted on error), so
a crash leaves an unfinished upload, never a partial object, and `sweep_partials` aborts those.
Reads are ranged GETs pinned to the blob's ETag, so a reader never mixes two versions.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.storage.base import (
    ArtifactNotFound,
    StoreUnavailable,
    checked_key,
    translate_errors,
)

PART_BYTES = 8 * 1024 * 1024
"""Size of a multipart upload's parts (S3 wants at least 5 MiB but for the last): a stream
costs this much memory, twice at most."""
READ_BUFFER = 1024 * 1024
_DELETE_BATCH = 1000  # DeleteObjects' limit
_MISSING = {"404", "NoSuchKey", "NotFound"}


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING


def s3_client(
    endpoint_url: str | None, region: str, access_key_id: str | None, secret_access_key: str | None
) -> Any:
    """A thread-safe client. Path-style addressing for a named endpoint (MinIO, moto: no bucket
    subdomains); checksums only where S3 requires them, which S3-compatible servers support."""
    config = Config(
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        signature_version="s3v4",  # presigned URLs too: AWS's newer regions take no other
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=32,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=config,
    )


@translate_errors(BotoCoreError, ClientError)
class S3ArtifactStore:
    def __init__(
        self, client: Any, bucket: str, prefix: str = "", presigner: Any | None = None
    ) -> None:
        """`presigner`: a client whose endpoint the users reach, when it is not the one the
        service uses (default: `client`)."""
        self._s3 = client
        self._bucket = bucket
        self._prefix = prefix
        self._presigner = presigner or client

    def _key(self, key: str) -> str:
        return self._prefix + checked_key(key)

    def _folder(self, prefix: str) -> str:
        return self._key(prefix.rstrip("/")) + "/"

    def _head(self, key: str) -> dict[str, Any]:
        try:
            head: dict[str, Any] = self._s3.head_object(Bucket=self._bucket, Key=self._key(key))
        except ClientError as exc:
            if _missing(exc):
                raise ArtifactNotFound(key) from exc
            raise
        return head

    def ping(self) -> None:
        self._s3.head_bucket(Bucket=self._bucket)

    def put(self, key: str, data: bytes) -> None:
        self._s3.put_object(Bucket=self._bucket, Key=self._key(key), Body=data)

    def put_stream(self, key: str, chunks: Iterator[bytes]) -> int:
        """One PUT for a blob below `PART_BYTES`, else a multipart upload."""
        name, size = self._key(key), 0
        pending, parts = bytearray(), list[dict[str, Any]]()
        upload_id: str | None = None
        try:
            for chunk in chunks:
                pending += chunk
                size += len(chunk)
                while len(pending) >= PART_BYTES:
                    if upload_id is None:
                        started = self._s3.create_multipart_upload(Bucket=self._bucket, Key=name)
                        upload_id = started["UploadId"]
                    parts.append(self._part(name, upload_id, len(parts) + 1, pending[:PART_BYTES]))
                    del pending[:PART_BYTES]
            if upload_id is None:
                self._s3.put_object(Bucket=self._bucket, Key=name, Body=bytes(pending))
                return size
            if pending:
                parts.append(self._part(name, upload_id, len(parts) + 1, pending))
            self._s3.complete_multipart_upload(
                Bucket=self._bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            if upload_id is not None:
                self._abort(name, upload_id)
            raise
        return size

    def _part(self, name: str, upload_id: str, number: int, data: bytearray) -> dict[str, Any]:
        sent = self._s3.upload_part(
            Bucket=self._bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=bytes(data)
        )
        return {"ETag": sent["ETag"], "PartNumber": number}

    def _abort(self, name: str, upload_id: str) -> None:
        """Best effort: what it misses, `sweep_partials` aborts later."""
        with contextlib.suppress(BotoCoreError, ClientError):
            self._s3.abort_multipart_upload(Bucket=self._bucket, Key=name, UploadId=upload_id)

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> BinaryIO:
        head = self._head(key)
        raw = _ObjectReader(
            self._s3, self._bucket, self._key(key), head["ContentLength"], head["ETag"]
        )
        return io.BufferedReader(raw, buffer_size=READ_BUFFER)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            got = self._s3.get_object(
                Bucket=self._bucket, Key=self._key(key), Range=f"bytes={start}-{start + length - 1}"
            )
        except ClientError as exc:
            if _missing(exc):
                raise ArtifactNotFound(key) from exc
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""  # from the end on: nothing, as a file read there gives
            raise
        data: bytes = got["Body"].read()
        return data

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except ArtifactNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def modified_at(self, key: str) -> float:
        return float(self._head(key)["LastModified"].timestamp())

    def free_bytes(self) -> int | None:
        return None

    def sweep_partials(self, older_than: float) -> int:
        """Multipart uploads a crash left unfinished: their parts cost storage until aborted."""
        swept = 0
        pages = self._s3.get_paginator("list_multipart_uploads").paginate(
            Bucket=self._bucket, Prefix=self._prefix
        )
        for page in pages:
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() < older_than:
                    self._abort(upload["Key"], upload["UploadId"])
                    swept += 1
        return swept

    def list(self, prefix: str) -> list[str]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=self._folder(prefix)
        )
        skip = len(self._prefix)
        return sorted(item["Key"][skip:] for page in pages for item in page.get("Contents", []))

    def delete_prefix(self, prefix: str) -> int:
        """The blob named `prefix`, or every blob under it (as a folder)."""
        doomed = [prefix] if self.exists(prefix) else self.list(prefix)
        for start in range(0, len(doomed), _DELETE_BATCH):
            batch = doomed[start : start + _DELETE_BATCH]
            self._s3.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True},
            )
        return len(doomed)

    def presigned_url(
        self, key: str, seconds: int, media_type: str, filename: str | None
    ) -> str | None:
        params = {"Bucket": self._bucket, "Key": self._key(key), "ResponseContentType": media_type}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        url: str = self._presigner.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=seconds
        )
        return url


class _ObjectReader(io.RawIOBase):
    """A blob as a seekable file: one streaming GET from where reading starts, a new one after
    a seek elsewhere. Every GET names the ETag seen at open, so a blob replaced meanwhile
    ends the read (as missing) instead of mixing versions."""

    def __init__(self, client: Any, bucket: str, name: str, size: int, etag: str) -> None:
        super().__init__()
        self._s3, self._bucket, self._name, self._size, self._etag = (
            client, bucket, name, size, etag,
        )  # fmt: skip
        self._position = 0
        self._body: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        if base + offset != self._position:
            self._drop()
            self._position = base + offset
        return self._position

    def readinto(self, buffer: Any) -> int:
        if self._position >= self._size or len(buffer) == 0:
            return 0
        try:
            if self._body is None:
                self._body = self._s3.get_object(
                    Bucket=self._bucket, Key=self._name, Range=f"bytes={self._position}-",
                    IfMatch=self._etag,
                )["Body"]  # fmt: skip
            data = self._body.read(len(buffer))
        except ClientError as exc:
            if _missing(exc) or exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
                raise ArtifactNotFound(f"{self._name} (replaced or deleted while read)") from exc
            raise StoreUnavailable(f"s3: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"s3: {exc}") from exc
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def _drop(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop()
        super().close()
