"""Run a check on untrusted bytes in a child process with CPU-time, memory and wall-clock limits.

Children fork from a forkserver that has torch and the loaders imported already, so a check
starts in milliseconds rather than seconds. The child answers with JSON bytes, never a pickle:
a child subverted by a hostile file cannot reach into the worker through its answer. A child
that crashes, exhausts a limit or hangs ends as a `SandboxFailure` with a reason a user can read.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)

PRELOAD = ["worker.checks"]


class SandboxFailure(Exception):
    """The check failed; the message is shown to the user."""


class Rejected(Exception):
    """Raised by a check for an input it refuses; the message is the user-facing reason."""


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    memory_mb: int
    wall_seconds: float


_context: Any = None


def _get_context() -> Any:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _address_space() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _child(
    conn: Connection, check: Callable[..., dict[str, Any]], args: tuple[Any, ...], limits: Limits
) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    cap = _address_space() + limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        answer = {"ok": True, "value": check(*args)}
    except Rejected as exc:
        answer = {"ok": False, "reason": str(exc)}
    except MemoryError:
        answer = {"ok": False, "reason": f"reading it needs more than {limits.memory_mb} MB"}
    except RecursionError:
        answer = {"ok": False, "reason": "the file nests too deeply to be read"}
    except Exception as exc:  # anything else a hostile file provokes in a parser
        answer = {"ok": False, "reason": f"the file cannot be read ({type(exc).__name__}: {exc})"}
    conn.send_bytes(json.dumps(answer).encode())
    conn.close()


def run_sandboxed(
    check: Callable[..., dict[str, Any]], args: tuple[Any, ...], limits: Limits
) -> dict[str, Any]:
    """`check(*args)` in a limited child; its JSON result, or `SandboxFailure`."""
    ctx = _get_context()
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(sender, check, args, limits), daemon=True)
    proc.start()
    sender.close()
    try:
        if not receiver.poll(limits.wall_seconds):
            raise SandboxFailure(
                f"validation did not finish within {limits.wall_seconds:.0f} s (a hang?)"
            )
        try:
            answer = json.loads(receiver.recv_bytes(maxlength=1024 * 1024))
        except (EOFError, OSError):
            proc.join(5)
            raise SandboxFailure(_crash_reason(proc.exitcode, limits)) from None
    finally:
        receiver.close()
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(5)
    if not answer["ok"]:
        raise SandboxFailure(answer["reason"])
    value: dict[str, Any] = answer["value"]
    return value


def _crash_reason(exitcode: int | None, limits: Limits) -> str:
    if exitcode == -signal.SIGXCPU:
        return f"validation used more than its {limits.cpu_seconds} s of CPU time"
    if exitcode == -signal.SIGKILL:
        return f"validation was killed (more than {limits.memory_mb} MB of memory?)"
    if exitcode is not None and exitcode < 0:
        return f"validation crashed (signal {signal.Signals(-exitcode).name})"
    return f"validation crashed (exit code {exitcode})"
