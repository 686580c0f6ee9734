"""Benchmark of CPU threads: what sizing each job to its share of the cores buys.

    .venv/bin/python bench/threads.py                  # both parts, ~10 minutes here
    .venv/bin/python bench/threads.py --part steps     # only the step rates

1. Step rate of c3 training (paper-cnn on digits 28×28, batch 64) for one job alone and for two
   jobs at once, each job in its own process: with the service's policy (each process takes
   its share of the cores, `models.threads`) and with torch's default (every process takes
   every core: what the workers did before).
2. Throughput of a real `c3 serve` (embedded default) with `--workers 1` and `--workers 2`:
   a burst of jobs (paper recipe, fixed steps) submitted at once, jobs per hour from the first
   submission to the last finish. The workers size their threads by the policy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402

STEP_PROBE = """
import json, sys, time, torch
from models.threads import share_of_cores, use_threads
from models.classifier import LoadedClassifier
from models.contracts.inversion import InversionConfig
from models.digits import load_digits_data, train_classifier
from models.methods import build_method
policy, jobs, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
threads = use_threads(share_of_cores(jobs)) if policy == "share" else torch.get_num_threads()
data = load_digits_data((1, 28, 28))
model = train_classifier("paper-cnn", data, epochs=1).model
method = build_method(LoadedClassifier(model, (1, 28, 28), data.class_names),
                      InversionConfig(recipe="paper", steps=steps, seed=0))
labels = torch.arange(64) % 10
for _ in range(5):
    method.step(labels)
start = time.perf_counter()
for _ in range(steps):
    method.step(labels)
print(json.dumps({"threads": threads, "steps_per_s": steps / (time.perf_counter() - start)}))
"""


def step_rates(jobs: int, policy: str, steps: int) -> list[dict[str, float]]:
    """Run `jobs` training processes at once under `policy`; each one's threads and rate."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_"))}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STEP_PROBE, policy, str(jobs), str(steps)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(jobs)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise SystemExit("a training process failed")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def part_steps(steps: int) -> None:
    print(f"\n1. c3 training steps/s (paper-cnn 28×28, batch 64, {steps} timed steps)\n")
    print(f"{'jobs at once':<13} {'threads':<22} {'threads/job':>12} {'steps/s per job':>16} "
          f"{'steps/s in all':>15}")  # fmt: skip
    for jobs in (1, 2):
        for policy, label in (("share", "share of the cores"), ("torch", "torch default")):
            rates = step_rates(jobs, policy, steps)
            each = ", ".join(f"{r['steps_per_s']:.1f}" for r in rates)
            total = sum(r["steps_per_s"] for r in rates)
            print(f"{jobs:<13} {label:<22} {int(rates[0]['threads']):>12} {each:>16} "
                  f"{total:>15.1f}")  # fmt: skip


def part_throughput(jobs: int, steps: int) -> None:
    import httpx

    from bench.service import start_service, upload

    print(f"\n2. c3 serve: {jobs} jobs submitted at once (paper recipe, {steps} steps, "
          "20 samples per class)\n")  # fmt: skip
    print(f"{'workers':<8} {'threads/job':>12} {'wall s':>8} {'jobs/hour':>10}")
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp) / "data"
            data_dir.mkdir()
            proc, url = start_service(data_dir, None, workers=workers)
            try:
                with httpx.Client(base_url=url, timeout=300) as client:
                    classifier, _ = upload(client, data_dir)
                    body = {"classifier_id": classifier, "recipe": "paper", "steps": steps,
                            "samples_per_class": 20}  # fmt: skip
                    start = time.monotonic()
                    ids = [client.post("/inversions", json={**body, "seed": i}).json()["id"]
                           for i in range(jobs)]  # fmt: skip
                    while True:
                        states = [client.get(f"/inversions/{i}").json()["state"] for i in ids]
                        if all(s in ("succeeded", "failed", "cancelled") for s in states):
                            break
                        time.sleep(0.5)
                    wall = time.monotonic() - start
                    if any(s != "succeeded" for s in states):
                        raise SystemExit(f"jobs did not all succeed: {states}")
            finally:
                proc.terminate()
                proc.wait(60)
        from models.threads import share_of_cores

        print(f"{workers:<8} {share_of_cores(workers):>12} {wall:>8.1f} "
              f"{jobs * 3600 / wall:>10.0f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("steps", "throughput", "both"), default="both")
    parser.add_argument("--steps", type=int, default=200, help="timed training steps (part 1)")
    parser.add_argument("--jobs", type=int, default=6, help="jobs in the burst (part 2)")
    parser.add_argument("--job-steps", type=int, default=300, help="steps per job (part 2)")
    args = parser.parse_args()
    from models.threads import usable_cores

    print(describe("bench/threads.py", usable_cores()))
    if args.part in ("steps", "both"):
        part_steps(args.steps)
    if args.part in ("throughput", "both"):
        part_throughput(args.jobs, args.job_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
