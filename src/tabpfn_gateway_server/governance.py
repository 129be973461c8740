"""Per-request governance context: the client address policies check, and the RateLimit
headers the core publishes, added to the answer on its way out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tabpfn_gateway.governance import client_address, response_headers
from tabpfn_gateway.netpolicy import client_address as believed_address

__all__ = ["GovernanceContextMiddleware"]


class GovernanceContextMiddleware:
    """Sets ``tabpfn_gateway.governance.client_address`` (the socket's peer, or what
    ``X-Forwarded-For`` says through the proxies in ``TABPFN_GATEWAY_TRUSTED_PROXIES``: the
    same rule as everywhere, ``tabpfn_gateway.netpolicy.client_address``) and collects the
    headers the core publishes (``RateLimit-Policy``/``RateLimit``) into the answer."""

    def __init__(self, app: ASGIApp, trusted: Sequence[Any] = ()) -> None:
        self.app = app
        self.trusted = list(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        peer = client[0] if client else None
        forwarded = Headers(scope=scope).getlist("x-forwarded-for") if self.trusted else []
        address = believed_address(peer, forwarded, self.trusted) if peer else None
        address_token = client_address.set(address)
        published: dict[str, str] = {}
        headers_token = response_headers.set(published)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and published:
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in published.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            response_headers.reset(headers_token)
            client_address.reset(address_token)
