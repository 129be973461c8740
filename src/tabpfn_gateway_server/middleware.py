"""ASGI middleware: everything every request passes through, in one layer (a trace id,
request metrics, the client address and RateLimit headers of governance, the head and body
limits, and a last-resort 500 answer)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tabpfn_gateway.errors import GatewayError, HeadersTooLarge, PayloadTooLarge
from tabpfn_gateway.governance import client_address, response_headers
from tabpfn_gateway.logs import trace_id_var
from tabpfn_gateway.netpolicy import client_address as believed_address
from tabpfn_gateway_server.errors import error_response
from tabpfn_gateway_server.metrics import GatewayMetrics
from tabpfn_gateway_server.tracing import REQUEST_ID_HEADER, trace_ids_from

__all__ = ["TRACE_HEADER", "EdgeMiddleware"]

logger = logging.getLogger(__name__)

TRACE_HEADER = "x-trace-id"
_TRACE_HEADER = TRACE_HEADER.encode()
_REQUEST_ID_HEADER = REQUEST_ID_HEADER.encode()


class EdgeMiddleware:
    """The one layer every HTTP request passes through first (one layer, not five: each
    costs a call, a closure and a copy of the answer's head on the hot path):

    - **trace id**: ``request.state.trace_id``, echoed as ``X-Trace-Id`` and stamped on log
      records; from ``traceparent`` or ``X-Request-ID`` when sent (the latter echoed back);
    - **metrics**: every answer observed by route template, method and status;
    - **governance context**: ``tabpfn_gateway.governance.client_address`` (the socket's peer,
      or what ``X-Forwarded-For`` says through ``trusted`` proxies: the same rule as
      everywhere, ``tabpfn_gateway.netpolicy.client_address``), and the headers the core
      publishes (``RateLimit-Policy``/``RateLimit``) added to the answer;
    - **head limit**: a request line and headers past ``header_limit`` bytes get 431
      HEADERS_TOO_LARGE before any route runs (exact, under any ASGI server; ``serve`` also
      stops reading an unfinished head past it, see ``tabpfn_gateway_server.httpserver``);
    - **body limit**: a body past its limit gets 413 PAYLOAD_TOO_LARGE while it streams.
      ``body_limits`` maps path prefixes to their own limit (uploads: ``max_upload_bytes``),
      every other path gets ``default_body_limit`` (``max_json_body_bytes``). A declared
      Content-Length past the limit is answered before anything is read; otherwise bytes are
      counted as they arrive and the read fails at the first byte past the limit (a 413 from
      the route's error handler), so an oversized body is never held whole. (Starlette's
      ``RequestBodyLimitMiddleware`` answers in plain text and would break the documented
      error body.)
    - **last resort**: an unexpected exception becomes the documented 500 body, not a bare
      traceback page.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: GatewayMetrics | None = None,
        trusted: Sequence[Any] = (),
        header_limit: int,
        default_body_limit: int,
        body_limits: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.trusted = list(trusted)
        self.header_limit = header_limit
        self.default_body_limit = default_body_limit
        self.body_limits = tuple(body_limits)

    def _body_limit_for(self, path: str) -> int:
        for prefix, limit in self.body_limits:
            if path.startswith(prefix):
                return limit
        return self.default_body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # One pass over the headers: their size and the few this layer reads.
        head_size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        request_id = traceparent = declared = None
        forwarded: list[str] = []
        for name, value in scope.get("headers", ()):
            head_size += len(name) + len(value) + 4  # "name: value\r\n"
            if name == b"content-length":
                declared = value
            elif name == _REQUEST_ID_HEADER and request_id is None:
                request_id = value
            elif name == b"traceparent" and traceparent is None:
                traceparent = value
            elif name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
        trace_id, echoed_request_id = trace_ids_from(traceparent, request_id)
        scope.setdefault("state", {})["trace_id"] = trace_id
        client = scope.get("client")
        peer = client[0] if client else None
        address = believed_address(peer, forwarded, self.trusted) if peer else None
        published: dict[str, str] = {}
        trace_token = trace_id_var.set(trace_id)
        address_token = client_address.set(address)
        headers_token = response_headers.set(published)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                headers = list(message.get("headers", ()))
                headers.append((_TRACE_HEADER, trace_id.encode()))
                if echoed_request_id is not None:
                    headers.append((_REQUEST_ID_HEADER, echoed_request_id.encode()))
                if published:
                    present = {name.lower() for name, _ in headers}
                    for name, value in published.items():
                        if name.lower().encode() not in present:
                            headers.append((name.lower().encode(), value.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            refusal = self._refusal(scope, head_size, declared)
            if refusal is not None:
                await error_response(refusal, trace_id)(scope, receive, send_with_headers)
                return
            await self.app(scope, self._limited(scope, receive), send_with_headers)
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
            await response(scope, receive, send_with_headers)
        finally:
            response_headers.reset(headers_token)
            client_address.reset(address_token)
            trace_id_var.reset(trace_token)
            if self.metrics is not None:
                self.metrics.observe_request(
                    _route(scope), scope.get("method", "?"), status, time.perf_counter() - started
                )

    def _refusal(self, scope: Scope, head_size: int, declared: bytes | None) -> GatewayError | None:
        if head_size > self.header_limit:
            return HeadersTooLarge(
                f"The request line and headers exceed {self.header_limit} bytes."
            )
        if declared is not None and declared.isdigit():
            limit = self._body_limit_for(scope.get("path", ""))
            if int(declared) > limit:
                return PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        return None

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        # Counted even within a declared length: not every ASGI server frames bodies by it.
        limit = self._body_limit_for(scope.get("path", ""))
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

        return limited_receive


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
