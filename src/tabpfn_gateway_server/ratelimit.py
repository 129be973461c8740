"""Counting failed setup attempts per client address: in Redis when configured, else per process."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from tabpfn_gateway.errors import ConfigurationError, StoreUnavailable, TooManyAttempts

__all__ = ["AttemptLimiter", "MemoryAttemptLimiter", "RedisAttemptLimiter", "limiter_for"]

WINDOW_SECONDS = 60.0


class AttemptLimiter(Protocol):
    """Refuses a client that failed ``limit`` times within the window."""

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

    def check(self, client: str) -> None:
        now = self._clock()
        with self._lock:
            failures = self._recent(client, now)
            if len(failures) >= self._limit:
                wait = failures[0] + self._window - now
                raise TooManyAttempts(retry_after=max(1, math.ceil(wait)))
            if not failures:
                self._failures.pop(client, None)

    def failed(self, client: str) -> None:
        now = self._clock()
        with self._lock:
            self._recent(client, now).append(now)

    def close(self) -> None:
        with self._lock:
            self._failures.clear()


class RedisAttemptLimiter:
    """A fixed one-minute window per address in Redis (``INCR`` + ``EXPIRE``): replicas
    share the count. Redis being down refuses setup with a retryable 503 rather than
    dropping the limit."""

    def __init__(self, url: str, limit: int, *, window: float = WINDOW_SECONDS) -> None:
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

    def _key(self, client: str) -> str:
        bucket = int(time.time() // self._window)
        return f"tabpfn-gateway:setup-failures:{client}:{bucket}"

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

    def close(self) -> None:
        self._client.close()


def limiter_for(redis_url: str | None, limit: int) -> AttemptLimiter:
    """Redis-backed when ``redis_url`` is set (shared by replicas), else in-process."""
    if redis_url:
        return RedisAttemptLimiter(redis_url, limit)
    return MemoryAttemptLimiter(limit)
