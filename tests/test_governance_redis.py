"""Governance counters in Redis: moving windows shared by replicas (one script per request,
in the limits library's key layout), the Lua budget ledger exact under concurrency, and what
happens when Redis is down (the default fails closed; fall_back counts in the database)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from gateway_support import make_settings, redis_url_or_skip
from tabpfn_gateway import migrate
from tabpfn_gateway.errors import BudgetExhausted, RateLimited, StoreUnavailable
from tabpfn_gateway.governance import PolicyEngine, RateCheck, RedisLedger, RedisLimiter
from tabpfn_gateway.store import open_store
from tabpfn_gateway.store.records import ApiKey, BudgetClaim, Policy, Principal

DEAD_REDIS = "redis://127.0.0.1:1/0"


def _key_with(store: object, **policy: object) -> ApiKey:
    key_id = uuid.uuid4().hex[:12]
    principal = Principal(id=uuid.uuid4().hex, name=f"p-{key_id}")
    key = ApiKey(key_id, "k", principal.id, None, ("inference",), "h", "hmac-sha256", "p", "0000")
    store.add_principal(principal)  # type: ignore[attr-defined]
    store.add_key(key)  # type: ignore[attr-defined]
    store.put_policy(Policy(key_id, "key", **policy))  # type: ignore[attr-defined]
    return key


def _redis_engine(**policy: object) -> tuple[PolicyEngine, ApiKey]:
    """An engine with rate limits and budgets in Redis (a fresh prefix), and a key with
    ``policy``."""
    url = redis_url_or_skip()
    prefix = f"tpg-test-{uuid.uuid4().hex}"
    store = open_store(url="memory://")
    key = _key_with(store, **policy)
    limiter, ledger = RedisLimiter(url, prefix=prefix), RedisLedger(url, prefix=prefix)
    return PolicyEngine(store, limiter=limiter, ledger=ledger, cache_ttl=60), key


def test_two_replicas_share_one_redis_rate_limit() -> None:
    url = redis_url_or_skip()
    prefix = f"tpg-test-{uuid.uuid4().hex}"
    store = open_store(url="memory://")
    key = _key_with(store, requests_per_minute=5)
    replicas = [
        PolicyEngine(store, limiter=RedisLimiter(url, prefix=prefix), cache_ttl=0) for _ in range(2)
    ]
    try:
        for attempt in range(5):
            replicas[attempt % 2].admit(key, "protected")
        for attempt in range(3):
            with pytest.raises(RateLimited) as refused:
                replicas[attempt % 2].admit(key, "protected")
            assert refused.value.retry_after is not None
            assert refused.value.retry_after <= 60
    finally:
        for engine in replicas:
            engine.close()


def test_one_round_trip_decides_every_window_and_a_refusal_counts_nothing() -> None:
    url = redis_url_or_skip()
    limiter = RedisLimiter(url, prefix=f"tpg-test-{uuid.uuid4().hex}")
    calls: list[str] = []
    execute = limiter._client.execute_command

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(str(args[0]))
        return execute(*args, **kwargs)

    limiter._client.execute_command = counted
    wide, narrow = RateCheck("user:u:hour", 5, 3600), RateCheck("key:k:minute", 2, 60)
    try:
        for left in (1, 0):
            decision = limiter.hit([wide, narrow])
            assert decision.refused is None
            assert decision.remaining == {"user:u:hour": left + 3, "key:k:minute": left}
            assert 0 < decision.reset_seconds["key:k:minute"] <= 60
            assert 0 < decision.reset_seconds["user:u:hour"] <= 3600
        refusal = limiter.hit([wide, narrow])
        assert refusal.refused == narrow
        assert 1 <= refusal.reset_seconds["key:k:minute"] <= 60
        # The refusal counted nothing on the window that had room.
        assert limiter.hit([wide]).remaining == {"user:u:hour": 2}
        # One command a decision: the script, by its digest (EVALSHA).
        assert calls[-4:] == ["EVALSHA"] * 4
        assert len([c for c in calls if c.startswith("EVAL")]) == 4
    finally:
        limiter.close()


def test_redis_windows_are_the_limits_librarys() -> None:
    from limits import RateLimitItemPerSecond
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    url = redis_url_or_skip()
    prefix = f"tpg-test-{uuid.uuid4().hex}"
    limiter = RedisLimiter(url, prefix=prefix)
    library = MovingWindowRateLimiter(RedisStorage(url, key_prefix=f"{prefix}:rl"))
    item = RateLimitItemPerSecond(3, 60)
    check = RateCheck("key:shared:minute", 3, 60)
    try:
        assert limiter.hit([check]).refused is None
        assert library.hit(item, check.name)
        assert library.get_window_stats(item, check.name).remaining == 1
        assert limiter.hit([check]).remaining == {check.name: 0}
        assert not library.hit(item, check.name)
        assert limiter.hit([check]).refused == check
    finally:
        limiter.close()


def test_redis_fit_slots_are_shared() -> None:
    url = redis_url_or_skip()
    limiter = RedisLimiter(url, prefix=f"tpg-test-{uuid.uuid4().hex}")
    try:
        assert limiter.acquire("fits:x", 1) is True
        assert limiter.acquire("fits:x", 1) is False
        limiter.release("fits:x")
        assert limiter.acquire("fits:x", 1) is True
    finally:
        limiter.close()


def test_redis_ledger_is_exact_under_concurrency() -> None:
    url = redis_url_or_skip()
    ledger = RedisLedger(url, prefix=f"tpg-test-{uuid.uuid4().hex}")
    claim = BudgetClaim("team", "month:2026-12", amount=20, limit=200)
    outcomes: list[int | None] = []
    lock = threading.Lock()
    barrier = threading.Barrier(64)

    def reserve() -> None:
        barrier.wait()
        outcome = ledger.reserve([claim])
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=reserve) for _ in range(64)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert outcomes.count(None) == 10
        [counter] = ledger.settle([claim], 20)
        assert (counter.spent, counter.reserved) == (20, 180)
        # All or nothing across claims, window buckets counted.
        rolling = BudgetClaim("team", "h:2", amount=5, limit=204, window=("month:2026-12",))
        assert ledger.reserve([BudgetClaim("other", "b", amount=1, limit=10), rolling]) == 1
        assert ledger.counters("other", ["b"])[0].reserved == 0
        assert ledger.mark_alert("team", "month:2026-12", 50) is True
        assert ledger.mark_alert("team", "month:2026-12", 50) is False
        # A settlement answers the counters as they stand (no second call); a zero amount
        # settles too (Lua's -0 once reached Redis as "-0": not an integer).
        [counter] = ledger.settle([BudgetClaim("team", "month:2026-12", amount=0)], 0)
        assert (counter.spent, counter.reserved, counter.alerted) == (20, 180, 50)
    finally:
        ledger.close()


def test_budgets_in_redis_through_the_engine(tmp_path: Path) -> None:
    url = redis_url_or_skip()
    store = open_store(url="memory://")
    key = _key_with(store, budget_credits=30)
    engine = PolicyEngine(
        store, ledger=RedisLedger(url, prefix=f"tpg-test-{uuid.uuid4().hex}"), cache_ttl=0
    )
    try:
        engine.admit(key, "predict", credits=20).settle(20)
        with pytest.raises(BudgetExhausted):
            engine.admit(key, "predict", credits=20)
        engine.admit(key, "predict", credits=10).refund()
        [status] = engine.budget_status(key)
        assert (status.spent, status.reserved, status.remaining) == (20, 0, 10)
    finally:
        engine.close()


def test_redis_down_fails_closed_by_default(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/g.db", redis_url=DEAD_REDIS)
    assert settings.redis_failure == "fail_closed"
    migrate.upgrade(settings)
    store = open_store(settings)
    engine = PolicyEngine.from_settings(settings, store)
    try:
        limited = _key_with(store, requests_per_minute=100)
        with pytest.raises(StoreUnavailable):
            engine.admit(limited, "protected")
        # A key with no rate limit never asks Redis.
        free = _key_with(store, budget_credits=10)
        engine.admit(free, "protected")
    finally:
        engine.close()
        store.close()


def test_redis_down_falls_back_to_the_database_when_configured(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, f"sqlite:///{tmp_path}/g.db", redis_url=DEAD_REDIS, redis_failure="fall_back"
    )
    migrate.upgrade(settings)
    store = open_store(settings)
    engines = [PolicyEngine.from_settings(settings, store) for _ in range(2)]
    try:
        key = _key_with(store, requests_per_minute=3)
        admitted = 0
        for attempt in range(5):
            try:
                engines[attempt % 2].admit(key, "protected")
                admitted += 1
            except RateLimited:
                pass
        assert admitted == 3  # counted in the database: both engines share it
    finally:
        for engine in engines:
            engine.close()
        store.close()


def test_a_rate_limit_and_a_budget_are_decided_in_one_round_trip() -> None:
    engine, key = _redis_engine(requests_per_minute=2, budget_credits=50)
    calls: list[str] = []
    for client in (engine.limiter._client, engine.ledger._client):  # type: ignore[attr-defined]
        execute = client.execute_command

        def counted(*args: object, _execute: object = execute, **kwargs: object) -> object:
            calls.append(str(args[0]))
            return _execute(*args, **kwargs)  # type: ignore[operator]

        client.execute_command = counted
    try:
        engine.admit(key, "predict", credits=20).settle(20)  # warms the policy cache
        calls.clear()
        admission = engine.admit(key, "predict", credits=20)
        # One command decided both: the combined script, by its digest.
        assert calls == ["EVALSHA"]
        assert admission.headers["RateLimit"].startswith('"key-minute";r=0;')
        admission.settle(15)
        [status] = engine.budget_status(key)
        assert (status.spent, status.reserved) == (35, 0)
        # The rate limit refuses first: nothing is reserved for the refused call.
        with pytest.raises(RateLimited):
            engine.admit(key, "predict", credits=10)
        [status] = engine.budget_status(key)
        assert (status.spent, status.reserved) == (35, 0)
    finally:
        engine.close()


def test_a_budget_refusal_in_the_combined_call_leaves_the_request_counted() -> None:
    # The order of the two calls made one after the other: the rate limits count the
    # request, then the reservation refuses it.
    engine, key = _redis_engine(requests_per_minute=2, budget_credits=10)
    try:
        with pytest.raises(BudgetExhausted) as refused:
            engine.admit(key, "predict", credits=11)
        assert refused.value.details["remaining"] == 10
        engine.admit(key, "predict", credits=10).settle(10)
        with pytest.raises(RateLimited):
            engine.admit(key, "predict", credits=0)
    finally:
        engine.close()


def test_rate_limits_and_budgets_together_are_exact_under_concurrency() -> None:
    # The budget fits 7 calls of 10 credits; the rate limit 12 requests: the budget binds.
    engine, key = _redis_engine(requests_per_minute=12, budget_credits=70)
    outcomes: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            engine.admit(key, "predict", credits=10).settle(10)
            outcome = "ok"
        except BudgetExhausted:
            outcome = "budget"
        except RateLimited:
            outcome = "rate"
        with lock:
            outcomes.append(outcome)

    try:
        engine.admit(key, "estimate_cost")  # warms the policy cache (not budgeted)
        threads = [threading.Thread(target=call) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # 11 requests fit the rate limit after the warm-up one: 7 spend, 4 find no budget left.
        assert sorted(outcomes) == sorted(["ok"] * 7 + ["budget"] * 4 + ["rate"] * 5)
        [status] = engine.budget_status(key)
        assert (status.spent, status.reserved) == (70, 0)
    finally:
        engine.close()
