"""Streaming multipart uploads: the body is parsed as it arrives, the file part is hashed,
counted and spooled to a temporary file, and the upload is refused (413) the moment it passes
the limit, without reading the rest. Form fields are small and capped too. Nothing here looks
inside the file: that is the sandboxed validation's job."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import BadRequest, InvalidField, PayloadTooLarge, UnsupportedMediaType

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 64
FORM_OVERHEAD = 1024 * 1024  # room for the form fields and part headers beside the file


@dataclass
class Upload:
    fields: dict[str, str]
    filename: str | None
    content_type: str | None
    size: int
    sha256: str
    spool: IO[bytes] = field(repr=False)

    def chunks(self, size: int = 1024 * 1024) -> Iterator[bytes]:
        self.spool.seek(0)
        while chunk := self.spool.read(size):
            yield chunk

    def close(self) -> None:
        self.spool.close()


class _Collector:
    """Callbacks for python-multipart's push parser."""

    def __init__(self, file_field: str, max_bytes: int, spool_dir: Path | None) -> None:
        self.file_field, self.max_bytes = file_field, max_bytes
        self.fields: dict[str, str] = {}
        self.spool: IO[bytes] = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115 (closed by Upload)
        self.hash = hashlib.sha256()
        self.size = 0
        self.filename: str | None = None
        self.content_type: str | None = None
        self.saw_file = False
        self.ended = False  # the closing boundary arrived: the body is complete
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[str, bytes] = {}
        self._name: str | None = None
        self._is_file = False
        self._value = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers, self._name, self._is_file = {}, None, False
        self._value = bytearray()

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", b""))
        name = params.get(b"name")
        if name is None:
            raise BadRequest("a multipart part has no name")
        self._name = name.decode("utf-8", "replace")
        self._is_file = self._name == self.file_field
        if self._is_file:
            if self.saw_file:
                raise InvalidField("send exactly one file", field=self.file_field)
            self.saw_file = True
            filename = params.get(b"filename")
            self.filename = filename.decode("utf-8", "replace") if filename else None
            ctype = self._headers.get("content-type")
            self.content_type = ctype.decode("latin-1") if ctype else None
        elif len(self.fields) >= MAX_FIELDS:
            raise BadRequest(f"too many form fields (at most {MAX_FIELDS})")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._is_file:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise PayloadTooLarge(
                    f"the file is larger than the limit of {self.max_bytes} bytes",
                    field=self.file_field,
                )
            self.hash.update(chunk)
            self.spool.write(chunk)
        else:
            self._value += chunk
            if len(self._value) > MAX_FIELD_BYTES:
                raise InvalidField(f"longer than {MAX_FIELD_BYTES} bytes", field=self._name)

    def _end(self) -> None:
        self.ended = True

    def _part_end(self) -> None:
        if not self._is_file and self._name is not None:
            try:
                self.fields[self._name] = self._value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidField("not valid UTF-8", field=self._name) from exc


async def receive_upload(
    request: Request, *, max_bytes: int, file_field: str = "file", spool_dir: Path | None = None
) -> Upload:
    """Parse a multipart/form-data body with one file part named `file_field`."""
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise UnsupportedMediaType(
            "send the upload as multipart/form-data with the model in a part named "
            f"'{file_field}' and the metadata as form fields",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + FORM_OVERHEAD:
        raise PayloadTooLarge(f"the upload is larger than the limit of {max_bytes} bytes")
    collector = _Collector(file_field, max_bytes, spool_dir)
    parser = MultipartParser(params[b"boundary"], collector.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        collector.spool.close()
        raise BadRequest(f"malformed multipart body: {exc}") from exc
    except BaseException:
        collector.spool.close()
        raise
    if not collector.ended:
        collector.spool.close()
        raise BadRequest(
            "the multipart body ends before its closing boundary: the upload was cut off, "
            "send it again"
        )
    if not collector.saw_file:
        collector.spool.close()
        raise InvalidField(f"missing the file part '{file_field}'", field=file_field)
    return Upload(
        fields=collector.fields,
        filename=collector.filename,
        content_type=collector.content_type,
        size=collector.size,
        sha256=collector.hash.hexdigest(),
        spool=collector.spool,
    )
