"""Domain errors to HTTP answers: one body shape ``{error_code, message, trace_id}`` for all."""

from __future__ import annotations

import logging
import math
from typing import Any
from uuid import UUID

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tabpfn_gateway.errors import (
    ConfigurationError,
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PolicyRefused,
    StoreError,
    VaultError,
)
from tabpfn_gateway.gateway import http_status, is_retry_hinted
from tabpfn_gateway.gateway._status import DEFAULT_RETRY_AFTER_SECONDS
from tabpfn_gateway.logs import redact

__all__ = [
    "count_error",
    "error_response",
    "install_error_handlers",
    "public_message",
    "trace_id_of",
]

logger = logging.getLogger(__name__)


def trace_id_of(request: Request) -> str:
    """The trace id the request context middleware gave this request."""
    return str(getattr(request.state, "trace_id", "") or "")


def error_response(
    error: GatewayError, trace_id: str, *, status: int | None = None
) -> JSONResponse:
    """The JSON answer for ``error``: its code's status, Retry-After when retrying can help,
    ``WWW-Authenticate`` on 401."""
    status = status if status is not None else http_status(error)
    upstream_trace = error.trace_id
    own_trace = trace_id or None
    if status in (404, 409):
        # tabpfn-client validates 404/409 bodies with ``trace_id: UUID | None`` and the
        # documented schema says ``format: uuid``: the dashed form, or none (a caller's own
        # X-Request-ID that is no UUID is still in the X-Trace-Id header).
        upstream_trace = _canonical_uuid(upstream_trace)
        own_trace = _canonical_uuid(own_trace)
    body = {
        "error_code": error.error_code,
        "message": public_message(error),
        "trace_id": upstream_trace or own_trace,
    }
    headers: dict[str, str] = {}
    if is_retry_hinted(error):
        wait = error.retry_after if error.retry_after is not None else DEFAULT_RETRY_AFTER_SECONDS
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, PolicyRefused):
        headers.update(_rate_limit_headers(error))
    return JSONResponse(body, status_code=status, headers=headers)


def _rate_limit_headers(error: PolicyRefused) -> dict[str, str]:
    """The IETF RateLimit fields of the limit that refused (see docs/governance.md)."""
    from tabpfn_gateway.governance import rate_limit_headers

    details = error.details
    policy, limit = details.get("policy"), details.get("limit")
    if not isinstance(policy, str) or not isinstance(limit, int):
        return {}
    window = details.get("window_seconds")
    reset = details.get("reset_seconds", error.retry_after or 0)
    unit = details.get("unit")
    return rate_limit_headers(
        policy,
        limit,
        int(window) if isinstance(window, int | float) else 0,
        int(details.get("remaining", 0) or 0),
        int(reset) if isinstance(reset, int | float) else 0,
        unit if isinstance(unit, str) else None,
    )


# Errors whose messages describe the gateway's own insides (database host, port, name and
# driver error; settings): logged with the trace id, answered with the class's fixed text.
_INTERNAL_DETAIL = (StoreError, VaultError, ConfigurationError)


def public_message(error: GatewayError) -> str:
    """The message a caller may see: redacted of anything secret-shaped, and without the
    internal detail of store, vault and configuration errors."""
    if isinstance(error, _INTERNAL_DETAIL):
        return type(error).default_message
    return redact(error.message)


def _canonical_uuid(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(UUID(value))
    except ValueError:
        return None


def count_error(request: Request, error_code: str) -> None:
    """Count an error answer by its code in the app's metrics (the alerts read them)."""
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.observe_error(error_code)


async def _gateway_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    status = http_status(exc)
    count_error(request, exc.error_code)
    if status >= 500:
        logger.warning(
            "%s %s -> %d %s: %s (trace id %s)",
            request.method,
            _route_of(request),
            status,
            exc.error_code,
            exc.message,
            trace_id_of(request),
        )
    return error_response(exc, trace_id_of(request))


async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
    # Values a caller sent that Python cannot represent or encode on the way on: a date past
    # year 9999 once moved to UTC, a duration of 1e300 seconds, a lone surrogate in a string.
    error = InvalidRequest(
        f"A value in the request is out of range or not valid text ({type(exc).__name__})."
    )
    count_error(request, error.error_code)
    return error_response(error, trace_id_of(request))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Say where and what, never echo the values: a body may hold a token.
    problems = []
    for error in exc.errors()[:10]:
        location = ".".join(str(part) for part in error.get("loc", ()))
        problems.append(f"{location}: {error.get('msg', 'invalid')}")
    message = "The request is malformed: " + "; ".join(problems)
    return error_response(InvalidRequest(message), trace_id_of(request), status=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error: GatewayError
    if exc.status_code == 413:
        error = PayloadTooLarge()
    elif exc.status_code == 404:
        error = NotFound("No such route.")
    elif exc.status_code == 405:
        error = InvalidRequest("This method is not allowed on this route.")
    else:
        error = InvalidRequest(str(exc.detail) if exc.detail else "The request was refused.")
    response = error_response(error, trace_id_of(request), status=exc.status_code)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


def _route_of(request: Request) -> str:
    route: Any = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the documented body and status."""
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for kind in (OverflowError, UnicodeError):
        app.add_exception_handler(kind, _out_of_range)
