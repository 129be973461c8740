"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from tabpfn_gateway.errors import GatewayError
from tabpfn_gateway_server.deps import GatewayDep
from tabpfn_gateway_server.errors import count_error, error_response, trace_id_of
from tabpfn_gateway_server.metrics import CONTENT_TYPE_LATEST, GatewayMetrics

__all__ = ["build_health_router"]


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

        @router.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
        async def metrics(request: Request) -> Response:
            registry: GatewayMetrics = request.app.state.metrics
            return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)

    return router
