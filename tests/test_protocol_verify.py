"""verify_tabpfn_token: valid, valid at its limit, invalid, or "cannot verify now" (raised)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from tabpfn_gateway.errors import UpstreamNotFound, UpstreamUnavailable
from tabpfn_gateway.protocol import TokenStatus, verify_tabpfn_token
from tabpfn_gateway.testing.fake import FakeTabPFN
from tabpfn_gateway.testing.fake_server import serve_in_thread
from tabpfn_gateway.testing.transport import ASGIBridgeTransport

BASE = "http://tabpfn.test"


@pytest.fixture
def fake() -> FakeTabPFN:
    return FakeTabPFN(
        {"tok-ok": None, "tok-capped": 100, "tok-zero": 0}, unverified_tokens=["tok-unverified"]
    )


@pytest.fixture
def bridge(fake: FakeTabPFN) -> Iterator[ASGIBridgeTransport]:
    with ASGIBridgeTransport(fake.app) as transport:
        yield transport


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("tok-ok", TokenStatus.VALID),
        ("tok-capped", TokenStatus.VALID),
        ("tok-zero", TokenStatus.VALID_LIMIT_REACHED),
        ("tok-unknown", TokenStatus.INVALID),
        ("tok-unverified", TokenStatus.INVALID),
    ],
)
def test_token_statuses(bridge: ASGIBridgeTransport, token: str, expected: TokenStatus) -> None:
    assert verify_tabpfn_token(token, base_url=BASE, transport=bridge) is expected


def test_a_used_up_token_is_valid_at_its_limit(
    fake: FakeTabPFN, bridge: ASGIBridgeTransport
) -> None:
    fake.set_usage("tok-capped", 100)
    status = verify_tabpfn_token(SecretStr("tok-capped"), base_url=BASE, transport=bridge)
    assert status is TokenStatus.VALID_LIMIT_REACHED
    assert [(r.path, r.token) for r in fake.requests] == [("/get_api_usage/", "tok-capped")]


def test_a_usage_call_refused_for_the_limit_is_valid_at_its_limit() -> None:
    def over_limit(request: httpx.Request) -> httpx.Response:
        body = {"message": "limit reached", "current_usage": 5, "usage_limit": 5}
        return httpx.Response(429, json=body)

    status = verify_tabpfn_token("tok", base_url=BASE, transport=httpx.MockTransport(over_limit))
    assert status is TokenStatus.VALID_LIMIT_REACHED


def test_an_unreachable_upstream_cannot_verify_and_says_retry() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The socket is closed: connection refused, never "invalid".
    with pytest.raises(UpstreamUnavailable) as caught:
        verify_tabpfn_token("tok-ok", base_url=f"http://127.0.0.1:{port}", timeout=2.0)
    assert caught.value.retryable
    assert "tok-ok" not in str(caught.value)


@pytest.mark.parametrize(("status", "error"), [(503, UpstreamUnavailable), (404, UpstreamNotFound)])
def test_other_upstream_failures_are_raised_not_judged(status: int, error: type[Exception]) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json={"message": "x"}))
    with pytest.raises(error):
        verify_tabpfn_token("tok", base_url=BASE, transport=transport)


def test_over_loopback(fake: FakeTabPFN) -> None:
    with serve_in_thread(fake.app) as url:
        assert verify_tabpfn_token("tok-ok", base_url=url) is TokenStatus.VALID
        assert verify_tabpfn_token("tok-nope", base_url=url) is TokenStatus.INVALID
