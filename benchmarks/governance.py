"""Benchmark: what the policy decision costs per request, and what policies cost forwarded
small calls, measured in one run against their anchors and printed as ratios.

1. The decision (``PolicyEngine.admit`` + settle), median over many calls, for: no policy (the
   anchor); a rate limit counted in process, in Redis (one script call per request) and in
   PostgreSQL (and SQLite), the database ones with leases (the default: most decisions in
   memory) and without (``max_lease=1``: a counter write per request); a rate limit plus a
   budget reservation settled afterwards, in SQLite, PostgreSQL and Redis. Next to each
   networked figure: one bare round trip to the same server (``SELECT 1`` / ``PING``), since a
   decision that needs the network should add at most about one.
2. Forwarded small calls (``GET /protected/`` through the gateway app to FakeTabPFN, in
   process, 8 concurrent callers) with a rate-limit + budget policy on the key vs none.

    python benchmarks/governance.py [--quick]

PostgreSQL runs when TABPFN_GATEWAY_TEST_DATABASE_URL (an admin URL) is set (its own database,
dropped afterwards); Redis at TABPFN_GATEWAY_TEST_REDIS_URL (default redis://127.0.0.1:6379/0,
keys under a unique prefix, never flushed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tabpfn_gateway import migrate
from tabpfn_gateway.config import Settings
from tabpfn_gateway.governance import (
    InProcessLimiter,
    PolicyEngine,
    RedisLedger,
    RedisLimiter,
    StoreLedger,
    StoreLimiter,
)
from tabpfn_gateway.store import open_store
from tabpfn_gateway.store.base import Store
from tabpfn_gateway.store.records import ApiKey, Policy, Principal

PG_ENV = "TABPFN_GATEWAY_TEST_DATABASE_URL"
REDIS_ENV = "TABPFN_GATEWAY_TEST_REDIS_URL"
BIG = 10**12  # limits that never refuse: we measure the decision, not refusals


def _key(store: Store, **policy: Any) -> ApiKey:
    key_id = uuid.uuid4().hex[:12]
    principal = Principal(id=uuid.uuid4().hex, name=f"bench-{key_id}")
    key = ApiKey(key_id, "k", principal.id, None, ("inference",), "h", "hmac-sha256", "p", "0000")
    store.add_principal(principal)
    store.add_key(key)
    if policy:
        store.put_policy(Policy(key_id, "key", **policy))
    return key


def _median_us(call: Callable[[], object], n: int) -> float:
    for _ in range(min(50, n)):
        call()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def _decision(engine: PolicyEngine, key: ApiKey, operation: str, credits: int | None) -> None:
    engine.admit(key, operation, credits=credits).settle(credits)


@contextmanager
def _pg_database() -> Iterator[str | None]:
    admin = os.environ.get(PG_ENV)
    if not admin:
        yield None
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import create_pg_database, drop_pg_database

    url = create_pg_database(admin)
    try:
        yield url
    finally:
        drop_pg_database(admin, url)


def _redis_url() -> str | None:
    url = os.environ.get(REDIS_ENV, "redis://127.0.0.1:6379/0")
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
        client.close()
    except Exception:
        return None
    return url


def _pg_round_trip(store: Store, n: int) -> float:
    """Median µs of one bare round trip: ``SELECT 1`` on a held connection, no transaction."""
    engine = store.engine  # type: ignore[attr-defined]
    with engine.connect() as connection:
        bare = connection.execution_options(isolation_level="AUTOCOMMIT")
        return _median_us(lambda: bare.exec_driver_sql("SELECT 1"), n)


def _sql_store(url: str) -> Store:
    settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
    migrate.upgrade(settings)
    return open_store(settings)


def decision_costs(n: int) -> list[tuple[str, float, float | None]]:
    """(case, median µs of admit+settle, median µs of one bare round trip or None)."""
    rows: list[tuple[str, float, float | None]] = []
    memory = open_store(url="memory://")
    anchor = PolicyEngine(memory, limiter=InProcessLimiter())
    free = _key(memory)
    rows.append(
        (
            "no policy (anchor)",
            _median_us(lambda: _decision(anchor, free, "protected", None), n),
            None,
        )
    )
    limited = _key(memory, requests_per_minute=BIG)
    rows.append(
        (
            "rate limit, in process",
            _median_us(lambda: _decision(anchor, limited, "protected", None), n),
            None,
        )
    )
    redis_url = _redis_url()
    prefix = f"tpg-bench-{uuid.uuid4().hex}"
    if redis_url:
        import redis

        ping_client = redis.Redis.from_url(redis_url)
        rtt = _median_us(ping_client.ping, n)
        engine = PolicyEngine(memory, limiter=RedisLimiter(redis_url, prefix=prefix))
        rows.append(
            (
                "rate limit, Redis",
                _median_us(lambda: _decision(engine, limited, "protected", None), n),
                rtt,
            )
        )
        budgeted = _key(memory, requests_per_minute=BIG, budget_credits=BIG)
        ledger_engine = PolicyEngine(
            memory,
            limiter=RedisLimiter(redis_url, prefix=prefix),
            ledger=RedisLedger(redis_url, prefix=prefix),
        )
        rows.append(
            (
                "rate limit + budget, Redis",
                _median_us(lambda: _decision(ledger_engine, budgeted, "predict", 20), n),
                rtt,
            )
        )
        ping_client.close()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = _sql_store(f"sqlite:///{tmp}/bench.db")
        engine = PolicyEngine(sqlite, limiter=StoreLimiter(sqlite), ledger=StoreLedger(sqlite))
        limited_sql = _key(sqlite, requests_per_minute=BIG)
        budgeted_sql = _key(sqlite, requests_per_minute=BIG, budget_credits=BIG)
        rtt = _median_us(sqlite.ping, n)
        rows.append(
            (
                "rate limit, SQLite",
                _median_us(lambda: _decision(engine, limited_sql, "protected", None), n),
                rtt,
            )
        )
        unleased = PolicyEngine(sqlite, limiter=StoreLimiter(sqlite, max_lease=1))
        rows.append(
            (
                "rate limit, SQLite, no lease",
                _median_us(lambda: _decision(unleased, limited_sql, "protected", None), n),
                rtt,
            )
        )
        rows.append(
            (
                "rate limit + budget, SQLite",
                _median_us(lambda: _decision(engine, budgeted_sql, "predict", 20), n),
                rtt,
            )
        )
        sqlite.close()
    with _pg_database() as pg_url:
        if pg_url:
            pg = _sql_store(pg_url)
            engine = PolicyEngine(pg, limiter=StoreLimiter(pg), ledger=StoreLedger(pg))
            limited_pg = _key(pg, requests_per_minute=BIG)
            budgeted_pg = _key(pg, requests_per_minute=BIG, budget_credits=BIG)
            rtt = _pg_round_trip(pg, n)
            rows.append(
                (
                    "rate limit, PostgreSQL",
                    _median_us(lambda: _decision(engine, limited_pg, "protected", None), n),
                    rtt,
                )
            )
            unleased = PolicyEngine(pg, limiter=StoreLimiter(pg, max_lease=1))
            rows.append(
                (
                    "rate limit, PostgreSQL, no lease",
                    _median_us(lambda: _decision(unleased, limited_pg, "protected", None), n),
                    rtt,
                )
            )
            rows.append(
                (
                    "rate limit + budget, PostgreSQL",
                    _median_us(lambda: _decision(engine, budgeted_pg, "predict", 20), n),
                    rtt,
                )
            )
            pg.close()
    return rows


def throughput(seconds: float, callers: int) -> tuple[float, float]:
    """Forwarded /protected/ calls per second with no policy and with one (rate limit +
    budget, database counters on SQLite: the default backend)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from gateway_support import add_tenant, build_gateway, make_settings
    from tabpfn_gateway.testing import FakeTabPFN
    from tabpfn_gateway.testing.transport import ASGIBridgeTransport
    from tabpfn_gateway_server import create_app

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        fake = FakeTabPFN(tokens=["tok-bench"])
        settings = make_settings(Path(tmp), f"sqlite:///{tmp}/g.db")
        migrate.upgrade(settings)
        gateway = build_gateway(settings, fake.app, store=open_store(settings))
        app = create_app(settings, gateway=gateway)
        plain = add_tenant(gateway, "plain", "tok-bench")
        governed = add_tenant(gateway, "governed", "tok-bench")
        gateway.admin.set_policy(
            governed.key_id,
            {"requests_per_minute": BIG, "requests_per_hour": BIG, "budget_credits": BIG},
            kind="key",
        )
        transport = ASGIBridgeTransport(app)
        try:
            for key in (plain.key, governed.key, plain.key, governed.key):
                results.append(_rate(transport, key, seconds, callers))
        finally:
            transport.close()
            gateway.close()
            gateway.store.close()
    off = max(results[0], results[2])
    on = max(results[1], results[3])
    return off, on


