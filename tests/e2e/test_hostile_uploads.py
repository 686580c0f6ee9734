"""A corpus of hostile and broken uploads, each refused with a 4xx and a useful detail, through
the real API and a real worker's sandbox, and none of them running code."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from fastapi.testclient import TestClient
from onnx import TensorProto, helper
from PIL import Image

from service.app import create_app
from service.auth import create_key
from service.settings import ServiceSettings
from service.storage import open_stores
from tests import factories
from tests.e2e.conftest import ARCH, CLASSIFIER_FORM, SHAPE, Service, worker_env

MARKER_DIR = Path("/tmp/c3-hostile-markers")
LIMIT = 2 * 1024 * 1024  # this module's upload limit


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, dict[str, str]]]:
    shutil.rmtree(MARKER_DIR, ignore_errors=True)
    workdir = tmp_path_factory.mktemp("hostile")
    settings = ServiceSettings(data_dir=workdir / "data", max_upload_bytes=LIMIT)
    stores = open_stores(settings)
    alice = {"Authorization": f"Bearer {create_key(stores.jobs, 'alice')}"}
    bob = {"Authorization": f"Bearer {create_key(stores.jobs, 'bob')}"}
    stores.close()
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as client:
        service = Service(client, worker_env(workdir / "data", None), alice, workdir)
        service.start_worker()
        try:
            yield service, bob
        finally:
            for worker in service.workers:
                worker.stop()


@pytest.fixture(scope="module")
def service(tenants: tuple[Service, dict[str, str]]) -> Service:
    return tenants[0]


# -- hostile bytes ----------------------------------------------------------------------------


def marker(name: str) -> str:
    MARKER_DIR.mkdir(exist_ok=True)
    return str(MARKER_DIR / name)


def mlp(classes: int = 10) -> torch.nn.Module:
    return factories.random_model(ARCH, SHAPE, classes)


def mlp_bytes(edit: Callable[[torch.nn.Module], None] | None = None, classes: int = 10) -> bytes:
    model = mlp(classes)
    if edit is not None:
        with torch.no_grad():
            edit(model)
    return factories.safetensors_bytes(model)


def safetensors_header(header: dict[str, object], payload: bytes = b"\0" * 64) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *SHAPE])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])


def onnx_graph(
    nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], domain: str = ""
) -> bytes:
    graph = helper.make_graph(nodes, "g", [X], [Y], initializer=inits)
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid(domain, 18)]
    ).SerializeToString()


def onnx_linear(location: str | None = None) -> bytes:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [64, 10], [0.01] * 640)
    if location is not None:
        weight.ClearField("float_data")
        weight.data_location = TensorProto.EXTERNAL
        entry = weight.external_data.add()
        entry.key, entry.value = "location", location
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [-1, 64])
    nodes = [
        helper.make_node("Reshape", ["x", "s"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["y"]),
    ]
    return onnx_graph(nodes, [weight, shape])


def onnx_linear_plus(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> bytes:
    """A linear classifier of the 8×8 input whose logits (`logits`) `nodes` turn into `y`; the
    batch size is available to them as `n` (int64, shape [1])."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [64, 10], [0.01 * i for i in range(640)])
    constants = [
        weight,
        helper.make_tensor("flat_shape", TensorProto.INT64, [2], [-1, 64]),
        helper.make_tensor("first", TensorProto.INT64, [1], [0]),
    ]
    head = [
        helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "first"], ["n"], axis=0),
    ]
    return onnx_graph(head + nodes, constants + inits)


def onnx_padding_by_the_batch() -> bytes:
    """Pads its input by 80 pixels per image in the batch: memory grows with the batch cubed
    (16 MB at a batch of 8, 6 GB at 64), so a check at small batches passes."""
    return onnx_linear_plus(
        [
            helper.make_node("Mul", ["n", "eighty"], ["p"]),
            helper.make_node("Concat", ["zeros", "p", "p"], ["pads"], axis=0),
            helper.make_node("Pad", ["x", "pads"], ["big"]),
            helper.make_node("ReduceMean", ["big", "spatial"], ["m"], keepdims=0),
            helper.make_node("Unsqueeze", ["m", "second"], ["m1"]),
            helper.make_node("Add", ["logits", "m1"], ["y"]),
        ],
        [
            helper.make_tensor("eighty", TensorProto.INT64, [1], [80]),
            helper.make_tensor("zeros", TensorProto.INT64, [6], [0] * 6),
            helper.make_tensor("spatial", TensorProto.INT64, [3], [1, 2, 3]),
            helper.make_tensor("second", TensorProto.INT64, [1], [1]),
        ],
    )


