"""Upload handling in the API itself: limits, media types, form validation. (What happens to
the file afterwards, in the worker's sandbox, is tested in tests/e2e.)"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings
from tests.service.test_access import CLASSIFIER_FORM, upload


def problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("form", "field", "words"),
    [
        ({"format": "pickle"}, "format", "safetensors"),
        ({"input_shape": "1,28"}, "input_shape", ""),
        ({"input_shape": "0,28,28"}, "input_shape", "must have 1 to 4"),
        ({"input_shape": "[1, 28, oops]"}, "input_shape", "JSON"),
        ({"class_names": "only-one"}, "class_names", "at least 2"),
        ({"class_names": "a,a,b"}, "class_names", "unique"),
        ({"std": "0"}, "std", "positive"),
        ({"mean": "0.1,0.2"}, "", "mean has 2 values: give 1 or one per channel"),
        ({"architecture": ""}, "", "architecture"),
        ({"architecture_config": "{not json"}, "architecture_config", "JSON"),
        ({"surprise": "x"}, "surprise", "Extra inputs"),
    ],
)
def test_bad_metadata_is_422_naming_the_field(
    api: TestClient, form: dict[str, str], field: str, words: str
) -> None:
    body = problem(upload(api, **form), 422)
    if field:
        assert body["field"] == field
    assert words in body["detail"]


def test_missing_fields_and_file(api: TestClient) -> None:
    body = problem(api.post("/classifiers", data={"name": "x"}, files={"file": ("f", b"x")}), 422)
    assert body["field"] in {"format", "input_shape", "class_names"}
    body = problem(
        api.post("/classifiers", data=CLASSIFIER_FORM, files={"other": ("f", b"x")}), 422
    )
    assert body["field"] == "file"


def test_wrong_content_type_is_415(api: TestClient) -> None:
    problem(api.post("/classifiers", json=CLASSIFIER_FORM), 415)
    problem(api.post("/classifiers", content=b"raw", headers={"content-type": "text/plain"}), 415)


def test_malformed_multipart_is_400(api: TestClient) -> None:
    response = api.post(
        "/classifiers",
        content=b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n",
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    problem(response, 400)


def test_oversize_upload_is_413_before_reading_it(c3_env: dict[str, str]) -> None:
    settings = ServiceSettings(max_upload_bytes=1000)
    with TestClient(create_app(settings), client=("127.0.0.1", 1)) as client:
        declared = client.post(
            "/classifiers", content=b"x" * 10,
            headers={"content-type": "multipart/form-data; boundary=b",
                     "content-length": str(50 * 1024 * 1024)},
        )  # fmt: skip
        assert problem(declared, 413)["detail"].startswith("the upload is larger")

        def body():  # type: ignore[no-untyped-def]  # chunked: no Content-Length to go by
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="m"\r\n\r\n'
            for _ in range(100):
                yield b"y" * 100
            yield b"\r\n--b--\r\n"

        streamed = client.post(
            "/classifiers", content=body(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )  # fmt: skip
        assert problem(streamed, 413)["field"] == "file"
        assert client.get("/classifiers").json()["count"] == 0  # nothing kept


def test_upload_is_hashed_and_listed(api: TestClient) -> None:
    import hashlib

    created = upload(api, tags="mnist,prod", description="first try")
    assert created.status_code == 202
    doc = created.json()
    assert doc["status"] == "validating"
    assert doc["sha256"] == hashlib.sha256(b"not really weights").hexdigest()
    assert doc["size_bytes"] == len(b"not really weights")
    assert doc["tags"] == ["mnist", "prod"]
    assert doc["num_classes"] == 10
    upload(api, name="other")
    assert api.get("/classifiers", params={"tag": "prod"}).json()["count"] == 1
    assert api.get("/classifiers", params={"name": "OTH"}).json()["count"] == 1
    page = api.get("/classifiers", params={"limit": 1, "offset": 1}).json()
    assert page["count"] == 2
    assert [c["name"] for c in page["data"]] == ["digits"]
    delete = api.delete(f"/classifiers/{doc['id']}")
    assert problem(delete, 409)["detail"].startswith("the classifier is being validated")
    assert problem(api.get(f"/classifiers/{doc['id']}/file"), 409)


def test_dataset_format_must_be_known(api: TestClient) -> None:
    response = api.post("/datasets", data={"name": "ref"}, files={"file": ("ref.bin", b"x")})
    assert problem(response, 422)["field"] == "format"
    response = api.post("/datasets", data={"name": "ref"}, files={"file": ("ref.npz", b"x")})
    assert response.status_code == 202
    assert response.json()["format"] == "npz"
