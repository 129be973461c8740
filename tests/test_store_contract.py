"""The store contract suite, run against the memory store, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tabpfn_gateway import migrate
from tabpfn_gateway.config import Settings
from tabpfn_gateway.store import Store, open_store
from tabpfn_gateway.store.memory import MemoryStore
from tabpfn_gateway.store.sql import SqlStore
from tabpfn_gateway.testing import StoreContractTests


def migrated_store(url: str) -> SqlStore:
    """A SqlStore on ``url`` after `db upgrade` (the schema belongs to Alembic)."""
    settings = Settings(database_url=url)
    migrate.upgrade(settings)
    store = SqlStore.from_url(url, settings=settings)
    return store


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[Store]:
    if request.param == "memory":
        built: Store = open_store(url="memory://")
        assert isinstance(built, MemoryStore)
    elif request.param == "sqlite":
        built = migrated_store(f"sqlite:///{tmp_path}/contract.db")
    else:
        built = migrated_store(request.getfixturevalue("pg_url"))
    try:
        yield built
    finally:
        built.close()


class TestStoreContract(StoreContractTests):
    """Every promise of the Store protocol, for every store."""
