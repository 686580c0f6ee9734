"""Who may import whom (style.md, "Boundaries"): checked on the imports themselves."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(folder: str) -> dict[str, set[str]]:
    """Every module each .py file under `folder` imports (absolute names)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def run(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_contracts_import_no_torch() -> None:
    run(
        "import sys, models.contracts.classifier, models.contracts.inversion, "
        "models.contracts.artifacts, models.contracts.errors; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )


def test_the_api_imports_no_torch_and_of_the_engine_only_its_contracts() -> None:
    run(
        "import sys; from service.app import create_app; create_app(); "
        "import service.routers.inversions, service.serve, service.cli; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "engine = [m for m in sys.modules if m.startswith('models.') "
        "and not m.startswith('models.contracts')]; "
        "assert not engine, engine"
    )


def test_the_client_imports_no_torch_and_of_the_engine_only_its_contracts() -> None:
    run(
        "import sys, service.client; assert 'torch' not in sys.modules, 'torch imported'; "
        "engine = [m for m in sys.modules if m.startswith('models.') "
        "and not m.startswith('models.contracts')]; assert not engine, engine"
    )


def test_contracts_import_nothing_of_the_project_but_contracts() -> None:
    for path, names in imported_modules("models/contracts").items():
        ours = {n for n in names if n.split(".")[0] in ("models", "service", "worker", "tests")}
        assert all(n.startswith("models.contracts") for n in ours), (path, ours)


def test_the_engine_knows_nothing_of_the_service() -> None:
    for path, names in imported_modules("models").items():
        assert not any(n.split(".")[0] in ("service", "worker", "fastapi", "celery",
                                          "redis") for n in names), (path, names)  # fmt: skip


@pytest.mark.parametrize("layer", ["worker"])
def test_the_worker_uses_the_shared_layer_not_the_http_one(layer: str) -> None:
    shared = ("service.records", "service.storage", "service.background", "service.queue",
              "service.settings", "service.housekeeping", "service.exports",
              "service.sample_table", "service.images", "service.fairness", "service.logs",
              "service.tracing")  # fmt: skip
    for path, names in imported_modules(layer).items():
        service = {n for n in names if n.split(".")[0] == "service"}
        assert all(n.startswith(shared) for n in service), (path, service - set(shared))


def test_benches_import_no_tests() -> None:
    for path, names in imported_modules("bench").items():
        assert not any(n.split(".")[0] == "tests" for n in names), path


def test_only_storage_imports_the_storage_drivers() -> None:
    drivers = ("redis", "sqlite3", "boto3", "botocore")
    for layer in ("service", "worker", "models", "bench"):
        for path, names in imported_modules(layer).items():
            if path.startswith("service/storage/"):
                continue
            assert not {n for n in names if n.split(".")[0] in drivers}, path
