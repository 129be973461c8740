"""Helpers shared by the gateway, server and acceptance tests (real parts, no mocks)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

# Re-exported: the outage tests start clusters of their own.
from postgres_support import ThrowawayPostgres as ThrowawayPostgres
from postgres_support import ThrowawayUnavailable as ThrowawayUnavailable
from tabpfn_gateway.config import Settings
from tabpfn_gateway.gateway import Gateway, LocalBus

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REDIS_ENV = "TABPFN_GATEWAY_TEST_REDIS_URL"
SECRET = "test-secret-key-0123456789abcdef"
UPSTREAM_URL = "http://upstream.test"


def redis_url_or_skip() -> str:
    """A reachable Redis for tests (``TABPFN_GATEWAY_TEST_REDIS_URL``, default local).

    Unreachable: a skip on a developer machine, a failure in CI (like PostgreSQL).
    """
    import redis

    url = os.environ.get(REDIS_ENV, "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis at {url} is unreachable ({type(exc).__name__}); set {REDIS_ENV}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    finally:
        client.close()
    return url


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    """Settings for one test: its own data dir, a secret, the fake upstream's URL."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": tmp_path / "data",
        "secret_key": SECRET,
        "upstream_url": UPSTREAM_URL,
        "usage_flush_seconds": 3600.0,
        "redis_url": None,
        "public_url": None,
        # The names tests reach in-process apps by (the loopback names are the default).
        "allowed_hosts": [
            "localhost",
            "127.0.0.1",
            "::1",
            "testserver",
            "gateway.test",
            "gw.test",
            "gw.example",
        ],
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def build_gateway(
    settings: Settings, upstream_app: Any, *, store: Any = None, bus: Any = None
) -> Gateway:
    """A gateway whose upstream is ``upstream_app`` (FakeTabPFN's ASGI app), in process."""
    from tabpfn_gateway.testing.transport import ASGIBridgeTransport

    return Gateway.from_settings(
        settings,
        store=store,
        upstream_transport=ASGIBridgeTransport(upstream_app),
        async_upstream_transport=httpx.ASGITransport(app=upstream_app),
        bus=bus if bus is not None else LocalBus(),
    )


@dataclass
class Tenant:
    """A principal with a credential (one TabPFN token) and an inference key."""

    principal_id: str
    credential_id: str
    key_id: str
    key: str
    token: str


def add_tenant(gateway: Gateway, name: str, token: str) -> Tenant:
    """Register ``token`` for a new principal ``name`` and give it an inference key."""
    principal = gateway.admin.add_principal(name, actor="test")
    credential = gateway.admin.add_credential(principal.id, token, f"{name}-token", actor="test")
    created = gateway.keys.create(principal.id, credential.id, f"{name}-key", actor="test")
    return Tenant(principal.id, credential.id, created.record.key_id, created.plaintext, token)


def add_admin_key(gateway: Gateway, name: str = "ops") -> str:
    principal = gateway.admin.add_principal(name, "team", actor="test")
    return gateway.keys.create(principal.id, None, f"{name}-admin", admin=True).plaintext


@contextlib.contextmanager
def asgi_client(app: Any, base_url: str = "http://gateway.test") -> Iterator[httpx.Client]:
    """A sync httpx client talking to ``app`` in process (no sockets)."""
    from tabpfn_gateway.testing.transport import ASGIBridgeTransport

    transport = ASGIBridgeTransport(app)
    with httpx.Client(transport=transport, base_url=base_url, timeout=120) as client:
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_in_thread(app: Any, *, port: int | None = None) -> Iterator[str]:
    """Run ``app`` under uvicorn on a loopback port in a thread; yield its base URL."""
    import uvicorn

    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def decrypted_token(admin: Any, credential_id: str) -> Any:
    """The TabPFN token stored in a credential, decrypted by the admin's vault (tests only)."""
    credential = admin.get_credential(credential_id)
    return admin.vault.decrypt(credential.encrypted_token, credential_id=credential.id)
