"""Every upstream status and transport failure maps to one error class; no httpx error escapes."""

from __future__ import annotations

import socket
from collections.abc import Callable

import anyio
import httpx
import pytest

from tabpfn_gateway.errors import (
    ClientTooOld,
    GatewayError,
    InsufficientScope,
    InvalidKey,
    KeyDisabled,
    KeyExpired,
    KeyRevoked,
    MalformedResponse,
    PayloadTooLarge,
    UpstreamAuthenticationFailed,
    UpstreamError,
    UpstreamFittedModelNotFound,
    UpstreamForbidden,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    UsageLimitReached,
)
from tabpfn_gateway.protocol import AsyncProtocolClient, ProtocolClient
from tabpfn_gateway.protocol._errors import parse_retry_after, scrub

BASE = "http://tabpfn.test"
TOKEN = "tok-secret-123456"
FITTED = "5b0c6a3e-6f55-4b8b-8f87-2d2f5c1e8c11"

Handler = Callable[[httpx.Request], httpx.Response]


def answering(status: int, body: object = None, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    return handler


def sync_client(handler: Handler) -> ProtocolClient:
    return ProtocolClient(
        BASE, TOKEN, transport=httpx.MockTransport(handler), max_retries=0, retry_wait=0
    )


STATUS_CASES: list[tuple[int, object, dict[str, str], type[UpstreamError]]] = [
    (400, {"message": "bad body"}, {}, UpstreamRejected),
    (401, {"message": "invalid token"}, {}, UpstreamAuthenticationFailed),
    (402, {"message": "pay up"}, {}, UsageLimitReached),
    (403, {"message": "verify your e-mail"}, {}, UpstreamForbidden),
    (404, {"message": "no such thing"}, {}, UpstreamNotFound),
    (408, {"message": "request timeout"}, {}, UpstreamUnavailable),
    (422, {"detail": [{"loc": ["body"], "msg": "field required"}]}, {}, UpstreamRejected),
    (426, {"message": "upgrade tabpfn-client"}, {}, ClientTooOld),
    (429, {"message": "slow down"}, {"Retry-After": "12"}, UpstreamRateLimited),
    (429, {"message": "limit", "current_usage": 10, "usage_limit": 10}, {}, UsageLimitReached),
    (429, {"message": "limit", "error_code": "QUOTA_EXCEEDED"}, {}, UsageLimitReached),
    (500, {"message": "boom"}, {}, UpstreamUnavailable),
    (502, None, {}, UpstreamUnavailable),
    (503, {"message": "maintenance"}, {"Retry-After": "3"}, UpstreamUnavailable),
    (504, {"message": "gateway timeout"}, {}, UpstreamTimeout),
]


@pytest.mark.parametrize(("status", "body", "headers", "expected"), STATUS_CASES)
def test_status_codes_map_to_error_classes(
    status: int, body: object, headers: dict[str, str], expected: type[UpstreamError]
) -> None:
    with (
        sync_client(answering(status, body, headers)) as client,
        pytest.raises(UpstreamError) as caught,
    ):
        client.get_api_usage()
    error = caught.value
    assert type(error) is expected
    assert error.status_code == status
    assert error.details["operation"] == "get_api_usage"
    assert f"HTTP {status}" in error.message
    if isinstance(body, dict) and "message" in body:
        assert body["message"] in error.message
    if "Retry-After" in headers:
        assert error.retry_after == float(headers["Retry-After"])
    assert error.retryable == expected.retryable


@pytest.mark.parametrize(("status", "body", "headers", "expected"), STATUS_CASES)
def test_the_async_client_maps_statuses_the_same_way(
    status: int, body: object, headers: dict[str, str], expected: type[UpstreamError]
) -> None:
    async def main() -> UpstreamError:
        transport = httpx.MockTransport(answering(status, body, headers))
        async with AsyncProtocolClient(BASE, TOKEN, transport=transport, max_retries=0) as client:
            with pytest.raises(UpstreamError) as caught:
                await client.get_api_usage()
        return caught.value

    assert type(anyio.run(main)) is expected


def test_trace_id_comes_from_the_body_or_a_header() -> None:
    with (
        sync_client(answering(500, {"message": "x", "trace_id": "trace-1"})) as client,
        pytest.raises(UpstreamUnavailable) as from_body,
    ):
        client.check_token()
    assert from_body.value.trace_id == "trace-1"
    assert "trace-1" in str(from_body.value)
    with (
        sync_client(answering(500, {"message": "x"}, {"x-trace-id": "trace-2"})) as client,
        pytest.raises(UpstreamUnavailable) as from_header,
    ):
        client.check_token()
    assert from_header.value.trace_id == "trace-2"


def test_a_404_for_a_fitted_model_is_a_fitted_model_not_found() -> None:
    with (
        sync_client(answering(404, {"message": "gone", "error_code": "NOT_FOUND"})) as client,
        pytest.raises(UpstreamFittedModelNotFound) as caught,
    ):
        client.get_fit_status(FITTED)
    assert caught.value.details["upstream_error_code"] == "NOT_FOUND"
    assert caught.value.error_code == "UPSTREAM_FITTED_MODEL_NOT_FOUND"


def test_the_token_is_scrubbed_even_when_the_upstream_echoes_it() -> None:
    echo = answering(401, {"message": f"token {TOKEN} is not valid", "detail": TOKEN})
    with sync_client(echo) as client, pytest.raises(UpstreamAuthenticationFailed) as caught:
        client.check_token()
    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(caught.value.details)
    assert "[REDACTED]" in caught.value.message


def test_html_error_pages_become_the_reason_phrase() -> None:
    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html><body>Bad gateway</body></html>")

    with sync_client(html) as client, pytest.raises(UpstreamUnavailable) as caught:
        client.check_token()
    assert "Bad Gateway" in caught.value.message
    assert "<html>" not in caught.value.message


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"default_model_version": "v2"}'],
)
def test_bodies_that_do_not_fit_are_malformed_responses(body: bytes) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    with sync_client(handler) as client, pytest.raises(MalformedResponse) as caught:
        client.get_settings()
    assert caught.value.status_code == 200
    assert not caught.value.retryable


