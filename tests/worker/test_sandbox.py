"""The validation sandbox against children that hang, crash, burn CPU or exhaust memory: each
ends as a readable failure, never a hang, and the sandbox keeps working afterwards. (The
checks here are standard-library functions, run through the real zygote.)"""

from __future__ import annotations

import os
import signal
import time

import pytest

from worker.sandbox import Limits, Sandbox, SandboxFailure

LIMITS = Limits(cpu_seconds=5, memory_mb=512, wall_seconds=20)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    box = Sandbox()
    yield box  # type: ignore[misc]
    box.close()


def test_a_check_runs_and_answers(sandbox: Sandbox) -> None:
    assert sandbox.run("json:loads", ['{"a": [1, 2]}'], LIMITS) == {"a": [1, 2]}
    assert sandbox.run("builtins:print", ["noise on stdout"], LIMITS) is None  # not an answer


def test_a_hang_is_cut_at_the_wall_clock_limit(sandbox: Sandbox) -> None:
    started = time.monotonic()
    with pytest.raises(SandboxFailure, match="did not finish within 1 s"):
        sandbox.run("time:sleep", [60], Limits(cpu_seconds=5, memory_mb=512, wall_seconds=1))
    assert time.monotonic() - started < 10
    assert sandbox.run("json:loads", ["1"], LIMITS) == 1  # and the next check runs


def test_a_crash_is_reported(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxFailure, match="crashed \\(signal SIGSEGV\\)"):
        sandbox.run("faulthandler:_sigsegv", [], LIMITS)


def test_cpu_time_is_limited(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxFailure, match="more than its 1 s of CPU time"):
        sandbox.run(
            "math:factorial", [10**8], Limits(cpu_seconds=1, memory_mb=512, wall_seconds=30)
        )


def test_memory_is_limited(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxFailure, match="needs more than 512 MB"):
        sandbox.run("builtins:bytearray", [8 * 1024**3], LIMITS)


def test_errors_in_a_check_become_reasons(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxFailure, match="cannot be read \\(JSONDecodeError"):
        sandbox.run("json:loads", ["{not json"], LIMITS)


def test_a_dead_zygote_is_replaced(sandbox: Sandbox) -> None:
    sandbox.run("json:loads", ["1"], LIMITS)
    assert sandbox._proc is not None
    first = sandbox._proc.pid
    os.killpg(first, signal.SIGKILL)
    sandbox._proc.wait()
    assert sandbox.run("json:loads", ["2"], LIMITS) == 2
    assert sandbox._proc.pid != first
