"""Cross-replica cache invalidation: PostgreSQL LISTEN/NOTIFY or Redis pub/sub, else in-process.

Each replica caches verified keys and decrypted credentials for a few seconds. When one replica
revokes a key (or removes a credential) it publishes the id; every replica, itself included,
drops its cached entry, so revocation reaches all of them before the cache TTL would.

Messages are ``key:<key_id>``, ``credential:<credential_id>`` or ``*`` (drop everything; sent
to ourselves after a listener reconnects, since messages may have been missed meanwhile).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import ConfigurationError

__all__ = [
    "ALL",
    "CHANNEL",
    "POLICY",
    "InvalidationBus",
    "LocalBus",
    "LocalFirstBus",
    "PostgresNotifyBus",
    "Publisher",
    "RedisBus",
    "bus_from_settings",
    "credential_changed",
    "key_changed",
    "policy_changed",
]

logger = logging.getLogger(__name__)

CHANNEL = "tabpfn_gateway_invalidate"
ALL = "*"
KEY = "key:"
CREDENTIAL = "credential:"
POLICY = "policy:"

Listener = Callable[[str], None]


def key_changed(key_id: str) -> str:
    """The message that makes every replica forget what it cached about key ``key_id``."""
    return f"{KEY}{key_id}"


def policy_changed(key_id: str | None = None) -> str:
    """The message that makes every replica forget cached policies: of one key, or (a
    principal's or team's change, a membership) of every key."""
    return f"{POLICY}{key_id or ALL}"


def credential_changed(credential_id: str) -> str:
    """The message that makes every replica forget the token of credential ``credential_id``."""
    return f"{CREDENTIAL}{credential_id}"


class Publisher(Protocol):
    """Anything changes can be announced through (``Admin`` needs only this of a bus)."""

    def publish(self, message: str) -> None:
        """Announce ``message``; never raises."""
        ...


class InvalidationBus(Protocol):
    """Fan-out of invalidation messages to every replica (best effort, at most seconds late)."""

    def publish(self, message: str) -> None:
        """Send ``message`` to every replica, this one included. Never raises."""
        ...

    def start(self, listener: Listener) -> None:
        """Call ``listener(message)`` for every message from now on (on a background thread)."""
        ...

    def close(self) -> None:
        """Stop listening and release connections."""
        ...


class LocalBus:
    """One process only (SQLite, or no shared service configured): delivers to itself."""

    def __init__(self) -> None:
        self._listener: Listener | None = None

    def publish(self, message: str) -> None:
        """Deliver ``message`` to this process's listener at once."""
        if self._listener is not None:
            self._listener(message)

    def start(self, listener: Listener) -> None:
        """Send every published message to ``listener``."""
        self._listener = listener

    def close(self) -> None:
        """Stop delivering messages."""
        self._listener = None


class LocalFirstBus:
    """Announces to this process first (synchronously, before any network hop), then to
    every replica through ``bus``: so a revocation made here holds here at once."""

    def __init__(self, bus: Publisher, local: Listener) -> None:
        self._bus = bus
        self._local = local

    def publish(self, message: str) -> None:
        self._local(message)
        self._bus.publish(message)


