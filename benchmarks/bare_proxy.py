"""The ceiling for a Python proxy on this machine: one Starlette route forwarding every request to
the upstream with aiohttp, nothing else (no auth, no metering). Its one rewrite: the upstream's
signed upload URLs are pointed at this proxy (a byte replace of the upstream's origin), so a
client's uploads stream through it like every other call, as they do through the gateway.
``benchmarks/gateway.py`` serves it with uvicorn beside the gateway; ``BARE_PROXY_UPSTREAM`` is
the upstream's base URL."""

from __future__ import annotations

import os

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

UPSTREAM = os.environ.get("BARE_PROXY_UPSTREAM", "http://127.0.0.1:8765")
_session: list[aiohttp.ClientSession] = []


async def forward(request: Request) -> Response:
    if not _session:
        _session.append(aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()))
    path = request.url.path
    headers = {
        name: value
        for name, value in request.headers.items()
        if name in _PASSED or name.startswith("x-goog-")
    }
    target = UPSTREAM + path
    if request.url.query:
        target += "?" + request.url.query
    # An upload streams (the gateway's does too); every other body is small.
    body = request.stream() if request.method == "PUT" else await request.body()
    async with _session[0].request(request.method, target, data=body, headers=headers) as answer:
        content = await answer.read()
        if path.endswith("_upload"):
            content = content.replace(_UPSTREAM_BYTES, str(request.base_url).rstrip("/").encode())
        media_type = answer.headers.get("content-type", "application/json")
        return Response(content, status_code=answer.status, media_type=media_type)


_PASSED = frozenset({"authorization", "content-type", "content-length"})
_UPSTREAM_BYTES = UPSTREAM.encode()


_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
# The small call's own route first: its match is what it was when only that route existed.
app = Starlette(
    routes=[
        Route("/get_api_usage/", forward, methods=["POST"]),
        Route("/{path:path}", forward, methods=_METHODS),
    ]
)
