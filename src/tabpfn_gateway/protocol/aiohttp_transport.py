"""An httpx transport over aiohttp's connection pool: the gateway's fast async upstream hop.

httpx's async pool is several times slower than aiohttp's under concurrency (encode/httpx#3215;
``benchmarks/gateway.py`` measures it), so the server sends its upstream requests through
aiohttp while every rule above the socket (headers, retries, error mapping, parsing) stays in
``AsyncProtocolClient`` and ``httpx``. Needs the ``server`` extra (``aiohttp``).

Why not the ``httpx-aiohttp`` package's transport: it maps every aiohttp connection error,
a server disconnect after the request was sent included, to ``httpx.ConnectTimeout``, which
our clients read as "nothing reached the upstream" and retry; for a fit that would start a
second, paid job. Here only failures before a byte was sent become ``ConnectError`` /
``ConnectTimeout``.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
import weakref
from collections.abc import AsyncIterable, Mapping
from typing import Any

import httpx

try:
    import aiohttp
    from yarl import URL
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "The aiohttp upstream transport needs aiohttp: pip install 'tabpfn-gateway[server]'"
    ) from exc

__all__ = ["AiohttpTransport"]


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncBaseTransport`` backed by one ``aiohttp.ClientSession``.

    The session (and its pool) is made on the first request, inside the running event loop,
    and closed by ``aclose()``. It keeps no cookies (one pool serves many credentials) and
    never follows redirects (httpx decides that above the transport). Request bodies may be
    bytes or async iterables, which are streamed chunk by chunk; response bodies are read
    whole (every answer of the TabPFN protocol is read whole by its caller). Timeouts come
    from httpx's per-request ``timeout`` extension (``connect``, ``read``, ``pool``).

    Parameters
    ----------
    max_connections:
        Size of the pool (aiohttp's ``limit``).
    keepalive_expiry:
        Seconds an idle connection is kept.
    verify:
        TLS verification (an ``ssl.SSLContext``, or False to disable it).
    trust_env:
        Honour ``HTTP(S)_PROXY`` / ``NO_PROXY`` from the environment, as httpx does.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        keepalive_expiry: float = 5.0,
        verify: ssl.SSLContext | bool = True,
        trust_env: bool = True,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._verify = verify
        # aiohttp re-reads the proxy environment on every request when asked to trust it;
        # read it once, and ask only when a proxy is configured at all.
        self._trust_env = trust_env and bool(urllib.request.getproxies())
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._timeouts: dict[
            tuple[float | None, float | None, float | None], aiohttp.ClientTimeout
        ] = {}

    def _open(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        if self._session is not None:
            # A pool belongs to the loop that made it; one from an ended loop is dead.
            _detach(self._session)
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            keepalive_timeout=self._keepalive_expiry,
            ssl=self._verify if self._verify is not True else True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=self._trust_env,
            auto_decompress=False,  # httpx decodes Content-Encoding itself
            # httpx already set every header it means to send (User-Agent included).
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        )
        self._loop = loop
        # A transport dropped without `aclose()` (its loop gone, e.g. an in-process test
        # server without lifespan) lets its session go quietly instead of warning at exit.
        weakref.finalize(self, _detach, self._session)
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        wanted = request.extensions.get("timeout") or {}
        return self._timeout_for(wanted.get("connect"), wanted.get("read"), wanted.get("pool"))

    def _timeout_for(
        self, connect: float | None, read: float | None, pool: float | None
    ) -> aiohttp.ClientTimeout:
        key = (connect, read, pool)
        timeout = self._timeouts.get(key)
        if timeout is None:
            # `connect` in aiohttp covers waiting for a pooled connection too (httpx: pool).
            timeout = aiohttp.ClientTimeout(
                total=None, connect=pool, sock_connect=connect, sock_read=read
            )
            if len(self._timeouts) < 64:
                self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise httpx.TransportError("The aiohttp transport is closed.", request=request)
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or self._loop is not loop:
            session = self._open(loop)
        headers = request.headers.multi_items()
        data: Any
        try:
            data = request.content or None
        except httpx.RequestNotRead:
            data = request.stream
            # aiohttp frames a streamed body itself (chunked unless a length is given).
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        try:
            async with session.request(
                request.method,
                # `encoded`: a signed URL's percent-encoded signature goes out byte for byte.
                URL(str(request.url), encoded=True),
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=self._timeout(request),
            ) as answer:
                content = await answer.read()
                status = answer.status
                raw_headers = answer.raw_headers
                reason = answer.reason
        except aiohttp.ClientError as exc:
            raise _mapped(exc, request) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if reason:
            extensions["reason_phrase"] = reason.encode("ascii", "replace")
        return httpx.Response(
            status, headers=raw_headers, content=content, request=request, extensions=extensions
        )

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes | AsyncIterable[bytes] | None,
        timeout: float,
        connect_timeout: float,
        follow_redirects: bool = False,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One request without httpx's request and response objects: ``(status, headers,
        body)``. The gateway's forwarder uses it on every small call and every upload; a body
        given as an async iterable is streamed chunk by chunk (sized by a ``Content-Length``
        header when there is one, else chunked).

        Failures are the same ``httpx`` exceptions ``handle_async_request`` raises. With
        ``follow_redirects`` aiohttp follows them as httpx would (dropping ``Authorization``
        on a cross-origin hop).
        """
        if self._closed:
            raise httpx.TransportError("The aiohttp transport is closed.")
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or self._loop is not loop:
            session = self._open(loop)
        try:
            async with session.request(
                method,
                URL(url, encoded=True),
                headers=headers,
                data=content,
                allow_redirects=follow_redirects,
                timeout=self._timeout_for(connect_timeout, timeout, timeout),
            ) as answer:
                return answer.status, answer.headers, await answer.read()
        except aiohttp.ClientError as exc:
            raise _mapped(exc, httpx.Request(method, url)) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(
                str(exc) or "timed out", request=httpx.Request(method, url)
            ) from exc

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None and not self._session.closed:
            await self._session.close()


def _detach(session: aiohttp.ClientSession) -> None:
    if not session.closed:
        session.detach()


def _mapped(exc: aiohttp.ClientError, request: httpx.Request) -> httpx.TransportError:
    """The httpx exception for an aiohttp failure: connect errors only when nothing was sent."""
    message = str(exc) or type(exc).__name__
    cls: type[httpx.TransportError]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        cls = httpx.ConnectTimeout
    elif isinstance(exc, aiohttp.ServerTimeoutError):
        cls = httpx.ReadTimeout
    elif isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ClientProxyConnectionError):
        cls = httpx.ConnectError
    elif isinstance(exc, aiohttp.NonHttpUrlClientError | aiohttp.InvalidURL):
        cls = httpx.UnsupportedProtocol
    elif isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientOSError):
        cls = httpx.ReadError
    elif isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError):
        cls = httpx.RemoteProtocolError
    else:
        cls = httpx.NetworkError
    return cls(message, request=request)
