"""nox sessions: plain `nox` runs what CI runs (lint, typecheck, tests on SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import sys

import nox

# Sessions run in the environment nox is started from (README: pip install -e '.[dev]'),
# so one install serves every session and CI measures the same thing a developer runs.
nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests", "tests_postgres"]
nox.options.error_on_missing_interpreters = True

# The interpreter nox runs under (the project venv), whatever PATH says.
PY = sys.executable
PG_ENV = "TABPFN_GATEWAY_TEST_DATABASE_URL"


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    paths = ["src", "tests", "benchmarks", "examples", "migrations", "noxfile.py"]
    session.run(PY, "-m", "ruff", "check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy strict on src/."""
    session.run(PY, "-m", "mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """The suite on the embedded SQLite and memory stores (PostgreSQL tests deselected)."""
    session.run(PY, "-m", "pytest", "-m", "not postgres", *session.posargs)


@nox.session
def tests_postgres(session: nox.Session) -> None:
    """The PostgreSQL tests; needs TABPFN_GATEWAY_TEST_DATABASE_URL (an admin URL: tests
    create and drop their own databases)."""
    if not os.environ.get(PG_ENV):
        session.error(f"{PG_ENV} is not set (e.g. postgresql://postgres@127.0.0.1:5432/postgres)")
    session.run(PY, "-m", "pytest", "-m", "postgres", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, each against its anchor in the same run, printed as ratios."""
    for script in ("keys", "protocol", "gateway", "sdk"):
        path = os.path.join("benchmarks", f"{script}.py")
        if os.path.exists(path):
            session.run(PY, path, *session.posargs)
