"""Item 8: a revocation reaches every worker and replica promptly on every store, without
Redis: PostgreSQL with 2 replicas (no NOTIFY, no Redis), changes made by the CLI.

The key cache TTL is 300 s here, so only the change counter can explain a prompt refusal.
The wait below is a generous ceiling, not a speed assertion; the observed delay is printed
(the mechanism's own bound is TABPFN_GATEWAY_CHANGE_POLL_SECONDS, 0.25 s by default).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from gateway_support import build_gateway, make_settings
from security_support import CLI, cli_env
from tabpfn_gateway import migrate
from tabpfn_gateway.errors import KeyRevoked
from tabpfn_gateway.gateway import LocalBus
from tabpfn_gateway.keys import parse_key
from tabpfn_gateway.store import open_store
from tabpfn_gateway.testing import FakeTabPFN

pytestmark = pytest.mark.slow

TOKEN = "tok-revocation-0001"
SECRET = "revocation-secret-0123456789abcdef"
CEILING_SECONDS = 10.0


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [CLI, *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def make_key(env: dict[str, str]) -> str:
    cli(env, "principals", "add", "team", "--kind", "team")
    cli(
        env,
        "credentials",
        "add",
        "--owner",
        "team",
        "--label",
        "t",
        "--token-stdin",
        "--no-verify",
        stdin=TOKEN + "\n",
    )
    return cli(env, "keys", "create", "--owner", "team", "--name", "k", "--quiet").strip()


def test_postgres_two_replicas_refuse_a_cli_revocation(tmp_path: Path, pg_url: str) -> None:
    settings = make_settings(tmp_path, pg_url, secret_key=SECRET, key_cache_ttl_seconds=300)
    migrate.upgrade(settings)
    fake = FakeTabPFN(tokens=[TOKEN])
    env = cli_env(tmp_path / "cli", database_url=pg_url, secret_key=SECRET)
    key = make_key(env)
    # No NOTIFY, no Redis: an in-process bus only, so the counter is all that links them.
    replicas = [
        build_gateway(settings, fake.app, store=open_store(settings), bus=LocalBus())
        for _ in range(2)
    ]
    try:
        for replica in replicas:
            replica.authoriser.authorise(key, scope="inference")
        cli(env, "keys", "revoke", parse_key(key).key_id)
        revoked_at = time.monotonic()
        for number, replica in enumerate(replicas):
            while True:
                try:
                    decision = replica.authoriser.authorise_from_memory(key, scope="inference")
                    if decision is None:
                        replica.authoriser.authorise(key, scope="inference")
                except KeyRevoked:
                    break
                assert time.monotonic() - revoked_at < CEILING_SECONDS, f"replica {number}"
                time.sleep(0.02)
        print(f"postgres, 2 replicas: refused everywhere {time.monotonic() - revoked_at:.2f}s")
    finally:
        for replica in replicas:
            replica.close()
            replica.store.close()
