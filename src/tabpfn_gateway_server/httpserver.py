"""How ``serve`` runs uvicorn: a request-head limit (431) enforced while the head arrives."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_HEADER_BYTES", "headers_too_large_body", "uvicorn_http_options"]

# The request line plus all header lines. Browsers and SDKs send a few KB; 64 KB leaves room
# for long cookies and traces while no client can make a worker hold megabytes of headers.
MAX_HEADER_BYTES = 64 * 1024


def headers_too_large_body(limit: int = MAX_HEADER_BYTES) -> bytes:
    """The documented error body of a 431 answered before any app code ran (no trace id yet)."""
    return json.dumps(
        {
            "error_code": "HEADERS_TOO_LARGE",
            "message": f"The request line and headers exceed {limit} bytes.",
            "trace_id": None,
        }
    ).encode()


def _answer_431(transport: Any, limit: int) -> None:
    body = headers_too_large_body(limit)
    transport.write(
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )
    transport.close()


try:
    from uvicorn.protocols.http import httptools_impl
except ImportError:  # httptools is in the server extra; without it uvicorn speaks h11
    httptools_impl = None  # type: ignore[assignment]


if httptools_impl is not None:

    class HeadLimitedHttpToolsProtocol(httptools_impl.HttpToolsProtocol):
        """uvicorn's httptools protocol that answers 431 and closes the connection once a
        request's head passes ``MAX_HEADER_BYTES`` before it is complete.

        httptools buffers a header until its end and has no limit of its own (32 MB of
        headers once reached the app). The bytes of an unfinished head are counted as they
        arrive, so a worker holds at most the limit plus one read; a head that ends within
        a read is measured exactly by ``EdgeMiddleware`` in the app.
        """

        max_header_bytes = MAX_HEADER_BYTES

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = True
            self._began_in_this_read = False
            self._head_bytes = 0

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._began_in_this_read = True
            self._head_bytes = 0

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            self._began_in_this_read = False
            super().data_received(data)
            if not self._in_head or self.transport is None or self.transport.is_closing():
                return
            # A head that began inside this read may share it with the end of the previous
            # request's body: count from the next read on (memory stays bounded by two reads).
            if not self._began_in_this_read:
                self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._in_head = False
                _answer_431(self.transport, self.max_header_bytes)


def uvicorn_http_options() -> dict[str, Any]:
    """The ``uvicorn.run`` options that limit request heads: the protocol above with
    httptools, else h11's own buffer limit (h11 answers 400 past it)."""
    options: dict[str, Any] = {"h11_max_incomplete_event_size": MAX_HEADER_BYTES}
    if httptools_impl is not None:
        options["http"] = HeadLimitedHttpToolsProtocol
    return options
