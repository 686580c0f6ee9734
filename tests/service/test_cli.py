"""The `c3` command as a user meets it: `c3 audit` against a live `c3 serve` (files, summary,
JSON, the threshold's exit status), user errors as one line, `c3 keys list/revoke`, and a help
with a description, defaults and an example for every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from service.client import Client
from service.report import ReportPublic
from service.settings import get_settings
from tests import factories
from tests.conftest import LiveService, clean_env, free_port

DECLARATION = [
    "--architecture", "mlp", "--input-shape", "1,8,8", "--class-names", "0,1,2,3,4,5,6,7,8,9",
]  # fmt: skip
QUICK_JOB = ["--samples-per-class", "10", "--steps", "30", "--seed", "1"]


def c3(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`c3 ARGS` as its own process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env or clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture
def c3_here(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """`c3 ARGS` in this process (quicker; the same `main`), its settings from `env`; the
    environment is restored afterwards (`main` writes options into C3_ variables)."""
    before = dict(os.environ)

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        for key in [k for k in os.environ if k.startswith("C3_")]:
            monkeypatch.delenv(key)
        for key, value in (env or {}).items():
            if key.startswith("C3_"):
                monkeypatch.setenv(key, value)
        try:
            status = main(list(args))
        except SystemExit as exit:
            status = int(exit.code or 0)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, status, out.out, out.err)

    yield run
    os.environ.clear()
    os.environ.update(before)
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return factories.upload_files(tmp_path_factory.mktemp("audit-files"))


def user_env(live: LiveService, **extra: str) -> dict[str, str]:
    return clean_env(**({"C3_SERVER": live.url, "C3_API_KEY": live.key} | extra))


def one_line_error(done: subprocess.CompletedProcess[str], status: int) -> str:
    assert done.returncode == status, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("c3 audit: ")
    assert done.stderr.strip().count("\n") == 0, done.stderr
    return done.stderr.strip()


def test_audit_writes_the_report_and_samples_and_passes(
    live_service: LiveService, files: tuple[Path, Path], tmp_path: Path
) -> None:
    model, reference = files
    out = tmp_path / "audit"
    done = c3(
        "audit", str(model), "--reference", str(reference), *DECLARATION, *QUICK_JOB,
        "--out", str(out), "--max-confident-share", "1", env=user_env(live_service),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "verdict: PASS (exit status 0)" in done.stdout
    assert "pass: --max-confident-share 1.0" in done.stdout, done.stdout
    report = ReportPublic.model_validate_json((out / "report.json").read_bytes())
    assert report.job.state == "succeeded"
    assert report.ood is not None  # the reference set was uploaded and used
    with zipfile.ZipFile(out / "samples.zip") as archive:
        assert sum(n.endswith(".png") for n in archive.namelist()) == 100
    assert (out / "grid.png").read_bytes().startswith(b"\x89PNG")
    assert "<html" in (out / "report.html").read_text()


def test_a_failed_threshold_has_its_own_exit_status(
    live_service: LiveService, files: tuple[Path, Path], tmp_path: Path
) -> None:
    model, reference = files
    done = c3(
        "audit", str(model), "--reference", str(reference), *DECLARATION, *QUICK_JOB,
        "--out", str(tmp_path), "--json", "--max-confident-share", "1",
        "--min-msp-auroc", "1.01", "--max-mean-confidence", "0.01", env=user_env(live_service),
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)  # --json: stdout is JSON alone
    assert result["verdict"] == "fail"
    assert result["exit_status"] == 3
    checks = {c["option"]: c for c in result["thresholds"]}
    assert checks["--max-confident-share"]["passed"]
    assert not checks["--min-msp-auroc"]["passed"]  # an AUROC is never above 1
    assert not checks["--max-mean-confidence"]["passed"]
    with Client(live_service.url, live_service.key) as client:
        metrics = client.get_inversion(result["job"]["id"]).metrics
    assert metrics is not None
    assert checks["--max-confident-share"]["value"] == metrics.confident_share
    assert checks["--min-msp-auroc"]["value"] == metrics.msp_auroc
    assert checks["--max-mean-confidence"]["value"] == metrics.mean_confidence > 0.01
    assert result["metrics"]["confident_share"] == metrics.confident_share


def test_user_errors_are_one_line(
    live_service: LiveService, files: tuple[Path, Path], tmp_path: Path, c3_here: Any
) -> None:
    c3 = c3_here
    model, _ = files
    args = ["audit", str(model), *DECLARATION, *QUICK_JOB, "--out", str(tmp_path)]
    nowhere = c3(*args, "--server", f"http://127.0.0.1:{free_port()}")
    assert "cannot reach" in one_line_error(nowhere, 1)
    stranger = c3(*args, env=user_env(live_service, C3_API_KEY="c3k_unknown"))
    assert "unknown API key" in one_line_error(stranger, 1)
    bad_shape = [a if a != "1,8,8" else "1,8" for a in args]
    refused = c3(*bad_shape, env=user_env(live_service))
    assert one_line_error(refused, 1).startswith("c3 audit: input_shape: ")
    missing = c3("audit", str(tmp_path / "nope.onnx"), *DECLARATION, env=user_env(live_service))
    assert "no such file" in one_line_error(missing, 2)
    no_reference = c3(*args, "--min-msp-auroc", "0.9", env=user_env(live_service))
    assert "needs --reference" in one_line_error(no_reference, 2)


def test_keys_list_and_revoke(tmp_path: Path, c3_here: Any) -> None:
    c3 = c3_here
    data = ["--data-dir", str(tmp_path / "data")]
    first = c3("keys", "create", "--tenant", "team-a", *data).stdout.strip()
    c3("keys", "create", "--tenant", "team-b", *data)
    listed = c3("keys", "list", "--json", *data)
    keys = json.loads(listed.stdout)
    assert [k["tenant"] for k in keys] == ["team-a", "team-b"]
    assert first not in listed.stdout  # the secret is never shown again
    table = c3("keys", "list", *data).stdout
    assert keys[1]["id"] in table
    by_id = c3("keys", "revoke", keys[1]["id"], *data)
    assert by_id.stdout.strip() == f"revoked key {keys[1]['id']} of tenant team-b"
    by_secret = c3("keys", "revoke", first, *data)
    assert by_secret.returncode == 0
    assert json.loads(c3("keys", "list", "--json", *data).stdout) == []
    again = c3("keys", "revoke", first, *data)
    assert again.returncode == 1
    assert again.stderr.strip() == f"c3 keys revoke: no such key: {first}"


@pytest.mark.parametrize(
    "command",
    [[], ["serve"], ["api"], ["worker"], ["keys"], ["keys", "create"], ["keys", "list"],
     ["keys", "revoke"], ["audit"], ["invert"], ["demo"], ["check"]],
    ids=lambda c: " ".join(c) or "c3",
)  # fmt: skip
def test_every_command_describes_itself_with_defaults_and_an_example(
    command: list[str], c3_here: Any
) -> None:
    done = c3_here(*command, "--help")
    assert done.returncode == 0, done.stderr
    usage, description, *_ = done.stdout.split("\n\n")
    assert usage.startswith("usage: c3")
    assert len(description.split()) >= 5, description  # a sentence, not a label
    assert "example" in done.stdout
    if command not in ([], ["keys"]):
        assert "default" in done.stdout
