"""The FastAPI application: ``create_app(settings)`` wires the gateway core to HTTP."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp

from tabpfn_gateway import __version__
from tabpfn_gateway.config import Settings, get_settings
from tabpfn_gateway.gateway import UPLOAD_PATH_PREFIX, Gateway
from tabpfn_gateway.gateway._hosted import HostedGateway
from tabpfn_gateway_server.apidocs import install_api_docs
from tabpfn_gateway_server.direct import DirectRoutes
from tabpfn_gateway_server.errors import install_error_handlers
from tabpfn_gateway_server.heap import settle_startup_heap
from tabpfn_gateway_server.httpserver import MAX_HEADER_BYTES
from tabpfn_gateway_server.metrics import GatewayMetrics
from tabpfn_gateway_server.middleware import EdgeMiddleware
from tabpfn_gateway_server.openapi import install_error_docs
from tabpfn_gateway_server.ratelimit import limiter_for
from tabpfn_gateway_server.routes import (
    admin,
    governance,
    health,
    hosted,
    setup,
    tabpfn,
    uploads,
)

__all__ = ["GatewayApp", "create_app", "create_app_from_env"]

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
A self-hosted gateway in front of TabPFN: it keeps the team's TabPFN tokens encrypted, hands out
revocable, scoped, metered gateway keys, and proxies TabPFN calls. Existing `tabpfn-client`
code works unchanged: set `TABPFN_CLIENT_API_URL` to this server and `TABPFN_TOKEN` to a gateway
key. Every error body is `{"error_code", "message", "trace_id"}`.
"""


# What the first requests would import, each module's objects then walked by every full
# collection (about 19,000 of them, 12 ms per collection): the upstream hop (aiohttp and
# yarl, multidict, attrs... beneath it), anyio's asyncio backend (worker threads), the IDNA
# codec (yarl's host encoding) and the Parquet footer reader (uploads and predictions priced).
_FIRST_USE_MODULES = (
    "tabpfn_gateway.protocol.aiohttp_transport",
    "anyio._backends._asyncio",
    "encodings.idna",
    "pyarrow.parquet",
)


def create_app(
    settings: Settings | None = None,
    *,
    gateway: Gateway | None = None,
    migrate: bool | None = None,
    hosted_transport: httpx.AsyncBaseTransport | None = None,
    settle_heap: bool = False,
) -> FastAPI:
    """The gateway server as an ASGI app.

    Without ``gateway``, one is built from ``settings`` (closed at shutdown): the database
    schema is migrated first (``migrate``, default on; concurrent replicas are safe, see
    ``tabpfn_gateway.migrate``) and, with no ``TABPFN_GATEWAY_SECRET_KEY``, a secret is
    generated and persisted (mode 0600) in the data dir with a loud warning. A ``gateway``
    passed in stays the caller's to close. ``migrate`` defaults to ``settings.migrate_on_start``.
    ``hosted_transport``: the httpx transport to self-hosted containers (tests pass
    ``httpx.ASGITransport(FakeHostedTabPFN().app)``); default the network.
    ``settle_heap``: once started, freeze what startup built out of the garbage collector's
    way (``tabpfn_gateway_server.heap``); for a process that only serves this app (``serve``).
    """
    if settings is None:
        settings = gateway.settings if gateway is not None else get_settings()
    owns_gateway = gateway is None
    if gateway is None:
        wants_migration = settings.migrate_on_start if migrate is None else migrate
        if wants_migration and not settings.database_url.startswith("memory://"):
            from tabpfn_gateway import migrate as migrations

            migrations.upgrade(settings)
        gateway = Gateway.from_settings(settings, generate_secret=True)
    metrics = GatewayMetrics()
    gateway.add_observer(metrics.observe_operation)
    gateway.add_usage_flush_listener(metrics.usage_written.inc)
    metrics.watch_usage(gateway.usage)
    engine = gateway.policy_engine
    if engine is not None:
        engine.alerts.add_listener(
            lambda alert: metrics.budget_alerts.labels(str(alert.threshold)).inc()
        )
        engine.add_refusal_listener(
            lambda refusal: metrics.policy_refusals.labels(refusal.error_code).inc()
        )
        metrics.watch_budgets(engine)
    limiter = limiter_for(settings.redis_url, settings.setup_attempts_per_minute)
    setup_successes = limiter_for(
        settings.redis_url,
        settings.setup_successes_per_hour,
        window=3600.0,
        name="setup-successes",
    )
    the_gateway = gateway
    hosted_gateway = HostedGateway(gateway, transport=hosted_transport)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settle_heap:
            the_gateway.proxy  # noqa: B018 (loaded on first use: every proxied call needs it)
            frozen = settle_startup_heap(preload=_FIRST_USE_MODULES)
            logger.info("startup heap settled: %d objects frozen", frozen)
        try:
            yield
        finally:
            stop_tracing = getattr(app.state, "stop_tracing", None)
            if stop_tracing is not None:
                stop_tracing()
            limiter.close()
            setup_successes.close()
            await hosted_gateway.aclose()
            if owns_gateway:
                # Flushes buffered usage and key last-use before the process goes.
                await the_gateway.aclose()
            else:
                # The upstream pool's connections belong to this event loop, which ends here.
                await the_gateway.close_async_upstream()

    app = GatewayApp(
        title="tabpfn-gateway",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        # /docs is added by install_api_docs: Swagger UI from the package, works offline.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        **_without_native_telemetry(),
    )
    install_api_docs(app)
    install_error_docs(app)
    app.state.gateway = gateway
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.limiter = limiter
    app.state.setup_successes = setup_successes
    app.state.setup_gate = setup.SetupGate(settings.setup_concurrency)
    app.state.hosted = hosted_gateway
    install_error_handlers(app)
    # Innermost: the TabPFN-compatible calls are answered without FastAPI's routing and
    # dependency solving, after the trace id, the metrics and the body limit have seen them.
    upload_router = uploads.build_upload_router(settings)
    app.add_middleware(DirectRoutes, routes=[*tabpfn.router.routes, *upload_router.routes])
    # Added last = runs first: the trace id, metrics, governance context and limits.
    app.add_middleware(
        EdgeMiddleware,
        metrics=metrics,
        trusted=settings.trusted_proxy_networks(),
        header_limit=MAX_HEADER_BYTES,
        default_body_limit=settings.max_json_body_bytes,
        body_limits=[
            (UPLOAD_PATH_PREFIX, settings.max_upload_bytes),
            (hosted.PREDICT_PATH, settings.max_upload_bytes),
        ],
    )
    # The hot paths first: a request is matched against the routes in this order.
    app.include_router(tabpfn.router)
    app.include_router(upload_router)
    app.include_router(hosted.router)
    app.include_router(health.build_health_router(metrics_enabled=settings.metrics_enabled))
    app.include_router(setup.router)
    app.include_router(governance.router)
    app.include_router(admin.admin_router)
    app.include_router(admin.usage_router)
    if settings.console_enabled:
        from tabpfn_gateway_server.console import mount_console

        mount_console(app, gateway, limiter)
    if settings.otel_enabled:
        from tabpfn_gateway_server.otel import instrument_app

        app.state.stop_tracing = instrument_app(app, gateway)
    return app


