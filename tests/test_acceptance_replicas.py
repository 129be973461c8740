"""Acceptance: several replicas on one database, and the database going away under a server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway_support import (
    IN_CI,
    SECRET,
    ThrowawayPostgres,
    ThrowawayUnavailable,
    add_admin_key,
    add_tenant,
    build_gateway,
    make_settings,
    redis_url_or_skip,
    serve_in_thread,
)
from tabpfn_gateway import cli, migrate
from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import KeyRevoked
from tabpfn_gateway.gateway import Gateway, LocalBus, PostgresNotifyBus, RedisBus
from tabpfn_gateway.store import open_store
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway_server import create_app
from test_gateway_invalidation import Inbox

pytestmark = pytest.mark.slow

TOKEN = "tok-replica-0001"


class WatchedPostgresBus(PostgresNotifyBus):
    """The real bus, plus an inbox the test can wait on (no sleeping, no timing)."""

    def __init__(self, conninfo: str) -> None:
        super().__init__(conninfo)
        self.heard = Inbox()

    def _deliver(self, message: str) -> None:
        super()._deliver(message)
        self.heard(message)


class WatchedRedisBus(RedisBus):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.heard = Inbox()

    def _deliver(self, message: str) -> None:
        super()._deliver(message)
        self.heard(message)


def replica(settings: Settings, fake: FakeTabPFN, bus: Any) -> Gateway:
    return build_gateway(settings, fake.app, store=open_store(settings), bus=bus)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("transport", ["postgres-notify", "redis"])
def test_revocation_through_one_replica_reaches_the_other(
    transport: str, tmp_path: Path, pg_url: str
) -> None:
    redis_url = redis_url_or_skip() if transport == "redis" else None
    # A long key cache: only the cross-replica signal can explain a prompt refusal.
    settings = make_settings(tmp_path, pg_url, key_cache_ttl_seconds=300, redis_url=redis_url)
    migrate.upgrade(settings)
    fake = FakeTabPFN(tokens=[TOKEN])

    def bus() -> Any:
        if redis_url:
            return WatchedRedisBus(redis_url)
        return WatchedPostgresBus.from_database_url(pg_url)

    first, second = replica(settings, fake, bus()), replica(settings, fake, bus())
    try:
        admin_key = add_admin_key(first)
        alice = add_tenant(first, "alice", TOKEN)
        with (
            serve_in_thread(create_app(settings, gateway=first)) as url_a,
            serve_in_thread(create_app(settings, gateway=second)) as url_b,
        ):
            # The second replica verifies (and caches) the key.
            assert httpx.get(f"{url_b}/protected/", headers=bearer(alice.key)).status_code == 200
            revoked = httpx.post(
                f"{url_a}/api/v1/admin/keys/{alice.key_id}/revoke", headers=bearer(admin_key)
            )
            assert revoked.status_code == 200
            assert second.bus.heard.wait_for(f"key:{alice.key_id}")  # type: ignore[attr-defined]
            refused = httpx.get(f"{url_b}/tabpfn/get_settings", headers=bearer(alice.key))
            assert refused.status_code == 401
            assert refused.json()["error_code"] == "KEY_REVOKED"
    finally:
        first.close()
        second.close()
        first.store.close()
        second.store.close()


def test_without_a_signal_only_the_cache_ttl_bounds_revocation(tmp_path: Path, pg_url: str) -> None:
    # The control for the test above: in-process buses, the same long cache.
    settings = make_settings(tmp_path, pg_url, key_cache_ttl_seconds=300)
    migrate.upgrade(settings)
    fake = FakeTabPFN(tokens=[TOKEN])
    first, second = replica(settings, fake, LocalBus()), replica(settings, fake, LocalBus())
    try:
        alice = add_tenant(first, "alice", TOKEN)
        session = second.session(alice.key)
        session.get_settings()
        first.keys.revoke(alice.key_id, actor="test")
        session.get_settings()  # still cached on the second replica: accepted
        with pytest.raises(KeyRevoked):
            first.session(alice.key).get_settings()
    finally:
        first.close()
        second.close()
        first.store.close()
        second.store.close()


def test_a_revocation_from_the_cli_reaches_a_running_server(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator revokes with `tabpfn-gateway keys revoke` on another machine: the running
    # server (long key cache) must refuse the key on its next request, not in 300 s.
    settings = make_settings(tmp_path, pg_url, key_cache_ttl_seconds=300)
    migrate.upgrade(settings)
    fake = FakeTabPFN(tokens=[TOKEN])
    server = replica(settings, fake, WatchedPostgresBus.from_database_url(pg_url))
    try:
        alice = add_tenant(server, "alice", TOKEN)
        session = server.session(alice.key)
        session.get_settings()  # verified and cached
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("TABPFN_GATEWAY_REDIS_URL", raising=False)
        monkeypatch.setenv("TABPFN_GATEWAY_DATABASE_URL", pg_url)
        monkeypatch.setenv("TABPFN_GATEWAY_SECRET_KEY", SECRET)
        monkeypatch.setenv("TABPFN_GATEWAY_DATA_DIR", str(settings.data_dir))
        assert cli.main(["keys", "revoke", alice.key_id]) == 0
        assert server.bus.heard.wait_for(f"key:{alice.key_id}")  # type: ignore[attr-defined]
        with pytest.raises(KeyRevoked):
            session.get_settings()
    finally:
        server.close()
        server.store.close()


# -- the database goes away -------------------------------------------------------------------


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    try:
        cluster = ThrowawayPostgres()
    except ThrowawayUnavailable as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def assert_store_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error_code"] == "STORE_UNAVAILABLE"
    assert int(response.headers["Retry-After"]) >= 1


def test_postgres_stopping_under_the_server_is_503_never_401(
    tmp_path: Path, throwaway_postgres: ThrowawayPostgres
) -> None:
    # No key cache: every request asks the database.
    settings = make_settings(
        tmp_path, throwaway_postgres.url, key_cache_ttl_seconds=0, db_connect_timeout_seconds=2
    )
    migrate.upgrade(settings)
    fake = FakeTabPFN(tokens=[TOKEN, "tok-replica-0002"])
    gateway = replica(settings, fake, LocalBus())
    try:
        alice = add_tenant(gateway, "alice", TOKEN)
        with serve_in_thread(create_app(settings, gateway=gateway)) as url:
            ok = httpx.get(f"{url}/tabpfn/get_settings", headers=bearer(alice.key))
            assert ok.status_code == 200
            throwaway_postgres.stop()
            assert_store_unavailable(
                httpx.get(f"{url}/tabpfn/get_settings", headers=bearer(alice.key))
            )
            assert_store_unavailable(
                httpx.post(f"{url}/api/v1/auth/setup", json={"tabpfn_token": "tok-replica-0002"})
            )
            assert httpx.get(f"{url}/readyz").status_code == 503
            assert httpx.get(f"{url}/healthz").status_code == 200
            # Back up: the same server recovers without a restart.
            throwaway_postgres.start()
            again = httpx.get(f"{url}/tabpfn/get_settings", headers=bearer(alice.key))
            assert again.status_code == 200
            assert httpx.get(f"{url}/readyz").status_code == 200
    finally:
        gateway.close()
        gateway.store.close()


def test_sqlite_file_gone_is_503_never_401(tmp_path: Path) -> None:
    directory = tmp_path / "db"
    settings = make_settings(tmp_path, f"sqlite:///{directory}/gateway.db", key_cache_ttl_seconds=0)
    migrate.upgrade(settings)
    fake = FakeTabPFN(tokens=[TOKEN])
    gateway = replica(settings, fake, LocalBus())
    try:
        alice = add_tenant(gateway, "alice", TOKEN)
        with serve_in_thread(create_app(settings, gateway=gateway)) as url:
            assert httpx.get(f"{url}/protected/", headers=bearer(alice.key)).status_code == 200
            # The volume holding the file goes away; pooled connections are recycled (an
            # embedded file cannot go down any other way while a connection holds it open).
            shutil.rmtree(directory)
            directory.write_text("not a directory any more")
            gateway.store.close()
            assert_store_unavailable(
                httpx.get(f"{url}/tabpfn/get_settings", headers=bearer(alice.key))
            )
            assert httpx.get(f"{url}/readyz").status_code == 503
    finally:
        gateway.close()
