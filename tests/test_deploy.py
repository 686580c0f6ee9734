"""The scaled-out form stays honest: docker-compose.yml validates, and says what it promises."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def compose_config(*profiles: str, **env: str) -> dict:  # type: ignore[type-arg]
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed (`make tools` installs it)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("C3_")}
    out = subprocess.run(
        ["docker-compose", *(a for p in profiles for a in ("--profile", p)), "config"],
        cwd=ROOT, capture_output=True, text=True, check=True, env=clean | env,
    ).stdout  # fmt: skip
    return yaml.safe_load(out)  # type: ignore[no-any-return]


def test_compose_file_validates_and_wires_the_services() -> None:
    config = compose_config("multi-gpu")
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
    assert services["minio"]["profiles"] == services["minio-bucket"]["profiles"] == ["s3"]
    assert services["api"]["environment"]["C3_S3_BUCKET"] == ""  # blobs on the volume


def test_the_s3_profile_puts_blobs_in_minio() -> None:
    services = compose_config("s3", C3_S3_BUCKET="audits")["services"]
    assert {"minio", "minio-bucket"} <= set(services)
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    assert services["minio-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "audits" in services["minio-bucket"]["environment"]["C3_S3_BUCKET"]
    for name in ("api", "worker-gpu0", "worker-validate"):
        env = services[name]["environment"]
        assert env["C3_S3_BUCKET"] == "audits"
        assert env["C3_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["C3_S3_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]
