"""OpenTelemetry tracing of the server (the ``otel`` extra): each request a span (FastAPI), its
upstream calls (aiohttp, or httpx without it) and its SQL queries (SQLAlchemy) as children.

No span attribute carries a secret: URLs lose their query strings (signed upload URLs are
credentials), sealed upload tokens in paths and anything shaped like a key or token is replaced
by ``[REDACTED]``, request headers are never captured, and SQL is recorded without parameters.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tabpfn_gateway.errors import ConfigurationError
from tabpfn_gateway.gateway import UPLOAD_PATH_PREFIX
from tabpfn_gateway.logs import REDACTED, redact

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.trace import Span, TracerProvider

    from tabpfn_gateway.gateway import Gateway

__all__ = ["instrument_app", "scrub_url"]

_OTEL_EXTRA = "Tracing needs the otel extra: pip install 'tabpfn-gateway[server,otel]'"
_UPLOAD_TOKEN = re.compile(re.escape(UPLOAD_PATH_PREFIX) + r"[^/?#]+")
# Attributes that hold a URL or a path, under the old and the stable semantic conventions.
_URL_ATTRIBUTES = ("http.url", "url.full", "http.target", "url.path")
# Probes and scrapes would drown the traces people look for.
_EXCLUDED_URLS = "healthz,readyz,metrics"


def scrub_url(url: str) -> str:
    """``url`` without its query string or fragment, sealed upload tokens and secret-shaped
    parts replaced by ``[REDACTED]``."""
    without_query = url.split("?", 1)[0].split("#", 1)[0]
    return redact(_UPLOAD_TOKEN.sub(UPLOAD_PATH_PREFIX + REDACTED, without_query))


def _scrub_span(span: Span) -> None:
    attributes = getattr(span, "attributes", None) or {}
    for name in _URL_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str):
            span.set_attribute(name, scrub_url(value))


def _server_request_hook(span: Span, scope: dict[str, Any]) -> None:
    if span is not None and span.is_recording():
        _scrub_span(span)


def _httpx_request_hook(span: Span, request: Any) -> None:
    if span is not None and span.is_recording():
        _scrub_span(span)


async def _async_httpx_request_hook(span: Span, request: Any) -> None:
    _httpx_request_hook(span, request)


def _default_tracer_provider() -> TracerProvider:
    """The globally configured provider, or an SDK one exporting over OTLP/HTTP to
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (service name from ``OTEL_SERVICE_NAME``)."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    current = trace.get_tracer_provider()
    if isinstance(current, SdkTracerProvider):
        return current  # configured by the process (opentelemetry-instrument, user code)
    name = os.environ.get("OTEL_SERVICE_NAME", "tabpfn-gateway")
    provider = SdkTracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def instrument_app(
    app: FastAPI, gateway: Gateway, *, tracer_provider: TracerProvider | None = None
) -> Callable[[], None]:
    """Trace ``app``'s requests, ``gateway``'s upstream calls and SQL queries.

    Call before the app serves its first request. Returns a function that removes the
    process-wide client instrumentation again (the app's own is removed with the app).
    """
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    except ImportError:
        raise ConfigurationError(_OTEL_EXTRA) from None
    provider = tracer_provider or _default_tracer_provider()
    # The instrumentor wraps Starlette's ServerErrorMiddleware and refuses any other
    # outermost layer: keep the stack as FastAPI builds it (see GatewayApp).
    if hasattr(app, "trim_outer_layers"):
        app.trim_outer_layers = False
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        server_request_hook=_server_request_hook,
        excluded_urls=_EXCLUDED_URLS,
        exclude_spans=["receive", "send"],
    )
    undo: list[Callable[[], None]] = []
    engine = getattr(gateway.store, "engine", None)
    if engine is not None:
        sqlalchemy = SQLAlchemyInstrumentor()
        # Its declared range stops below SQLAlchemy 2.1, whose engine events it uses unchanged
        # (tests/test_otel.py checks the query spans against the installed version).
        sqlalchemy.instrument(
            engine=engine,
            tracer_provider=provider,
            enable_commenter=False,
            skip_dep_check=True,
        )
        undo.append(lambda: sqlalchemy.uninstrument())
    undo.append(_instrument_upstream_client(provider))

    def uninstrument() -> None:
        for step in reversed(undo):
            step()

    return uninstrument


def _instrument_upstream_client(provider: TracerProvider) -> Callable[[], None]:
    # The server's hop to the upstream runs on aiohttp when installed (the server extra), else on
    # httpx; instrumenting both would give each call two client spans.
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        httpx_instrumentor = HTTPXClientInstrumentor()
        httpx_instrumentor.instrument(
            tracer_provider=provider,
            request_hook=_httpx_request_hook,
            async_request_hook=_async_httpx_request_hook,
        )
        return lambda: httpx_instrumentor.uninstrument()
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

    aiohttp_instrumentor = AioHttpClientInstrumentor()
    aiohttp_instrumentor.instrument(
        tracer_provider=provider, url_filter=lambda url: scrub_url(str(url))
    )
    return lambda: aiohttp_instrumentor.uninstrument()