def test_usage_must_be_a_json_object() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[1, 2, 3])

    with sync_client(handler) as client, pytest.raises(MalformedResponse, match="JSON object"):
        client.get_api_usage()


def closed_port() -> int:
    # Bind, read the port, close: nothing listens there afterwards.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_upstream_unavailable_and_names_no_secret() -> None:
    port = closed_port()
    with (
        ProtocolClient(f"http://127.0.0.1:{port}", TOKEN, max_retries=0) as client,
        pytest.raises(UpstreamUnavailable) as caught,
    ):
        client.check_token()
    error = caught.value
    assert type(error) is UpstreamUnavailable
    assert error.retryable
    assert error.details["connect_failed"] is True
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert f"127.0.0.1:{port}" in error.message
    assert TOKEN not in str(error)


def test_connection_refused_is_retried_for_idempotent_steps() -> None:
    attempts = []

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        raise httpx.ConnectError("refused", request=request)

    client = ProtocolClient(BASE, TOKEN, transport=httpx.MockTransport(refuse), retry_wait=0)
    with client, pytest.raises(UpstreamUnavailable):
        client.get_settings()
    assert len(attempts) == 3  # max_retries=2 by default


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (httpx.ReadTimeout, UpstreamTimeout),
        (httpx.ConnectTimeout, UpstreamTimeout),
        (httpx.RemoteProtocolError, UpstreamUnavailable),
        (httpx.ReadError, UpstreamUnavailable),
    ],
)
def test_transport_failures_map_and_never_leak_httpx(
    failure: type[httpx.TransportError], expected: type[UpstreamError]
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise failure("it broke", request=request)

    with sync_client(fail) as client, pytest.raises(GatewayError) as caught:
        client.get_api_usage()
    assert type(caught.value) is expected
    assert not isinstance(caught.value, httpx.HTTPError)
    assert isinstance(caught.value.__cause__, failure)


def test_signed_url_failures_never_show_the_signature() -> None:
    def storage(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, text="SignatureDoesNotMatch")

    url = "https://storage.test/bucket/obj?X-Goog-Signature=deadbeefsecret&X-Goog-Expires=60"
    with sync_client(storage) as client, pytest.raises(UpstreamError) as caught:
        client.put_signed_url(url, b"data", {})
    assert type(caught.value) is UpstreamError  # a bad signature is not a bad token
    assert "deadbeefsecret" not in str(caught.value)
    assert caught.value.status_code == 403


def test_transport_errors_on_signed_urls_do_not_show_the_query() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    url = "https://storage.test/obj?X-Goog-Signature=deadbeefsecret"
    with sync_client(fail) as client, pytest.raises(UpstreamUnavailable) as caught:
        client.put_signed_url(url, b"data", {})
    assert "deadbeefsecret" not in str(caught.value)
    assert "storage.test" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5", 5.0), (" 0.5 ", 0.5), ("-3", 0.0), ("soon", None), (None, None)],
)
def test_retry_after_parsing(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_as_an_http_date_is_seconds_from_now() -> None:
    seconds = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
    assert seconds == 0.0  # in the past


def test_scrub_removes_urls_queries_userinfo_and_bearer_values() -> None:
    text = "GET https://u:p@h.test/x?sig=abc Bearer eyJabcdefgh.ijklmnopq.rstuvwxyz tok-1"
    cleaned = scrub(text, "tok-1")
    assert "sig=abc" not in cleaned
    assert "u:p@" not in cleaned
    assert "eyJabcdefgh" not in cleaned
    assert "tok-1" not in cleaned


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, "INVALID_KEY", InvalidKey),
        (401, "KEY_REVOKED", KeyRevoked),
        (401, "KEY_EXPIRED", KeyExpired),
        (403, "KEY_DISABLED", KeyDisabled),
        (403, "INSUFFICIENT_SCOPE", InsufficientScope),
        (413, "PAYLOAD_TOO_LARGE", PayloadTooLarge),
    ],
)
def test_a_gateway_answer_about_the_key_raises_the_gateways_own_class(
    status: int, code: str, expected: type[GatewayError]
) -> None:
    # The SDK pointed at a tabpfn-gateway server: user code can `except KeyRevoked`.
    body = {"error_code": code, "message": "the gateway says no", "trace_id": "t-1"}
    with sync_client(answering(status, body)) as client, pytest.raises(expected) as info:
        client.get_api_usage()
    assert info.value.error_code == code
    assert info.value.trace_id == "t-1"
    assert info.value.details["status_code"] == status
    assert TOKEN not in str(info.value)


def test_a_vendor_not_found_code_still_maps_by_status() -> None:
    # The cloud's own NOT_FOUND body must not be mistaken for a gateway code.
    body = {"error_code": "NOT_FOUND", "message": "no such fit"}
    with sync_client(answering(404, body)) as client, pytest.raises(UpstreamNotFound):
        client.get_api_usage()
