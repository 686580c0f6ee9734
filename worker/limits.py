"""Resource limits of a worker process: what a runaway job or a hostile upload can take is
capped by the kernel, so it fails itself instead of the host."""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator

__all__ = ["address_space", "cap_address_space", "memory_cap"]


def address_space() -> int:
    """This process's virtual address space now (bytes)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def cap_address_space(extra_bytes: int) -> int:
    """Let this process (and what it starts) map at most `extra_bytes` more than it has now,
    for good: the sandbox's checks. Past it, allocations fail."""
    cap = address_space() + extra_bytes
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return cap


@contextlib.contextmanager
def memory_cap(extra_bytes: int) -> Iterator[int]:
    """While the block runs, this process may map at most `extra_bytes` more than it has now
    (a soft limit, lifted afterwards, so a long-lived worker process can cap one job at a time).
    Past it, allocations fail: MemoryError, or torch's "can't allocate memory"."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = address_space() + extra_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield cap
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
