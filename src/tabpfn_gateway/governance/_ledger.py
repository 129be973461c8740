"""Budget ledgers: reserve -> settle -> refund, in the database (the default) or in Redis."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from tabpfn_gateway.errors import ConfigurationError, StoreUnavailable
from tabpfn_gateway.governance._limiter import HIT_SCRIPT, RateCheck, RateDecision, RedisLimiter
from tabpfn_gateway.store.base import Store
from tabpfn_gateway.store.records import BudgetClaim, BudgetCounter

__all__ = ["BudgetLedger", "RedisLedger", "StoreLedger"]


class BudgetLedger(Protocol):
    """Where budget counters live. The contract is ``Store``'s (reserve_budget ...)."""

    def reserve(self, claims: Sequence[BudgetClaim]) -> int | None: ...

    def settle(self, claims: Sequence[BudgetClaim], spent: int) -> list[BudgetCounter]: ...

    def counters(self, subject_id: str, buckets: Sequence[str]) -> list[BudgetCounter]: ...

    def mark_alert(self, subject_id: str, bucket: str, threshold: int) -> bool: ...

    def close(self) -> None: ...


class StoreLedger:
    """Counters in the gateway's database: one conditional UPDATE per claim (see
    ``Store.reserve_budget``); exact on SQLite, PostgreSQL and across replicas."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def reserve(self, claims: Sequence[BudgetClaim]) -> int | None:
        return self._store.reserve_budget(claims)

    def settle(self, claims: Sequence[BudgetClaim], spent: int) -> list[BudgetCounter]:
        return self._store.settle_budget(claims, spent)

    def counters(self, subject_id: str, buckets: Sequence[str]) -> list[BudgetCounter]:
        return self._store.get_budget_counters(subject_id, buckets)

    def mark_alert(self, subject_id: str, bucket: str, threshold: int) -> bool:
        return self._store.mark_budget_alert(subject_id, bucket, threshold)

    def close(self) -> None:
        """Nothing to release: the store belongs to the gateway."""


# Every claim is checked before any is applied: all or nothing in one script (Redis runs a
# script atomically). KEYS: one hash per claim, then each claim's window keys. ARGV per claim:
# amount, limit (-1: none), window key count, expiry (unix seconds).
_RESERVE = """
local nclaims = tonumber(ARGV[1])
local offset = nclaims
local arg = 2
local plan = {}
for i = 1, nclaims do
  local amount = tonumber(ARGV[arg])
  local limit = tonumber(ARGV[arg + 1])
  local nwindow = tonumber(ARGV[arg + 2])
  local expires = tonumber(ARGV[arg + 3])
  arg = arg + 4
  local held = tonumber(redis.call('HGET', KEYS[i], 'spent') or '0')
    + tonumber(redis.call('HGET', KEYS[i], 'reserved') or '0') + amount
  for w = 1, nwindow do
    local key = KEYS[offset + w]
    held = held + tonumber(redis.call('HGET', key, 'spent') or '0')
      + tonumber(redis.call('HGET', key, 'reserved') or '0')
  end
  offset = offset + nwindow
  if limit >= 0 and held > limit then
    return i - 1
  end
  plan[i] = {amount, expires}
end
for i = 1, nclaims do
  redis.call('HINCRBY', KEYS[i], 'reserved', plan[i][1])
  redis.call('EXPIREAT', KEYS[i], plan[i][2])
end
return -1
"""
# Answers each counter as it stands after the settlement: spent, reserved, alerted per key.
_SETTLE = """
local spent = tonumber(ARGV[1])
local answer = {}
for i = 1, #KEYS do
  local amount = tonumber(ARGV[i + 1])
  local reserved = tonumber(redis.call('HGET', KEYS[i], 'reserved') or '0')
  if reserved < amount then amount = reserved end
  -- 0 - amount, not -amount: Lua's -0 reaches Redis as "-0", which is not an integer.
  answer[3 * i - 1] = redis.call('HINCRBY', KEYS[i], 'reserved', 0 - amount)
  answer[3 * i - 2] = redis.call('HINCRBY', KEYS[i], 'spent', spent)
  answer[3 * i] = tonumber(redis.call('HGET', KEYS[i], 'alerted') or '0')
end
return answer
"""
_MARK = """
local alerted = tonumber(redis.call('HGET', KEYS[1], 'alerted') or '0')
if alerted >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'alerted', ARGV[1])
return 1
"""
_DEFAULT_TTL_SECONDS = 40 * 86400
# A request's rate limits and its budget reservation in one script (one round trip): the
# rate-limit script first (a refusal counts nothing and reserves nothing), then the
# reservation, each as a function of its own keys and arguments (Lua parameters named KEYS
# and ARGV shadow the globals). The order and the outcome are those of the two calls made one
# after the other. ARGV: the rate-limit keys' count, their argument count, then both
# scripts' arguments. Answer: {rate-limit answer, reservation answer (-2: not attempted)}.
_HIT_AND_RESERVE = (
    "local function hit(KEYS, ARGV)\n"
    + HIT_SCRIPT
    + "\nend\nlocal function reserve(KEYS, ARGV)\n"
    + _RESERVE
    + """
