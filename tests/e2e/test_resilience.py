"""Faults injected into the real thing: a job that outgrows its memory, a full disk, an API
SIGKILLed during a burst of uploads and jobs. Nothing stays stuck, nothing is orphaned, and the
host is never the one that fails."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from service.app import create_app
from service.settings import ServiceSettings
from service.storage import keys
from tests.conftest import LiveApi, clean_env
from tests.e2e.conftest import CLASSIFIER_FORM, FINISHED, Service, classifier_bytes, worker_env
from tests.e2e.test_hostile_uploads import ONNX, onnx_linear_plus

MB = 1024 * 1024


@pytest.fixture
def service_with(tmp_path: Path) -> Iterator[Any]:
    """A service (in-process API, real worker) built from the settings a test gives."""
    opened: list[tuple[TestClient, Service]] = []

    def make(data_dir: Path, api: dict[str, Any], worker: dict[str, str]) -> Service:
        settings = ServiceSettings(data_dir=data_dir, **api)
        client = TestClient(create_app(settings), client=("127.0.0.1", 50000)).__enter__()
        service = Service(client, worker_env(data_dir, None) | worker, {}, tmp_path)
        service.start_worker()
        opened.append((client, service))
        return service

    yield make
    for client, service in opened:
        for worker in service.workers:
            worker.stop()
        client.__exit__(None, None, None)


def onnx_powers_of_a_padding_by_the_batch() -> bytes:
    """Pads by 20 pixels per image, then takes powers up to the fifth: at a batch of 48 every
    tensor stays under the interpreter's own cap (50 million values), but together, with their
    gradients, they need well over a gigabyte."""
    return onnx_linear_plus(
        [
            helper.make_node("Mul", ["n", "twenty"], ["p"]),
            helper.make_node("Concat", ["zeros", "p", "p"], ["pads"], axis=0),
            helper.make_node("Pad", ["x", "pads"], ["big"]),
            helper.make_node("Mul", ["big", "big"], ["p2"]),
            helper.make_node("Mul", ["p2", "big"], ["p3"]),
            helper.make_node("Mul", ["p3", "big"], ["p4"]),
            helper.make_node("Mul", ["p4", "big"], ["squared"]),
            helper.make_node("ReduceMean", ["squared", "spatial"], ["m"], keepdims=0),
            helper.make_node("Unsqueeze", ["m", "second"], ["m1"]),
            helper.make_node("Add", ["logits", "m1"], ["y"]),
        ],
        [
            helper.make_tensor("twenty", TensorProto.INT64, [1], [20]),
            helper.make_tensor("zeros", TensorProto.INT64, [6], [0] * 6),
            helper.make_tensor("spatial", TensorProto.INT64, [3], [1, 2, 3]),
            helper.make_tensor("second", TensorProto.INT64, [1], [1]),
        ],
    )


def test_a_job_past_its_memory_budget_fails_itself_not_the_worker(
    service_with: Any, tmp_path: Path
) -> None:
    """The API's estimate is switched off here (a budget of 1 TB), so only the worker's own cap
    (100 MB and its headroom) stands between the host and a graph that needs over a gigabyte
    at the job's batch size."""
    service = service_with(
        tmp_path / "data", {"job_memory_mb": 1 << 20}, {"C3_JOB_MEMORY_MB": "100"}
    )
    response = service.request(
        "POST", "/classifiers", headers={"Prefer": "wait=90"},
        data={**CLASSIFIER_FORM, **ONNX, "name": "pads"},
        files={"file": ("pad.onnx", onnx_powers_of_a_padding_by_the_batch())},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    job = service.start_job(classifier_id=response.json()["id"], batch_size=48, steps=5)
    done = service.wait(job["id"])
    assert done["state"] == "failed"
    assert done["error"]["title"] == "Out of memory", done["error"]
    assert "100 MB one job may use" in done["error"]["detail"]
    assert service.workers[0].proc.poll() is None  # the worker lives on ...
    again = service.start_job(classifier_id=response.json()["id"], batch_size=4, steps=2,
                              samples_per_class=1)  # fmt: skip
    assert service.wait(again["id"])["state"] == "succeeded"  # ... and runs the next job


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MB file system of its own (tmpfs), so the test can fill it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here: {result.stderr.decode()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """A file that leaves `leave` bytes free on `disk`."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with filler.open("wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_a_full_disk_is_a_state_the_service_recovers_from(
    service_with: Any, small_disk: Path
) -> None:
    data = small_disk / "data"
    service = service_with(
        data, {"min_free_mb": 8}, {"C3_MIN_FREE_MB": "8", "C3_CHECKPOINT_EVERY_STEPS": "5"}
    )
    clf = service.upload_classifier()
    old = service.start_job(classifier_id=clf["id"], samples_per_class=2, steps=5)
    assert service.wait(old["id"])["state"] == "succeeded"
    assert service.request("GET", "/readyz").status_code == 200

    # room for the records (and their indexes), none for a job's files (3 MB)
    filler = fill(small_disk, leave=1024 * 1024)
    ready = service.request("GET", "/readyz")
    assert ready.status_code == 503
    assert "disk full" in ready.json()["checks"]["disk"]
    job = service.start_job(classifier_id=clf["id"], samples_per_class=400, steps=30)
    failed = service.wait(job["id"])
    assert failed["state"] == "failed", failed
    assert failed["error"]["title"] == "Disk full"
    assert failed["error"]["code"] == "disk-full"

    assert service.request("DELETE", f"/inversions/{old['id']}").status_code == 204  # frees
    filler.unlink()  # the operator makes room: the job resumes by itself, from its checkpoint
    done = service.wait(job["id"], until=lambda j: j["state"] == "succeeded", timeout=120)
    assert done["sample_count"] == 4000
    assert service.request("GET", "/readyz").status_code == 200


# --- chaos: the API killed in the middle of a burst --------------------------------------------


def burst(url: str, classifier_id: str, stop: threading.Event, n: int) -> None:
    """Uploads and job starts, as fast as the API takes them, until `stop` or an error."""
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in range(n):
            if stop.is_set():
                return
            try:
                if i % 2:
                    client.post(
                        "/classifiers",
                        data={**CLASSIFIER_FORM, "name": f"burst-{i}"},
                        files={"file": ("m.safetensors", classifier_bytes())},
                    )
                else:
                    client.post(
                        "/inversions",
                        json={"classifier_id": classifier_id, "steps": 2, "samples_per_class": 1},
                    )
            except httpx.HTTPError:  # the API died under us: that is the point
                return


def test_an_api_killed_mid_burst_leaves_nothing_stuck_or_orphaned(
    tmp_path: Path, start_worker: Any
) -> None:
    data = tmp_path / "data"
    env = clean_env(**worker_env(data, None)) | {
        "C3_REPUBLISH_AFTER_SECONDS": "1",
        "C3_GC_SECONDS": "1",
        "C3_GC_GRACE_SECONDS": "2",
        "C3_QUOTA_ACTIVE_JOBS": "1000",
        "C3_QUOTA_VALIDATIONS": "1000",
    }
    api = LiveApi(env).start()
    start_worker(env)
    try:
        with httpx.Client(base_url=api.url, timeout=60) as client:
            first = client.post(
                "/classifiers", headers={"Prefer": "wait=60"}, data=CLASSIFIER_FORM,
                files={"file": ("m.safetensors", classifier_bytes())},
            )  # fmt: skip
            assert first.status_code == 201, first.text
            clf = first.json()["id"]
            for _round in range(3):  # kill it three times, at different moments
                stop = threading.Event()
                threads = [
                    threading.Thread(target=burst, args=(api.url, clf, stop, 40)) for _ in range(4)
                ]
                for t in threads:
                    t.start()
                # early kills: every request that gets through is a job or a validation the
                # worker must then finish (about a second each), and the point is the kill
                time.sleep(0.3 + 0.1 * _round)
                api.kill()
                stop.set()
                for t in threads:
                    t.join()
                api.start()

        with httpx.Client(base_url=api.url, timeout=30) as client:
            deadline = time.monotonic() + 180
            while True:
                jobs = client.get("/inversions", params={"limit": 500}).json()["data"]
                uploads = client.get("/classifiers", params={"limit": 500}).json()["data"]
                waiting = [j["id"] for j in jobs if j["state"] not in FINISHED] + [
                    c["id"] for c in uploads if c["status"] == "validating"
                ]
                if not waiting:
                    break
                assert time.monotonic() < deadline, f"stuck: {waiting}"
                time.sleep(1)
        assert len(jobs) > 3  # the bursts got requests through
        assert len(uploads) > 3
        assert all(j["state"] == "succeeded" for j in jobs), [j["error"] for j in jobs]
        assert all(c["status"] == "ready" for c in uploads)

        owners = {("classifiers", c["id"]) for c in uploads} | {("jobs", j["id"]) for j in jobs}
        deadline = time.monotonic() + 30
        while True:  # the collector removes what no record owns (after its grace period)
            blobs = [
                str(p.relative_to(data / "blobs"))
                for p in (data / "blobs").rglob("*")
                if p.is_file()
            ]
            orphans = [
                b for b in blobs
                if (o := keys.owner(b)) is None or (o[1], o[2]) not in owners or b.endswith(
                    "/upload") or ".tmp-" in b
            ]  # fmt: skip
            if not orphans:
                break
            assert time.monotonic() < deadline, f"orphaned blobs: {orphans[:10]}"
            time.sleep(1)
    finally:
        api.stop()
