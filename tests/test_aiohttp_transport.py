"""AiohttpTransport: the server's upstream hop, against real sockets (FakeTabPFN under uvicorn,
and small raw servers that misbehave on purpose)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from pydantic import SecretStr
from sklearn.datasets import make_classification
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tabpfn_gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from tabpfn_gateway.gateway._forward import Forwarder
from tabpfn_gateway.protocol import AsyncProtocolClient
from tabpfn_gateway.protocol.aiohttp_transport import AiohttpTransport
from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    ClassifierFitTaskConfig,
    ClassifierPredictParams,
    FitRequest,
)
from tabpfn_gateway.testing.fake import STORAGE_PREFIX, FakeTabPFN
from tabpfn_gateway.testing.fake_server import serve_in_thread

PROBAS = ClassifierConfig(predict_params=ClassifierPredictParams(output_type="probas"))


def test_protocol_client_fits_and_predicts_over_aiohttp() -> None:
    fake = FakeTabPFN(tokens=["tok-a", "tok-b"], upload_chunks=3)
    X, y = make_classification(300, 6, random_state=0)

    async def main(base: str) -> tuple[np.ndarray, dict[str, object]]:
        async with AsyncProtocolClient(base, "tok-a", transport=AiohttpTransport()) as client:
            fitted = await client.fit(X[:250], y[:250], ClassifierFitTaskConfig())
            result = await client.predict(fitted.fitted_train_set_id, X[250:], PROBAS)
            usage = await client.with_token("tok-b").get_api_usage()
            assert isinstance(result.y_pred, np.ndarray)
            return result.y_pred, usage

    with serve_in_thread(fake.app) as base:
        probas, usage = anyio.run(main, base)
    assert probas.shape == (50, 2)
    np.testing.assert_allclose(probas.sum(axis=1), 1.0)
    assert isinstance(usage, dict)
    # Three signed URLs per file (x, y, test): every chunk was PUT through the aiohttp pool.
    puts = [r for r in fake.requests_to(STORAGE_PREFIX) if r.method == "PUT"]
    assert len(puts) == 9
    assert {r.status for r in puts} == {200}


def _echo_app(seen: list[dict[str, object]]) -> Starlette:
    async def echo(request: Request) -> Response:
        body = await request.body()
        seen.append(
            {
                "path": request.url.path,
                "raw_path": request.scope["raw_path"] + b"?" + request.scope["query_string"],
                "headers": dict(request.headers),
                "body": body,
            }
        )
        answer = JSONResponse({"ok": True, "n": len(body)})
        answer.set_cookie("session", "from-the-upstream")
        return answer

    async def redirect(request: Request) -> Response:
        return Response(status_code=307, headers={"Location": "http://127.0.0.1:9/elsewhere"})

    return Starlette(
        routes=[
            Route("/echo", echo, methods=["GET", "PUT", "POST"]),
            Route("/redirect", redirect, methods=["GET", "PUT"]),
        ]
    )


async def _chunks(chunk: bytes, count: int) -> AsyncIterator[bytes]:
    """A streamed request body: ``count`` times ``chunk``."""
    for _ in range(count):
        yield chunk


def test_no_cookie_rides_along_and_headers_are_exactly_the_requests() -> None:
    seen: list[dict[str, object]] = []

    async def main(base: str) -> None:
        transport = AiohttpTransport()
        for auth in ("Bearer tok-a", "Bearer tok-b", None):
            headers = {"Authorization": auth} if auth else {}
            answer = await transport.handle_async_request(
                httpx.Request("GET", f"{base}/echo", headers=headers)
            )
            assert answer.json() == {"ok": True, "n": 0}
            assert "session=from-the-upstream" in answer.headers["set-cookie"]
        await transport.aclose()

    with serve_in_thread(_echo_app(seen)) as base:
        anyio.run(main, base)
    assert [s["headers"].get("authorization") for s in seen] == [  # type: ignore[union-attr]
        "Bearer tok-a",
        "Bearer tok-b",
        None,
    ]
    # The upstream set a cookie; the shared pool must never send it back for anyone.
    assert all("cookie" not in s["headers"] for s in seen)  # type: ignore[operator]


def test_streams_an_async_body_and_keeps_signed_url_encoding() -> None:
    seen: list[dict[str, object]] = []
    chunk = b"x" * 65536

    async def main(base: str) -> None:
        async with AsyncProtocolClient(base, "tok", transport=AiohttpTransport()) as client:
            signed = f"{base}/echo?sig=a%2Fb%3D%3D&x=1%2B1"
            body = _chunks(chunk, 16)
            await client.put_signed_url(signed, body, {"Content-Type": "application/x"})
            body = _chunks(chunk, 16)
            await client.put_signed_url(signed, body, {"Content-Length": str(16 * len(chunk))})

    with serve_in_thread(_echo_app(seen)) as base:
        anyio.run(main, base)
    assert [s["body"] for s in seen] == [chunk * 16, chunk * 16]
    # Percent-encoding of the signature survives byte for byte (no re-quoting).
    assert seen[0]["raw_path"] == b"/echo?sig=a%2Fb%3D%3D&x=1%2B1"
    assert seen[0]["headers"]["transfer-encoding"] == "chunked"  # type: ignore[index]
    assert seen[1]["headers"]["content-length"] == str(16 * len(chunk))  # type: ignore[index]
    # Signed URLs get exactly the given headers: never the bearer credential.
    assert all("authorization" not in s["headers"] for s in seen)  # type: ignore[operator]


def test_redirects_are_answered_not_followed() -> None:
    async def main(base: str) -> int:
        transport = AiohttpTransport()
        try:
            answer = await transport.handle_async_request(httpx.Request("GET", f"{base}/redirect"))
        finally:
            await transport.aclose()
        assert answer.headers["location"] == "http://127.0.0.1:9/elsewhere"
        return answer.status_code

    with serve_in_thread(_echo_app([])) as base:
        assert anyio.run(main, base) == 307


@contextlib.contextmanager
def _raw_server(reply: bytes | None, *, hold: float = 0.0) -> Iterator[tuple[str, list[int]]]:
    """A one-thread TCP server that reads a request, then answers ``reply`` (or hangs up)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    requests: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    data = conn.recv(65536)
                    if data:
                        requests.append(len(data))
                    if hold:
                        stop.wait(hold)
                    if reply is not None:
                        conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", requests
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def _fit_request() -> FitRequest:
    return FitRequest(
        train_set_upload_id="00000000-0000-0000-0000-000000000001",  # type: ignore[arg-type]
        task_config=ClassifierFitTaskConfig(),
    )


