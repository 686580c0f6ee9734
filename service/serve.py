"""`c3 serve` and `c3 api`: run the API, and for `serve` the workers beside it.

`serve` owns its data folder (a lock file keeps a second `serve` out), so on start it knows no
worker of its own is alive: it rebuilds the queue from the job store, which re-queues every job
that was running when it last stopped (they resume from their checkpoints). Worker processes run
in their own sessions (a terminal's Ctrl-C reaches only `serve`, which stops them in order) and
are restarted if they die.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import uvicorn

from service.app import create_app
from service.auth import refuse_unsafe_bind
from service.background import recover
from service.queue import GPU_QUEUE, VALIDATE_QUEUE, make_celery
from service.settings import ServiceSettings
from service.storage import open_stores

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0


def _bind_refusal(settings: ServiceSettings) -> str | None:
    stores = open_stores(settings)
    try:
        return refuse_unsafe_bind(settings, stores.jobs)
    finally:
        stores.close()


def run_api(settings: ServiceSettings) -> int:
    refusal = _bind_refusal(settings)
    if refusal:
        print(f"c3: {refusal}", file=sys.stderr)
        return 2
    run_uvicorn(settings)
    return 0


def run_uvicorn(settings: ServiceSettings) -> None:
    """uvicorn with logging left to service.logs, and its access log replaced by the request
    line of service.request_ids (which knows the request's id)."""
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level="info",
        log_config=None, access_log=False,
    )  # fmt: skip


def _lock_data_dir(data_dir: Path) -> IO[str] | None:
    """Hold an exclusive lock on the data folder for this process's lifetime."""
    lock = (data_dir / ".serve.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


class WorkerSupervisor:
    """Starts worker processes and restarts any that dies, until stopped."""

    def __init__(self, commands: list[list[str]]) -> None:
        self._commands = commands
        self._procs: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start(self) -> None:
        self._procs = [self._spawn(cmd) for cmd in self._commands]
        self._thread.start()

    @staticmethod
    def _spawn(cmd: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(cmd, start_new_session=True)

    def _watch(self) -> None:
        backoff = [1.0] * len(self._commands)
        while not self._stopping.wait(1.0):
            for i, proc in enumerate(self._procs):
                if proc.poll() is None or self._stopping.is_set():
                    continue
                log.warning(
                    "worker %d exited with %s; restarting in %.0fs", i, proc.returncode, backoff[i]
                )
                if self._stopping.wait(backoff[i]):
                    return
                backoff[i] = min(backoff[i] * 2, 30.0)
                self._procs[i] = self._spawn(self._commands[i])

    def stop(self) -> None:
        self._stopping.set()
        for proc in self._procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # A job still running: it was checkpointed and resumes on the next start.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def worker_commands(workers: int) -> list[list[str]]:
    base = [sys.executable, "-m", "service.cli", "worker", "--concurrency=1"]
    gpu = [[*base, f"--queues={GPU_QUEUE}", f"--name=gpu{i}@%h"] for i in range(workers)]
    return [*gpu, [*base, f"--queues={VALIDATE_QUEUE}", "--name=validate@%h"]]


def serve(settings: ServiceSettings, *, workers: int) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_data_dir(settings.data_dir) if settings.embedded else None
    if settings.embedded and lock is None:
        print(f"c3: another `c3 serve` is using {settings.data_dir}", file=sys.stderr)
        return 2
    stores = open_stores(settings)
    try:
        refusal = refuse_unsafe_bind(settings, stores.jobs)
        if refusal:
            print(f"c3: {refusal}", file=sys.stderr)
            return 2
        requeued = recover(stores.jobs, make_celery(settings)) if settings.embedded else []
    finally:
        stores.close()
    if requeued:
        log.info("re-queued %d unfinished record(s): %s", len(requeued), ", ".join(requeued))
    # the inversion workers share this host's cores: each job takes its share (worker.jobs)
    os.environ.setdefault("C3_JOB_PROCESSES", str(workers))
    supervisor = WorkerSupervisor(worker_commands(workers))
    supervisor.start()
    # uvicorn handles SIGINT/SIGTERM, then re-raises them to the handlers it found: make those
    # no-ops, so that `serve` lives on to stop its workers.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        run_uvicorn(settings)
    finally:
        supervisor.stop()
        if lock is not None:
            lock.close()
    return 0
