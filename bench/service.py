"""Service overhead and status-endpoint latency, on a real `c3 serve` (embedded default, or
Redis with --redis).

  .venv/bin/python bench/service.py [--jobs 3] [--steps 300] [--per-class 100]
                                    [--clients 8] [--seconds 10] [--redis redis://…/15]

1. Trains paper-cnn on digits (28×28), uploads it and the held-out split, runs `--jobs` c3
   jobs one after another and prints, per job, its wall time (created → finished), the time
   spent inside the engine (worker-measured: loading, training, sampling, metrics) and the
   overhead share = (wall − engine) / wall: queueing, progress and checkpoint writes, PNGs.
2. While one more job trains, `--clients` threads poll GET /inversions/{id} for `--seconds`
   and it prints the latency percentiles and the request rate.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from safetensors.torch import save

from models.digits import load_digits_data, train_classifier


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(
    data_dir: Path, redis_url: str | None, workers: int = 1, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`c3 serve` with `workers` inversion workers (and `env` on top of a clean C3_ slate)."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("C3_")}
    env = base | (env or {})
    if redis_url:
        env |= {"C3_REDIS_URL": redis_url, "C3_REDIS_PREFIX": "bench:"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port),
         "--data-dir", str(data_dir), "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return proc, url
        except httpx.ConnectError:
            pass
        time.sleep(0.2)
    raise SystemExit("c3 serve did not start")


def key_headers(data_dir: Path, redis_url: str | None) -> dict[str, str]:
    if not redis_url:
        return {}
    env = {**os.environ, "C3_REDIS_URL": redis_url, "C3_REDIS_PREFIX": "bench:"}
    key = subprocess.run(
        [sys.executable, "-m", "service.cli", "keys", "create", "--tenant", "bench",
         "--data-dir", str(data_dir)],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return {"Authorization": f"Bearer {key}"}


def upload(client: httpx.Client, data_dir: Path, epochs: int = 8) -> tuple[str, str]:
    """paper-cnn trained on digits and the held-out digits, uploaded; their ids once ready."""
    digits = load_digits_data((1, 28, 28))
    model = train_classifier("paper-cnn", digits, epochs=epochs, seed=0).model
    weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
    classifier = client.post(
        "/classifiers", headers={"Prefer": "wait=120"},
        data={"name": "digits", "format": "safetensors", "architecture": "paper-cnn",
              "input_shape": "1,28,28", "class_names": ",".join(map(str, range(10)))},
        files={"file": ("m.safetensors", weights)},
    ).json()  # fmt: skip
    reference = data_dir / "reference.npz"
    np.savez(
        reference, x=(digits.test_x * 255).round().to(torch.uint8).numpy(), y=digits.test_y.numpy()
    )
    dataset = client.post(
        "/datasets", headers={"Prefer": "wait=120"}, data={"name": "held-out"},
        files={"file": ("ref.npz", reference.read_bytes())},
    ).json()  # fmt: skip
    for record in (classifier, dataset):
        if record.get("status") != "ready":
            raise SystemExit(f"upload not ready: {record}")
    return classifier["id"], dataset["id"]


def run_job(client: httpx.Client, body: dict[str, object]) -> dict[str, object]:
    job = client.post("/inversions", json=body).json()
    while job["state"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.1)
        job = client.get(f"/inversions/{job['id']}").json()
    return job  # type: ignore[no-any-return]


def poll_latencies(
    url: str, headers: dict[str, str], path: str, clients: int, seconds: float
) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client_loop() -> None:
        mine = []
        with httpx.Client(base_url=url, headers=headers) as client:
            while time.monotonic() < stop:
                start = time.perf_counter()
                client.get(path).raise_for_status()
                mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--redis", help="run the production form against this Redis URL")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        headers = key_headers(data_dir, args.redis)
        proc, url = start_service(data_dir, args.redis)
        try:
            client = httpx.Client(base_url=url, headers=headers, timeout=300)
            classifier, dataset = upload(client, data_dir)
            body = {
                "classifier_id": classifier,
                "dataset_id": dataset,
                "samples_per_class": args.per_class,
                "steps": args.steps,
            }
            mode = "redis" if args.redis else "embedded"
            print(
                f"c3 serve ({mode}), paper-cnn on digits 28x28, c3 jobs of {args.steps} steps "
                f"and {args.per_class} samples/class, one after another\n"
            )
            print(f"{'job':>4} {'wall s':>8} {'engine s':>9} {'overhead s':>11} {'overhead':>9}")
            shares = []
            for i in range(args.jobs):
                job = run_job(client, {**body, "seed": i})
                wall = float(job["finished_at"]) - float(job["created_at"])  # type: ignore[arg-type]
                engine = float(job["engine_seconds"])  # type: ignore[arg-type]
                shares.append((wall - engine) / wall)
                print(
                    f"{i + 1:>4} {wall:>8.2f} {engine:>9.2f} {wall - engine:>11.2f} "
                    f"{shares[-1]:>8.1%}"
                )
            print(f"median overhead share: {statistics.median(shares):.1%}\n")

            busy = client.post("/inversions", json={**body, "steps": 100_000 // 10}).json()
            time.sleep(2)
            latencies = poll_latencies(
                url, headers, f"/inversions/{busy['id']}", args.clients, args.seconds
            )
            client.post(f"/inversions/{busy['id']}/cancel")
            ms = np.array(latencies) * 1000
            print(
                f"GET /inversions/{{id}} with {args.clients} clients for {args.seconds:.0f} s "
                "while a job trains on the same machine:"
            )
            print(
                f"  {len(ms)} requests, {len(ms) / args.seconds:.0f} req/s; latency ms "
                f"p50 {np.percentile(ms, 50):.1f}, p95 {np.percentile(ms, 95):.1f}, "
                f"p99 {np.percentile(ms, 99):.1f}, max {ms.max():.1f}"
            )
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