class GatewayApp(FastAPI):
    """FastAPI whose outermost layer is the gateway's ``EdgeMiddleware``.

    FastAPI puts three layers of its own around the app's middleware: Starlette's
    ``ServerErrorMiddleware`` (a last-resort 500; ``EdgeMiddleware`` already answers every
    unexpected exception with the documented body before that layer could see it),
    ``ExceptionTelemetryMiddleware`` (FastAPI's native telemetry, switched off here) and
    ``AppBodyLimitMiddleware`` (a pass-through without ``max_body_size``; ``EdgeMiddleware``
    enforces the gateway's own limits). On the forwarding hot path they cost about 6% of the
    event loop's time for nothing, so the stack starts at ``EdgeMiddleware``. Should a
    FastAPI release put anything else out there, the stack is left as FastAPI built it, and
    so it is with OpenTelemetry's FastAPI instrumentation (``tabpfn_gateway_server.otel``
    sets ``trim_outer_layers`` off: its middleware expects Starlette's layer outermost).
    """

    trim_outer_layers = True

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if not self.trim_outer_layers:
            return stack
        layer: Any = stack
        while _is_redundant_outer_layer(layer, self):
            layer = layer.app
        return layer if isinstance(layer, EdgeMiddleware) else stack


def _is_redundant_outer_layer(layer: Any, app: FastAPI) -> bool:
    name = type(layer).__name__
    if name == "AppBodyLimitMiddleware":
        return getattr(app, "max_body_size", None) is None
    return name in ("ServerErrorMiddleware", "ExceptionTelemetryMiddleware")


def _without_native_telemetry() -> dict[str, Any]:
    # FastAPI 0.16x traces and measures every request itself once any OpenTelemetry provider
    # is configured, and asks whether one is on every request. The gateway's tracing is its
    # own (TABPFN_GATEWAY_OTEL_ENABLED, tabpfn_gateway_server.otel): two server spans per
    # request would be wrong, and the per-request question is wasted on the hot path.
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def create_app_from_env() -> FastAPI:
    """``create_app()`` from the environment: the factory uvicorn workers import."""
    from tabpfn_gateway.logs import setup_logging
    from tabpfn_gateway_server.logfilter import install_access_log_filter

    settings = get_settings()
    setup_logging(settings.log_level, log_format=settings.log_format)
    install_access_log_filter()
    return create_app(settings, settle_heap=True)
