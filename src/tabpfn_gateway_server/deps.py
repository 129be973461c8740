"""FastAPI dependencies: the app's gateway, the bearer key, and an admin caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from tabpfn_gateway.errors import HostNotAllowed, MissingApiKey
from tabpfn_gateway.gateway import Caller, Gateway

__all__ = ["AdminCaller", "BearerKey", "GatewayDep", "client_address", "public_base_url"]

# auto_error=False: a missing header gets our own 401 body, not FastAPI's 403.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="GatewayKey",
    description="A gateway key (tpg_... or tpga_...) as a bearer token.",
)


# Dependencies are `async def` even where nothing awaits: FastAPI runs a plain `def`
# dependency in a worker thread, a thread hop per request for a dictionary lookup.
async def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def bearer_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> SecretStr:
    """The gateway key from ``Authorization: Bearer ...`` (kept secret), or 401."""
    if credentials is None or not credentials.credentials.strip():
        raise MissingApiKey("Send a gateway key as 'Authorization: Bearer <key>'.")
    return SecretStr(credentials.credentials.strip())


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
BearerKey = Annotated[SecretStr, Depends(bearer_key)]


async def bearer_key_of(request: Request) -> SecretStr:
    """``BearerKey`` resolved by hand, by the same rules (``tabpfn_gateway_server.direct``)."""
    return await bearer_key(await _bearer(request))


async def admin_caller(gateway: GatewayDep, key: BearerKey) -> Caller:
    """The caller, if the key has the admin scope (else 401/403)."""
    from tabpfn_gateway.keys import SCOPE_ADMIN

    return await gateway.proxy.authenticate(key, scope=SCOPE_ADMIN)


AdminCaller = Annotated[Caller, Depends(admin_caller)]


def public_base_url(request: Request) -> str:
    """Where clients reach this gateway: ``public_url`` if set, else the request's base URL
    when its ``Host`` is in ``allowed_hosts`` (else ``HostNotAllowed``, 400).

    The base becomes the upload URLs handed to clients: a forged ``Host`` (a proxy passing it
    on, a poisoned cache) would otherwise send a caller's data to a host of its choosing.
    """
    from tabpfn_gateway.netpolicy import host_allowed

    gateway: Gateway = request.app.state.gateway
    settings = gateway.settings
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = request.headers.get("host")
    # No Host header (HTTP/1.0): Starlette uses the address the server listens on.
    if host is not None and not host_allowed(host, settings.allowed_hosts):
        raise HostNotAllowed()
    return str(request.base_url).rstrip("/")


def client_address(request: Request) -> str:
    """The client's address: the socket's peer, or what ``X-Forwarded-For`` says through the
    proxies in ``TABPFN_GATEWAY_TRUSTED_PROXIES`` (uvicorn's own proxy-header handling is off,
    so a client cannot pick its address by sending the header)."""
    from tabpfn_gateway.netpolicy import client_address as believed_address

    gateway: Gateway = request.app.state.gateway
    peer = request.client.host if request.client is not None else None
    return believed_address(
        peer,
        request.headers.getlist("x-forwarded-for"),
        gateway.settings.trusted_proxy_networks(),
    )
