"""The ceiling for a Python proxy on this machine: one Starlette route forwarding every request to
the upstream with aiohttp, nothing else (no auth, no metering, no rewriting: the upstream's
signed upload URLs still point at the upstream, so a client's uploads bypass this proxy).
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
    headers = {
        name: value
        for name in ("authorization", "content-type")
        if (value := request.headers.get(name)) is not None
    }
    target = UPSTREAM + request.url.path
    if request.url.query:
        target += "?" + request.url.query
    async with _session[0].request(
        request.method, target, data=await request.body(), headers=headers
    ) as answer:
        content = await answer.read()
        media_type = answer.headers.get("content-type", "application/json")
        return Response(content, status_code=answer.status, media_type=media_type)


_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
# The small call's own route first: its match is what it was when only that route existed.
app = Starlette(
    routes=[
        Route("/get_api_usage/", forward, methods=["POST"]),
        Route("/{path:path}", forward, methods=_METHODS),
    ]
)
