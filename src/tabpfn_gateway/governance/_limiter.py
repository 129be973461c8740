"""Request-rate and concurrency counters: in process, in Redis (the ``limits`` library), or in
the database (several workers or replicas on one database share them)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from tabpfn_gateway.errors import ConfigurationError, StoreUnavailable
from tabpfn_gateway.store.base import Store
from tabpfn_gateway.store.records import CounterHit

__all__ = [
    "InProcessLimiter",
    "RateCheck",
    "RateDecision",
    "RateLimiter",
    "RedisLimiter",
    "StoreLimiter",
]

logger = logging.getLogger(__name__)

# A crashed process never releases its concurrency slots; they lapse after this long.
_SLOT_TTL = timedelta(hours=6)


@dataclass(frozen=True, slots=True)
class RateCheck:
    """One limit a request counts against: ``name`` (stable, e.g. ``key:<id>:minute``),
    ``limit`` requests per ``window_seconds``."""

    name: str
    limit: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The answer to a batch of checks: ``refused`` is the check that said no (None: all
    passed); ``remaining`` and ``reset_seconds`` per check name, for the RateLimit headers."""

    refused: RateCheck | None
    remaining: dict[str, int]
    reset_seconds: dict[str, int]


class RateLimiter(Protocol):
    """Shared counters for rate limits and fits in flight."""

    #: True when a decision needs no network or database round trip.
    in_process: bool

    def hit(self, checks: Sequence[RateCheck]) -> RateDecision:
        """Count one request against every check, or refuse (see ``RateDecision``)."""
        ...

    def acquire(self, name: str, cap: int) -> bool:
        """Take one of ``cap`` slots of ``name``; False if all are taken."""
        ...

    def release(self, name: str) -> None:
        """Give back a slot ``acquire`` took."""
        ...

    def close(self) -> None: ...


class _LimitsLimiter:
    """The ``limits`` library's moving window over one of its storages."""

    in_process = False

    def __init__(self, storage: Any) -> None:
        from limits import RateLimitItemPerSecond
        from limits.strategies import MovingWindowRateLimiter

        self._item = RateLimitItemPerSecond
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self._items: dict[tuple[int, int], Any] = {}

    def _item_for(self, check: RateCheck) -> Any:
        item = self._items.get((check.limit, check.window_seconds))
        if item is None:
            item = self._item(check.limit, check.window_seconds)
            self._items[(check.limit, check.window_seconds)] = item
        return item

    def hit(self, checks: Sequence[RateCheck]) -> RateDecision:
        remaining: dict[str, int] = {}
        resets: dict[str, int] = {}
        refused: RateCheck | None = None
        for check in checks:
            if check.limit <= 0 or not self._limiter.hit(self._item_for(check), check.name):
                refused = check
            if refused is not None:
                stats = self._limiter.get_window_stats(self._item_for(check), check.name)
                remaining[check.name] = 0
                resets[check.name] = max(1, math.ceil(stats.reset_time - time.time()))
                break
            stats = self._limiter.get_window_stats(self._item_for(check), check.name)
            remaining[check.name] = int(stats.remaining)
            resets[check.name] = max(0, math.ceil(stats.reset_time - time.time()))
        return RateDecision(refused, remaining, resets)


class InProcessLimiter(_LimitsLimiter):
    """Moving windows in this process's memory (``limits.storage.MemoryStorage``): exact for
    one process; each process counts on its own."""

    in_process = True

    def __init__(self) -> None:
        from limits.storage import MemoryStorage

        super().__init__(MemoryStorage())
        self._slots: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, name: str, cap: int) -> bool:
        with self._lock:
            taken = self._slots.get(name, 0)
            if taken >= cap:
                return False
            self._slots[name] = taken + 1
            return True

    def release(self, name: str) -> None:
        with self._lock:
            taken = self._slots.get(name, 0)
            if taken <= 1:
                self._slots.pop(name, None)
            else:
                self._slots[name] = taken - 1

    def close(self) -> None:
        self._storage.reset()


