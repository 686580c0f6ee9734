"""The scaled-out form stays honest: docker-compose.yml validates, and says what it promises."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def compose_config() -> dict:  # type: ignore[type-arg]
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed (`make tools` installs it)")
    out = subprocess.run(
        ["docker-compose", "--profile", "multi-gpu", "config"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return yaml.safe_load(out)  # type: ignore[no-any-return]


def test_compose_file_validates_and_wires_the_services() -> None:
    config = compose_config()
    services = config["services"]
    assert {"redis", "api", "worker-gpu0", "worker-gpu1", "worker-validate"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert services["api"]["environment"]["C3_REDIS_URL"] == "redis://redis:6379/0"
    for name in ("worker-gpu0", "worker-gpu1"):
        worker = services[name]
        device = worker["deploy"]["resources"]["reservations"]["devices"][0]
        assert device["driver"] == "nvidia"
        assert device["capabilities"] == ["gpu"]
        assert worker["command"][worker["command"].index("--concurrency") + 1] == "1"
    gpus = [
        services[n]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]
        for n in ("worker-gpu0", "worker-gpu1")
    ]
    assert gpus == [["0"], ["1"]]  # one worker process per GPU
    assert all(services[n]["volumes"] for n in ("api", "worker-gpu0", "worker-validate"))
