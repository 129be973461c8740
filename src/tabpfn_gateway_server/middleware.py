"""ASGI middleware: a trace id per request, request metrics, and a last-resort 500 answer."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tabpfn_gateway.errors import GatewayError, HeadersTooLarge, PayloadTooLarge
from tabpfn_gateway.logs import trace_id_var
from tabpfn_gateway_server.errors import error_response
from tabpfn_gateway_server.metrics import GatewayMetrics
from tabpfn_gateway_server.tracing import REQUEST_ID_HEADER, request_trace_ids

__all__ = [
    "TRACE_HEADER",
    "BodyLimitMiddleware",
    "HeaderLimitMiddleware",
    "RequestContextMiddleware",
]

logger = logging.getLogger(__name__)

TRACE_HEADER = "x-trace-id"


class RequestContextMiddleware:
    """Gives each request a trace id (``request.state.trace_id``, echoed as ``X-Trace-Id`` and
    stamped on its log records; from ``traceparent`` or ``X-Request-ID`` when sent), observes
    it in the metrics by route template, and turns an unexpected exception into the
    documented 500 body instead of a bare traceback page."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace_id, request_id = request_trace_ids(scope)
        scope.setdefault("state", {})["trace_id"] = trace_id
        trace_token = trace_id_var.set(trace_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_trace(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((TRACE_HEADER.encode(), trace_id.encode()))
                if request_id is not None:
                    headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        except Exception:
            # Redacted by the logging filter; the client gets the trace id to quote.
            logger.exception("unhandled error answering %s (trace id %s)", _route(scope), trace_id)
            if response_started:
                raise
            if self.metrics is not None:
                self.metrics.observe_error(GatewayError.error_code)
            response = error_response(
                GatewayError("The gateway failed unexpectedly; quote the trace id."), trace_id
            )
            await response(scope, receive, send_with_trace)
        finally:
            trace_id_var.reset(trace_token)
            if self.metrics is not None:
                self.metrics.observe_request(
                    _route(scope), scope.get("method", "?"), status, time.perf_counter() - started
                )


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class BodyLimitMiddleware:
    """Refuses request bodies past a limit with 413 PAYLOAD_TOO_LARGE, while they stream.

    ``limits`` maps path prefixes to their own limit (uploads: ``max_upload_bytes``); every
    other path gets ``default_limit`` (``max_json_body_bytes``). A declared Content-Length
    past the limit is answered before anything is read; otherwise bytes are counted as they
    arrive and the read fails at the first byte past the limit (a 413 from the route's
    error handler), so an oversized body is never held whole. Starlette's own
    ``RequestBodyLimitMiddleware`` answers in plain text and replaces any response when the
    declared length is too large, which would break the documented error body.
    """

    def __init__(
        self, app: ASGIApp, *, default_limit: int, limits: Sequence[tuple[str, int]] = ()
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = tuple(limits)

    def _limit_for(self, path: str) -> int:
        for prefix, limit in self.limits:
            if path.startswith(prefix):
                return limit
        return self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope.get("path", ""))
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            trace_id = str(scope.get("state", {}).get("trace_id", ""))
            response = error_response(
                PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes."), trace_id
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises HTTPExceptions from body reading: our handler answers.
                    raise HTTPException(413, f"The request body exceeds {limit} bytes.")
            return message

        await self.app(scope, limited_receive, send)


class HeaderLimitMiddleware:
    """Refuses a request whose line and headers exceed ``limit`` bytes with 431
    HEADERS_TOO_LARGE, before any route runs.

    Exact, under any ASGI server; ``serve`` also stops reading an unfinished head past the
    limit (``tabpfn_gateway_server.httpserver``), so no worker buffers megabytes of headers.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Each header line is "name: value\r\n"; the request line holds the target.
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        for name, value in scope.get("headers", ()):
            size += len(name) + len(value) + 4
            if size > self.limit:
                trace_id = str(scope.get("state", {}).get("trace_id", ""))
                error = HeadersTooLarge(f"The request line and headers exceed {self.limit} bytes.")
                await error_response(error, trace_id)(scope, receive, send)
                return
        await self.app(scope, receive, send)
