"""The OpenAPI document, made to tell the truth, so that clients can be generated from it.

FastAPI documents what it parses itself. What it cannot see is added here, in one place:
- uploads are parsed by a streaming parser (service.uploads), so their multipart bodies are
  declared from the same pydantic models that validate the form (`multipart_body`);
- every error is problem+json (service.errors): each operation lists the statuses it can
  answer with, some implied by the route (a key is needed: 401; an `{id}`: 404; a body: 413;
  any store: 503), the others declared by the route itself (`problems(409, 429)`);
- operation ids read like the handlers (`createClassifier`), and the tags say what they hold.
The security scheme comes from the dependency that authenticates (`service.deps`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel

from service.deps import current_tenant
from service.errors import PROBLEM_JSON
from service.schemas import ListPublic, ProblemPublic

__all__ = ["binary", "install", "multipart_body", "operation_id", "problems"]

TAGS = [
    {"name": "classifiers", "description": "Upload a classifier, follow its validation."},
    {"name": "datasets", "description": "Reference sets of real images, for the metrics."},
    {"name": "inversions", "description": "Audit jobs: start, follow, read samples and reports."},
    {"name": "metrics", "description": "Prometheus figures of the service."},
    {"name": "health", "description": "Liveness and readiness (no key needed)."},
]

PROBLEMS = {
    400: "Malformed request (e.g. a multipart body cut off)",
    401: "No valid API key",
    404: "No such resource for this key",
    409: "The resource is not in a state that allows this",
    413: "The body is larger than the service accepts",
    416: "The byte range lies outside the file",
    415: "Wrong media type of the body",
    422: "An input is invalid: `field` names it",
    429: "A quota is reached: retry after `Retry-After` seconds",
    503: "Storage or the task queue is unavailable: retry shortly",
    507: "The service's disk is full: retry later",
}
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}
}
PROBLEM_HEADERS = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    409: RETRY_AFTER,
    429: RETRY_AFTER,
    503: RETRY_AFTER,
    507: RETRY_AFTER,
}
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UNGUARDED = frozenset({"/healthz", "/readyz"})
"""Routes that touch no store through a request (readiness reports its own 503)."""


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's own problem responses, for its `responses=`; `document` gives each one the
    problem+json content."""
    return {status: {"description": PROBLEMS[status]} for status in statuses}


def binary(media_type: str) -> dict[int | str, dict[str, Any]]:
    """A 200 whose body is a file of `media_type`."""
    schema = {"type": "string", "format": "binary"}
    return {200: {"description": "The file.", "content": {media_type: {"schema": schema}}}}


def operation_id(route: APIRoute) -> str:
    """The handler's name in camelCase: `create_classifier` → `createClassifier`."""
    first, *rest = route.name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def _form_field(schema: dict[str, Any]) -> dict[str, Any]:
    """One metadata field as a multipart text part: lists are sent comma-separated (or as a
    JSON list), objects as JSON; an optional field is sent blank or not at all."""
    options = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    value = {**options[0], **{k: v for k, v in schema.items() if k != "anyOf"}}
    kind = value.get("type")
    if kind not in ("array", "object"):
        return {k: v for k, v in value.items() if v is not None}
    how = "comma-separated (or a JSON list)" if kind == "array" else "a JSON object"
    text: dict[str, Any] = {
        "type": "string",
        "title": value.get("title"),
        "description": f"{value['description'].rstrip('.')}; {how}."
        if value.get("description")
        else f"{how.capitalize()}.",
    }
    default = value.get("default")
    if isinstance(default, list) and default:
        text["default"] = ",".join(str(item) for item in default)
    return {k: v for k, v in text.items() if v is not None}


def multipart_body(model: type[BaseModel], file: str) -> dict[str, Any]:
    """`openapi_extra` for an upload route: a multipart body of a `file` part and the fields of
    `model` (the model that validates them)."""
    schema = model.model_json_schema()
    fields = {name: _form_field(field) for name, field in schema["properties"].items()}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "title": f"{model.__name__}Form",
                        "description": schema.get("description", ""),
                        "properties": {
                            "file": {"type": "string", "format": "binary", "description": file},
                            **fields,
                        },
                        "required": ["file", *schema.get("required", [])],
                    },
                    "encoding": {"file": {"contentType": "application/octet-stream"}},
                }
            },
        }
    }


def _depends_on_a_key(dependant: Dependant) -> bool:
    return dependant.call is current_tenant or any(
        _depends_on_a_key(sub) for sub in dependant.dependencies
    )


def _takes_input(dependant: Dependant) -> bool:
    """Whether a parameter of the route can be invalid (a free-text path id cannot)."""
    typed_path = any(p.field_info.annotation is not str for p in dependant.path_params)
    return bool(
        dependant.query_params or dependant.header_params or dependant.body_params or typed_path
    ) or any(_takes_input(sub) for sub in dependant.dependencies)


def implied_problems(route: Any, method: str) -> set[int]:
    """The problem statuses that follow from what the route is."""
    statuses: set[int] = set()
    if _depends_on_a_key(route.dependant):
        statuses.add(401)
    if "{id}" in route.path:
        statuses.add(404)
    if _takes_input(route.dependant):
        statuses.add(422)
    if method in ("POST", "PUT", "PATCH"):
        statuses.add(413)  # the request gate bounds every body
    if method in WRITES:
        statuses.add(507)
    if route.path not in UNGUARDED:
        statuses.add(503)
    return statuses


def _problem_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": PROBLEMS[status],
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if status in PROBLEM_HEADERS:
        response["headers"] = PROBLEM_HEADERS[status]
    return response


def _add_schema(components: dict[str, Any], model: type[BaseModel], name: str) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    components[name] = schema


def document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document (built once)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
        tags=TAGS,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    _add_schema(components, ProblemPublic, "Problem")
    for route in iter_route_contexts(app.routes):  # included routers' routes, with prefixes
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = schema["paths"][route.path_format][method.lower()]
            responses = operation["responses"]
            responses.pop("422", None)  # FastAPI's own validation error: ours is a problem
            declared = {int(s) for s in route.responses if str(s).isdigit() and int(s) >= 400}
            for status in sorted(declared | implied_problems(route, method)):
                existing = responses.get(str(status), {})
                if "content" not in existing:
                    responses[str(status)] = _problem_response(status)
            _success_headers(route, responses)
    app.openapi_schema = schema
    return schema


def _success_headers(route: Any, responses: dict[str, Any]) -> None:
    """`Location` of what a POST created or started, `Link` to a list's next page."""
    for status in ("201", "202"):
        if status in responses:
            responses[status].setdefault("headers", {})["Location"] = {
                "description": "The resource's URL.",
                "schema": {"type": "string"},
            }
    model = route.response_model
    if isinstance(model, type) and issubclass(model, ListPublic):
        responses["200"].setdefault("headers", {})["Link"] = {
            "description": 'The next page: `<URL>; rel="next"` (as `next` in the body).',
            "schema": {"type": "string"},
        }


def install(app: FastAPI) -> None:
    """Serve `document(app)` as the app's OpenAPI document."""
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
