"""The proxy's hot path upstream: TabPFN API calls and uploads to signed storage URLs, their
answers kept as the upstream's bytes.

``AsyncProtocolClient`` is built for callers who want parsed messages and a high-level fit;
on every small call it pays for httpx's client layer (URL merging, cookies, auth and redirect
hooks), a tenacity retry loop and a re-encoded answer. The gateway's routes only need the
upstream's answer checked and passed on, so this forwarder sends the request straight to the
transport (aiohttp's pool in the server: ``AiohttpTransport.send``) and hands back the body
as it came. The rules stay the protocol client's, from ``tabpfn_gateway.protocol``: the same
headers (``_base.api_headers``), the same error mapping (``_errors``), the same retry policy
(``_base.retry_kwargs``, entered only once an attempt has failed), the same timeouts.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import tenacity
from pydantic import SecretStr

from tabpfn_gateway.errors import ConfigurationError, InvalidRequest
from tabpfn_gateway.protocol import _base
from tabpfn_gateway.protocol._errors import (
    error_from_response,
    error_from_storage,
    error_from_transport,
)

__all__ = ["Answer", "Forwarder", "Upstream"]

Retry = Callable[[BaseException], bool]


@dataclass(frozen=True, slots=True)
class Answer:
    """An upstream answer: status, headers (case-insensitive lookups) and the body's bytes."""

    status: int
    headers: Mapping[str, str]
    content: bytes

    def as_httpx(self) -> httpx.Response:
        """The answer as an ``httpx.Response`` (what the shared parsing helpers take)."""
        return httpx.Response(self.status, headers=list(self.headers.items()), content=self.content)


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where one credential's calls go: its TabPFN token and its own cloud URL (None: the
    forwarder's, i.e. the configured ``upstream_url``)."""

    token: SecretStr = field(repr=False)
    base_url: str | None = field(default=None, repr=False)


class Forwarder:
    """Sends TabPFN API calls for many credentials over one pool; errors are ``UpstreamError``s.

    ``transport`` is an ``AiohttpTransport`` (its byte-level ``send`` is used) or any async
    httpx transport (tests pass ``httpx.ASGITransport(FakeTabPFN().app)``; ``None`` is
    httpx's own pool), driven through an ``httpx.AsyncClient`` with the protocol client's
    settings. Redirects of API calls are followed as the protocol client follows them (the
    credential is dropped on a cross-origin hop).

    Uploads to signed storage URLs (``put_signed``) go over ``storage_transport``'s pool when
    one is given, so that long uploads cannot hold every connection small calls need.
    """

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        storage_transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 900.0,
        connect_timeout: float = 10.0,
        max_connections: int = 20,
        max_retries: int = 2,
        retry_wait: float = 0.25,
    ) -> None:
        self.options = _base.ClientOptions.build(
            base_url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            upload_concurrency=1,
            poll_timeout=None,
            headers=None,
            max_retries=max_retries,
            retry_wait=retry_wait,
        )
        self._api = _Pool(transport, self.options)
        self._storage = (
            self._api if storage_transport is None else _Pool(storage_transport, self.options)
        )
        self._closed = False

    def __repr__(self) -> str:
        return f"Forwarder({self.options.base_url!r})"

    async def aclose(self) -> None:
        """Close the pools."""
        self._closed = True
        await self._api.aclose()
        if self._storage is not self._api:
            await self._storage.aclose()

    async def call(
        self,
        operation: str,
        method: str,
        path: str,
        upstream: SecretStr | Upstream,
        *,
        body: bytes | None = None,
        retry: Retry = _base.retry_idempotent,
        allowed: Sequence[int] = (),
        fitted_model: bool = False,
        timeout: float | None = None,
    ) -> Answer:
        """One API call for ``upstream`` (a token, or a token and its credential's own cloud
        URL); ``body`` is JSON already encoded.

        Retried by ``retry`` (as the protocol client's step would be); an error answer
        (status >= 400, unless ``allowed``) raises the mapped ``UpstreamError``.
        """
        if self._closed:
            raise ConfigurationError("This forwarder is closed; create a new one.")
        if isinstance(upstream, Upstream):
            token, root = upstream.token, upstream.base_url
        else:
            token, root = upstream, None
        headers = _base.api_headers(self.options, token)
        if body is not None:
            headers["Content-Type"] = "application/json"
        # A credential's URL was checked and normalised when it was stored (Admin).
        url = self.options.url(path) if root is None else root.rstrip("/") + path
        read_timeout = self.options.timeout if timeout is None else timeout
        try:
            answer = await self._send(operation, method, url, headers, body, read_timeout)
            _raise_for_error(answer, operation, token, allowed, fitted_model)
            return answer
        except BaseException as exc:
            if self.options.max_retries == 0 or not retry(exc):
                raise
            first: BaseException | None = exc
        # The rare path: the shared policy decides on further attempts, the failed first one
        # counted (it is replayed as tenacity's first attempt, so waits and logs match).
        retrying = tenacity.AsyncRetrying(
            sleep=anyio.sleep, **_base.retry_kwargs(self.options, retry)
        )
        async for attempt in retrying:
            with attempt:
                if first is not None:
                    failure, first = first, None
                    raise failure
                answer = await self._send(operation, method, url, headers, body, read_timeout)
                _raise_for_error(answer, operation, token, allowed, fitted_model)
        return answer

    async def put_signed(
        self, url: str, body: AsyncIterable[bytes], headers: Mapping[str, str]
    ) -> None:
        """Stream ``body`` once to a signed storage URL with exactly ``headers`` (never a
        credential). Not retried (a stream cannot be replayed) and never redirected (a
        redirect would point the gateway at a host its egress policy never saw); an answer
        of 300 or more is the protocol client's storage error (``error_from_storage``)."""
        if self._closed:
            raise ConfigurationError("This forwarder is closed; create a new one.")
        _base.check_signed_url(url)
        answer = await self._storage.send(
            "upload", "PUT", url, dict(headers), body, self.options.timeout, redirects=False
        )
        if answer.status >= 300:
            raise error_from_storage(answer.as_httpx(), "upload")

    async def _send(
        self,
        operation: str,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        read_timeout: float,
    ) -> Answer:
        return await self._api.send(
            operation, method, url, headers, body, read_timeout, redirects=True
        )


