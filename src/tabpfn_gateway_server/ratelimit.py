"""Counting setup attempts per client address: in Redis when configured, else per process.

Two uses: failed setups (and console sign-ins) per minute, and successful setups per hour.
Setup *reserves* an attempt before it asks the upstream and refunds it afterwards when the
outcome was not the kind counted, so concurrent attempts cannot all pass one check.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tabpfn_gateway.errors import ConfigurationError, StoreUnavailable, TooManyAttempts

__all__ = [
    "AttemptLimiter",
    "MemoryAttemptLimiter",
    "RedisAttemptLimiter",
    "Reservation",
    "limiter_for",
]

WINDOW_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Reservation:
    """One attempt counted ahead of its outcome (``AttemptLimiter.reserve``)."""

    client: str
    # Where it was counted: the sliding window's timestamp, or the Redis window's key.
    mark: float | str


class AttemptLimiter(Protocol):
    """Refuses a client that failed ``limit`` times within the window."""

    def reserve(self, client: str) -> Reservation:
        """Count one attempt of ``client`` now, atomically with the check: raise
        ``TooManyAttempts`` (with ``retry_after``, nothing counted) if it is over the limit."""
        ...

    def refund(self, reservation: Reservation) -> None:
        """Take back a reserved attempt whose outcome is not the kind this limiter counts."""
        ...

    def check(self, client: str) -> None:
        """Raise ``TooManyAttempts`` (with ``retry_after``) if ``client`` is over the limit."""
        ...

    def failed(self, client: str) -> None:
        """Count one failed attempt of ``client``."""
        ...

    def close(self) -> None: ...


class MemoryAttemptLimiter:
    """A sliding window per address, in this process only: each replica counts on its own."""

    def __init__(
        self,
        limit: int,
        *,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        return failures

    def _refuse_when_full(self, failures: deque[float], now: float) -> None:
        if len(failures) >= self._limit:
            wait = failures[0] + self._window - now
            raise TooManyAttempts(retry_after=max(1, math.ceil(wait)))

    def check(self, client: str) -> None:
        now = self._clock()
        with self._lock:
            failures = self._recent(client, now)
            self._refuse_when_full(failures, now)
            if not failures:
                self._failures.pop(client, None)

    def failed(self, client: str) -> None:
        now = self._clock()
        with self._lock:
            self._recent(client, now).append(now)

    def reserve(self, client: str) -> Reservation:
        now = self._clock()
        with self._lock:
            failures = self._recent(client, now)
            self._refuse_when_full(failures, now)
            failures.append(now)
        return Reservation(client, now)

    def refund(self, reservation: Reservation) -> None:
        mark = reservation.mark
        with self._lock:
            failures = self._failures.get(reservation.client)
            if failures is None or not isinstance(mark, float):
                return
            try:
                failures.remove(mark)
            except ValueError:
                return  # already left the window
            if not failures:
                self._failures.pop(reservation.client, None)

    def close(self) -> None:
        with self._lock:
            self._failures.clear()


class RedisAttemptLimiter:
    """A fixed one-minute window per address in Redis (``INCR`` + ``EXPIRE``): replicas
    share the count. Redis being down refuses setup with a retryable 503 rather than
    dropping the limit."""

    def __init__(
        self,
        url: str,
        limit: int,
        *,
        window: float = WINDOW_SECONDS,
        name: str = "setup-failures",
    ) -> None:
        import redis

        self._redis = redis
        try:
            self._client: Any = redis.Redis.from_url(
                url, socket_connect_timeout=5, socket_timeout=5
            )
        except ValueError as exc:
            raise ConfigurationError(
                "TABPFN_GATEWAY_REDIS_URL is not a Redis URL (redis://, rediss:// or unix://)."
            ) from exc
        self._limit = limit
        self._window = int(window)
        self._name = name
        self._reserve_script: Any = self._client.register_script(_RESERVE_LUA)
        self._refund_script: Any = self._client.register_script(_REFUND_LUA)

    def _key(self, client: str) -> str:
        bucket = int(time.time() // self._window)
        return f"tabpfn-gateway:{self._name}:{client}:{bucket}"

    def check(self, client: str) -> None:
        key = self._key(client)
        try:
            count = self._client.get(key)
            ttl = self._client.ttl(key) if count is not None else -1
        except self._redis.RedisError as exc:
            raise StoreUnavailable("The rate-limit store (Redis) cannot be reached.") from exc
        if count is not None and int(count) >= self._limit:
            raise TooManyAttempts(retry_after=max(1, int(ttl) if ttl and ttl > 0 else 1))

    def failed(self, client: str) -> None:
        key = self._key(client)
        try:
            with self._client.pipeline() as pipe:
                pipe.incr(key)
                pipe.expire(key, self._window + 1)
                pipe.execute()
        except self._redis.RedisError as exc:
            raise StoreUnavailable("The rate-limit store (Redis) cannot be reached.") from exc

    def reserve(self, client: str) -> Reservation:
        key = self._key(client)
        try:
            # One script: the check and the count cannot be split by a concurrent attempt.
            allowed, ttl = self._reserve_script(keys=[key], args=[self._limit, self._window + 1])
        except self._redis.RedisError as exc:
            raise StoreUnavailable("The rate-limit store (Redis) cannot be reached.") from exc
        if not int(allowed):
            raise TooManyAttempts(retry_after=max(1, int(ttl) if int(ttl) > 0 else 1))
        return Reservation(client, key)

    def refund(self, reservation: Reservation) -> None:
        try:
            self._refund_script(keys=[str(reservation.mark)])
        except self._redis.RedisError as exc:
            raise StoreUnavailable("The rate-limit store (Redis) cannot be reached.") from exc

    def close(self) -> None:
        self._client.close()


# KEYS[1] the window's counter; ARGV limit, expiry. Returns {allowed, ttl}.
_RESERVE_LUA = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[1]) then
  return {0, redis.call('TTL', KEYS[1])}
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {1, 0}
"""

# KEYS[1] the window's counter: one less, unless the window has already ended (no key).
_REFUND_LUA = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count > 0 then
  redis.call('DECR', KEYS[1])
end
return 0
"""


def limiter_for(
    redis_url: str | None,
    limit: int,
    *,
    window: float = WINDOW_SECONDS,
    name: str = "setup-failures",
) -> AttemptLimiter:
    """Redis-backed when ``redis_url`` is set (shared by replicas, keys named ``name``), else
    in-process."""
    if redis_url:
        return RedisAttemptLimiter(redis_url, limit, window=window, name=name)
    return MemoryAttemptLimiter(limit, window=window)
