"""Resource limits of a worker process: what a runaway job or a hostile upload can take is
capped by the kernel, so it fails itself instead of the host."""

from __future__ import annotations

import resource

__all__ = ["address_space", "cap_address_space"]


def address_space() -> int:
    """This process's virtual address space now (bytes)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def cap_address_space(extra_bytes: int) -> int:
    """Let this process map at most `extra_bytes` more than it has now; returns the cap.
    Past it, allocations fail (MemoryError, or torch's "can't allocate memory")."""
    cap = address_space() + extra_bytes
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return cap
