"""How many CPU threads a process running the engine may use: its share of the cores.

torch's default, one thread per core, assumes the process has the machine to itself. Two jobs
on two cores then run four threads whose OpenMP barriers spin against each other, and a step
takes several times as long as with one thread each. Every process that runs the engine (a
worker's job process, `c3 invert`, `c3 demo`) sizes its pools here: intra-op threads to its
share of the cores it may run on (CPU affinity and the cgroup CPU quota of a container), one
inter-op thread (the engine runs no parallel graph branches), and the BLAS pools numpy and
scikit-learn use to the same share.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

__all__ = ["free_cores", "share_of_cores", "usable_cores", "use_threads"]

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = Path("/sys/fs/cgroup/cpu")


def _cgroup_quota() -> float | None:
    """The container's CPU quota in cores, or None when it has none."""
    try:
        quota, period = _CGROUP_V2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((_CGROUP_V1 / "cpu.cfs_quota_us").read_text())
        period_us = int((_CGROUP_V1 / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores or 1, max(1, math.floor(quota)))
    return max(1, cores or 1)


def share_of_cores(processes: int) -> int:
    """Threads for one of `processes` engine processes sharing this host's cores."""
    return max(1, usable_cores() // max(1, processes))


def free_cores() -> int:
    """The cores not already busy (by the 1-minute load average): what a command started by
    hand on a shared machine may take without slowing itself and the others down."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, usable_cores() - round(load))


_interop_set = False


def use_threads(threads: int) -> int:
    """Size this process's pools to `threads` (intra-op, BLAS) and one inter-op thread;
    returns `threads`."""
    global _interop_set
    torch.set_num_threads(threads)
    if not _interop_set:
        with contextlib.suppress(RuntimeError):  # once per process, before inter-op work
            torch.set_num_interop_threads(1)
        _interop_set = True
    threadpool_limits(limits=threads)
    return threads
