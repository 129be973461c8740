"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import SecretStr

from tabpfn_gateway.errors import GatewayError
from tabpfn_gateway.keys import SCOPE_ADMIN
from tabpfn_gateway_server.deps import BearerKey, GatewayDep
from tabpfn_gateway_server.errors import count_error, error_response, trace_id_of
from tabpfn_gateway_server.metrics import CONTENT_TYPE_LATEST, GatewayMetrics

__all__ = ["build_health_router"]


def _is_metrics_token(key: SecretStr, token: SecretStr | None) -> bool:
    if token is None:
        return False
    return hmac.compare_digest(
        key.get_secret_value().encode("utf-8"), token.get_secret_value().encode("utf-8")
    )


def build_health_router(*, metrics_enabled: bool) -> APIRouter:
    router = APIRouter(tags=["Operations"])

    @router.get("/healthz", summary="Alive (the process answers)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Ready: the database answers and its schema is current (else 503)",
        responses={503: {"description": "STORE_UNAVAILABLE, SCHEMA_NOT_CURRENT or STORE_ERROR"}},
    )
    async def readyz(request: Request, gateway: GatewayDep) -> JSONResponse:
        try:
            await anyio.to_thread.run_sync(gateway.check_ready)
        except GatewayError as exc:
            # Whatever the cause, not ready means 503 to a load balancer.
            count_error(request, exc.error_code)
            return error_response(exc, trace_id_of(request), status=503)
        return JSONResponse({"status": "ready", "database": "ok", "schema": "current"})

    if metrics_enabled:

        @router.get(
            "/metrics",
            summary="Prometheus metrics (the metrics token or an admin key)",
            response_class=PlainTextResponse,
            responses={
                200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."},
            },
        )
        async def metrics(request: Request, gateway: GatewayDep, key: BearerKey) -> Response:
            # Call counts per key id and per route tell an outsider who uses the gateway how
            # much: a scraper's own token, or an admin key.
            if not _is_metrics_token(key, gateway.settings.metrics_token):
                await gateway.proxy.authenticate(key, scope=SCOPE_ADMIN)
            registry: GatewayMetrics = request.app.state.metrics
            # Off the event loop: the budget gauge reads the store at scrape time.
            body = await anyio.to_thread.run_sync(registry.render)
            return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
