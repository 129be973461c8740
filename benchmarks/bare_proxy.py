"""The ceiling for a Python proxy on this machine: one Starlette route forwarding to the upstream
with aiohttp, nothing else (no auth, no metering). ``benchmarks/gateway.py`` serves it with
uvicorn beside the gateway; ``BARE_PROXY_UPSTREAM`` is the upstream's base URL."""

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
    headers = {"Authorization": request.headers.get("authorization", "")}
    async with _session[0].request(
        request.method, UPSTREAM + request.url.path, data=await request.body(), headers=headers
    ) as answer:
        content = await answer.read()
        return Response(content, status_code=answer.status, media_type="application/json")


app = Starlette(routes=[Route("/get_api_usage/", forward, methods=["POST"])])
