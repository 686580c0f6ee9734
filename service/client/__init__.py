"""A small typed client of the C3 service, sync (`Client`) and async (`AsyncClient`), on httpx.
It imports no torch (nor anything of the engine but its torch-free contracts)."""

from service.client.aio import AsyncClient
from service.client.calls import JobEvent, RetryPolicy
from service.client.errors import (
    ApiError,
    BadRequestError,
    C3Error,
    ClientError,
    ConflictError,
    ConnectionFailed,
    InsufficientStorageError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    ServerError,
    TooManyRequestsError,
    UnauthorizedError,
    UnavailableError,
    UnsupportedMediaTypeError,
    UploadRejected,
)
from service.client.sync import Client

__all__ = [
    "ApiError",
    "AsyncClient",
    "BadRequestError",
    "C3Error",
    "Client",
    "ClientError",
    "ConflictError",
    "ConnectionFailed",
    "InsufficientStorageError",
    "InvalidInputError",
    "JobEvent",
    "NotFoundError",
    "PayloadTooLargeError",
    "RetryPolicy",
    "ServerError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnavailableError",
    "UnsupportedMediaTypeError",
    "UploadRejected",
]
