"""Shared fixtures: throwaway PostgreSQL databases, SQLite files, and CI's no-skip rule."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from postgres_support import PG_ENV, ThrowawayPostgres, ThrowawayUnavailable, resolve_admin_url

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
_CLUSTER = pytest.StashKey[ThrowawayPostgres]()


def _runs_workers(config: pytest.Config) -> bool:
    """True in the controller of a pytest-xdist run (nox runs the suite on several workers)."""
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    # With several workers, PostgreSQL is chosen once, here, before they start: they inherit
    # the URL (so a throwaway cluster is shared, not started per worker), and "no PostgreSQL"
    # stops the run with one line instead of a crash report from every worker.
    if not _runs_workers(config) or "not postgres" in (config.option.markexpr or ""):
        return
    try:
        url, cluster = resolve_admin_url(os.environ)
    except ThrowawayUnavailable as exc:
        pytest.exit(str(exc), returncode=pytest.ExitCode.TESTS_FAILED)
    if cluster is not None:
        os.environ[PG_ENV] = url
        config.stash[_CLUSTER] = cluster


def pytest_unconfigure(config: pytest.Config) -> None:
    cluster = config.stash.get(_CLUSTER, None)
    if cluster is not None:
        os.environ.pop(PG_ENV, None)
        cluster.remove()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Any test using a PostgreSQL fixture is a PostgreSQL test, marked so that
    # `-m postgres` / `-m "not postgres"` split the suite the way the nox sessions do.
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if {"pg_url", "pg_admin_url"} & set(fixtures) or "postgres" in item.name:
            item.add_marker(pytest.mark.postgres)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    # In CI a skipped PostgreSQL test is a failure: it proves nothing about PostgreSQL.
    if IN_CI and report.skipped and item.get_closest_marker("postgres") is not None:
        report.outcome = "failed"
        report.longrepr = f"PostgreSQL test skipped in CI ({PG_ENV}): {report.longrepr}"


def _pg_connect(url: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def create_pg_database(admin_url: str) -> str:
    """Create a fresh database next to ``admin_url``'s and return its SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    name = f"tpg_test_{uuid.uuid4().hex[:12]}"
    with _pg_connect(admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url.replace("postgresql://", "postgresql+psycopg://", 1))
    return url.set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False
    )


def drop_pg_database(admin_url: str, url: str) -> None:
    """Drop a database made by ``create_pg_database`` (and only such a one)."""
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    if not (name and name.startswith("tpg_test_")):
        raise ValueError("refusing to drop a database this suite did not create")
    with _pg_connect(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """The PostgreSQL admin URL of this session: TABPFN_GATEWAY_TEST_DATABASE_URL, else the
    local default when it answers, else a throwaway cluster (removed at the end); none of
    them: the session stops with one line saying what to do (postgres_support)."""
    try:
        url, cluster = resolve_admin_url(os.environ)
    except ThrowawayUnavailable as exc:
        pytest.exit(str(exc), returncode=pytest.ExitCode.TESTS_FAILED)
    try:
        yield url
    finally:
        if cluster is not None:
            cluster.remove()


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards."""
    admin = pg_admin_url
    url = create_pg_database(admin)
    try:
        yield url
    finally:
        drop_pg_database(admin, url)


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    """A SQLite file URL in this test's temporary directory."""
    return f"sqlite:///{tmp_path}/gateway.db"