def test_a_hang_up_after_sending_is_not_a_connect_failure_so_a_fit_is_not_resent() -> None:
    async def main(base: str) -> None:
        async with AsyncProtocolClient(
            base, "tok", transport=AiohttpTransport(), retry_wait=0
        ) as client:
            await client.fit_step(_fit_request())

    with _raw_server(None) as (base, requests), pytest.raises(UpstreamUnavailable) as caught:
        anyio.run(main, base)
    assert not caught.value.details.get("connect_failed")
    # A fit is a new paid job upstream: one attempt only, since the request may have landed.
    assert len(requests) == 1


def test_refused_connection_is_a_connect_failure_and_is_retried() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed on exit: nothing listens there

    async def main() -> None:
        async with AsyncProtocolClient(
            f"http://127.0.0.1:{port}", "tok", transport=AiohttpTransport(), retry_wait=0
        ) as client:
            await client.fit_step(_fit_request())

    with pytest.raises(UpstreamUnavailable) as caught:
        anyio.run(main)
    assert caught.value.details["connect_failed"] is True
    assert caught.value.details["cause"] == "ConnectError"


def test_read_timeout_is_upstream_timeout() -> None:
    async def main(base: str) -> None:
        async with AsyncProtocolClient(
            base, "tok", transport=AiohttpTransport(), timeout=0.3, max_retries=0
        ) as client:
            await client.get_api_usage()

    with _raw_server(None, hold=2.0) as (base, _), pytest.raises(UpstreamTimeout):
        anyio.run(main, base)


def test_a_closed_transport_says_so() -> None:
    async def main(base: str) -> None:
        transport = AiohttpTransport()
        await transport.handle_async_request(httpx.Request("GET", f"{base}/echo"))
        await transport.aclose()
        await transport.handle_async_request(httpx.Request("GET", f"{base}/echo"))

    with (
        serve_in_thread(_echo_app([])) as base,
        pytest.raises(httpx.TransportError, match="closed"),
    ):
        anyio.run(main, base)


class _CountingTransport(AiohttpTransport):
    """An aiohttp pool that records which methods it sent (to tell two pools apart)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    async def send(self, method: str, url: str, **kwargs: Any) -> Any:
        self.sent.append(method)
        return await super().send(method, url, **kwargs)


@pytest.mark.parametrize("pool", ["aiohttp", "httpx"])
def test_forwarded_uploads_stream_once_and_never_follow_a_redirect(pool: str) -> None:
    seen: list[dict[str, object]] = []
    chunk = b"y" * 65536

    def body() -> AsyncIterator[bytes]:
        return _chunks(chunk, 8)

    async def main(base: str) -> UpstreamError:
        storage = AiohttpTransport() if pool == "aiohttp" else None
        forwarder = Forwarder(base, transport=storage, storage_transport=storage)
        try:
            signed = f"{base}/echo?sig=a%2Fb%3D%3D"
            await forwarder.put_signed(signed, body(), {"Content-Length": str(8 * len(chunk))})
            await forwarder.put_signed(signed, body(), {"Content-Type": "application/x"})
            with pytest.raises(UpstreamError) as refused:
                await forwarder.put_signed(f"{base}/redirect", body(), {})
            return refused.value
        finally:
            await forwarder.aclose()

    with serve_in_thread(_echo_app(seen)) as base:
        refused = anyio.run(main, base)
    assert [s["body"] for s in seen] == [chunk * 8, chunk * 8]
    assert seen[0]["raw_path"] == b"/echo?sig=a%2Fb%3D%3D"
    assert seen[0]["headers"]["content-length"] == str(8 * len(chunk))  # type: ignore[index]
    assert seen[1]["headers"]["transfer-encoding"] == "chunked"  # type: ignore[index]
    assert all("authorization" not in s["headers"] for s in seen)  # type: ignore[operator]
    # The storage's 307 is the answer (a storage error), not a hop to 127.0.0.1:9.
    assert refused.status_code == 307
    assert refused.details["operation"] == "upload"


def test_uploads_use_the_storage_pool_and_api_calls_the_other() -> None:
    api, storage = _CountingTransport(), _CountingTransport()

    async def content() -> AsyncIterator[bytes]:
        yield b"abc"

    async def main(base: str) -> None:
        forwarder = Forwarder(base, transport=api, storage_transport=storage)
        try:
            await forwarder.call("echo", "POST", "/echo", SecretStr("tok"), body=b"{}")
            await forwarder.put_signed(f"{base}/echo", content(), {"Content-Length": "3"})
        finally:
            await forwarder.aclose()

    with serve_in_thread(_echo_app([])) as base:
        anyio.run(main, base)
    assert (api.sent, storage.sent) == (["POST"], ["PUT"])
