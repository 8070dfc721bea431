"""One error type for everything a client can get wrong, and one handler that renders it.

Handlers raise :class:`ServingError` (or a subclass); :func:`error_response` turns it into
``{"error": "..."}`` with the status code it carries, as KServe v2 and MLServer do.
"""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger("serving")


class ServingError(Exception):
    """Base error: a message for the client and the HTTP status that goes with it."""

    status_code = 400

    def __init__(self, message: str, status_code: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers or {}


class BadRequest(ServingError):
    status_code = 400


class RequestTimeout(ServingError):
    status_code = 408

    def __init__(self, message: str):
        super().__init__(message, headers={"Connection": "close"})


class ModelNotFound(ServingError):
    status_code = 404


class PayloadTooLarge(ServingError):
    status_code = 413

    def __init__(self, message: str):
        # The rest of the body is never read, so the connection cannot be reused.
        super().__init__(message, headers={"Connection": "close"})


class InjectedFault(ServingError):
    """The answer of `fault_error_ratio` (tests only): a 500 like a model that fails."""

    status_code = 500


class Unavailable(ServingError):
    status_code = 503


class QueueFull(Unavailable):
    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class ModelError(Exception):
    """The model directory cannot be served (missing files, digest mismatch, broken graph): fatal at startup."""


def json_response(payload: object, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def error_response(exc: ServingError) -> Response:
    return json_response({"error": exc.message}, exc.status_code, exc.headers)


async def handle_exception(request: Request, exc: Exception) -> Response:
    """The single exception handler the app registers for all exception types."""
    if isinstance(exc, ServingError):
        return error_response(exc)
    if isinstance(exc, HTTPException):  # routing: 404 unknown path, 405 wrong method
        return error_response(ServingError(exc.detail, exc.status_code, dict(exc.headers or {})))
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(ServingError("internal server error", 500))
