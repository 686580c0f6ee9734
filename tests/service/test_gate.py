"""The request gate, against a live `c3 api` over real sockets: a stranger's body is refused
before it is read, and no body is read past its limit (the API's memory shows it)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveApi, clean_env

MB = 1024 * 1024


class Gate(LiveApi):
    """The live API, its memory, and requests written byte by byte."""

    key = ""

    def rss(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def raw(self, head: str, body: bytes, *, read_within: float = 5.0) -> bytes:
        """Send a request head and the start of its body; the response that comes back."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=read_within) as conn:
            conn.sendall(head.encode() + body)
            response = b""
            started = time.monotonic()
            while time.monotonic() - started < read_within:
                head, _, body = response.partition(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length:")), None,
                )  # fmt: skip
                if length is not None and len(body) >= length:
                    break
                chunk = conn.recv(65536)
                if not chunk:
                    break
                response += chunk
            return response


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    data = tmp_path_factory.mktemp("gate") / "data"
    env = clean_env(C3_DATA_DIR=str(data), C3_MAX_BODY_BYTES=str(MB))
    key = subprocess.run(
        [sys.executable, "-m", "service.cli", "keys", "create", "--tenant", "gate"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    api = Gate(env)
    api.key = key
    yield api.start()  # type: ignore[misc]
    api.stop()


def head(path: str, length: int, *, key: str | None = None, chunked: bool = False) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}")
    if key:
        lines.append(f"Authorization: Bearer {key}")
    return "\r\n".join(lines) + "\r\n\r\n"


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_a_strangers_body_is_refused_before_it_is_read(live: Gate) -> None:
    before = live.rss()
    started = time.monotonic()
    response = live.raw(head("/inversions", 300 * MB), b"{" + b" " * MB)  # 1 of 300 MB sent
    assert status(response) == 401
    assert b"application/problem+json" in response
    assert time.monotonic() - started < 5  # answered without waiting for the other 299 MB
    assert live.rss() - before < 20 * MB


def test_a_declared_oversize_is_refused_at_once(live: Gate) -> None:
    response = live.raw(head("/inversions", 300 * MB, key=live.key), b"{")
    assert status(response) == 413
    assert b"larger than the limit of 1048576 bytes" in response


def test_a_streamed_oversize_is_cut_off_at_the_limit(live: Gate) -> None:
    before = live.rss()
    chunk = b" " * (256 * 1024)
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8))  # 2 MB, no length
    response = live.raw(head("/inversions", 0, key=live.key, chunked=True), body)
    assert status(response) == 413
    assert b"application/problem+json" in response
    assert live.rss() - before < 20 * MB


def test_uploads_get_the_upload_limit_not_the_body_limit(live: Gate) -> None:
    response = httpx.post(
        f"{live.url}/classifiers",
        headers={"Authorization": f"Bearer {live.key}"},
        data={"name": "big", "format": "onnx", "input_shape": "1,8,8", "class_names": "a,b"},
        files={"file": ("m.onnx", b"\0" * (2 * MB))},  # over max_body_bytes, under the upload cap
        timeout=30,
    )
    assert response.status_code == 202, response.text  # stored and queued for validation
    small_json = httpx.post(
        f"{live.url}/inversions",
        headers={"Authorization": f"Bearer {live.key}"},
        json={"classifier_id": "clf_nope"},
    )
    assert small_json.status_code == 422  # an ordinary body passes the gate
