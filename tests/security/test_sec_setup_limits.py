"""Item 2: the setup rate limit holds: client addresses come only through trusted proxies."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gateway_support import serve_in_thread
from security_support import cli_env, serve_cli
from tabpfn_gateway.netpolicy import client_address, parse_networks
from tabpfn_gateway.testing import FakeTabPFN

pytestmark = pytest.mark.slow

SETUP = "/api/v1/auth/setup"


def test_client_address_believes_forwarded_for_only_through_trusted_hops() -> None:
    trusted = parse_networks(["10.0.0.0/8", "127.0.0.1"], "TRUSTED_PROXIES")
    # No trusted proxies: the header is ignored whatever it says.
    assert client_address("127.0.0.1", ["6.6.6.6"], ()) == "127.0.0.1"
    # An untrusted peer cannot speak for anyone.
    assert client_address("198.51.100.7", ["6.6.6.6"], trusted) == "198.51.100.7"
    # Read from the right: the first untrusted hop is the client, spoofed left parts ignored.
    assert client_address("127.0.0.1", ["6.6.6.6, 203.0.113.9, 10.1.1.1"], trusted) == (
        "203.0.113.9"
    )
    assert client_address("10.0.0.2", ["1.1.1.1", "203.0.113.9"], trusted) == "203.0.113.9"
    # Garbage past the last trusted proxy: the proxy's own view is all we know.
    assert client_address("127.0.0.1", ["not-an-ip, 10.1.1.1"], trusted) == "10.1.1.1"
    assert client_address("127.0.0.1", [], trusted) == "127.0.0.1"


def _failed_setups(url: str, addresses: list[str]) -> list[int]:
    statuses = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for address in addresses:
            response = http.post(
                SETUP, json={"tabpfn_token": "wrong-token"}, headers={"X-Forwarded-For": address}
            )
            statuses.append(response.status_code)
    return statuses


def test_rotating_forwarded_for_does_not_defeat_the_limit(tmp_path: Path) -> None:
    fake = FakeTabPFN(tokens=["tok-real"])
    with serve_in_thread(fake.app) as upstream:
        env = cli_env(tmp_path, upstream_url=upstream, setup_attempts_per_minute="3")
        with serve_cli(env) as url:
            statuses = _failed_setups(url, [f"203.0.113.{i}" for i in range(6)])
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3:] == [429, 429, 429]


def test_trusted_proxies_let_each_forwarded_client_count_on_its_own(tmp_path: Path) -> None:
    fake = FakeTabPFN(tokens=["tok-real"])
    with serve_in_thread(fake.app) as upstream:
        env = cli_env(
            tmp_path,
            upstream_url=upstream,
            setup_attempts_per_minute="2",
            trusted_proxies="127.0.0.1/32",
        )
        with serve_cli(env) as url:
            first = _failed_setups(url, ["203.0.113.1"] * 3)
            second = _failed_setups(url, ["203.0.113.2"])
    assert first == [401, 401, 429]
    assert second == [401]
