"""Run a check on untrusted bytes in a child process with CPU-time, memory and wall-clock limits.

Children come from a *zygote*: a fresh interpreter (`worker.sandbox.zygote`, environment
stripped, so it holds no store connections or credentials) that imports torch and the loaders
once, then forks one child per check. A check thus starts in milliseconds instead of the
1.5 s an interpreter with torch takes to start. Each child applies its limits before it touches
the upload and answers with JSON, never a pickle: a child subverted by a hostile file cannot
reach into the worker through its answer. A child that crashes, exhausts a limit or hangs ends
as a `SandboxFailure` with a reason a user can read; the zygote itself is restarted if it dies.

Isolation (bubblewrap, Debian's `bwrap`): the zygote runs in its own network, PID, IPC and
user namespaces, on a read-only view of the system (the interpreter, the project, /usr, /etc),
a private empty /tmp and none of the service's data: it can reach no socket and write nowhere
but the exchange folder where the validation puts the upload and takes the canonical copy.
`isolation="auto"` uses it when it works here (unprivileged containers may forbid namespaces)
and says so in the log when it does not.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Literal, cast

from worker.limits import cap_address_space

log = logging.getLogger(__name__)

PRELOAD = ("worker.checks",)
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


class _Lines:
    """Lines from a pipe, with a timeout (the zygote's answers)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._fd = pipe.fileno()
        self._buffer = b""

    def read(self, timeout: float) -> str | None:
        """The next line; None on timeout. EOFError when the zygote has gone."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                return None
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise EOFError("sandbox zygote exited")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


Isolation = Literal["auto", "bwrap", "none"]
ZYGOTE = [sys.executable, "-c", "from worker.sandbox import zygote; zygote()"]
"""Not `-m worker.sandbox`: as __main__ this module's classes (Rejected) would be other classes
than the ones the checks raise."""


def _code_roots() -> list[Path]:
    """Where this process's `worker` and `models` come from: the zygote imports the same code
    (not whatever an editable install of another checkout points at)."""
    return sorted(
        {Path(importlib.import_module(p).__file__ or ".").resolve().parent.parent
         for p in ("worker", "models")}
    )  # fmt: skip


def _readable_roots() -> list[Path]:
    """What the zygote must read: the interpreter, the environment, the project's code."""
    roots = {Path(sys.base_prefix), Path(sys.prefix), *_code_roots()}
    roots |= {Path(p) for p in ("/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc")}
    return sorted(p for p in roots if p.exists())


def bwrap_command(exchange: Path, hidden: Sequence[Path] = ()) -> list[str]:
    """The zygote inside bubblewrap: `exchange` writable, `hidden` folders (the service's data)
    replaced by empty ones, everything else it can see read-only, no network."""
    command = ["bwrap", "--die-with-parent", "--unshare-all", "--new-session"]
    for root in _readable_roots():
        command += ["--ro-bind", str(root), str(root)]
    command += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for folder in hidden:
        if folder.exists():
            command += ["--tmpfs", str(folder.resolve())]
    command += ["--bind", str(exchange), str(exchange), "--chdir", "/", "--"]
    return command + ZYGOTE


class Sandbox:
    """A zygote and the checks run through it, one at a time; `exchange` is the only folder a
    check may write (uploads in, canonical copies out), `hidden` folders it must not see."""

    def __init__(self, isolation: Isolation = "none", hidden: Sequence[Path] = ()) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lines: _Lines | None = None
        self._lock = threading.Lock()
        self._isolation, self._hidden = isolation, tuple(hidden)
        self.exchange = Path(tempfile.mkdtemp(prefix="c3-sandbox-"))
        self.isolated = False

    def _command(self) -> list[str]:
        if self._isolation == "none":
            return ZYGOTE
        command = bwrap_command(self.exchange, self._hidden)
        probe = [*command[: command.index("--") + 1], "true"]
        if shutil.which("bwrap") and _works(probe):
            self.isolated = True
            return command
        if self._isolation == "bwrap":
            raise SandboxFailure("the validation sandbox cannot isolate itself (bwrap fails)")
        log.warning("bubblewrap is unavailable here: validating uploads without namespaces")
        return ZYGOTE

    def _zygote(self) -> tuple[subprocess.Popen[bytes], _Lines]:
        if self._proc is None or self._proc.poll() is not None or self._lines is None:
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1",
                   "PYTHONDONTWRITEBYTECODE": "1",
                   "PYTHONPATH": os.pathsep.join(map(str, _code_roots()))}  # fmt: skip
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd="/",
                start_new_session=True,
            )  # fmt: skip
            self._lines = _Lines(cast(IO[bytes], self._proc.stdout))
        return self._proc, self._lines

    @contextlib.contextmanager
    def workdir(self) -> Iterator[Path]:
        """A fresh folder inside the exchange folder, removed afterwards."""
        path = Path(tempfile.mkdtemp(dir=self.exchange))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def run(self, check: str, args: list[Any], limits: Limits) -> dict[str, Any]:
        """`check` ("module:function") on JSON `args` in a limited child; its JSON result."""
        request = {"check": check, "args": args, "limits": asdict(limits)}
        with self._lock:
            proc, lines = self._zygote()
            try:
                stdin = cast(IO[bytes], proc.stdin)
                stdin.write(json.dumps(request).encode() + b"\n")
                stdin.flush()
                started = lines.read(timeout=120)  # the zygote may be importing torch
                if started is None:
                    raise SandboxFailure("the validation sandbox did not start")
                pid = json.loads(started)["pid"]
                line = lines.read(timeout=limits.wall_seconds)
                if line is None:
                    self._kill_hung(pid, lines)
                    raise SandboxFailure(
                        f"validation did not finish within {limits.wall_seconds:.0f} s (a hang?)"
                    )
            except (EOFError, BrokenPipeError, OSError) as exc:
                self._proc = None
                raise SandboxFailure(f"the validation sandbox failed ({exc}); retry") from exc
        result = json.loads(line)
        try:
            answer = json.loads(result["answer"])
        except (TypeError, ValueError):  # no answer, or half of one: the child died
            raise SandboxFailure(_crash_reason(result["exit"], limits)) from None
        if not answer["ok"]:
            raise SandboxFailure(answer["reason"])
        value: dict[str, Any] = answer["value"]
        return value

    def _kill_hung(self, pid: int, lines: _Lines) -> None:
        """A hung check: its pid means something only inside the zygote's PID namespace, so an
        isolated zygote is replaced whole (its namespace takes the child with it)."""
        if self.isolated:
            self.close()
            return
        os.kill(pid, signal.SIGKILL)
        lines.read(timeout=30)

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None