class _ThreadedBus:
    """A listener thread that reconnects with backoff; subclasses do the I/O."""

    name = "bus"

    def __init__(self) -> None:
        self._listener: Listener | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self, listener: Listener) -> None:
        self._listener = listener
        self._thread = threading.Thread(
            target=self._run, name=f"tabpfn-gateway-{self.name}-listener", daemon=True
        )
        self._thread.start()
        # Wait briefly so that a publish right after start is not missed by our own listener.
        self._ready.wait(timeout=5)

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Whether the listener is subscribed (for tests and readiness)."""
        return self._ready.wait(timeout)

    def _deliver(self, message: str) -> None:
        if self._listener is not None:
            try:
                self._listener(message)
            except Exception:  # a bad listener must not kill the thread
                logger.exception("invalidation listener failed")

    def _run(self) -> None:
        delay = 0.5
        first = True
        while not self._stop.is_set():
            try:
                self._listen(on_subscribed=functools.partial(self._subscribed, first))
                delay = 0.5
            except Exception as exc:  # driver errors of any kind: reconnect
                self._ready.clear()
                if self._stop.is_set():
                    return
                logger.warning(
                    "%s invalidation listener lost its connection (%s); reconnecting in %.1fs",
                    self.name,
                    type(exc).__name__,
                    delay,
                )
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
            first = False

    def _subscribed(self, first: bool) -> None:
        self._ready.set()
        if not first:
            # Messages sent while we were away are lost: drop every cached entry instead.
            self._deliver(ALL)

    def _listen(self, on_subscribed: Callable[[], None]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class PostgresNotifyBus(_ThreadedBus):
    """PostgreSQL ``LISTEN``/``NOTIFY`` on the gateway's own database (psycopg 3)."""

    name = "postgresql"

    def __init__(self, conninfo: str, *, poll_seconds: float = 1.0) -> None:
        super().__init__()
        self._conninfo = conninfo
        self._poll = poll_seconds

    @classmethod
    def from_database_url(cls, url: str) -> PostgresNotifyBus:
        """From a SQLAlchemy URL (``postgresql+psycopg://...``) to a libpq conninfo."""
        from sqlalchemy.engine import make_url

        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        return cls(conninfo)

    def publish(self, message: str) -> None:
        """Announce ``message`` to every replica with ``pg_notify`` on the channel."""
        psycopg = _import_psycopg()
        try:
            with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, message))
        except psycopg.Error as exc:
            # The local cache is dropped by the caller anyway; others fall back to the TTL.
            logger.warning(
                "could not publish an invalidation (%s); other replicas "
                "will see the change when their cache expires",
                type(exc).__name__,
            )

    def _listen(self, on_subscribed: Callable[[], None]) -> None:
        psycopg = _import_psycopg()
        with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            on_subscribed()
            while not self._stop.is_set():
                for notify in conn.notifies(timeout=self._poll):
                    self._deliver(notify.payload)


class RedisBus(_ThreadedBus):
    """Redis pub/sub (``redis_url``): shared by replicas whatever their database."""

    name = "redis"

    def __init__(self, url: str, *, poll_seconds: float = 1.0) -> None:
        super().__init__()
        redis = _import_redis()
        try:
            self._client = redis.Redis.from_url(url, socket_connect_timeout=5)
        except ValueError as exc:
            raise ConfigurationError(
                "TABPFN_GATEWAY_REDIS_URL is not a Redis URL (redis://, rediss:// or unix://)."
            ) from exc
        self._poll = poll_seconds

    def publish(self, message: str) -> None:
        """Announce ``message`` to every replica on the Redis channel."""
        redis = _import_redis()
        try:
            self._client.publish(CHANNEL, message)
        except redis.RedisError as exc:
            logger.warning(
                "could not publish an invalidation (%s); other replicas "
                "will see the change when their cache expires",
                type(exc).__name__,
            )

    def _listen(self, on_subscribed: Callable[[], None]) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(CHANNEL)
            # The subscription is confirmed by the server's first reply.
            pubsub.get_message(timeout=self._poll)
            on_subscribed()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=self._poll)
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    self._deliver(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            pubsub.close()

    def close(self) -> None:
        """Stop listening and close the Redis connection."""
        super().close()
        self._client.close()


def bus_from_settings(settings: Settings) -> InvalidationBus:
    """Redis when ``redis_url`` is set, else PostgreSQL NOTIFY on PostgreSQL, else in-process."""
    if settings.redis_url:
        return RedisBus(settings.redis_url)
    if settings.database_url.startswith("postgresql"):
        return PostgresNotifyBus.from_database_url(settings.database_url)
    return LocalBus()


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "PostgreSQL support is not installed: pip install 'tabpfn-gateway[postgres]'"
        ) from None
    return psycopg


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "Redis support is not installed: pip install 'tabpfn-gateway[server]'"
        ) from None
    return redis
