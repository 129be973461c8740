"""Transports the protocol-client suite runs on: FakeTabPFN in process, every request kept.

``AsyncRecordingTransport`` serves the async client (httpx's ASGI transport), and
``RecordingTransport`` the sync one (the ASGI bridge, which runs the app on its own loop);
``tools/unasync.py`` turns the one name into the other in the generated sync tests.
"""

from __future__ import annotations

from typing import Any

import httpx

from tabpfn_gateway.testing.transport import ASGIBridgeTransport

__all__ = ["AsyncRecordingTransport", "RecordingTransport"]


class AsyncRecordingTransport(httpx.AsyncBaseTransport):
    """Sends to ``app`` and keeps every request it saw (headers included)."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.seen: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        try:
            return await self.inner.handle_async_request(request)
        except httpx.HTTPError:
            raise
        except Exception as exc:
            # As the sync bridge does: an app that dies mid-answer is a dropped connection.
            raise httpx.RemoteProtocolError(
                f"The ASGI app failed ({type(exc).__name__}); connection dropped.",
                request=request,
            ) from exc

    async def aclose(self) -> None:
        await self.inner.aclose()


class RecordingTransport(httpx.BaseTransport):
    """Sends to ``app`` and keeps every request it saw (headers included)."""

    def __init__(self, app: Any) -> None:
        self.inner = ASGIBridgeTransport(app)
        self.seen: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()
