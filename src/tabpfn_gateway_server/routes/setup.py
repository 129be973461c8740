"""``POST /api/v1/auth/setup``: trade a TabPFN token for a gateway key (the seed's flow)."""

from __future__ import annotations

import logging

import anyio.to_thread
from fastapi import APIRouter, Request, Response

from tabpfn_gateway.errors import GatewayError, SetupBusy, SetupDisabled
from tabpfn_gateway_server.deps import GatewayDep, client_address
from tabpfn_gateway_server.ratelimit import AttemptLimiter, Reservation
from tabpfn_gateway_server.schemas import SetupIn, SetupOut

__all__ = ["SetupGate", "router"]

router = APIRouter(tags=["Setup"])
logger = logging.getLogger(__name__)

# How long a caller refused by a full gate is told to wait: a verification takes seconds.
_BUSY_RETRY_AFTER_SECONDS = 2


class SetupGate:
    """How many setups this process verifies upstream at once (``setup_concurrency``).

    Entered and left on the event loop only, so the count needs no lock; a full gate refuses
    at once (``SetupBusy``) rather than queueing callers nobody has authenticated.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def enter(self) -> None:
        """Take a place, or raise ``SetupBusy`` (retryable, with ``retry_after``)."""
        if self.active >= self.limit:
            raise SetupBusy(retry_after=_BUSY_RETRY_AFTER_SECONDS)
        self.active += 1

    def leave(self) -> None:
        """Give the place back."""
        self.active -= 1


async def _refund(limiter: AttemptLimiter, reservation: Reservation) -> None:
    # Best effort: a refund lost to a Redis outage errs towards the limit, and must never
    # turn a finished setup (its key shown only in this answer) into an error.
    try:
        await anyio.to_thread.run_sync(limiter.refund, reservation)
    except GatewayError as exc:
        logger.warning("Could not refund a setup attempt (%s)", exc.error_code)


@router.post(
    "/api/v1/auth/setup",
    status_code=201,
    response_model=SetupOut,
    summary="Register your TabPFN token; get a gateway key (shown once)",
    responses={
        400: {"description": "The token or name is malformed (INVALID_REQUEST)."},
        401: {"description": "The upstream rejected the token (UPSTREAM_AUTHENTICATION_FAILED)."},
        403: {"description": "Self-service setup is off (SETUP_DISABLED)."},
        429: {
            "description": "Too many failed (per minute) or successful (per hour) setups from "
            "this address (TOO_MANY_ATTEMPTS)."
        },
        503: {
            "description": "Too many setups at once (SETUP_BUSY), or the upstream or the "
            "database cannot be reached (retryable)."
        },
    },
)
async def setup(
    body: SetupIn, request: Request, response: Response, gateway: GatewayDep
) -> SetupOut:
    """Verify the token upstream, then create a principal (named ``setup:<name>-<random>``),
    the encrypted credential and an inference key in one transaction.

    Both limits are reserved before the upstream is asked, so concurrent attempts cannot
    slip past one check: a failed attempt (every answer but 201) and a successful one are
    counted per client address, and the reservation of the other kind is refunded.
    """
    if not gateway.settings.allow_self_service_setup:
        raise SetupDisabled()
    failures: AttemptLimiter = request.app.state.limiter
    successes: AttemptLimiter = request.app.state.setup_successes
    gate: SetupGate = request.app.state.setup_gate
    address = client_address(request)
    # Counted as failed until it has succeeded: a crash, a 500, a timeout all count.
    failure = await anyio.to_thread.run_sync(failures.reserve, address)
    success = await anyio.to_thread.run_sync(successes.reserve, address)
    succeeded = False
    try:
        gate.enter()
        try:
            result = await gateway.asetup(body.tabpfn_token, name=body.name)
        finally:
            gate.leave()
        succeeded = True
    finally:
        if succeeded:
            await _refund(failures, failure)
        else:
            await _refund(successes, success)
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
