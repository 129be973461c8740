"""Request-rate and concurrency counters: in process (the ``limits`` library), in Redis (one
script per request), or in the database (several workers or replicas on one database share
them)."""

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


class InProcessLimiter:
    """Moving windows in this process's memory (the ``limits`` library's ``MemoryStorage``):
    exact for one process; each process counts on its own."""

    in_process = True

    def __init__(self) -> None:
        from limits import RateLimitItemPerSecond
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        self._item = RateLimitItemPerSecond
        self._storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._items: dict[tuple[int, int], Any] = {}
        self._slots: dict[str, int] = {}
        self._lock = threading.Lock()

    def _item_for(self, check: RateCheck) -> Any:
        item = self._items.get((check.limit, check.window_seconds))
        if item is None:
            item = self._item(check.limit, check.window_seconds)
            self._items[(check.limit, check.window_seconds)] = item
        return item

    def hit(self, checks: Sequence[RateCheck]) -> RateDecision:
        remaining: dict[str, int] = {}
        resets: dict[str, int] = {}
        # Every window is checked before any counts the request (a refusal counts nothing);
        # under the lock no other decision can fill a window in between.
        with self._lock:
            for check in checks:
                item = self._item_for(check)
                if check.limit <= 0 or not self._limiter.test(item, check.name):
                    stats = self._limiter.get_window_stats(item, check.name)
                    wait = max(1, math.ceil(stats.reset_time - time.time()))
                    return RateDecision(check, {check.name: 0}, {check.name: wait})
            for check in checks:
                item = self._item_for(check)
                self._limiter.hit(item, check.name)
                stats = self._limiter.get_window_stats(item, check.name)
                remaining[check.name] = int(stats.remaining)
                resets[check.name] = max(0, math.ceil(stats.reset_time - time.time()))
        return RateDecision(None, remaining, resets)

    def try_hit(self, checks: Sequence[RateCheck]) -> RateDecision | None:
        """``hit``: in memory, no I/O."""
        return self.hit(checks)

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


# One request's rate limits, decided in one call: every window is checked before any is
# counted (a refusal counts nothing), then each counts the request, and the figures for the
# headers come back with the answer. Redis runs a script atomically, so replicas cannot
# interleave. The windows are the ``limits`` library's moving windows in its Redis layout
# (a list per limit of request timestamps, newest first, at most ``limit`` long), so both can
# count on the same keys; the timestamps are Redis's own clock, one for every replica.
# KEYS: one list per check. ARGV: limit and window seconds per check.
# Answer: {0, remaining_1, reset_ms_1, ...} when counted; {i, reset_ms} when check i refused.
HIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stamp = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  if limit <= 0 then
    return {i, window * 1000}
  end
  -- Full when the limit-th newest request is still inside the window; a slot frees when
  -- it leaves.
  local entry = tonumber(redis.call('LINDEX', KEYS[i], limit - 1))
  if entry and entry >= now - window then
    return {i, math.ceil((entry + window - now) * 1000)}
  end
end
local answer = {0}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  redis.call('LPUSH', KEYS[i], stamp)
  redis.call('LTRIM', KEYS[i], 0, limit - 1)
  redis.call('EXPIRE', KEYS[i], window)
  -- Drop what has left the window (each entry once), so the length is the window's count.
  local oldest = tonumber(redis.call('LINDEX', KEYS[i], -1))
  while oldest and oldest < now - window do
    redis.call('RPOP', KEYS[i])
    oldest = tonumber(redis.call('LINDEX', KEYS[i], -1))
  end
  answer[2 * i] = limit - redis.call('LLEN', KEYS[i])
  answer[2 * i + 1] = math.ceil(((oldest or now) + window - now) * 1000)
end
return answer
"""
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


class RedisLimiter:
    """Moving windows in Redis, shared by every replica: all the checks of a request are
    decided by one script (``EVALSHA``: one round trip), atomically. Slots are a Lua-guarded
    counter per name."""

    in_process = False

    def __init__(self, url: str, *, prefix: str = "tabpfn-gateway") -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - redis ships with the server extra
            raise ConfigurationError(
                "Redis rate limits need redis: pip install tabpfn-gateway[server]"
            ) from exc
        self._errors = (redis.RedisError, OSError)
        try:
            self._client: Any = redis.Redis.from_url(
                url, socket_connect_timeout=2, socket_timeout=2
            )
        except ValueError as exc:
            raise ConfigurationError(
                "TABPFN_GATEWAY_REDIS_URL is not a Redis URL (redis://, rediss:// or unix://)."
            ) from exc
        self._prefix = prefix
        self._hit = self._client.register_script(HIT_SCRIPT)
        self._acquire = self._client.register_script(_ACQUIRE)
        self._release = self._client.register_script(_RELEASE)

    def _window_key(self, check: RateCheck) -> str:
        # The key ``limits`` gives this window: RedisStorage(key_prefix=f"{prefix}:rl") and
        # RateLimitItemPerSecond(limit, window).key_for(name).
        return f"{self._prefix}:rl:LIMITER/{check.name}/{check.limit}/{check.window_seconds}/second"

    def _unavailable(self) -> StoreUnavailable:
        return StoreUnavailable("The rate-limit store (Redis) cannot be reached.")

    def hit(self, checks: Sequence[RateCheck]) -> RateDecision:
        if not checks:
            return RateDecision(None, {}, {})
        keys, args = self.hit_call(checks)
        try:
            answer = self._hit(keys=keys, args=args)
        except self._errors as exc:
            raise self._unavailable() from exc
        return self.decision(checks, answer)

    def hit_call(self, checks: Sequence[RateCheck]) -> tuple[list[str], list[int]]:
        """The keys and arguments of ``HIT_SCRIPT`` for ``checks`` (also run inside the
        budget ledger's combined script, ``RedisLedger.hit_and_reserve``)."""
        args: list[int] = []
        for check in checks:
            args += [check.limit, check.window_seconds]
        return [self._window_key(check) for check in checks], args

    def decision(self, checks: Sequence[RateCheck], answer: Sequence[Any]) -> RateDecision:
        """The ``RateDecision`` that ``HIT_SCRIPT``'s ``answer`` for ``checks`` says."""
        refused_at = int(answer[0])
        if refused_at:
            refused = checks[refused_at - 1]
            wait = max(1, math.ceil(int(answer[1]) / 1000))
            return RateDecision(refused, {refused.name: 0}, {refused.name: wait})
        remaining: dict[str, int] = {}
        resets: dict[str, int] = {}
        for i, check in enumerate(checks):
            remaining[check.name] = max(0, int(answer[2 * i + 1]))
            resets[check.name] = max(0, math.ceil(int(answer[2 * i + 2]) / 1000))
        return RateDecision(None, remaining, resets)

    def try_hit(self, checks: Sequence[RateCheck]) -> RateDecision | None:
        """None: every decision is a round trip to Redis."""
        return None

    def acquire(self, name: str, cap: int) -> bool:
        try:
            taken = self._acquire(
                keys=[f"{self._prefix}:slots:{name}"],
                args=[cap, int(_SLOT_TTL.total_seconds())],
            )
        except self._errors as exc:
            raise self._unavailable() from exc
        return bool(int(taken))

    def release(self, name: str) -> None:
        try:
            self._release(keys=[f"{self._prefix}:slots:{name}"])
        except self._errors:
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
