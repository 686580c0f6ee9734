"""What the client raises: a problem+json answer becomes an exception of its status (grouped
by family, 4xx `ClientError`, 5xx `ServerError`) carrying the parsed `.problem`."""

from __future__ import annotations

import json

import httpx
from pydantic import ValidationError

from service.schemas import ProblemPublic

__all__ = [
    "ApiError",
    "BadRequestError",
    "C3Error",
    "ClientError",
    "ConflictError",
    "ConnectionFailed",
    "InsufficientStorageError",
    "InvalidInputError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ServerError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnavailableError",
    "UnsupportedMediaTypeError",
    "UploadRejected",
    "error_for",
]


class C3Error(Exception):
    """Anything the client raises on purpose."""


class ConnectionFailed(C3Error):
    """The service could not be reached (after the retries)."""


class ApiError(C3Error):
    """The service answered with an error; `.problem` holds its RFC 9457 details."""

    def __init__(self, problem: ProblemPublic, response: httpx.Response | None = None) -> None:
        super().__init__(problem.detail)
        self.problem, self.response, self.status = problem, response, problem.status

    @property
    def retry_after(self) -> float | None:
        """Seconds the service asked to wait, when it did."""
        value = self.response.headers.get("retry-after") if self.response is not None else None
        return float(value) if value and value.isdigit() else None


class ClientError(ApiError):
    """4xx: the request must change before it can succeed (429 aside: it may wait)."""


class BadRequestError(ClientError):
    """400"""


class UnauthorizedError(ClientError):
    """401: no key, or an unknown one."""


class NotFoundError(ClientError):
    """404"""


class ConflictError(ClientError):
    """409: the resource is not in a state that allows this (yet)."""


class PayloadTooLargeError(ClientError):
    """413"""


class UnsupportedMediaTypeError(ClientError):
    """415"""


class InvalidInputError(ClientError):
    """422: `.problem.field` names the input at fault."""


class UploadRejected(InvalidInputError):
    """An upload failed its validation; `.problem.detail` says why, `.problem.id` names it."""


class TooManyRequestsError(ClientError):
    """429: a quota is reached (`retry_after` says for how long)."""


class ServerError(ApiError):
    """5xx"""


class UnavailableError(ServerError):
    """503: storage or the task queue is down for now."""


class InsufficientStorageError(ServerError):
    """507: the service's disk is full."""


BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: InvalidInputError,
    429: TooManyRequestsError,
    503: UnavailableError,
    507: InsufficientStorageError,
}


def problem_of(response: httpx.Response) -> ProblemPublic:
    """The response's problem details; a body that is none (a proxy's error page) becomes one."""
    try:
        return ProblemPublic.model_validate_json(response.content)
    except (ValidationError, json.JSONDecodeError, UnicodeDecodeError):
        text = response.text.strip()[:300] or response.reason_phrase
        return ProblemPublic(
            type="about:blank",
            title=response.reason_phrase,
            status=response.status_code,
            detail=f"{response.status_code} {response.reason_phrase}: {text}",
            instance=response.request.url.path,
        )


def error_for(response: httpx.Response) -> ApiError:
    """The exception for an error response: by status, else by family."""
    status = response.status_code
    family = ServerError if status >= 500 else ClientError
    return BY_STATUS.get(status, family)(problem_of(response), response)
