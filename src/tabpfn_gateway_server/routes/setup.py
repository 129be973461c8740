"""``POST /api/v1/auth/setup``: trade a TabPFN token for a gateway key (the seed's flow)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request, Response

from tabpfn_gateway.errors import GatewayError, SetupDisabled
from tabpfn_gateway.gateway import http_status
from tabpfn_gateway_server.deps import GatewayDep, client_address
from tabpfn_gateway_server.ratelimit import AttemptLimiter
from tabpfn_gateway_server.schemas import SetupIn, SetupOut

__all__ = ["router"]

router = APIRouter(tags=["Setup"])


@router.post(
    "/api/v1/auth/setup",
    status_code=201,
    response_model=SetupOut,
    summary="Register your TabPFN token; get a gateway key (shown once)",
    responses={
        401: {"description": "The upstream rejected the token (UPSTREAM_AUTHENTICATION_FAILED)."},
        403: {"description": "Self-service setup is off (SETUP_DISABLED)."},
        409: {"description": "The name is taken (CONFLICT)."},
        429: {"description": "Too many failed attempts from this address (TOO_MANY_ATTEMPTS)."},
        503: {"description": "The upstream or the database cannot be reached (retryable)."},
    },
)
async def setup(
    body: SetupIn, request: Request, response: Response, gateway: GatewayDep
) -> SetupOut:
    """Verify the token upstream, then create a principal, the encrypted credential and an
    inference key in one transaction. Failed attempts are counted per client address."""
    if not gateway.settings.allow_self_service_setup:
        raise SetupDisabled()
    limiter: AttemptLimiter = request.app.state.limiter
    address = client_address(request)
    await anyio.to_thread.run_sync(limiter.check, address)
    try:
        result = await anyio.to_thread.run_sync(
            lambda: gateway.setup(body.tabpfn_token, name=body.name)
        )
    except GatewayError as exc:
        # The caller's mistakes count (a guessed token, a taken name); our outages and the
        # upstream's own rate limit do not.
        status = http_status(exc)
        if 400 <= status < 500 and status != 429:
            await anyio.to_thread.run_sync(limiter.failed, address)
        raise
    response.headers["Cache-Control"] = "no-store"
    record = result.key.record
    return SetupOut(
        api_key=result.key.plaintext,
        key_id=record.key_id,
        principal_id=result.principal.id,
        principal_name=result.principal.name,
        credential_id=result.credential.id,
        scopes=list(record.scopes),
        expires_at=record.expires_at,
    )