def onnx_nan_above_batch_8() -> bytes:
    """Logits times sqrt(8.5 − batch): finite for batches of up to 8, NaN above."""
    return onnx_linear_plus(
        [
            helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
            helper.make_node("Sub", ["limit", "nf"], ["room"]),
            helper.make_node("Sqrt", ["room"], ["scale"]),
            helper.make_node("Mul", ["logits", "scale"], ["y"]),
        ],
        [helper.make_tensor("limit", TensorProto.FLOAT, [1], [8.5])],
    )


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def npz_compressed(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def npz_with_objects() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([{"evil": 1}, None], dtype=object))
    return buffer.getvalue()


def png(size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


def png_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_claiming(size: int, actual: int = 10 * 1024 * 1024) -> bytes:
    """A member of `actual` bytes of zeros whose zip headers claim `size` bytes."""
    data = bytearray(png_zip({"a.png": b"\0" * actual}))
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, size)
    struct.pack_into("<I", data, central + 24, size)
    return bytes(data)


# -- the corpus -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[], bytes]
    detail: str
    status: int = 422
    form: dict[str, str] = field(default_factory=dict)
    endpoint: str = "/classifiers"


ONNX = {"format": "onnx", "architecture": ""}
CASES = [
    # executable formats: refused by sniffing, never loaded
    Case("pickle", lambda: factories.pickle_payload_bytes(marker("pickle5")), "pickle"),
    Case(
        "pickle-protocol-0", lambda: factories.pickle_payload_bytes(marker("pickle0"), 0), "pickle"
    ),
    Case(
        "pickle-as-onnx",
        lambda: factories.pickle_payload_bytes(marker("as-onnx")),
        "pickle",
        form=ONNX,
    ),
    Case("torch-save", lambda: factories.torch_save_bytes(mlp().state_dict()), "refused"),
    Case("torchscript", lambda: factories.torchscript_bytes(mlp(), SHAPE), "TorchScript"),
    Case("pt2", lambda: factories.pt2_bytes(mlp(), SHAPE), ".pt2"),
    # broken or lying safetensors
    Case("truncated-safetensors", lambda: mlp_bytes()[:1000], "truncated"),
    Case(
        "huge-tensor-claim",
        lambda: safetensors_header(
            {"w": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 1 << 42]}}
        ),
        "truncated",
    ),
    Case("huge-header-length", lambda: struct.pack("<Q", 1 << 40) + b"{}", "header declares"),
    Case("header-not-json", lambda: b"\x10\0\0\0\0\0\0\0not json at all!", "not a safetensors"),
    Case("empty-file", lambda: b"", "empty"),
    Case(
        "weights-do-not-fit",
        lambda: factories.safetensors_bytes(factories.random_model("paper-cnn", (1, 28, 28))),
        "do not fit",
    ),
    Case("unknown-architecture", mlp_bytes, "unknown architecture", form={"architecture": "gpt"}),
    Case(
        "unknown-config-key", mlp_bytes, "cannot build", form={"architecture_config": '{"wide": 1}'}
    ),
    Case(
        "memory-bomb-config",
        mlp_bytes,
        "parameters: at most",
        form={"architecture_config": '{"hidden": [1048576, 1048576]}'},
    ),
    # ONNX
    Case("onnx-garbage", lambda: b"\x08\x07garbage" * 10, "ONNX", form=ONNX),
    Case("onnx-external-data", lambda: onnx_linear("weights.bin"), "external data", form=ONNX),
    Case(
        "onnx-path-traversal",
        lambda: onnx_linear("../../../../etc/passwd"),
        "external data",
        form=ONNX,
    ),
    Case(
        "onnx-loop",
        lambda: onnx_graph([helper.make_node("Loop", ["m", "c"], ["y"])], []),
        "ONNX operator Loop is not supported",
        form=ONNX,
    ),
    Case(
        "onnx-custom-domain",
        lambda: onnx_graph(
            [helper.make_node("Relu", ["x"], ["y"], domain="com.evil")], [], domain="com.evil"
        ),
        "domain",
        form=ONNX,
    ),
    Case(
        "onnx-wrong-declared-shape",
        lambda: factories.onnx_bytes(mlp(), SHAPE, dynamo=False),
        "input",
        form={**ONNX, "input_shape": "3,8,8"},
    ),
    # models that load but cannot be inverted
    Case(
        "class-count-mismatch",
        lambda: mlp_bytes(classes=12),
        "declared 10 classes, model outputs 12",
    ),
    Case(
        "class-count-mismatch-onnx",
        lambda: factories.onnx_bytes(mlp(12), SHAPE, dynamo=False),
        "declared 10 classes, model outputs 12",
        form=ONNX,
    ),
    Case("nan-outputs", lambda: mlp_bytes(lambda m: m.net[-1].bias.fill_(float("nan"))), "NaN"),
    Case(
        "ignores-its-input",
        lambda: mlp_bytes(lambda m: m.net[1].weight.zero_()),
        "does not depend on its input",
    ),
    Case(
        "onnx-nan-at-larger-batches",
        onnx_nan_above_batch_8,
        "NaN or infinite logits for a batch of 16 images",
        form=ONNX,
    ),
    # request-level refusals
    Case("oversize-body", lambda: b"\0" * (LIMIT + 1), "larger than the limit", status=413),
    # reference datasets
    Case(
        "zip-bomb",
        lambda: zip_claiming(3 * 1024**3),
        "unpacks to more than",
        endpoint="/datasets",
        form={"format": "png-zip"},
    ),
    Case(
        "zip-lying-sizes",
        lambda: zip_claiming(100),
        "corrupt",
        endpoint="/datasets",
        form={"format": "png-zip"},
    ),
    Case(
        "npz-object-array",
        npz_with_objects,
        "objects",
        endpoint="/datasets",
        form={"format": "npz"},
    ),
    Case(
        "npz-without-x",
        lambda: npz(images=np.zeros((2, 1, 8, 8), np.uint8)),
        "'x'",
        endpoint="/datasets",
        form={"format": "npz"},
    ),
    Case(
        "npz-out-of-range",
        lambda: npz(x=np.full((2, 1, 8, 8), 3.0, np.float32)),
        "[0, 1]",
        endpoint="/datasets",
        form={"format": "npz"},
    ),
    Case(
        "npz-nan",
        lambda: npz(x=np.full((2, 1, 8, 8), np.nan, np.float32)),
        "NaN",
        endpoint="/datasets",
        form={"format": "npz"},
    ),
    Case(
        "npz-3d",
        lambda: npz(x=np.zeros((2, 8, 8), np.uint8)),
        "4 dimensions",
        endpoint="/datasets",
        form={"format": "npz"},
    ),
    Case(
        "npz-labels-mismatch",
        lambda: npz(x=np.zeros((2, 1, 8, 8), np.uint8), y=np.zeros(3, np.int64)),
        "labels",
        endpoint="/datasets",
        form={"format": "npz"},
    ),
    Case(
        "pickle-as-npz",
        lambda: factories.pickle_payload_bytes(marker("as-npz")),
        "zip",
        endpoint="/datasets",
        form={"format": "npz"},
    ),
    Case(
        "zip-path-traversal",
        lambda: png_zip({"../../evil.png": png()}),
        "unsafe path",
        endpoint="/datasets",
        form={"format": "png-zip"},
    ),
    Case(
        "zip-fake-png",
        lambda: png_zip({"a.png": b"GIF89a not a png"}),
        "not a PNG",
        endpoint="/datasets",
        form={"format": "png-zip"},
    ),
    Case(
        "npz-zeros-unpacking-to-300-mb",  # 300 KB sent, 300 MB to hold: amplification
        lambda: npz_compressed(x=np.zeros((300, 1, 512, 512), np.float32)),
        "bytes unpacked",
        endpoint="/datasets",
        form={"format": "npz"},
    ),
    Case(
        "zip-undecodable-png",
        lambda: png_zip({"a.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 64}),
        "cannot be decoded as PNG",
        endpoint="/datasets",
        form={"format": "png-zip"},
    ),
    Case(
        "zip-mixed-sizes",
        lambda: png_zip({"a.png": png((8, 8)), "b.png": png((9, 9))}),
        "one size",
        endpoint="/datasets",
        form={"format": "png-zip"},
    ),
    Case(
        "zip-bad-labels",
        lambda: png_zip({"a.png": png(), "labels.csv": b"a.png,1\nb,cat\n"}),
        "not an integer",
        endpoint="/datasets",
        form={"format": "png-zip"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_upload_is_refused(service: Service, case: Case) -> None:
    form = (
        {**CLASSIFIER_FORM, **case.form}
        if case.endpoint == "/classifiers"
        else {"name": case.id, **case.form}
    )
    form = {k: v for k, v in form.items() if v != ""}
    response = service.request(
        "POST", case.endpoint, headers={"Prefer": "wait=90"}, data=form,
        files={"file": (f"{case.id}.bin", case.make())},
    )  # fmt: skip
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert case.detail in problem["detail"], problem
    assert "cannot be read" not in problem["detail"], "refused for an unforeseen reason"
    assert "object at 0x" not in problem["detail"], "a repr is no reason"
    if case.status == 422 and "id" in problem:  # refused by the sandbox: the record says why
        record = service.request("GET", f"{case.endpoint}/{problem['id']}").json()
        assert record["status"] == "rejected"
        assert record["reason"] == problem["detail"]


def test_no_upload_ran_code() -> None:
    assert MARKER_DIR.exists()  # the pickle cases ran (they create the folder)
    assert list(MARKER_DIR.iterdir()) == []


def test_request_level_refusals(service: Service) -> None:
    wrong_type = service.request("POST", "/classifiers", json=CLASSIFIER_FORM)
    assert wrong_type.status_code == 415
    missing = service.request(
        "POST", "/classifiers", data={"format": "onnx"}, files={"file": ("m.onnx", b"x")}
    )
    assert missing.status_code == 422
    assert missing.json()["field"] in {"name", "input_shape", "class_names"}
    no_file = service.request("POST", "/classifiers", data=CLASSIFIER_FORM)
    assert no_file.status_code in (415, 422)
    boundary = "c3boundary"
    cut_off = service.request(  # the connection dropped before the closing boundary
        "POST",
        "/classifiers",
        content=(
            f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="m.onnx"\r\n\r\nhalf of a mod'
        ).encode(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert cut_off.status_code == 400
    assert "closing boundary" in cut_off.json()["detail"]
    assert service.request("GET", "/classifiers").json()["count"] == 0 or all(
        c["name"] != "x" for c in service.request("GET", "/classifiers").json()["data"]
    )


def test_a_graph_whose_memory_outgrows_its_batch_is_held_to_its_measured_cost(
    service: Service,
) -> None:
    """It passes the validation (its small batches are harmless), which measures its cost;
    the job that would need gigabytes at its batch size is refused before it runs."""
    response = service.request(
        "POST", "/classifiers", headers={"Prefer": "wait=90"},
        data={**CLASSIFIER_FORM, **ONNX, "name": "pads-by-the-batch"},
        files={"file": ("pad.onnx", onnx_padding_by_the_batch())},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    clf = response.json()["id"]
    refused = service.request("POST", "/inversions", json={"classifier_id": clf})
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "batch_size"
    assert "smaller batch_size" in refused.json()["detail"]
    small = service.request(
        "POST", "/inversions", json={"classifier_id": clf, "batch_size": 4, "steps": 2,
                                     "samples_per_class": 1},
    )  # fmt: skip
    assert small.status_code == 202, small.text
    assert service.wait(small.json()["id"])["state"] == "succeeded"


def test_reference_labels_beyond_the_classifiers_classes_are_refused(service: Service) -> None:
    clf = service.upload_classifier()
    response = service.request(
        "POST", "/datasets", headers={"Prefer": "wait=90"}, data={"name": "labels-to-12"},
        files={"file": ("ref.npz", npz(x=np.zeros((13, 1, 8, 8), np.uint8),
                                        y=np.arange(13, dtype=np.int64)))},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    job = service.request(
        "POST",
        "/inversions",
        json={"classifier_id": clf["id"], "dataset_id": response.json()["id"]},
    )
    assert job.status_code == 422
    assert "labels up to 12" in job.json()["detail"]


def test_other_tenants_ids_do_not_exist(tenants: tuple[Service, dict[str, str]]) -> None:
    service, bob = tenants
    mine = service.upload_classifier(
        factories.safetensors_bytes(factories.trained_model(ARCH, SHAPE, epochs=1))
    )
    for method, path in [
        ("GET", f"/classifiers/{mine['id']}"),
        ("GET", f"/classifiers/{mine['id']}/file"),
        ("DELETE", f"/classifiers/{mine['id']}"),
    ]:
        response = service.client.request(method, path, headers=bob)
        assert response.status_code == 404, (method, path)
    stolen = service.client.post("/inversions", json={"classifier_id": mine["id"]}, headers=bob)
    assert stolen.status_code == 422
    assert stolen.json()["field"] == "classifier_id"
    assert service.request("GET", f"/classifiers/{mine['id']}").status_code == 200


def test_a_validation_that_hangs_ends_rejected_not_stuck(tmp_path: Path) -> None:
    """A worker whose sandbox allows 1 ms: every validation overruns it, as a hang would."""
    settings = ServiceSettings(data_dir=tmp_path / "data")
    with TestClient(create_app(settings), client=("127.0.0.1", 1)) as client:
        service = Service(
            client,
            {**worker_env(tmp_path / "data", None), "C3_VALIDATE_WALL_SECONDS": "0.001"},
            {},
            tmp_path,
        )
        service.start_worker()
        try:
            response = service.request(
                "POST", "/classifiers", headers={"Prefer": "wait=60"}, data=CLASSIFIER_FORM,
                files={"file": ("m.safetensors", mlp_bytes())},
            )  # fmt: skip
            assert response.status_code == 422, response.text
            assert "did not finish within" in response.json()["detail"]
            record = service.request("GET", f"/classifiers/{response.json()['id']}").json()
            assert record["status"] == "rejected"
        finally:
            for worker in service.workers:
                worker.stop()