end
local nkeys = tonumber(ARGV[1])
local nargs = tonumber(ARGV[2])
local hit_keys, hit_args, claim_keys, claim_args = {}, {}, {}, {}
for i = 1, #KEYS do
  if i <= nkeys then
    hit_keys[#hit_keys + 1] = KEYS[i]
  else
    claim_keys[#claim_keys + 1] = KEYS[i]
  end
end
for i = 3, #ARGV do
  if i <= nargs + 2 then
    hit_args[#hit_args + 1] = ARGV[i]
  else
    claim_args[#claim_args + 1] = ARGV[i]
  end
end
local decision = hit(hit_keys, hit_args)
if tonumber(decision[1]) ~= 0 then
  return {decision, -2}
end
return {decision, reserve(claim_keys, claim_args)}
"""
)


class RedisLedger:
    """Counters in Redis hashes, reserved by one Lua script per call (atomic on the server):
    exact across replicas, and no database write on the request path. Redis is then the only
    record of budget counters (usage events keep the credits either way)."""

    def __init__(self, url: str, *, prefix: str = "tabpfn-gateway") -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - redis ships with the server extra
            raise ConfigurationError(
                "A Redis budget ledger needs redis: pip install tabpfn-gateway[server]"
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
        self._reserve = self._client.register_script(_RESERVE)
        self._settle = self._client.register_script(_SETTLE)
        self._mark = self._client.register_script(_MARK)
        self._hit_and_reserve = self._client.register_script(_HIT_AND_RESERVE)

    def _key(self, subject_id: str, bucket: str) -> str:
        return f"{self._prefix}:budget:{subject_id}:{bucket}"

    def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return script(keys=keys, args=args)
        except self._errors as exc:
            raise StoreUnavailable("The budget ledger (Redis) cannot be reached.") from exc

    def reserve(self, claims: Sequence[BudgetClaim]) -> int | None:
        if not claims:
            return None
        keys, args = self._reserve_call(claims)
        outcome = int(self._call(self._reserve, keys, args))
        return None if outcome < 0 else outcome

    def combines_with(self, limiter: object) -> bool:
        """Whether ``hit_and_reserve`` can decide for ``limiter``: a Redis limiter (on the
        same ``TABPFN_GATEWAY_REDIS_URL``)."""
        return isinstance(limiter, RedisLimiter)

    def hit_and_reserve(
        self, limiter: object, checks: Sequence[RateCheck], claims: Sequence[BudgetClaim]
    ) -> tuple[RateDecision, int | None] | None:
        """``limiter.hit(checks)`` then, unless it refused, ``reserve(claims)``, in one
        round trip; None when ``limiter`` is not a Redis limiter (make the two calls).

        The same answers as the two calls: a rate-limit refusal reserves nothing, and a
        budget refusal leaves the request counted by the rate limits. Both must live on the
        same Redis (one ``TABPFN_GATEWAY_REDIS_URL``).
        """
        if not isinstance(limiter, RedisLimiter) or not checks or not claims:
            return None
        hit_keys, hit_args = limiter.hit_call(checks)
        claim_keys, claim_args = self._reserve_call(claims)
        answer = self._call(
            self._hit_and_reserve,
            [*hit_keys, *claim_keys],
            [len(hit_keys), len(hit_args), *hit_args, *claim_args],
        )
        outcome = int(answer[1])
        return limiter.decision(checks, answer[0]), None if outcome < 0 else outcome

    def _reserve_call(self, claims: Sequence[BudgetClaim]) -> tuple[list[str], list[Any]]:
        keys = [self._key(c.subject_id, c.bucket) for c in claims]
        args: list[Any] = [len(claims)]
        for claim in claims:
            keys.extend(self._key(claim.subject_id, bucket) for bucket in claim.window)
            expires = (
                math.ceil(claim.expires_at.timestamp())
                if claim.expires_at is not None
                else math.ceil(datetime.now(UTC).timestamp()) + _DEFAULT_TTL_SECONDS
            )
            args += [
                claim.amount,
                -1 if claim.limit is None else claim.limit,
                len(claim.window),
                expires,
            ]
        return keys, args

    def settle(self, claims: Sequence[BudgetClaim], spent: int) -> list[BudgetCounter]:
        if not claims:
            return []
        keys = [self._key(c.subject_id, c.bucket) for c in claims]
        answer = self._call(self._settle, keys, [spent, *(c.amount for c in claims)])
        return [
            BudgetCounter(
                subject_id=claim.subject_id,
                bucket=claim.bucket,
                spent=int(answer[3 * i]),
                reserved=int(answer[3 * i + 1]),
                alerted=int(answer[3 * i + 2]),
            )
            for i, claim in enumerate(claims)
        ]

    def counters(self, subject_id: str, buckets: Sequence[str]) -> list[BudgetCounter]:
        try:
            with self._client.pipeline() as pipe:
                for bucket in buckets:
                    pipe.hgetall(self._key(subject_id, bucket))
                found = pipe.execute()
        except self._errors as exc:
            raise StoreUnavailable("The budget ledger (Redis) cannot be reached.") from exc
        return [
            BudgetCounter(
                subject_id=subject_id,
                bucket=bucket,
                spent=int(values.get(b"spent", 0)),
                reserved=int(values.get(b"reserved", 0)),
                alerted=int(values.get(b"alerted", 0)),
            )
            for bucket, values in zip(buckets, found, strict=True)
        ]

    def mark_alert(self, subject_id: str, bucket: str, threshold: int) -> bool:
        return bool(int(self._call(self._mark, [self._key(subject_id, bucket)], [threshold])))

    def close(self) -> None:
        self._client.close()
