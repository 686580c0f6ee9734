"""The README's walk-throughs run as written (the blocks marked `<!-- walkthrough: NAME -->`),
against a live `c3 serve`, from a folder holding what `c3 demo --out c3demo` writes, so they
cannot go stale. (`c3 demo` itself is tested in tests/models/test_cli.py; here a classifier of
the same architecture, trained for fewer epochs, stands in for it.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import factories
from tests.conftest import LiveService, clean_env

README = Path(__file__).resolve().parents[1] / "README.md"
MARKED = re.compile(r"<!-- walkthrough: (\w+) -->\n```(\w+)\n(.*?)```", re.S)


def walkthroughs() -> dict[str, tuple[str, str]]:
    """Each marked block of the README: its name → (language, code)."""
    return {name: (lang, code) for name, lang, code in MARKED.findall(README.read_text())}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder after `c3 demo --out c3demo`: paper-cnn on 28×28 digits, held-out set."""
    folder = tmp_path_factory.mktemp("walkthrough")
    demo = folder / "c3demo"
    demo.mkdir()
    model = factories.trained_model("paper-cnn", (1, 28, 28), epochs=3)
    (demo / "classifier.safetensors").write_bytes(factories.safetensors_bytes(model))
    (demo / "reference.npz").write_bytes(factories.digits_reference_npz((1, 28, 28), 10))
    return folder


def test_the_walkthroughs_are_marked() -> None:
    assert {name: lang for name, (lang, _) in walkthroughs().items()} == {
        "curl": "sh", "audit": "sh", "python": "python",
    }  # fmt: skip


@pytest.mark.parametrize("name", ["curl", "audit", "python"])
def test_a_walkthrough_runs_as_written(name: str, live_service: LiveService, workdir: Path) -> None:
    lang, code = walkthroughs()[name]
    command = (
        ["bash", "-euo", "pipefail", "-c", code] if lang == "sh" else [sys.executable, "-c", code]
    )
    env = clean_env(C3_SERVER=live_service.url, C3_API_KEY=live_service.key)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # `c3` as after `make install`
    done = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    out = done.stdout
    if name == "curl":
        assert '"state":"succeeded"' in out  # the events stream ended with the final state
        assert "null" not in out.split('"state":"succeeded"')[0]  # every id was captured
        assert (workdir / "grid.png").read_bytes().startswith(b"\x89PNG")
        assert "<html" in (workdir / "report.html").read_text()
        assert '"name": "knn"' in out  # the report's evasion table, by jq
    elif name == "audit":
        assert "verdict:" in out
        assert {p.name for p in (workdir / "audit").iterdir()} == {
            "grid.png", "report.html", "report.json", "samples.zip",
        }  # fmt: skip
    else:
        assert "succeeded:" in out
        assert "confident counterfeits" in out
        assert (workdir / "counterfeits.zip").stat().st_size > 0
