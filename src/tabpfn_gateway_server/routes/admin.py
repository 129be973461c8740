"""Admin API (``/api/v1/admin/...``, admin-scoped keys only) and a key's own usage."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Literal, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Query, Response

from tabpfn_gateway.errors import Conflict, InvalidRequest, KeyDisabled, KeyExpired, KeyRevoked
from tabpfn_gateway.gateway import Caller, Gateway
from tabpfn_gateway.store import UpstreamCredential
from tabpfn_gateway_server.deps import AdminCaller, BearerKey, GatewayDep
from tabpfn_gateway_server.schemas import (
    AuditEventOut,
    CreatedKeyOut,
    CredentialIn,
    CredentialOut,
    ExpiryIn,
    KeyIn,
    KeyOut,
    PageOut,
    PrincipalIn,
    PrincipalOut,
    RotateIn,
    UsageEventOut,
    UsageSummaryOut,
    page_of,
)

__all__ = ["admin_router", "usage_router"]

T = TypeVar("T")

admin_router = APIRouter(
    prefix="/api/v1/admin",
    tags=["Admin"],
    responses={
        401: {"description": "Missing or refused key."},
        403: {"description": "The key lacks the admin scope (INSUFFICIENT_SCOPE)."},
    },
)

Limit = Annotated[int, Query(ge=1, le=1000, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page.")]


async def _run(func: Callable[..., T], /, *args: object, **kwargs: object) -> T:
    # Store and vault calls block; keep them off the event loop.
    try:
        return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))
    except (KeyRevoked, KeyDisabled, KeyExpired) as exc:
        # The key being changed is in a state that refuses the change. The caller's own key
        # was checked before the route ran: a 401 here would say the admin's key failed.
        raise Conflict(exc.message) from None


# -- principals ----------------------------------------------------------------------------------


@admin_router.post("/principals", status_code=201, response_model=PrincipalOut)
async def add_principal(
    body: PrincipalIn, gateway: GatewayDep, caller: AdminCaller
) -> PrincipalOut:
    record = await _run(gateway.admin.add_principal, body.name, body.kind, actor=caller.actor)
    return PrincipalOut.of(record)


@admin_router.get("/principals", response_model=PageOut[PrincipalOut])
async def list_principals(
    gateway: GatewayDep,
    caller: AdminCaller,
    kind: Literal["user", "team"] | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> PageOut[PrincipalOut]:
    page = await _run(gateway.admin.list_principals, kind=kind, limit=limit, cursor=cursor)
    return page_of(page.items, page.next_cursor, PrincipalOut.of)


@admin_router.get("/principals/{id_or_name}", response_model=PrincipalOut)
async def get_principal(id_or_name: str, gateway: GatewayDep, caller: AdminCaller) -> PrincipalOut:
    return PrincipalOut.of(await _run(gateway.admin.get_principal, id_or_name))


# -- credentials ---------------------------------------------------------------------------------


@admin_router.post("/credentials", status_code=201, response_model=CredentialOut)
async def add_credential(
    body: CredentialIn, gateway: GatewayDep, caller: AdminCaller
) -> CredentialOut:
    if body.kind == "hosted":
        return CredentialOut.of(await _add_hosted_credential(body, gateway, caller))
    if body.tabpfn_token is None:
        raise InvalidRequest("A cloud credential needs tabpfn_token.")
    if body.bearer_token is not None or body.extra_headers:
        raise InvalidRequest("bearer_token and extra_headers need kind 'hosted'.")
    record = await _run(
        gateway.admin.add_credential,
        body.owner,
        body.tabpfn_token,
        body.label,
        endpoint_url=body.endpoint_url,
        verify=body.verify,
        actor=caller.actor,
    )
    return CredentialOut.of(record)


async def _add_hosted_credential(
    body: CredentialIn, gateway: Gateway, caller: Caller
) -> UpstreamCredential:
    from tabpfn_gateway.hosted import verify_hosted_endpoint

    if body.endpoint_url is None:
        raise InvalidRequest(
            "A hosted credential needs endpoint_url (the container's /predict URL)."
        )
    if body.tabpfn_token is not None:
        raise InvalidRequest("A hosted credential takes bearer_token, not tabpfn_token.")
    return await _run(
        gateway.admin.add_hosted_credential,
        body.owner,
        body.label,
        endpoint_url=body.endpoint_url,
        token=body.bearer_token,
        extra_headers=body.extra_headers,
        timeout_seconds=body.timeout_seconds,
        connect_timeout_seconds=body.connect_timeout_seconds,
        verify=verify_hosted_endpoint if body.verify else None,
        actor=caller.actor,
    )


@admin_router.get("/credentials", response_model=PageOut[CredentialOut])
async def list_credentials(
    gateway: GatewayDep,
    caller: AdminCaller,
    owner: Annotated[str | None, Query(description="Principal id or name.")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> PageOut[CredentialOut]:
    page = await _run(gateway.admin.list_credentials, owner=owner, limit=limit, cursor=cursor)
    return page_of(page.items, page.next_cursor, CredentialOut.of)


@admin_router.delete("/credentials/{credential_id}", status_code=204)
async def remove_credential(
    credential_id: str, gateway: GatewayDep, caller: AdminCaller
) -> Response:
    await _run(gateway.admin.remove_credential, credential_id, actor=caller.actor)
    return Response(status_code=204)


# -- keys ----------------------------------------------------------------------------------------


@admin_router.post("/keys", status_code=201, response_model=CreatedKeyOut)
async def create_key(
    body: KeyIn, response: Response, gateway: GatewayDep, caller: AdminCaller
) -> CreatedKeyOut:
    created = await _run(
        gateway.admin.create_key,
        body.owner,
        body.credential_id,
        body.name,
        body.scopes,
        body.expires_at,
        admin=body.admin,
        actor=caller.actor,
    )
    response.headers["Cache-Control"] = "no-store"
    return CreatedKeyOut.created(created.record, created.plaintext)


@admin_router.get("/keys", response_model=PageOut[KeyOut])
async def list_keys(
    gateway: GatewayDep,
    caller: AdminCaller,
    owner: Annotated[str | None, Query(description="Principal id or name.")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> PageOut[KeyOut]:
    page = await _run(gateway.admin.list_keys, owner=owner, limit=limit, cursor=cursor)
    names = await _run(gateway.admin.owner_names, [k.owner_id for k in page.items])
    return page_of(page.items, page.next_cursor, lambda k: KeyOut.of(k, names.get(k.owner_id)))


@admin_router.get("/keys/{key_id}", response_model=KeyOut)
async def show_key(key_id: str, gateway: GatewayDep, caller: AdminCaller) -> KeyOut:
    key = await _run(gateway.admin.get_key, key_id)
    names = await _run(gateway.admin.owner_names, [key.owner_id])
    return KeyOut.of(key, names.get(key.owner_id))


@admin_router.post("/keys/{key_id}/rotate", response_model=CreatedKeyOut)
async def rotate_key(
    key_id: str,
    response: Response,
    gateway: GatewayDep,
    caller: AdminCaller,
    body: RotateIn | None = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> CreatedKeyOut:
    """A new secret for the key; the old one works for ``grace_seconds`` more. A retried
    request (same ``request_id`` or ``Idempotency-Key``) answers with the same new key."""
    body = body or RotateIn()
    created = await _run(
        gateway.admin.rotate_key,
        key_id,
        grace=timedelta(seconds=body.grace_seconds),
        request_id=body.request_id or idempotency_key,
        actor=caller.actor,
    )
    response.headers["Cache-Control"] = "no-store"
    return CreatedKeyOut.created(created.record, created.plaintext)


@admin_router.post("/keys/{key_id}/revoke", response_model=KeyOut)
async def revoke_key(key_id: str, gateway: GatewayDep, caller: AdminCaller) -> KeyOut:
    """Revoke for good; every replica refuses the key from its next request."""
    return KeyOut.of(await _run(gateway.admin.revoke_key, key_id, actor=caller.actor))


@admin_router.put("/keys/{key_id}/expiry", response_model=KeyOut)
async def set_key_expiry(
    key_id: str, body: ExpiryIn, gateway: GatewayDep, caller: AdminCaller
) -> KeyOut:
    """Move the key's expiry, or remove it (``null``); audited as ``key.expiry``, and every
    replica sees it from its next request. A revoked key, a naive or past time: 4xx."""
    record = await _run(gateway.admin.set_key_expiry, key_id, body.expires_at, actor=caller.actor)
    return KeyOut.of(record)


@admin_router.post("/keys/{key_id}/disable", response_model=KeyOut)
async def disable_key(key_id: str, gateway: GatewayDep, caller: AdminCaller) -> KeyOut:
    return KeyOut.of(await _run(gateway.admin.disable_key, key_id, actor=caller.actor))


@admin_router.post("/keys/{key_id}/enable", response_model=KeyOut)
async def enable_key(key_id: str, gateway: GatewayDep, caller: AdminCaller) -> KeyOut:
    return KeyOut.of(await _run(gateway.admin.enable_key, key_id, actor=caller.actor))


# -- usage and audit -----------------------------------------------------------------------------

Since = Annotated[datetime | None, Query(description="From (inclusive), with a timezone.")]
Until = Annotated[datetime | None, Query(description="To (exclusive), with a timezone.")]


@admin_router.get("/usage", response_model=PageOut[UsageEventOut])
async def list_usage(
    gateway: GatewayDep,
    caller: AdminCaller,
    key_id: str | None = None,
    owner: Annotated[str | None, Query(description="Principal id or name.")] = None,
    since: Since = None,
    until: Until = None,
    errors_only: Annotated[
        bool, Query(description="Only refused and failed calls (status 400 or more).")
    ] = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> PageOut[UsageEventOut]:
    page = await _run(
        gateway.admin.list_usage,
        key_id=key_id,
        owner=owner,
        since=since,
        until=until,
        errors_only=errors_only,
        limit=limit,
        cursor=cursor,
    )
    return page_of(page.items, page.next_cursor, UsageEventOut.of)


@admin_router.get("/usage/summary", response_model=list[UsageSummaryOut])
async def summarize_usage(
    gateway: GatewayDep,
    caller: AdminCaller,
    key_id: str | None = None,
    owner: Annotated[str | None, Query(description="Principal id or name.")] = None,
    since: Since = None,
    until: Until = None,
) -> list[UsageSummaryOut]:
    """Calls, errors, rows, bytes and latency per key and operation."""

    rows = await _run(
        gateway.admin.summarize_usage, key_id=key_id, owner=owner, since=since, until=until
    )
    return [UsageSummaryOut.of(row) for row in rows]


@admin_router.get("/audit", response_model=PageOut[AuditEventOut])
async def list_audit(
    gateway: GatewayDep,
    caller: AdminCaller,
    target_id: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> PageOut[AuditEventOut]:
    page = await _run(
        gateway.admin.list_audit,
        target_id=target_id,
        actor=actor,
        action=action,
        limit=limit,
        cursor=cursor,
    )
    return page_of(page.items, page.next_cursor, AuditEventOut.of)


# -- a key's own usage ---------------------------------------------------------------------------

usage_router = APIRouter(prefix="/api/v1", tags=["Usage"])


async def _usage_caller(gateway: GatewayDep, key: BearerKey) -> Caller:
    from tabpfn_gateway.keys import SCOPE_USAGE

    return await gateway.proxy.authenticate(key, scope=SCOPE_USAGE)


UsageCaller = Annotated[Caller, Depends(_usage_caller)]

# GET /api/v1/usage/summary (with the budgets over the key) lives in routes/governance.py.