def _rate(transport: httpx.BaseTransport, key: str, seconds: float, callers: int) -> float:
    done = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {key}"}

    def run() -> None:
        nonlocal done
        count = 0
        with httpx.Client(transport=_Shared(transport), base_url="http://gw.test") as client:
            client.get("/protected/", headers=headers).raise_for_status()
            while time.monotonic() < stop:
                client.get("/protected/", headers=headers).raise_for_status()
                count += 1
        with lock:
            done += count

    started = time.monotonic()
    threads = [threading.Thread(target=run) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done / (time.monotonic() - started)


class _Shared(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._inner.handle_request(request)

    def close(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, shorter runs")
    args = parser.parse_args()
    n = 300 if args.quick else 2000
    print("Policy decision per request (admit + settle), median")
    print(f"{'case':<34}{'µs':>10}{'+µs vs none':>14}{'bare RTT µs':>14}{'added/RTT':>11}")
    rows = decision_costs(n)
    base = rows[0][1]
    for case, micros, rtt in rows:
        added = micros - base
        ratio = f"{added / rtt:.2f}" if rtt else "-"
        rtt_text = f"{rtt:.0f}" if rtt else "-"
        print(f"{case:<34}{micros:>10.1f}{added:>14.1f}{rtt_text:>14}{ratio:>11}")
    seconds = 3.0 if args.quick else 8.0
    off, on = throughput(seconds, callers=8)
    print()
    print("Forwarded small calls (GET /protected/, 8 callers, in process, SQLite counters)")
    print(f"  policies off: {off:8.0f} calls/s")
    print(f"  policies on:  {on:8.0f} calls/s")
    print(f"  on / off:     {on / off:8.2f}")


if __name__ == "__main__":
    main()