# KEYS[1]: the slot counter. ARGV: cap, ttl seconds. One script: atomic in Redis.
_ACQUIRE = """
local taken = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if taken > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
return 1
"""
_RELEASE = """
local taken = tonumber(redis.call('GET', KEYS[1]) or '0')
if taken > 0 then redis.call('DECR', KEYS[1]) end
return 1
"""


class RedisLimiter(_LimitsLimiter):
    """Moving windows in Redis (``limits``' Redis storage: one Lua script per hit, atomic):
    every replica shares them. Slots are a Lua-guarded counter per name."""

    def __init__(self, url: str, *, prefix: str = "tabpfn-gateway") -> None:
        try:
            import redis
            from limits.storage import RedisStorage
        except ImportError as exc:  # pragma: no cover - redis ships with the server extra
            raise ConfigurationError(
                "Redis rate limits need redis: pip install tabpfn-gateway[server]"
            ) from exc
        self._redis_module = redis
        try:
            storage = RedisStorage(
                url, key_prefix=f"{prefix}:rl", socket_connect_timeout=2, socket_timeout=2
            )
            self._client: Any = redis.Redis.from_url(
                url, socket_connect_timeout=2, socket_timeout=2
            )
        except ValueError as exc:
            raise ConfigurationError(
                "TABPFN_GATEWAY_REDIS_URL is not a Redis URL (redis://, rediss:// or unix://)."
            ) from exc
        super().__init__(storage)
        self._prefix = prefix
        self._acquire = self._client.register_script(_ACQUIRE)
        self._release = self._client.register_script(_RELEASE)

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable("The rate-limit store (Redis) cannot be reached.")

    def hit(self, checks: Sequence[RateCheck]) -> RateDecision:
        try:
            return super().hit(checks)
        except (self._redis_module.RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    def acquire(self, name: str, cap: int) -> bool:
        try:
            taken = self._acquire(
                keys=[f"{self._prefix}:slots:{name}"],
                args=[cap, int(_SLOT_TTL.total_seconds())],
            )
        except (self._redis_module.RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return bool(int(taken))

    def release(self, name: str) -> None:
        try:
            self._release(keys=[f"{self._prefix}:slots:{name}"])
        except (self._redis_module.RedisError, OSError):
            logger.warning("Could not release a concurrency slot in Redis; it lapses by itself")

    def close(self) -> None:
        self._client.close()


class StoreLimiter:
    """Fixed windows counted in the database (``Store.hit_counters``: one conditional write
    per counter), so several workers on one SQLite file, or replicas on one PostgreSQL,
    share one limit without Redis. A window starts at a multiple of its length (UTC)."""

    in_process = False

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def hit(self, checks: Sequence[RateCheck]) -> RateDecision:
        now = self._clock()
        hits: list[CounterHit] = []
        resets: dict[str, int] = {}
        for check in checks:
            start = int(now // check.window_seconds) * check.window_seconds
            end = start + check.window_seconds
            hits.append(
                CounterHit(
                    name=f"rate:{check.name}:{start}",
                    limit=max(0, check.limit),
                    expires_at=datetime.fromtimestamp(end, UTC),
                )
            )
            resets[check.name] = max(1, math.ceil(end - now))
        refused_index, counts = self._store.hit_counters(hits)
        remaining = {
            check.name: max(0, check.limit - count)
            for check, count in zip(checks, counts, strict=True)
        }
        refused = None if refused_index is None else checks[refused_index]
        if refused is not None:
            remaining[refused.name] = 0
        return RateDecision(refused, remaining, resets)

    def acquire(self, name: str, cap: int) -> bool:
        expires = datetime.fromtimestamp(self._clock(), UTC) + _SLOT_TTL
        refused, _ = self._store.hit_counters([CounterHit(f"slots:{name}", cap, expires)])
        return refused is None

    def release(self, name: str) -> None:
        self._store.release_counters({f"slots:{name}": 1})

    def close(self) -> None:
        """Nothing to release: the store belongs to the gateway."""
