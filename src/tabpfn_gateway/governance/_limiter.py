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

from tabpfn_gateway.errors import ConfigurationError, StoreError, StoreUnavailable
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

    def try_hit(self, checks: Sequence[RateCheck]) -> RateDecision | None:
        """``hit`` if it can be decided with no I/O, else None (and nothing counted)."""
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

    def try_hit(self, checks: Sequence[RateCheck]) -> RateDecision | None:
        """In memory: ``hit``; in a shared storage: None (every hit is a round trip)."""
        return self.hit(checks) if self.in_process else None


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


@dataclass
class _Lease:
    """Requests of one shared window this process took ahead and has not used yet."""

    counter: str
    left: int
    #: The shared count when the lease was taken (for the RateLimit headers' estimate).
    shared: int


class StoreLimiter:
    """Fixed windows counted in the database (``Store.hit_counters``: one conditional write
    per counter), so several workers on one SQLite file, or replicas on one PostgreSQL,
    share one limit without Redis. A window starts at a multiple of its length (UTC).

    Leases: a process takes up to ``max_lease`` requests of a window at once (at most
    ``limit // lease_divisor``), in the same conditional write, and counts them down in
    memory; so most requests need no database write. The shared count never passes the
    limit (a lease is granted only if it fits); a lease this process has not used yet is not
    available to the others, so with P processes a caller may be refused up to (P - 1) x the
    lease size before the limit: by default at most 1% of it. Limits under ``lease_divisor *
    2`` per window are counted one request at a time, exactly. A lease left over when its
    window ends is lost (it was counted); ``close`` gives back the current ones.
    """

    in_process = False

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        max_lease: int = 100,
        lease_divisor: int = 100,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_lease = max(1, max_lease)
        self._divisor = max(1, lease_divisor)
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()

    def _lease_size(self, limit: int) -> int:
        return max(1, min(self._max_lease, limit // self._divisor))

    def _window(self, check: RateCheck, now: float) -> tuple[str, float]:
        start = int(now // check.window_seconds) * check.window_seconds
        return f"rate:{check.name}:{start}", start + check.window_seconds

    def try_hit(self, checks: Sequence[RateCheck]) -> RateDecision | None:
        """Count one request against every check from this process's leases, with no I/O;
        None (nothing counted) when a check has no lease left: ``hit`` then asks the store."""
        now = self._clock()
        counters = [self._window(check, now) for check in checks]
        with self._lock:
            leases = [self._leases.get(check.name) for check in checks]
            if not all(
                lease is not None and lease.left > 0 and lease.counter == counter
                for lease, (counter, _) in zip(leases, counters, strict=True)
            ):
                return None
            remaining: dict[str, int] = {}
            resets: dict[str, int] = {}
            for check, lease, (_, end) in zip(checks, leases, counters, strict=True):
                assert lease is not None
                lease.left -= 1
                remaining[check.name] = max(0, check.limit - lease.shared + lease.left)
                resets[check.name] = max(1, math.ceil(end - now))
        return RateDecision(None, remaining, resets)

    def _take_local(self, checks: Sequence[RateCheck], counters: list[str]) -> list[bool]:
        """Take one request from each check's lease where there is one (under the lock)."""
        taken: list[bool] = []
        with self._lock:
            for check, counter in zip(checks, counters, strict=True):
                lease = self._leases.get(check.name)
                if lease is not None and lease.counter == counter and lease.left > 0:
                    lease.left -= 1
                    taken.append(True)
                else:
                    taken.append(False)
        return taken

    def _give_back(
        self, checks: Sequence[RateCheck], counters: list[str], taken: list[bool]
    ) -> None:
        with self._lock:
            for check, counter, took in zip(checks, counters, taken, strict=True):
                lease = self._leases.get(check.name)
                if took and lease is not None and lease.counter == counter:
                    lease.left += 1

    def hit(self, checks: Sequence[RateCheck]) -> RateDecision:
        decided = self.try_hit(checks)
        if decided is not None:
            return decided
        now = self._clock()
        windows = [self._window(check, now) for check in checks]
        counters = [counter for counter, _ in windows]
        resets = {
            check.name: max(1, math.ceil(end - now))
            for check, (_, end) in zip(checks, windows, strict=True)
        }
        taken = self._take_local(checks, counters)
        needed = [i for i, took in enumerate(taken) if not took]
        sizes = {i: self._lease_size(checks[i].limit) for i in needed}
        while True:
            hits = [
                CounterHit(
                    name=counters[i],
                    limit=max(0, checks[i].limit),
                    expires_at=datetime.fromtimestamp(windows[i][1], UTC),
                    amount=sizes[i],
                )
                for i in needed
            ]
            try:
                refused_at, counts = self._store.hit_counters(hits)
            except BaseException:
                self._give_back(checks, counters, taken)
                raise
            if refused_at is None or all(size == 1 for size in sizes.values()):
                break
            # A whole lease does not fit any more: near the limit, count one at a time.
            sizes = dict.fromkeys(needed, 1)
        remaining = {check.name: check.limit for check in checks}
        if refused_at is not None:
            self._give_back(checks, counters, taken)
            refused = checks[needed[refused_at]]
            remaining[refused.name] = 0
            return RateDecision(refused, remaining, resets)
        with self._lock:
            for i, count in zip(needed, counts, strict=True):
                check = checks[i]
                lease = self._leases.get(check.name)
                if lease is None or lease.counter != counters[i]:
                    lease = _Lease(counters[i], 0, count)
                    self._leases[check.name] = lease
                lease.left += sizes[i] - 1
                lease.shared = count
            for check in checks:
                lease = self._leases[check.name]
                remaining[check.name] = max(0, check.limit - lease.shared + lease.left)
            if len(self._leases) > 10_000:
                # Bounded: drop leases of ended windows (their requests were counted).
                for name in [n for n, lease in self._leases.items() if lease.left == 0]:
                    del self._leases[name]
        return RateDecision(None, remaining, resets)

    def acquire(self, name: str, cap: int) -> bool:
        expires = datetime.fromtimestamp(self._clock(), UTC) + _SLOT_TTL
        refused, _ = self._store.hit_counters([CounterHit(f"slots:{name}", cap, expires)])
        return refused is None

    def release(self, name: str) -> None:
        self._store.release_counters({f"slots:{name}": 1})

    def close(self) -> None:
        """Give back the unused requests of this process's leases (the store stays open)."""
        with self._lock:
            unused = {lease.counter: lease.left for lease in self._leases.values() if lease.left}
            self._leases.clear()
        if unused:
            try:
                self._store.release_counters(unused)
            except StoreError:  # closing: the leases lapse with their windows anyway
                logger.warning("Could not give back rate-limit leases")
