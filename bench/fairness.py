"""Fair turns across tenants on a real `c3 serve` with one inversion worker (embedded default,
or Redis with --redis): tenant A submits a burst of tiny jobs, then tenant B submits one.

    .venv/bin/python bench/fairness.py [--burst 50] [--steps 5] [--redis redis://…/15]

Prints each tenant's wait (created → started): B's, and A's median and longest. For contrast
it prints how long B would have waited first come, first served: until A's last job started.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from safetensors.torch import save

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from bench.service import start_service  # noqa: E402
from models.digits import load_digits_data, train_classifier  # noqa: E402

THREADS = 1  # per job: tiny jobs gain nothing from more
FINISHED = ("succeeded", "failed", "cancelled")


def key_headers(data_dir: Path, env: dict[str, str], tenant: str) -> dict[str, str]:
    key = subprocess.run(
        [sys.executable, "-m", "service.cli", "keys", "create", "--tenant", tenant,
         "--data-dir", str(data_dir)],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return {"Authorization": f"Bearer {key}"}


def upload(client: httpx.Client, weights: bytes) -> str:
    response = client.post(
        "/classifiers", headers={"Prefer": "wait=120"},
        data={"name": "digits-8px", "format": "safetensors", "architecture": "mlp",
              "input_shape": "1,8,8", "class_names": ",".join(map(str, range(10)))},
        files={"file": ("m.safetensors", weights)},
    )  # fmt: skip
    response.raise_for_status()
    return str(response.json()["id"])


def wait_all(client: httpx.Client, ids: list[str]) -> list[dict[str, float]]:
    jobs = []
    for id in ids:
        while (job := client.get(f"/inversions/{id}").json())["state"] not in FINISHED:
            time.sleep(0.5)
        jobs.append(job)
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=50, help="tenant A's jobs")
    parser.add_argument("--steps", type=int, default=5, help="training steps per job")
    parser.add_argument("--redis", help="run the production form against this Redis URL")
    args = parser.parse_args()
    print(describe("bench/fairness.py", THREADS))
    model = train_classifier("mlp", load_digits_data((1, 8, 8)), epochs=10, seed=0).model
    weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
    body = {"samples_per_class": 2, "steps": args.steps, "classes": [0, 1], "recipe": "paper"}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        env = {
            "C3_TORCH_THREADS": str(THREADS),
            "C3_QUOTA_ACTIVE_JOBS": str(args.burst + 10),
            **({"C3_REDIS_URL": args.redis, "C3_REDIS_PREFIX": "bench:"} if args.redis else {}),
        }
        keys_env = {k: v for k, v in os.environ.items() if not k.startswith("C3_")} | env
        headers = {t: key_headers(data_dir, keys_env, f"tenant-{t}") for t in ("a", "b")}
        proc, url = start_service(data_dir, args.redis, workers=1, env=env)
        try:
            a, b = (httpx.Client(base_url=url, headers=headers[t], timeout=120) for t in "ab")
            a_classifier, b_classifier = upload(a, weights), upload(b, weights)
            start = time.monotonic()
            burst = [
                a.post("/inversions", json={**body, "classifier_id": a_classifier}).json()["id"]
                for _ in range(args.burst)
            ]
            late = b.post("/inversions", json={**body, "classifier_id": b_classifier}).json()
            b_job = wait_all(b, [late["id"]])[0]
            a_jobs = wait_all(a, burst)
            elapsed = time.monotonic() - start
        finally:
            proc.terminate()
            proc.wait(30)
    mode = "redis" if args.redis else "embedded"
    a_waits = [j["started_at"] - j["created_at"] for j in a_jobs]
    b_wait = b_job["started_at"] - b_job["created_at"]
    ahead = sum(j["started_at"] < b_job["started_at"] for j in a_jobs)
    fifo = max(j["started_at"] for j in a_jobs) - b_job["created_at"]
    print(
        f"c3 serve ({mode}), 1 inversion worker; tenant A submits {args.burst} jobs, then "
        f"tenant B 1 (mlp on digits 8x8, {args.steps} steps, 2 classes x 2 samples)"
    )
    print(f"  tenant B: waited {b_wait:.1f} s; {ahead} of A's jobs started before it")
    print(
        f"  tenant A: median wait {statistics.median(a_waits):.1f} s, longest {max(a_waits):.1f} s"
    )
    print(f"  first come, first served, B would have waited at least {fifo:.1f} s")
    print(
        f"  {args.burst + 1} jobs in {elapsed:.0f} s; load average "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} at end"
    )


if __name__ == "__main__":
    main()
