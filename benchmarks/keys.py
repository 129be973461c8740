"""Benchmark: gateway key verification vs. the seed design, side by side in one run.

Ours: look the key up by its public id (one indexed get), compare an HMAC-SHA256 in constant
time; measured with 1k, 10k and 100k keys on SQLite and PostgreSQL, uncached (cache_ttl=0)
and cached. The anchor, the seed design: one bcrypt hash (passlib, default cost) per user,
tried in turn until one matches; measured fully at 10 and 100 users, extrapolated to 1000
from the measured per-hash cost (1000 bcrypt verifies take minutes).

    python benchmarks/keys.py            # full run (about two minutes, plus inserts)
    python benchmarks/keys.py --quick    # 1k and 10k keys, seed measured at 10 users only

PostgreSQL runs when TABPFN_GATEWAY_TEST_DATABASE_URL (an admin URL) is set: the script
creates its own database and drops it afterwards.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tabpfn_gateway import migrate
from tabpfn_gateway.config import Settings
from tabpfn_gateway.keys import KeyManager
from tabpfn_gateway.keys.format import ParsedKey, new_key_id, new_secret
from tabpfn_gateway.keys.hashing import KeyHasher
from tabpfn_gateway.store.base import Store
from tabpfn_gateway.store.records import ApiKey, Principal, UpstreamCredential, new_id
from tabpfn_gateway.store.sql import SqlStore

PG_ENV = "TABPFN_GATEWAY_TEST_DATABASE_URL"
PEPPER = b"benchmark-pepper-0123456789abcdef"
SAMPLES = 2000
INSERT_BATCH = 5000


@dataclass
class Timing:
    p50_ms: float
    p99_ms: float


def measure(call: Callable[[str], object], inputs: list[str]) -> Timing:
    laps = []
    for item in inputs:
        start = time.perf_counter_ns()
        call(item)
        laps.append((time.perf_counter_ns() - start) / 1e6)
    laps.sort()
    return Timing(statistics.median(laps), laps[min(len(laps) - 1, int(len(laps) * 0.99))])


# -- ours ------------------------------------------------------------------------------------------


class KeyFiller:
    """Grows the key table to a target size in atomic batches; keeps a sample of plaintexts."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.hasher = KeyHasher(PEPPER)
        self.count = 0
        self.plaintexts: list[str] = []
        self.owner = store.add_principal(Principal(id=new_id(), name="bench"))
        self.credential = store.add_credential(
            UpstreamCredential(
                id=new_id(), owner_id=self.owner.id, label="bench", encrypted_token=b"x"
            )
        )

    def fill_to(self, target: int) -> float:
        start = time.perf_counter()
        while self.count < target:
            batch = min(INSERT_BATCH, target - self.count)
            with self.store.atomic() as tx:
                for _ in range(batch):
                    parsed = ParsedKey(key_id=new_key_id(), secret=new_secret())
                    plaintext = parsed.plaintext
                    tx.add_key(
                        ApiKey(
                            key_id=parsed.key_id,
                            name="bench",
                            owner_id=self.owner.id,
                            credential_id=self.credential.id,
                            scopes=("inference", "usage"),
                            secret_hash=self.hasher.hash(parsed.body.encode()),
                            hash_scheme=self.hasher.scheme,
                            display_prefix=parsed.display_prefix,
                            last4=plaintext[-4:],
                        )
                    )
                    # Reservoir sample, so lookups hit old and new rows alike.
                    self.count += 1
                    if len(self.plaintexts) < SAMPLES:
                        self.plaintexts.append(plaintext)
                    else:
                        slot = random.randrange(self.count)
                        if slot < SAMPLES:
                            self.plaintexts[slot] = plaintext
        return time.perf_counter() - start


def bench_ours(store: Store, sizes: list[int], label: str) -> dict[int, tuple[Timing, Timing]]:
    filler = KeyFiller(store)
    results: dict[int, tuple[Timing, Timing]] = {}
    for size in sizes:
        seconds = filler.fill_to(size)
        keys = list(filler.plaintexts)
        uncached = KeyManager(store, pepper=PEPPER, cache_ttl=0, last_used_flush=3600)
        cached = KeyManager(store, pepper=PEPPER, cache_ttl=3600, last_used_flush=3600)
        for key in keys[:50]:  # warm the connection pool and the statement cache
            uncached.verify(key)
        cold = measure(uncached.verify, random.choices(keys, k=SAMPLES))
        hot_keys = keys[:100]
        for key in hot_keys:
            cached.verify(key)
        warm = measure(cached.verify, random.choices(hot_keys, k=SAMPLES))
        results[size] = (cold, warm)
        print(
            f"  {label:<10} {size:>7,} keys  uncached p50 {cold.p50_ms:7.3f} ms  p99 "
            f"{cold.p99_ms:7.3f} ms   cached p50 {warm.p50_ms:7.4f} ms  p99 {warm.p99_ms:7.4f} ms"
            f"   (inserted in {seconds:.1f} s)",
            flush=True,
        )
    return results


