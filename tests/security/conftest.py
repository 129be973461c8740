"""The security suite's fixtures: every test on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from security_support import Stack, build_stack


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every security test runs on the embedded SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gateway.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def stack(tmp_path: Path, db_url: str) -> Iterator[Stack]:
    yield from build_stack(tmp_path, db_url)
