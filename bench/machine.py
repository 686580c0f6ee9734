"""The line every benchmark prints first: what ran, on how many threads, how busy the box was."""

from __future__ import annotations

import logging
import os
import platform

import torch


def describe(name: str, threads: int) -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (
        f"# {name}: {threads} torch thread(s) on {os.cpu_count()} CPUs ({platform.machine()}), "
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at start"
    )


def start_engine_bench(name: str, threads: int) -> None:
    """An engine benchmark's start: torch on `threads`, the exporters' chatter off, and the
    line that says it."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    torch.set_num_threads(threads)
    print(describe(name, threads), flush=True)


def reset_peak_rss() -> None:
    """Start the peak (VmHWM) afresh (Linux), so that it measures what follows, not set-up."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(current, peak) resident memory of a process, MB (Linux /proc)."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
