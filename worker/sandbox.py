"""Run a check on untrusted bytes in a fresh child interpreter with CPU-time, memory and
wall-clock limits.

The child is a new process (`python -m worker.sandbox`), not a fork of the worker: it inherits
no memory (no store connections, no credentials; its environment is stripped too) and any
Celery pool can start it. It answers with one line of JSON, never a pickle, so a child subverted
by a hostile file cannot reach into the worker through its answer. A child that crashes,
exhausts a limit or hangs ends as a `SandboxFailure` with a reason a user can read. Starting
an interpreter and importing torch costs about 1.5 s per check on this project's CI machine.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 1024 * 1024


class SandboxFailure(Exception):
    """The check failed; the message is shown to the user."""


class Rejected(Exception):
    """Raised by a check for an input it refuses; the message is the user-facing reason."""


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    memory_mb: int
    wall_seconds: float


def run_sandboxed(check: str, args: list[Any], limits: Limits, workdir: str) -> dict[str, Any]:
    """Run `check` ("module:function") on JSON `args` in a limited child; its JSON result."""
    request = json.dumps({"check": check, "args": args, "limits": asdict(limits)}).encode()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1",
           "HOME": workdir, "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.sandbox"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=workdir, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(request, timeout=limits.wall_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise SandboxFailure(
            f"validation did not finish within {limits.wall_seconds:.0f} s (a hang?)"
        ) from None
    lines = out[-MAX_ANSWER_BYTES:].strip().splitlines()
    if proc.returncode != 0 or not lines:
        log.warning("sandbox exited with %s: %s", proc.returncode, err[-2000:].decode("replace"))
        raise SandboxFailure(_crash_reason(proc.returncode, limits))
    answer = json.loads(lines[-1])
    if not answer["ok"]:
        raise SandboxFailure(answer["reason"])
    value: dict[str, Any] = answer["value"]
    return value


def _crash_reason(returncode: int, limits: Limits) -> str:
    if returncode == -signal.SIGXCPU:
        return f"validation used more than its {limits.cpu_seconds} s of CPU time"
    if returncode == -signal.SIGKILL:
        return f"validation was killed (more than {limits.memory_mb} MB of memory?)"
    if returncode < 0:
        return f"validation crashed (signal {signal.Signals(-returncode).name})"
    return f"validation crashed (exit code {returncode})"


def _address_space() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _limit(limits: Limits) -> None:
    """Limits from here on: the imports before them are ours, not the upload's."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime) + limits.cpu_seconds
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    cap = _address_space() + limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.alarm(int(limits.wall_seconds) + 5)  # a backstop if the worker is gone


def _answer_for(request: dict[str, Any]) -> dict[str, Any]:
    limits = Limits(**request["limits"])
    module, _, name = request["check"].partition(":")
    check = getattr(importlib.import_module(module), name)
    _limit(limits)
    try:
        return {"ok": True, "value": check(*request["args"])}
    except Rejected as exc:
        return {"ok": False, "reason": str(exc)}
    except MemoryError:
        return {"ok": False, "reason": f"reading it needs more than {limits.memory_mb} MB"}
    except RecursionError:
        return {"ok": False, "reason": "the file nests too deeply to be read"}
    except Exception as exc:  # anything else a hostile file provokes in a parser
        return {"ok": False, "reason": f"the file cannot be read ({type(exc).__name__}: {exc})"}


def main() -> None:
    started = time.monotonic()
    answer_to = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # whatever a library prints must not be taken for the answer
    answer = _answer_for(json.loads(sys.stdin.read()))
    answer_to.write(json.dumps(answer) + "\n")
    answer_to.flush()
    log.debug("sandbox answered in %.2fs", time.monotonic() - started)


if __name__ == "__main__":
    main()
