"""README's test command needs no variable: the PostgreSQL tests find or start a server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from postgres_support import (
    NO_POSTGRES_MESSAGE,
    PG_ENV,
    ThrowawayUnavailable,
    answers,
    resolve_admin_url,
)

ROOT = Path(__file__).resolve().parents[1]


def _closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens there once the socket is closed.
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def test_the_variable_is_an_override_and_nothing_is_probed() -> None:
    url, cluster = resolve_admin_url(
        {PG_ENV: "postgresql://ci@db.invalid/admin"}, find_tool=lambda name: None
    )
    assert (url, cluster) == ("postgresql://ci@db.invalid/admin", None)


def test_no_server_and_no_server_tools_is_one_line_saying_what_to_do() -> None:
    with pytest.raises(ThrowawayUnavailable) as raised:
        resolve_admin_url({}, default_url=_closed_port_url(), find_tool=lambda name: None)
    message = str(raised.value)
    assert message.startswith(NO_POSTGRES_MESSAGE)
    assert "\n" not in message
    for advice in (PG_ENV, "127.0.0.1:5432", "initdb"):
        assert advice in message


def test_postgres_default_url_is_used_when_it_answers(pg_admin_url: str) -> None:
    assert resolve_admin_url({}, default_url=pg_admin_url) == (pg_admin_url, None)


def test_postgres_throwaway_cluster_when_the_default_does_not_answer() -> None:
    url, cluster = resolve_admin_url({}, default_url=_closed_port_url())
    assert cluster is not None
    try:
        assert url == cluster.url
        assert answers(url)
    finally:
        cluster.remove()
    assert not cluster.base.exists()
    assert not answers(url)


def test_postgres_session_runs_without_the_variable(tmp_path: Path) -> None:
    # README's command runs `nox`; its PostgreSQL session must pass with no variable set.
    env = {k: v for k, v in os.environ.items() if k != PG_ENV}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nox",
            "-s",
            "tests_postgres",
            "--",
            "-p",
            "no:cacheprovider",
            "tests/test_store_sql.py::test_postgresql_pool_follows_settings",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "1 passed" in output
    assert "skipped" not in output


def test_readme_test_command_is_the_one_ci_runs_and_sets_no_variable() -> None:
    command = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/nox"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"```bash\n{command}\n```" in readme
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "DATABASE_URL" not in command
