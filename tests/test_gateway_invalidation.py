"""Cross-replica invalidation buses: a message published by one reaches the others."""

from __future__ import annotations

import threading
import uuid

from gateway_support import redis_url_or_skip
from tabpfn_gateway.gateway import LocalBus, PostgresNotifyBus, RedisBus
from tabpfn_gateway.gateway._invalidation import ALL, CHANNEL


class Inbox:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, message: str) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait_for(self, message: str, timeout: float = 30.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: message in self.messages, timeout)


def test_local_bus_delivers_to_itself() -> None:
    bus = LocalBus()
    inbox = Inbox()
    bus.start(inbox)
    bus.publish("key:abc")
    assert inbox.messages == ["key:abc"]
    bus.close()
    bus.publish("key:later")
    assert inbox.messages == ["key:abc"]


def _two_replicas(
    first: RedisBus | PostgresNotifyBus, second: RedisBus | PostgresNotifyBus
) -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    first.start(inbox_a)
    second.start(inbox_b)
    try:
        assert first.wait_ready()
        assert second.wait_ready()
        message = f"key:{uuid.uuid4().hex}"
        first.publish(message)
        assert inbox_b.wait_for(message), "the other replica must hear the message"
        assert inbox_a.wait_for(message), "the publisher hears itself too"
    finally:
        first.close()
        second.close()


def test_redis_bus_reaches_another_replica() -> None:
    url = redis_url_or_skip()
    _two_replicas(RedisBus(url), RedisBus(url))


def test_postgres_bus_reaches_another_replica(pg_url: str) -> None:
    _two_replicas(
        PostgresNotifyBus.from_database_url(pg_url), PostgresNotifyBus.from_database_url(pg_url)
    )


def test_postgres_bus_reconnect_drops_everything(pg_url: str) -> None:
    import psycopg

    bus = PostgresNotifyBus.from_database_url(pg_url)
    inbox = Inbox()
    bus.start(inbox)
    try:
        assert bus.wait_ready()
        # Kill the listener's connection from outside, as a database restart would.
        conninfo = pg_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE %s AND pid <> pg_backend_pid()",
                (f"LISTEN {CHANNEL}%",),
            )
        # Messages may have been missed while it was away: it asks to drop every cache entry.
        assert inbox.wait_for(ALL), "after reconnecting the bus must invalidate everything"
        bus.publish("key:after-reconnect")
        assert inbox.wait_for("key:after-reconnect")
    finally:
        bus.close()


def test_publish_to_an_unreachable_database_does_not_raise() -> None:
    bus = PostgresNotifyBus("host=127.0.0.1 port=1 dbname=nothing user=nobody connect_timeout=1")
    bus.publish("key:x")  # logged, not raised: the TTL still bounds staleness
