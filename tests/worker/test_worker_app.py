"""A worker's main process never imports torch (so it never touches CUDA): only its pool
children do, when they start or run a job."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.threads import share_of_cores
from tests.conftest import WorkerProcess
from tests.e2e.conftest import worker_env


def test_worker_main_process_imports_no_torch() -> None:
    code = (
        "import sys; from worker.app import create_worker_app; "
        "app = create_worker_app(preload_engine=True); "
        "assert 'c3.run_inversion' in app.tasks; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_each_job_process_takes_its_share_of_the_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two job processes on this host: each sizes torch to half the cores (never
    oversubscribing them), as `c3 serve --workers 2` would."""
    for name in ("C3_TORCH_THREADS", "C3_JOB_PROCESSES"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "data").mkdir()
    env = {k: v for k, v in worker_env(tmp_path / "data", None).items() if k != "C3_TORCH_THREADS"}
    worker = WorkerProcess(env, tmp_path / "worker.log", queues="gpu", concurrency=2)
    try:
        deadline = time.monotonic() + 60
        while len(re.findall(r"job process: (\d+) CPU thread", worker.log.read_text())) < 2:
            assert time.monotonic() < deadline, worker.log.read_text()[-2000:]
            time.sleep(0.2)
        sized = re.findall(r"job process: (\d+) CPU thread", worker.log.read_text())
        assert [int(n) for n in sized] == [share_of_cores(2)] * 2
        assert "C3_JOB_PROCESSES" not in os.environ  # the worker set it for its own children
    finally:
        worker.stop()
