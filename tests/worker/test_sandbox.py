"""The validation sandbox against children that hang, crash, burn CPU or exhaust memory: each
ends as a readable failure, never a hang, and the sandbox keeps working afterwards. (The
checks here are standard-library functions, run through the real zygote.)"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

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


# --- isolation (bubblewrap) --------------------------------------------------------------------


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, Path]]:
    """A sandbox that must isolate itself, with a "data folder" it must not see."""
    data = tmp_path_factory.mktemp("data")
    (data / "secret.txt").write_text("another tenant's upload")
    box = Sandbox("bwrap", hidden=[data])
    yield box, data
    box.close()


def test_an_isolated_check_reaches_no_network(
    isolated: tuple[Sandbox, Path], redis_base_url: str
) -> None:
    box, _ = isolated
    port = int(redis_base_url.rsplit(":", 1)[1])
    socket.create_connection(("127.0.0.1", port), timeout=2).close()  # Redis answers here ...
    with pytest.raises(SandboxFailure, match=r"ConnectionRefusedError|unreachable"):
        box.run("socket:create_connection", [["127.0.0.1", port], 2], LIMITS)  # ... not inside
    assert box.isolated


def test_an_isolated_check_sees_and_writes_only_its_exchange_folder(
    isolated: tuple[Sandbox, Path], tmp_path: Path
) -> None:
    box, data = isolated
    assert box.run("os:listdir", [str(data)], LIMITS) == []  # the data folder looks empty
    project = Path(__file__).resolve().parents[2]
    for outside in (tmp_path / "escaped", project / "escaped"):
        with pytest.raises(SandboxFailure, match=r"Read-only file system|No such file"):
            box.run("os:mkdir", [str(outside)], LIMITS)
        assert not outside.exists()
    with box.workdir() as folder:
        (folder / "upload").write_text("bytes to check")
        assert box.run("os:listdir", [str(folder)], LIMITS) == ["upload"]
        assert box.run("os:mkdir", [str(folder / "canonical")], LIMITS) is None
        assert (folder / "canonical").is_dir()
    assert not folder.exists()


def test_an_isolated_check_sees_no_other_process(isolated: tuple[Sandbox, Path]) -> None:
    box, _ = isolated
    inside = [p for p in box.run("os:listdir", ["/proc"], LIMITS) if p.isdigit()]
    assert len(inside) <= 3  # bubblewrap, the zygote and the check itself
    assert len([p for p in os.listdir("/proc") if p.isdigit()]) > 10  # the host has many


def test_an_isolated_hang_is_cut_and_the_sandbox_goes_on(isolated: tuple[Sandbox, Path]) -> None:
    box, _ = isolated
    with pytest.raises(SandboxFailure, match="did not finish within 1 s"):
        box.run("time:sleep", [60], Limits(cpu_seconds=5, memory_mb=512, wall_seconds=1))
    assert box.run("json:loads", ["3"], LIMITS) == 3