_sandboxes: dict[int, Sandbox] = {}


def process_sandbox(isolation: Isolation, hidden: Sequence[Path]) -> Sandbox:
    """This process's sandbox (its zygote starts on first use)."""
    sandbox = _sandboxes.get(os.getpid())
    if sandbox is None:
        _sandboxes.clear()  # a forked child does not share its parent's zygote
        sandbox = _sandboxes[os.getpid()] = Sandbox(isolation, hidden)
    return sandbox


def _works(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _crash_reason(exit_code: int, limits: Limits) -> str:
    if exit_code == -signal.SIGXCPU:
        return f"validation used more than its {limits.cpu_seconds} s of CPU time"
    if exit_code == -signal.SIGKILL:
        return f"validation was killed (more than {limits.memory_mb} MB of memory?)"
    if exit_code < 0:
        return f"validation crashed (signal {signal.Signals(-exit_code).name})"
    return f"validation crashed (exit code {exit_code})"


# -- inside the zygote and its children ----------------------------------------------------


def _limit(limits: Limits) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    cap_address_space(limits.memory_mb * 1024 * 1024)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.alarm(int(limits.wall_seconds) + 5)  # a backstop if the worker is gone


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or "can't allocate memory" in str(exc)


def _answer_for(request: dict[str, Any]) -> dict[str, Any]:
    limits = Limits(**request["limits"])
    module, _, name = request["check"].partition(":")
    check = getattr(importlib.import_module(module), name)
    _limit(limits)
    try:
        return {"ok": True, "value": check(*request["args"])}
    except Rejected as exc:
        return {"ok": False, "reason": str(exc) or "the file was refused"}
    except RecursionError:
        return {"ok": False, "reason": "the file nests too deeply to be read"}
    except Exception as exc:  # anything else a hostile file provokes in a parser
        if _out_of_memory(exc):
            return {"ok": False, "reason": f"reading it needs more than {limits.memory_mb} MB"}
        return {"ok": False, "reason": f"the file cannot be read ({type(exc).__name__}: {exc})"}


def _child(request: dict[str, Any], answer_fd: int) -> None:
    os.close(0)
    try:
        data = json.dumps(_answer_for(request)).encode()[:MAX_ANSWER_BYTES]
    except MemoryError:
        data = json.dumps({"ok": False, "reason": "reading it needs too much memory"}).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(answer_fd, view) :]
    os._exit(0)


def zygote() -> None:
    """Import the checks once, then fork a child per request line on stdin."""
    for module in PRELOAD:
        importlib.import_module(module)
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # whatever a library prints must not be taken for a reply
    for line in sys.stdin:
        request = json.loads(line)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _child(request, write_end)
        os.close(write_end)
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
        answer = b"".join(chunks).decode("utf-8", "replace") or None
        replies.write(json.dumps({"exit": os.waitstatus_to_exitcode(status),
                                  "answer": answer}) + "\n")  # fmt: skip
        replies.flush()