@contextmanager
def sqlite_store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        settings = Settings(database_url=url)
        migrate.upgrade(settings)
        store = SqlStore.from_url(url, settings=settings)
        try:
            yield store
        finally:
            store.close()


@contextmanager
def postgres_store(admin_url: str) -> Iterator[Store]:
    import psycopg
    from sqlalchemy.engine import make_url

    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"tpg_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = (
        make_url(plain.replace("postgresql://", "postgresql+psycopg://", 1))
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(hide_password=False)
    )
    try:
        settings = Settings(database_url=url)
        migrate.upgrade(settings)
        store = SqlStore.from_url(url, settings=settings)
        try:
            yield store
        finally:
            store.close()
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the seed design -------------------------------------------------------------------------------


def bench_seed(users_measured: list[int], users_extrapolated: list[int]) -> dict[int, Timing]:
    """Seconds per request for a key held by the last user (worst) and a middle one (average).

    Every bcrypt verify costs the same whatever the hash, so the users' hashes are one real
    hash of another key, repeated, plus the caller's own hash where it belongs.
    """
    from passlib.context import CryptContext

    context = CryptContext(schemes=["bcrypt"])
    key = "seed-" + new_secret()
    own_hash = context.hash(key)
    other_hash = context.hash("seed-" + new_secret())

    def find_user(hashes: list[str]) -> int:
        for index, stored in enumerate(hashes):
            if context.verify(key, stored):
                return index
        raise AssertionError("the key should match")

    results: dict[int, Timing] = {}
    per_hash_ms: list[float] = []
    for users in users_measured:
        worst_hashes = [other_hash] * (users - 1) + [own_hash]
        start = time.perf_counter()
        find_user(worst_hashes)
        worst = (time.perf_counter() - start) * 1000
        middle = users // 2
        average_hashes = [other_hash] * middle + [own_hash] + [other_hash] * (users - middle - 1)
        start = time.perf_counter()
        find_user(average_hashes)
        average = (time.perf_counter() - start) * 1000
        per_hash_ms.append(worst / users)
        results[users] = Timing(p50_ms=average, p99_ms=worst)
        print(
            f"  seed       {users:>7,} users  average {average / 1000:8.2f} s   worst "
            f"{worst / 1000:8.2f} s   (measured; {worst / users:.0f} ms per bcrypt verify)",
            flush=True,
        )
    per_hash = statistics.mean(per_hash_ms)
    for users in users_extrapolated:
        results[users] = Timing(p50_ms=per_hash * (users // 2 + 1), p99_ms=per_hash * users)
        print(
            f"  seed       {users:>7,} users  average {results[users].p50_ms / 1000:8.2f} s   "
            f"worst {results[users].p99_ms / 1000:8.2f} s   (extrapolated from "
            f"{per_hash:.0f} ms per bcrypt verify, not measured)",
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    random.seed(0)

    print("Key verification: lookup by key id + HMAC-SHA256 (ours) vs. bcrypt per user (seed)")
    print(f"  {SAMPLES} verifies per row; cached = 100 hot keys, cache_ttl=3600 s")
    ours: dict[str, dict[int, tuple[Timing, Timing]]] = {}
    with sqlite_store() as store:
        ours["sqlite"] = bench_ours(store, sizes, "sqlite")
    admin_url = os.environ.get(PG_ENV)
    if admin_url:
        with postgres_store(admin_url) as store:
            ours["postgres"] = bench_ours(store, sizes, "postgres")
    else:
        print(f"  postgres   skipped: set {PG_ENV} to an admin URL to measure PostgreSQL")

    measured, extrapolated = ([10], [100, 1000]) if args.quick else ([10, 100], [1000])
    seed = bench_seed(measured, extrapolated)

    print("Ratios (seed time / ours, uncached p50 at the largest key count; bigger is better):")
    for backend, rows in ours.items():
        largest = max(rows)
        cold, warm = rows[largest]
        flatness = rows[largest][0].p50_ms / rows[min(rows)][0].p50_ms
        print(
            f"  {backend}: uncached p50 at {largest:,} keys is {flatness:.2f}x the one at "
            f"{min(rows):,} keys (flat = 1.0)"
        )
        for users, timing in sorted(seed.items()):
            average, worst = timing.p50_ms / cold.p50_ms, timing.p99_ms / cold.p50_ms
            print(
                f"  {backend}: seed at {users:>5,} users is {average:>12,.0f}x (average) / "
                f"{worst:>12,.0f}x (worst) slower than ours uncached, "
                f"{timing.p50_ms / warm.p50_ms:>14,.0f}x (average) than ours cached"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
