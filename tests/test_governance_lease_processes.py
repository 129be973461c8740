"""Database rate-limit leases across OS processes: several processes on one SQLite file, or on
one PostgreSQL database, hit one limit at the same time and admit exactly the limit; the
leases they did not use are given back when they close."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway_support import make_settings
from tabpfn_gateway import migrate
from tabpfn_gateway.governance import RateCheck, StoreLimiter
from tabpfn_gateway.store import open_store

PROCESSES = 3
LIMIT = 400  # leases of 4 (1% of the limit)
NOW = 1_800_000_000.0  # one clock for every process: the window cannot end mid-test

# One process: its own store and limiter; says "ready", waits for "go" (so that all start
# together), hits the shared limit until refused, then takes one request of a second limit
# (a lease of 4: 3 left unused) and closes. Prints how many the shared limit admitted.
_PROCESS = """
import sys
from tabpfn_gateway.governance import RateCheck, StoreLimiter
from tabpfn_gateway.store import open_store

url, now, limit = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
store = open_store(url=url)
limiter = StoreLimiter(store, clock=lambda: now)
shared = RateCheck("key:shared:hour", limit, 3600)
leased = RateCheck("key:leased:hour", limit, 3600)
print("ready", flush=True)
sys.stdin.readline()
admitted = 0
while limiter.hit([shared]).refused is None:
    admitted += 1
if limiter.hit([leased]).refused is not None:
    sys.exit("the second limit refused its first request")
limiter.close()
store.close()
print(admitted, flush=True)
"""


def _run_processes(url: str) -> list[int]:
    """Each process's admitted count, the processes started together."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS, url, str(NOW), str(LIMIT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready", process.communicate()[1]
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        admitted: list[int] = []
        for process in processes:
            # A hang guard, not a timing assertion.
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0, err
            admitted.append(int(out.strip()))
        return admitted
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _processes_share_one_limit(tmp_path: Path, url: str) -> None:
    migrate.upgrade(make_settings(tmp_path, url))
    admitted = _run_processes(url)
    # Exactly the limit between them: never more (every request was counted in the shared
    # counter first), and no lease lost (each process spent its leases before it was refused).
    assert sum(admitted) == LIMIT, admitted
    store = open_store(url=url)
    try:
        after = StoreLimiter(store, clock=lambda: NOW, max_lease=1)
        assert after.hit([RateCheck("key:shared:hour", LIMIT, 3600)]).refused is not None
        # Each process used 1 of its lease of 4 on the second limit and gave 3 back on close:
        # the counter holds 1 per process, so the rest of the limit is still there.
        leased = RateCheck("key:leased:hour", LIMIT, 3600)
        left = 0
        while after.hit([leased]).refused is None:
            left += 1
        assert left == LIMIT - PROCESSES
    finally:
        store.close()


def test_processes_on_one_sqlite_file_share_one_limit(tmp_path: Path, sqlite_url: str) -> None:
    _processes_share_one_limit(tmp_path, sqlite_url)


def test_processes_on_one_postgres_database_share_one_limit(tmp_path: Path, pg_url: str) -> None:
    _processes_share_one_limit(tmp_path, pg_url)
