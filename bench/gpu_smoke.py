"""One inversion job on a device, end to end through the service, and its step rate: the
engine half of bench/gpu_smoke.sh (which checks for CUDA first and runs this on `cuda`).

    bench/gpu_smoke.sh [--steps 500] [--per-class 20] [--epochs 8]

Starts `c3 serve` (embedded default, one inversion worker) with `C3_DEVICE`, trains paper-cnn
on digits (28×28) in this process, uploads it and its held-out split, runs one c3 job and
prints the step rate of its training, from the job's own metrics (metrics.json `cost`). Fails
(exit status 1) if the job did not succeed or ran on another device than the one asked for:
a worker asked for CUDA where there is none falls back to the CPU (models.device).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from bench.service import run_job, start_service, upload  # noqa: E402

PASSED_THROUGH = ("C3_TORCH_THREADS", "C3_JOB_MEMORY_MB")
"""Settings of the caller's environment the service gets too (everything else is fresh)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="the worker's C3_DEVICE (default: cuda)")
    parser.add_argument("--steps", type=int, default=500, help="training steps (default: 500)")
    parser.add_argument("--per-class", type=int, default=20, help="samples per class (default: 20)")
    parser.add_argument("--epochs", type=int, default=8, help="classifier epochs (default: 8)")
    args = parser.parse_args()
    print(describe(f"gpu_smoke on {args.device}", torch.get_num_threads()), flush=True)
    env = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        proc, url = start_service(data_dir, None, env=env | {"C3_DEVICE": args.device})
        try:
            client = httpx.Client(base_url=url, timeout=300)
            classifier, dataset = upload(client, Path(tmp), args.epochs)
            started = time.monotonic()
            job = run_job(client, {
                "classifier_id": classifier, "dataset_id": dataset, "method": "c3",
                "steps": args.steps, "samples_per_class": args.per_class, "seed": 0,
            })  # fmt: skip
            wall = time.monotonic() - started
            if job["state"] != "succeeded":
                print(f"gpu_smoke: job {job['state']}: {job.get('error')}", file=sys.stderr)
                return 1
            response = client.get(f"/inversions/{job['id']}/metrics.json")
            response.raise_for_status()
            cost = response.json()["cost"]
        finally:
            proc.terminate()
            proc.wait(30)
    device, steps, seconds = str(cost["device"]), int(cost["steps"]), float(cost["train_seconds"])
    if device.split(":")[0] != args.device.split(":")[0]:
        print(f"gpu_smoke: the job ran on {device}, not {args.device}", file=sys.stderr)
        return 1
    print(
        f"gpu_smoke: one c3 job on {device}: {steps} steps in {seconds:.2f} s = "
        f"{steps / seconds:.1f} steps/s (job wall time {wall:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
