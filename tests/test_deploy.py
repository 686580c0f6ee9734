"""The scaled-out form stays honest: docker-compose.yml validates, and says what it promises."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def active(config: dict, profile: str) -> set[str]:  # type: ignore[type-arg]
    """The services `docker compose --profile <profile> up` starts (the default ones too)."""
    return {
        name
        for name, service in config["services"].items()
        if not service.get("profiles") or profile in service["profiles"]
    }


def test_profiles_choose_the_inversion_workers() -> None:
    default = {"redis", "api", "worker-validate"}
    expected = {
        "gpu": default | {"worker-gpu0"},
        "multi-gpu": default | {"worker-gpu0", "worker-gpu1"},
        "cpu": default | {"worker-cpu"},
        "ops": default | {"flower"},
        "s3": default | {"minio", "minio-bucket"},
    }
    for profile, services in expected.items():
        config = compose_config(profile)
        assert active(config, profile) == services, profile
    services = compose_config("cpu")["services"]
    cpu = services["worker-cpu"]
    assert "deploy" not in cpu  # no GPU reservation: it runs on any host
    assert cpu["environment"]["C3_DEVICE"] == "cpu"
    assert cpu["command"][cpu["command"].index("--queues") + 1] == "gpu"  # the inversion queue


def test_every_service_has_a_healthcheck() -> None:
    services = compose_config("ops", "s3")["services"]
    for name, service in services.items():
        if service.get("restart") == "no":
            continue  # a one-shot job (minio-bucket): it exits once done
        check = service.get("healthcheck")
        assert check, f"{name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert not check.get("disable"), name
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "/healthcheck" in " ".join(services["flower"]["healthcheck"]["test"])
    workers = [n for n in services if n.startswith("worker-")]
    assert len(workers) == 4
    for name in workers:
        assert services[name]["healthcheck"]["test"] == ["CMD", "python", "-m", "worker.health"]
        # the healthcheck asks over remote control, which these settings turn on
        assert services[name]["environment"]["C3_CELERY_EVENTS"] == "true", name


def test_flower_watches_the_workers_broker() -> None:
    services = compose_config("ops")["services"]
    flower = services["flower"]
    assert flower["profiles"] == ["ops"]
    assert f"--broker={services['api']['environment']['C3_REDIS_URL']}" in flower["command"]
    assert flower["image"].split(":")[1][0].isdigit()  # a pinned release, never `latest`
    published = flower["ports"][0]
    host_ip = published["host_ip"] if isinstance(published, dict) else published.split(":")[0]
    assert host_ip == "127.0.0.1"  # it can revoke tasks: not on every interface


CONSTRAINTS = ROOT / "deploy" / "constraints.txt"
DOCKERFILES = {"api": ROOT / "docker/api.Dockerfile", "worker": ROOT / "docker/worker.Dockerfile"}


def pip_installs(dockerfile: Path) -> list[str]:
    """The `pip install` commands of a Dockerfile's RUN instructions (continuations joined)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    runs = [line.removeprefix("RUN ") for line in text.splitlines() if line.startswith("RUN ")]
    return [part.strip() for run in runs for part in run.split("&&") if "pip install" in part]


def constraints_module() -> Any:
    """deploy/constraints.py, the generator of the constraints file (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("constraints", ROOT / "deploy/constraints.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_images_install_pinned_versions() -> None:
    constraints = constraints_module()
    pins = constraints.pins(CONSTRAINTS.read_text())
    assert pins["torch"] == "2.13.0"
    lines = [line for line in CONSTRAINTS.read_text().splitlines() if line.strip()]
    assert all(line.startswith("#") or "==" in line for line in lines)  # pins, no ranges
    # everything the images install (the project's requirements, followed) is pinned
    needed = constraints.closure(constraints.direct_requirements())
    assert set(needed) - {"c3"} <= set(pins), sorted(set(needed) - set(pins))
    assert {"celery", "fastapi", "redis", "pydantic"} <= set(pins)
    for name, dockerfile in DOCKERFILES.items():
        installs = pip_installs(dockerfile)
        assert installs, name
        for command in installs:
            assert "-c deploy/constraints.txt" in command, f"{name}: {command}"
        text = dockerfile.read_text()
        assert "COPY deploy/constraints.txt" in text
        assert "PIP_CONSTRAINT=/app/deploy/constraints.txt" in text  # build deps too


def test_api_image_installs_no_torch() -> None:
    """The API image installs the base requirements and the tracing extra: nothing in them
    (followed through every dependency's own) is torch."""
    installs = pip_installs(DOCKERFILES["api"])
    assert installs == ["pip install --no-cache-dir -c deploy/constraints.txt '.[tracing]'"]
    assert "! pip show --quiet torch" in DOCKERFILES["api"].read_text()  # the build checks too
    constraints = constraints_module()
    api = constraints.closure(constraints.direct_requirements(("tracing",)))
    assert "torch" not in api
    assert {"fastapi", "celery", "opentelemetry-sdk"} <= set(api)
    worker = constraints.closure(constraints.direct_requirements(("engine",)))
    assert "torch" in worker  # the walk does find torch where it is


GPU_SMOKE = ROOT / "bench" / "gpu_smoke.sh"


def test_gpu_smoke_script_is_clean_shell() -> None:
    if shutil.which("shellcheck"):
        check = subprocess.run(["shellcheck", str(GPU_SMOKE)], capture_output=True, text=True)
    else:  # `make tools` installs shellcheck; without it, at least the syntax
        check = subprocess.run(["bash", "-n", str(GPU_SMOKE)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_gpu_smoke_stops_at_once_without_cuda() -> None:
    """Here there is no GPU: one clear line and status 1, before any service starts."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: run bench/gpu_smoke.sh itself")
    started = time.monotonic()
    run = subprocess.run(
        [str(GPU_SMOKE)], env={**os.environ, "PYTHON": sys.executable},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1
    assert run.stdout == ""
    assert re.fullmatch(
        rf"gpu_smoke: no CUDA device visible to torch \({re.escape(torch.__version__)}\): "
        r"nothing run\n",
        run.stderr,
    ), run.stderr
    assert time.monotonic() - started < 60


def test_gpu_smoke_measures_one_job_end_to_end(tmp_path: Path) -> None:
    """Its engine half, on the CPU (the only device here): a real `c3 serve`, uploads, one job,
    the step rate read from the job's metrics."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_smoke.py"), "--device", "cpu",
         "--steps", "10", "--per-class", "2", "--epochs", "1"],
        env={**os.environ, "C3_TORCH_THREADS": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    last = run.stdout.strip().splitlines()[-1]
    match = re.fullmatch(
        r"gpu_smoke: one c3 job on cpu: 10 steps in ([\d.]+) s = ([\d.]+) steps/s "
        r"\(job wall time [\d.]+ s\)",
        last,
    )
    assert match, run.stdout
    seconds, rate = float(match[1]), float(match[2])
    assert rate == pytest.approx(10 / seconds, rel=0.05)
