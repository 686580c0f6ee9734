"""The OpenAPI document tells the truth: every operation names itself, declares its body, its
problem+json errors and its security; the problems the API answers with fit the schema; the
docs pages load their scripts from this service."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.schemas import ClassifierCreate, DatasetCreate, ProblemPublic
from tests.service.test_uploads import problem

OPEN = {"/healthz", "/readyz"}


@pytest.fixture
def document(api: TestClient) -> dict[str, Any]:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def test_operations_have_readable_ids_tags_and_security(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids)) >= 28
    assert all(re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", i) for i in ids), ids
    assert {"createClassifier", "listSamples", "followInversion", "readReport"} <= set(ids)
    tags = {t["name"] for t in document["tags"]}
    scheme = document["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for method, path, op in operations(document):
        assert op["tags"], (method, path)
        assert set(op["tags"]) <= tags, (method, path)
        if path in OPEN:
            assert "security" not in op, path
        else:
            assert op["security"] == [{"apiKey": []}], (method, path)


def test_every_operation_lists_its_problems(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in document["components"]["schemas"]
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for method, path, op in operations(document):
        if path in OPEN:
            continue
        statuses = {int(s) for s in op["responses"] if int(s) >= 400}
        assert {401, 503} <= statuses, (method, path, statuses)
        if "{id}" in path:
            assert 404 in statuses, (method, path)
        if method == "POST":
            assert {413, 507} <= statuses, (method, path)
        for status in statuses:
            content = op["responses"][str(status)]["content"]
            assert content == {"application/problem+json": {"schema": problem_ref}}
    by_route = {(m, p): op for m, p, op in operations(document)}
    for route, expected in {
        ("POST", "/classifiers"): {400, 415, 422, 429},
        ("POST", "/inversions"): {422, 429},
        ("DELETE", "/classifiers/{id}"): {409},
        ("GET", "/inversions/{id}/samples.zip"): {409},
        ("POST", "/inversions/{id}/cancel"): {409},
    }.items():
        assert expected <= {int(s) for s in by_route[route]["responses"]}, route
    assert "Retry-After" in by_route[("POST", "/inversions")]["responses"]["429"]["headers"]


@pytest.mark.parametrize(
    ("path", "model"), [("/classifiers", ClassifierCreate), ("/datasets", DatasetCreate)]
)
def test_uploads_declare_their_multipart_body(
    document: dict[str, Any], path: str, model: type[Any]
) -> None:
    body = document["paths"][path]["post"]["requestBody"]
    form = body["content"]["multipart/form-data"]["schema"]
    assert body["required"] is True
    assert form["properties"]["file"] == {
        "type": "string",
        "format": "binary",
        "description": form["properties"]["file"]["description"],
    }
    assert set(form["properties"]) == {"file", *model.model_fields}
    assert set(form["required"]) == {"file"} | {
        name for name, field in model.model_fields.items() if field.is_required()
    }
    # Lists and objects travel as text parts (comma-separated or JSON), as the parser takes them.
    assert all(p["type"] in ("string", "number", "integer", "boolean")
               for p in form["properties"].values())  # fmt: skip
    assert document["paths"]["/inversions"]["post"]["requestBody"]["content"]["application/json"]


def test_params_metrics_and_report_are_typed(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    job = schemas["InversionPublic"]["properties"]
    assert job["params"] == {"$ref": "#/components/schemas/JobParams"}
    assert {"$ref": "#/components/schemas/ClassMetrics"} in job["metrics"]["anyOf"]
    assert {"$ref": "#/components/schemas/Progress"} in job["progress"]["anyOf"]
    metrics = document["paths"]["/inversions/{id}/metrics.json"]["get"]["responses"]["200"]
    assert metrics["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InversionMetrics"
    }
    report = document["paths"]["/inversions/{id}/report"]["get"]["responses"]["200"]["content"]
    assert report["application/json"]["schema"] == {"$ref": "#/components/schemas/ReportPublic"}
    assert set(schemas["ReportPublic"]["properties"]) >= {"metrics", "ood", "settings"}


def test_paging_is_documented(document: dict[str, Any]) -> None:
    for path in ("/classifiers", "/datasets", "/inversions", "/inversions/{id}/samples"):
        operation = document["paths"][path]["get"]
        params = {p["name"]: p for p in operation["parameters"]}
        assert params["offset"]["schema"]["minimum"] == 0
        assert params["limit"]["schema"]["maximum"] in (500, 1000)
        assert re.search(r"at most \d+", params["limit"]["description"])
        assert "Link" in operation["responses"]["200"]["headers"]
        page = document["components"]["schemas"][
            operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit(
                "/", 1
            )[1]
        ]
        assert {"data", "count", "next"} <= set(page["properties"])


def test_problems_fit_the_documented_schema(api: TestClient) -> None:
    for response in (
        api.get("/inversions/job_nope"),
        api.get("/classifiers", params={"limit": 0}),
        api.post("/classifiers", content=b"x", headers={"content-type": "text/plain"}),
    ):
        body = problem(response, response.status_code)
        parsed = ProblemPublic.model_validate(body)
        assert parsed.instance == response.request.url.path
        assert parsed.type.startswith("/problems/")


def test_docs_pages_load_their_scripts_from_this_service(api: TestClient) -> None:
    for page, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = api.get(page).text
        sources = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert sources, page
        assert all(s.startswith("/") for s in sources), sources  # nothing from another host
        assert any(s.endswith(script) for s in sources)
        asset = api.get(next(s for s in sources if s.endswith(script)))
        assert asset.status_code == 200
        assert len(asset.content) > 100_000
