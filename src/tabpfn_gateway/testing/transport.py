"""A synchronous httpx transport that serves requests from an ASGI app in the same process."""

from __future__ import annotations

import contextlib
import threading
import weakref
from types import TracebackType
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

__all__ = ["ASGIBridgeTransport"]


class ASGIBridgeTransport(httpx.BaseTransport):
    """Runs an ASGI app on a background event-loop thread and bridges sync httpx calls to it.

    ``httpx.ASGITransport`` is async-only; this lets the sync ``ProtocolClient`` (and any sync
    httpx client) talk in-process to ``FakeTabPFN().app``, the gateway app, or any ASGI app,
    from many threads at once. The event loop lives in an anyio blocking portal started on
    first use and stopped by ``close()``. An exception raised by the app reaches the caller as
    ``httpx.RemoteProtocolError``, the way a dropped connection looks to a real client.

    Request bodies are read whole before they are handed to the app, and responses are
    buffered whole: this is a test transport, not a streaming proxy.
    """

    def __init__(self, app: Any, *, client: tuple[str, int] = ("127.0.0.1", 123)) -> None:
        self.app = app
        self._asgi = httpx.ASGITransport(app=app, client=client)
        self._lock = threading.Lock()
        self._stop: weakref.finalize[Any, Any] | None = None
        self._portal: BlockingPortal | None = None

    def _get_portal(self) -> BlockingPortal:
        with self._lock:
            if self._portal is None:
                stack = contextlib.ExitStack()
                self._portal = stack.enter_context(start_blocking_portal())
                # Stopped by close(), when the transport is collected, or at interpreter exit
                # (finalize runs from atexit, while the portal's thread can still answer):
                # left to the garbage collector during finalization, the portal's stop
                # would wait forever on a thread that no longer runs.
                loop_thread = self._portal.call(threading.get_ident)
                self._stop = weakref.finalize(self, _stop_portal, stack, loop_thread)
            return self._portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        portal = self._get_portal()
        try:
            status, headers, content = portal.call(self._handle, request, body)
        except Exception as exc:
            # What a client sees when the server dies mid-request: the connection drops.
            raise httpx.RemoteProtocolError(
                f"The ASGI app failed ({type(exc).__name__}); connection dropped.",
                request=request,
            ) from exc
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def _handle(
        self, request: httpx.Request, body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        # The body is whole now: drop framing headers that described the original stream.
        headers = [
            (k, v)
            for k, v in request.headers.raw
            if k.lower() not in (b"content-length", b"transfer-encoding")
        ]
        inner = httpx.Request(request.method, request.url, headers=headers, content=body)
        response = await self._asgi.handle_async_request(inner)
        content = await response.aread()
        return response.status_code, response.headers.raw, content

    def close(self) -> None:
        """Stop the event loop thread that serves the app (idempotent)."""
        with self._lock:
            stop, self._stop, self._portal = self._stop, None, None
        if stop is not None:
            stop()

    def __enter__(self) -> ASGIBridgeTransport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()


def _stop_portal(stack: contextlib.ExitStack, loop_thread: int) -> None:
    """Stop a portal's event loop and join its thread."""
    if threading.get_ident() == loop_thread:
        # Collected on the portal's own thread: it cannot join itself, so a helper does.
        threading.Thread(target=stack.close, daemon=True).start()
        return
    stack.close()
