"""`C3_CELERY_EVENTS`: with it, a real worker answers remote control (`inspect ping`, the
compose healthcheck `python -m worker.health`) and sends the task events and heartbeats Flower
shows; without it, the worker is silent on both."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.utils.nodenames import gethostname, host_format

from service.queue import VALIDATE_DATASET, make_celery, publish
from service.settings import CommonSettings
from tests.conftest import WorkerProcess, clean_env

NO_SUCH_DATASET = "no-such-dataset"
"""A validation message for a record that does not exist: the task runs (and returns at once,
"not queued"), which is all the events need, without torch or a sandbox."""


class EventLog:
    """Every event on the broker's event exchange, captured in a thread (Flower's view)."""

    def __init__(self, app: Celery) -> None:
        self.events: list[dict[str, Any]] = []
        self.listening = threading.Event()
        self._app = app
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._capture, daemon=True)

    def _capture(self) -> None:
        with self._app.connection_for_read() as connection:
            self._receiver = self._app.events.Receiver(
                connection, handlers={"*": self.events.append}
            )
            self._receiver.on_consume_ready = self._ready
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def _ready(self, *args: Any, **kwargs: Any) -> None:
        self.listening.set()

    def __enter__(self) -> EventLog:
        self._thread.start()
        assert self.listening.wait(10), "the event receiver did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(10)

    def of(self, hostname: str) -> list[str]:
        return [e["type"] for e in list(self.events) if e.get("hostname") == hostname]

    def wait_for(self, hostname: str, kind: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while kind not in self.of(hostname):
            assert time.monotonic() < deadline, f"no {kind} from {hostname}: {self.events}"
            time.sleep(0.1)


def start(tmp_path: Path, redis_url: str, events: bool) -> tuple[WorkerProcess, str]:
    env = clean_env(
        C3_DATA_DIR=str(tmp_path / "data"), C3_REDIS_URL=redis_url, C3_REDIS_PREFIX="monitor:",
        C3_CELERY_EVENTS=str(events).lower(),
    )  # fmt: skip
    worker = WorkerProcess(env, tmp_path / "worker.log", queues="validate")
    name = next(str(a) for a in worker.proc.args if str(a).startswith("--name="))  # type: ignore[union-attr]
    return worker, host_format(name.removeprefix("--name="))


def node_host() -> str:
    return gethostname()


def health(redis_url: str, events: bool, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(C3_REDIS_URL=redis_url, C3_CELERY_EVENTS=str(events).lower())
    return subprocess.run(
        [sys.executable, "-m", "worker.health", "--timeout", "3", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_with_events_a_worker_answers_ping_and_sends_task_events(
    tmp_path: Path, redis_url: str
) -> None:
    worker, hostname = start(tmp_path, redis_url, events=True)
    app = make_celery(CommonSettings(redis_url=redis_url, celery_events=True))
    try:
        assert app.control.ping(destination=[hostname], timeout=3) == [{hostname: {"ok": "pong"}}]

        with EventLog(app) as log:
            log.wait_for(hostname, "worker-heartbeat")  # every 2 s: Flower counts it alive by them
            publish(app, VALIDATE_DATASET, NO_SUCH_DATASET)
            log.wait_for(hostname, "task-succeeded")
        task_events = [kind for kind in log.of(hostname) if kind.startswith("task-")]
        assert task_events == ["task-received", "task-started", "task-succeeded"]
        sent = [e for e in log.events if e["type"] == "task-sent"]  # the publisher's
        assert [e["name"] for e in sent] == [VALIDATE_DATASET]

        ok = health(redis_url, True)  # any worker on this host: the compose healthcheck
        assert ok.returncode == 0, ok.stderr
        assert hostname in ok.stdout
        named = health(redis_url, True, "--name", hostname.replace(node_host(), "%h"))
        assert named.returncode == 0, named.stderr
        stranger = health(redis_url, True, "--name", "gpu9@%h")
        assert stranger.returncode == 1
        assert stranger.stderr.strip() == f"worker.health: no answer from gpu9@{node_host()} in 3 s"
    finally:
        app.close()
        worker.stop()


def test_without_events_a_worker_is_silent(tmp_path: Path, redis_url: str) -> None:
    worker, hostname = start(tmp_path, redis_url, events=False)
    app = make_celery(CommonSettings(redis_url=redis_url, celery_events=False))
    try:
        assert app.control.ping(destination=[hostname], timeout=2) == []

        with EventLog(app) as log:
            publish(app, VALIDATE_DATASET, NO_SUCH_DATASET)
            deadline = time.monotonic() + 30
            while f"{NO_SUCH_DATASET}: not queued" not in worker.log.read_text():
                assert time.monotonic() < deadline, worker.log.read_text()[-2000:]
                time.sleep(0.1)
            time.sleep(3)  # longer than a heartbeat's interval (2 s)
        assert log.events == []  # the task ran, and no one said so

        off = health(redis_url, False)
        assert off.returncode == 2
        assert "remote control is off" in off.stderr
        unanswered = health(redis_url, True)  # asked, but this worker does not listen
        assert unanswered.returncode == 1
    finally:
        app.close()
        worker.stop()
