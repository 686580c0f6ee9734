"""A worker's main process never imports torch (so it never touches CUDA): only its pool
children do, when they start or run a job."""

from __future__ import annotations

import subprocess
import sys


def test_worker_main_process_imports_no_torch() -> None:
    code = (
        "import sys; from worker.app import create_worker_app; "
        "app = create_worker_app(preload_engine=True); "
        "assert 'c3.run_inversion' in app.tasks; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
