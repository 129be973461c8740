"""A synchronous httpx transport that serves requests from an ASGI app in the same process."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

__all__ = ["ASGIBridgeTransport"]


class ASGIBridgeTransport(httpx.BaseTransport):
    """Runs an ASGI app on a background event-loop thread and bridges sync httpx calls to it.

    ``httpx.ASGITransport`` is async-only; this lets the sync ``ProtocolClient`` (and any sync
    httpx client) talk in-process to ``FakeTabPFN().app``, the gateway app, or any ASGI app,
    from many threads at once. The event loop lives in an anyio blocking portal started on
    first use and stopped by ``close()``. An exception raised by the app reaches the caller as
    ``httpx.RemoteProtocolError``, the way a dropped connection looks to a real client.
    """

    def __init__(self, app: Any, *, client: tuple[str, int] = ("127.0.0.1", 123)) -> None:
        raise NotImplementedError

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> ASGIBridgeTransport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()
