"""The trace id of a request: an incoming W3C ``traceparent``, else ``X-Request-ID``, else the
active OpenTelemetry span's, else a new one."""

from __future__ import annotations

import re
import sys
import uuid

from starlette.types import Scope

__all__ = ["REQUEST_ID_HEADER", "request_trace_ids", "trace_ids_from"]

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_NAME = REQUEST_ID_HEADER.encode()

# https://www.w3.org/TR/trace-context/#traceparent-header: version-traceid-parentid-flags.
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
# Echoed into headers, bodies and log lines: no spaces, quotes or control characters.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")


def _raw_header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _from_traceparent(value: str | None) -> str | None:
    match = _TRACEPARENT.match(value.lower()) if value else None
    if match is None:
        return None
    version, trace_id, parent_id = match.groups()
    # All-zero ids are invalid by the spec, and version ff is forbidden.
    if version == "ff" or set(trace_id) == {"0"} or set(parent_id) == {"0"}:
        return None
    return trace_id


def _from_active_span() -> str | None:
    # Only when the otel extra is in use (its ASGI middleware runs before ours): never import
    # OpenTelemetry just to ask.
    trace_api = sys.modules.get("opentelemetry.trace")
    if trace_api is None:
        return None
    context = trace_api.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def request_trace_ids(scope: Scope) -> tuple[str, str | None]:
    """``(trace_id, request_id)`` for a request: the trace id to log and answer with, and the
    caller's ``X-Request-ID`` to echo back (``None`` when absent or malformed).

    Trace ids are 32 lowercase hex digits (W3C / OpenTelemetry form, also a valid UUID, which
    tabpfn-client expects in 404/409 bodies) unless the caller chose its own request id.
    """
    return trace_ids_from(_raw_header(scope, b"traceparent"), _raw_header(scope, _REQUEST_ID_NAME))


def trace_ids_from(traceparent: bytes | None, request_id: bytes | None) -> tuple[str, str | None]:
    """``request_trace_ids`` from the raw ``traceparent`` and ``X-Request-ID`` header values
    (the first of each), for a caller that has already read the headers."""
    raw_request_id = request_id.decode("latin-1").strip() if request_id is not None else None
    echoed = raw_request_id if raw_request_id and _REQUEST_ID.match(raw_request_id) else None
    trace_id = (
        _from_traceparent(traceparent.decode("latin-1").strip() if traceparent else None)
        or echoed
        or _from_active_span()
        or uuid.uuid4().hex
    )
    return trace_id, echoed
