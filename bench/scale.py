"""Benchmark of large jobs: where a 100,000-sample job spends its time and memory.

    .venv/bin/python bench/scale.py    # paper-cnn 10 × 10,000 and pairs-100 100 × 1,000
    .venv/bin/python bench/scale.py --jobs paper-cnn:10000 --threads 1

Each job runs in a fresh process, the way a worker runs it: the zoo member (bench/zoo_members.py,
trained once and cached) inverted by default c3 through `models.audit.audit`, then its files
stored and its exports built into a local blob store (service/exports.py, as the worker's
"saving" phase). Prints per job the seconds of each part (from the run's `cost` in
metrics.json): training; sampling (the generator); scoring (the classifier's pass over every
delivered sample: its confidence is part of the sample); metrics (every figure beyond that:
diversity, distances, AUROCs, detectors, the verdict); saving; the metrics' share of the job,
and the process's peak resident memory while the job runs (the bench's set-up excluded: it
checks every ONNX export of the member). The bars (issue 17):
metrics ≤ 10% of the job, peak memory ≤ 2 GB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import describe, reset_peak_rss, rss_mb  # noqa: E402

METRICS_BAR, MEMORY_BAR_MB = 0.10, 2048.0


def run_job(member_name: str, per_class: int, threads: int) -> dict[str, float]:
    """One job in this process; its phase times and peak memory."""
    import torch

    from bench.zoo_members import MEMBERS, prepare
    from models.audit import AuditHooks, Reference, audit
    from models.contracts.artifacts import Phase, Progress
    from models.contracts.inversion import InversionConfig
    from service import exports
    from service.records import JobParams, JobRecord, JobState
    from service.storage import keys
    from service.storage.local_blobs import LocalArtifactStore

    torch.set_num_threads(threads)
    prepared = prepare(MEMBERS[member_name])
    classifier, data = prepared.classifier, prepared.data
    started: dict[Phase, float] = {}

    def mark(progress: Progress) -> None:
        started.setdefault(progress.phase, time.perf_counter())

    baseline_mb = rss_mb()[0]
    reset_peak_rss()  # the job's peak, not the bench's set-up (ONNX exports checked, data)
    start = time.perf_counter()
    result = audit(
        classifier, InversionConfig(seed=0), samples_per_class=per_class,
        reference=Reference(data.test_x, data.test_y),
        hooks=AuditHooks(on_progress=mark, progress_every_s=1.0),
    )  # fmt: skip
    audited = time.perf_counter()
    classes = len(classifier.class_names)
    job = JobRecord(
        id="job_bench", tenant="bench", state=JobState.SUCCEEDED, classifier_id="clf_bench",
        method="c3", class_names=list(classifier.class_names), input_shape=classifier.input_shape,
        params=JobParams(classes=list(range(classes)), samples_per_class=per_class, seed=0),
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="c3-bench-scale-") as folder:
        blobs = LocalArtifactStore(Path(folder))
        for name, blob in result.artifacts().items():
            key = keys.job_artifact(job.tenant, job.id, name)
            if isinstance(blob, bytes):
                blobs.put(key, blob)
            else:
                with blob.open("rb") as f:
                    blobs.put_stream(key, exports.file_chunks(f))
        exports.build(blobs, job)
    end = time.perf_counter()
    cost = result.metrics.cost
    assert cost is not None
    return {
        "samples": float(len(result.samples)),
        "classes": float(classes),
        "training s": started.get(Phase.SAMPLING, audited) - start,
        "sampling s": cost.sample_seconds or 0.0,
        "scoring s": cost.score_seconds or 0.0,
        "metrics s": cost.metrics_seconds or 0.0,
        "saving s": end - audited,
        "job s": end - start,
        "peak MB": rss_mb()[1],
        "peak above start MB": rss_mb()[1] - baseline_mb,
        "confident": result.metrics.overall.confident_share or 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jobs", default="paper-cnn:10000,pairs-100:1000",
        help="comma-separated zoo member:samples per class",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # member:per_class, in a child
    args = parser.parse_args()
    if args.one:
        member, per_class = args.one.split(":")
        print(json.dumps(run_job(member, int(per_class), args.threads)))
        return 0
    print(describe("bench/scale.py", args.threads))
    print(
        f"{'job':<20} {'samples':>8} {'train s':>8} {'sample s':>9} {'score s':>8} "
        f"{'metrics s':>10} {'saving s':>9} {'job s':>7} {'metrics':>8} {'peak MB':>8} "
        f"{'p≥.99':>6}"
    )
    failures = 0
    for job in args.jobs.split(","):
        child = subprocess.run(
            [sys.executable, __file__, "--one", job, "--threads", str(args.threads)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if child.returncode != 0:
            print(f"{job}: failed\n{child.stderr[-2000:]}")
            failures += 1
            continue
        r = json.loads(child.stdout.strip().splitlines()[-1])
        share = r["metrics s"] / r["job s"]
        failures += share > METRICS_BAR or r["peak MB"] > MEMORY_BAR_MB
        print(
            f"{job:<20} {int(r['samples']):>8,} {r['training s']:>8.1f} {r['sampling s']:>9.1f} "
            f"{r['scoring s']:>8.1f} {r['metrics s']:>10.1f} {r['saving s']:>9.1f} "
            f"{r['job s']:>7.1f} {share:>8.1%} {r['peak MB']:>8.0f} {r['confident']:>6.1%}"
        )
    verdict = "met" if not failures else "NOT met"
    print(
        f"\nbars: metrics ≤ {METRICS_BAR:.0%} of the job, peak ≤ {MEMORY_BAR_MB:.0f} MB: {verdict}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
