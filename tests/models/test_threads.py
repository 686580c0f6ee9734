"""Threads sized to a process's share of the cores: the arithmetic, the cgroup quota, and what
a command and a worker's job process actually run with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models import threads
from models.threads import share_of_cores, usable_cores

ROOT = Path(__file__).resolve().parents[2]


def test_a_process_gets_its_share_and_never_less_than_one() -> None:
    cores = usable_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    assert share_of_cores(1) == cores
    assert share_of_cores(2) == max(1, cores // 2)
    assert share_of_cores(10 * cores) == 1
    assert share_of_cores(0) == cores


@pytest.mark.parametrize(
    ("v2", "v1", "cores"),
    [
        ("max 100000\n", None, None),
        ("150000 100000\n", None, 1.5),
        (None, ("-1", "100000"), None),
        (None, ("50000", "100000"), 0.5),
        (None, None, None),
    ],
)
def test_a_containers_cpu_quota_is_read_from_its_cgroup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, v2: str | None,
    v1: tuple[str, str] | None, cores: float | None,
) -> None:  # fmt: skip
    v2_file, v1_dir = tmp_path / "cpu.max", tmp_path / "cpu"
    if v2 is not None:
        v2_file.write_text(v2)
    if v1 is not None:
        v1_dir.mkdir()
        (v1_dir / "cpu.cfs_quota_us").write_text(v1[0])
        (v1_dir / "cpu.cfs_period_us").write_text(v1[1])
    monkeypatch.setattr(threads, "_CGROUP_V2", v2_file)
    monkeypatch.setattr(threads, "_CGROUP_V1", v1_dir)
    assert threads._cgroup_quota() == cores
    if cores is not None:
        assert usable_cores() == max(1, min(len(os.sched_getaffinity(0)), int(cores)))


PROBE = """
import json, sys, torch
from threadpoolctl import threadpool_info
from models.threads import use_threads
use_threads(int(sys.argv[1]))
blas = [p["num_threads"] for p in threadpool_info()]
print(json.dumps({"intra": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
                  "blas": blas}))
"""


def test_use_threads_sizes_every_pool() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, "1"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    sized = json.loads(out.stdout)
    assert sized == {**sized, "intra": 1, "interop": 1}
    assert sized["blas"]
    assert set(sized["blas"]) == {1}


def test_demo_shows_progress_and_writes_the_uploads_first(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    run = subprocess.run(
        [sys.executable, "-m", "models.cli", "demo", "--per-class", "2", "--epochs", "1",
         "--steps", "3", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    lines = run.stdout.splitlines()
    assert lines[0].startswith("1 CPU thread(s) of ")
    assert "(as asked)" in lines[0]
    wrote = next(i for i, line in enumerate(lines) if line.startswith("wrote "))
    assert wrote < next(i for i, line in enumerate(lines) if line == "running c3 ...")
    assert (out / "classifier.safetensors").stat().st_size > 0
    assert (out / "reference.npz").stat().st_size > 0
    assert {p.name for p in out.glob("*_vs_real.png")} >= {"c3_vs_real.png", "pixel_vs_real.png"}
    assert "training paper-cnn on digits" in run.stderr  # the progress bars (tqdm, stderr)
    assert "training (stops when the targets hold)" in run.stderr


def test_a_bad_thread_count_is_one_line() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "models.cli", "demo", "--threads", "0"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip() == "c3: error: --threads must be at least 1"