class _Pool:
    """One connection pool: aiohttp's, at byte level, when ``transport`` is an
    ``AiohttpTransport``; else an ``httpx.AsyncClient`` over ``transport``."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None, options: _base.ClientOptions):
        self._options = options
        self._fast = _byte_sender(transport)
        self._http: httpx.AsyncClient | None = None
        if self._fast is None:
            self._http = httpx.AsyncClient(transport=transport, **options.httpx_kwargs())

    async def send(
        self,
        operation: str,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | AsyncIterable[bytes] | None,
        read_timeout: float,
        *,
        redirects: bool,
    ) -> Answer:
        connect_timeout = self._options.connect_timeout
        try:
            if self._fast is not None:
                status, answer_headers, content = await self._fast.send(
                    method,
                    url,
                    headers=headers,
                    content=body,
                    timeout=read_timeout,
                    connect_timeout=connect_timeout,
                    follow_redirects=redirects,
                )
                return Answer(status, answer_headers, content)
            assert self._http is not None
            response = await self._http.request(
                method,
                url,
                headers=headers,
                content=body,
                timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
                follow_redirects=redirects,
            )
            return Answer(response.status_code, response.headers, response.content)
        except httpx.HTTPError as exc:
            raise error_from_transport(exc, operation) from exc
        except httpx.InvalidURL as exc:
            raise InvalidRequest(f"TabPFN {operation}: invalid URL ({exc}).") from None

    async def aclose(self) -> None:
        if self._fast is not None:
            await self._fast.aclose()
        if self._http is not None:
            await self._http.aclose()


def _byte_sender(transport: httpx.AsyncBaseTransport | None) -> Any:
    try:
        from tabpfn_gateway.protocol.aiohttp_transport import AiohttpTransport
    except ImportError:  # no server extra: httpx's pool
        return None
    return transport if isinstance(transport, AiohttpTransport) else None


def _raise_for_error(
    answer: Answer,
    operation: str,
    token: SecretStr,
    allowed: Sequence[int],
    fitted_model: bool,
) -> None:
    if answer.status >= 400 and answer.status not in allowed:
        raise error_from_response(
            answer.as_httpx(),
            operation,
            secret=token.get_secret_value(),
            fitted_model=fitted_model,
        )
