"""The fast paths of governance: rate-limit leases (exact at the limit, fewer store writes),
decisions made in memory, and store work kept off the server's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway_support import add_tenant, build_gateway, make_settings
from governance_support import BASE_URL, TOKEN, fit_once
from tabpfn_gateway import migrate
from tabpfn_gateway.governance import RateCheck, StoreLimiter
from tabpfn_gateway.protocol import ProtocolClient
from tabpfn_gateway.protocol.messages import ClassifierConfig
from tabpfn_gateway.store import open_store
from tabpfn_gateway.store.base import Store
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway.testing.transport import ASGIBridgeTransport
from tabpfn_gateway_server import create_app


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/limits.db")
    migrate.upgrade(settings)
    store = open_store(settings)
    yield store
    store.close()


class _Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _count_calls(store: Store, name: str) -> list[int]:
    calls: list[int] = []
    inner = getattr(store, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return inner(*args, **kwargs)

    setattr(store, name, counted)
    return calls


def _admitted(limiter: StoreLimiter, check: RateCheck) -> bool:
    return limiter.hit([check]).refused is None


def test_two_processes_with_leases_admit_exactly_the_limit(sqlite_store: Store) -> None:
    clock = _Clock()
    check = RateCheck("key:k1:minute", 1000, 60)  # leases of 10
    first, second = StoreLimiter(sqlite_store, clock=clock), StoreLimiter(sqlite_store, clock=clock)
    admitted = {"first": 0, "second": 0}
    refused = {"first": False, "second": False}
    while not all(refused.values()):
        for name, limiter in (("first", first), ("second", second)):
            if refused[name]:
                continue
            if _admitted(limiter, check):
                admitted[name] += 1
            else:
                refused[name] = True
    # Leased requests are spent to the last one: never more than the limit, and none lost.
    assert admitted["first"] + admitted["second"] == 1000
    assert min(admitted.values()) > 400


def test_a_lease_saves_store_writes(sqlite_store: Store) -> None:
    writes = _count_calls(sqlite_store, "hit_counters")
    limiter = StoreLimiter(sqlite_store, clock=_Clock())
    check = RateCheck("key:k2:minute", 10_000, 60)  # leases of 100
    for _ in range(1000):
        assert _admitted(limiter, check)
    assert len(writes) == 10


def test_small_limits_are_counted_one_request_at_a_time(sqlite_store: Store) -> None:
    writes = _count_calls(sqlite_store, "hit_counters")
    clock = _Clock()
    first, second = StoreLimiter(sqlite_store, clock=clock), StoreLimiter(sqlite_store, clock=clock)
    check = RateCheck("key:k3:minute", 5, 60)
    outcomes = [_admitted(limiter, check) for limiter in (first, second) * 4]
    assert outcomes == [True] * 5 + [False] * 3
    assert len(writes) == 8
    # Nothing is held in memory: the next request asks the store again.
    assert first.try_hit([check]) is None


def test_try_hit_needs_a_lease_and_counts_nothing_without_one(sqlite_store: Store) -> None:
    limiter = StoreLimiter(sqlite_store, clock=_Clock())
    check = RateCheck("key:k4:minute", 500, 60)  # leases of 5
    assert limiter.try_hit([check]) is None
    assert _admitted(limiter, check)  # takes a lease of 5, uses one
    decisions = [limiter.try_hit([check]) for _ in range(5)]
    assert [d is not None and d.refused is None for d in decisions] == [True] * 4 + [False]
    assert decisions[0] is not None
    assert decisions[0].remaining[check.name] == 498


def test_a_lease_ends_with_its_window(sqlite_store: Store) -> None:
    clock = _Clock(1_800_000_000.0 - 1_800_000_000.0 % 60)
    limiter = StoreLimiter(sqlite_store, clock=clock)
    check = RateCheck("key:k5:minute", 300, 60)  # leases of 3
    assert _admitted(limiter, check)
    assert limiter.try_hit([check]) is not None
    clock.now += 60
    assert limiter.try_hit([check]) is None


def test_close_gives_back_what_a_lease_did_not_use(sqlite_store: Store) -> None:
    clock = _Clock()
    check = RateCheck("key:k6:minute", 200, 60)  # leases of 2
    leaving = StoreLimiter(sqlite_store, clock=clock)
    assert _admitted(leaving, check)  # 2 counted in the store, 1 used
    leaving.close()
    staying = StoreLimiter(sqlite_store, clock=clock, max_lease=1)
    admitted = 0
    while _admitted(staying, check):
        admitted += 1
    assert admitted == 199


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_no_store_call_of_a_governed_request_runs_on_the_event_loop(tmp_path: Path) -> None:
    fake = FakeTabPFN(tokens=[TOKEN])
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/gateway.db")
    migrate.upgrade(settings)
    store = open_store(settings)
    seen: dict[str, list[bool]] = {}
    for name in (
        "hit_counters",
        "reserve_budget",
        "settle_budget",
        "list_policies",
        "list_memberships",
        "get_budget_counters",
    ):
        inner: Callable[..., Any] = getattr(store, name)
        calls = seen.setdefault(name, [])

        def watched(*args: Any, _inner: Any = inner, _calls: Any = calls, **kwargs: Any) -> Any:
            _calls.append(_on_event_loop())
            return _inner(*args, **kwargs)

        setattr(store, name, watched)
    gateway = build_gateway(settings, fake.app, store=store)
    app = create_app(settings, gateway=gateway)
    transport = ASGIBridgeTransport(app)
    try:
        ann = add_tenant(gateway, "ann", TOKEN)
        gateway.admin.set_policy(
            ann.key_id,
            {"requests_per_minute": 100, "budget_credits": 10_000, "alert_thresholds": [1]},
            kind="key",
        )
        client = ProtocolClient(BASE_URL, token=ann.key, transport=transport, max_retries=0)
        fit_id = fit_once(client)
        client = ProtocolClient(BASE_URL, token=ann.key, transport=transport, max_retries=0)
        try:
            for rows in (3, 4):
                client.predict(fit_id, np.ones((rows, 4)), ClassifierConfig())
        finally:
            client.close()
        [status] = gateway.admin.budget_status(ann.key_id)
        assert status.spent == (3 + 4) * 4
        assert status.reserved == 0
    finally:
        transport.close()
        gateway.close()
        store.close()
    for name in ("hit_counters", "reserve_budget", "settle_budget", "list_policies"):
        assert seen[name], name
    assert {name: any(calls) for name, calls in seen.items()} == dict.fromkeys(seen, False)


@pytest.fixture
def pg_store(tmp_path: Path, pg_url: str) -> Iterator[Store]:
    settings = make_settings(tmp_path, pg_url)
    migrate.upgrade(settings)
    store = open_store(settings)
    yield store
    store.close()


def _statements(store: Store) -> list[tuple[str, bool]]:
    """Statements the store sends, and whether each ran outside BEGIN/COMMIT (autocommit)."""
    from sqlalchemy import event

    seen: list[tuple[str, bool]] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append((statement.split()[0], bool(conn.connection.dbapi_connection.autocommit)))

    event.listen(store.engine, "before_cursor_execute", before)  # type: ignore[attr-defined]
    return seen


def test_postgres_counters_and_budgets_take_one_statement_each(pg_store: Store) -> None:
    from datetime import UTC, datetime, timedelta

    from tabpfn_gateway.store.records import BudgetClaim, CounterHit

    later = datetime.now(UTC) + timedelta(hours=1)
    pg_store.ping()  # the pool's first connection (its setup queries are not ours)
    seen = _statements(pg_store)
    hits = [CounterHit("rate:a", 3, later, amount=2), CounterHit("rate:b", 10, later)]
    assert pg_store.hit_counters(hits) == (None, [2, 1])
    claim = BudgetClaim("team-1", "day:2026-12-02", 30, limit=50, expires_at=later)
    window = BudgetClaim("key-1", "h:3", 5, limit=40, window=("h:1", "h:2"), expires_at=later)
    assert pg_store.reserve_budget([claim, window]) is None
    [team, key] = pg_store.settle_budget([claim, window], 25)
    assert (team.spent, team.reserved, key.spent, key.reserved) == (25, 0, 25, 0)
    # One statement per call, each its own transaction: one round trip (no pre-ping either).
    assert seen == [("WITH", True)] * 3
    # All or nothing: "rate:a" would pass its limit, so "rate:b" is not counted either.
    refused_at, counts = pg_store.hit_counters(hits)
    assert (refused_at, counts) == (0, [2, 1])
    over = BudgetClaim("key-1", "h:3", 20, limit=40, window=("h:1", "h:2"), expires_at=later)
    small = BudgetClaim("team-1", "day:2026-12-02", 10, limit=50, expires_at=later)
    assert pg_store.reserve_budget([small, over]) == 1  # 25 + 20 > 40 on the key's budget
    [team_now] = pg_store.get_budget_counters("team-1", ["day:2026-12-02"])
    assert (team_now.spent, team_now.reserved) == (25, 0)  # the team's claim rolled back too


def test_a_connection_the_server_closed_is_replaced_without_a_ping(pg_store: Store) -> None:
    import select

    import psycopg
    import sqlalchemy as sa

    with pg_store.engine.connect() as connection:  # type: ignore[attr-defined]
        pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        raw = connection.connection.dbapi_connection
    url = pg_store.engine.url.set(drivername="postgresql")  # type: ignore[attr-defined]
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    # The pooled connection's socket turns readable when the server has closed it.
    select.select([raw.fileno()], [], [], 30)
    with pg_store.engine.connect() as connection:  # type: ignore[attr-defined]
        assert connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() != pid
