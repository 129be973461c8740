"""What the SQL store promises beyond the contract: URLs, error mapping, SQLite concurrency."""

from __future__ import annotations

import multiprocessing
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc

from tabpfn_gateway import migrate
from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import (
    ConfigurationError,
    Conflict,
    InvalidRequest,
    SchemaNotCurrent,
    StoreError,
    StoreUnavailable,
)
from tabpfn_gateway.store import (
    ApiKey,
    Principal,
    UpstreamCredential,
    UsageEvent,
    open_store,
)
from tabpfn_gateway.store import sql as sql_module
from tabpfn_gateway.store.sql import SqlStore, describe_url, normalize_database_url


def migrated(url: str, **settings_fields: object) -> SqlStore:
    settings = Settings(database_url=url, **settings_fields)  # type: ignore[arg-type]
    migrate.upgrade(settings)
    return SqlStore.from_url(url, settings=settings)


def a_key(owner_id: str, key_id: str, secret_hash: str = "h") -> ApiKey:
    return ApiKey(
        key_id=key_id,
        name=key_id,
        owner_id=owner_id,
        credential_id=None,
        scopes=("predict",),
        secret_hash=secret_hash,
        hash_scheme="hmac-sha256",
        display_prefix="tpg_" + key_id,
        last4="0000",
    )


# -- URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "described"),
    [
        ("sqlite:////var/lib/gw/gateway.db", "sqlite (/var/lib/gw/gateway.db)"),
        ("sqlite:///relative.db", "sqlite (relative.db)"),
        ("sqlite://", "sqlite (memory)"),
        ("postgresql://admin:hunter22@db.internal:5433/gw", "postgresql (db.internal:5433/gw)"),
        ("postgresql+psycopg://admin:hunter22@db/gw", "postgresql (db/gw)"),
        ("postgres://u:hunter22@db:5432/gw", "postgresql (db:5432/gw)"),
        ("memory://", "memory"),
        ("not a url at all", "unparseable database URL"),
    ],
)
def test_describe_url_hides_passwords(url: str, described: str) -> None:
    assert describe_url(url) == described
    assert "hunter22" not in describe_url(url)


def test_plain_postgresql_url_uses_psycopg3() -> None:
    assert normalize_database_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalize_database_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    store = SqlStore.from_url("postgresql://u@127.0.0.1:1/d")
    try:
        assert store.engine.dialect.driver == "psycopg"
        assert "hunter" not in repr(store)
    finally:
        store.close()


def test_repr_never_shows_the_password() -> None:
    store = SqlStore.from_url("postgresql://admin:hunter22@127.0.0.1:1/gw")
    try:
        assert repr(store) == "SqlStore(postgresql (127.0.0.1:1/gw))"
    finally:
        store.close()


def test_bad_url_is_a_configuration_error_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="TABPFN_GATEWAY_DATABASE_URL"):
        SqlStore.from_url("::::")
    with pytest.raises(ConfigurationError, match="only SQLite and PostgreSQL"):
        SqlStore.from_url("nosuchdialect://x/y")


def test_open_store_picks_the_store(sqlite_url: str) -> None:
    store = open_store(url=sqlite_url)
    try:
        assert isinstance(store, SqlStore)
    finally:
        store.close()


# -- unreachable or unusable databases -------------------------------------------------


def test_unreachable_postgresql_is_store_unavailable() -> None:
    url = "postgresql://admin:hunter22@127.0.0.1:1/gw"
    store = SqlStore.from_url(url, settings=Settings(db_connect_timeout_seconds=2))
    try:
        with pytest.raises(StoreUnavailable) as raised:
            store.ping()
        assert "hunter22" not in str(raised.value)
        assert "127.0.0.1:1" in str(raised.value)
        assert raised.value.retryable
        assert isinstance(raised.value.__cause__, sa_exc.SQLAlchemyError)
        with pytest.raises(StoreUnavailable):
            store.get_key("k")
        with pytest.raises(StoreUnavailable):
            store.add_principal(Principal(id="p", name="p"))
        with pytest.raises(StoreUnavailable), store.atomic():
            pass
    finally:
        store.close()


def test_sqlite_in_a_place_that_cannot_hold_it_is_store_unavailable(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_text("a file, not a directory")
    with pytest.raises(StoreUnavailable) as raised:
        SqlStore.from_url(f"sqlite:///{not_a_dir}/sub/gateway.db")
    assert isinstance(raised.value.__cause__, OSError)


def test_sqlite_path_that_is_a_directory_is_store_unavailable(tmp_path: Path) -> None:
    store = SqlStore.from_url(f"sqlite:///{tmp_path}")
    try:
        with pytest.raises(StoreUnavailable):
            store.ping()
    finally:
        store.close()


def test_missing_schema_is_schema_not_current(sqlite_url: str) -> None:
    store = SqlStore.from_url(sqlite_url)
    try:
        store.ping()
        with pytest.raises(SchemaNotCurrent):
            store.get_principal("p")
        with pytest.raises(SchemaNotCurrent):
            store.add_principal(Principal(id="p", name="p"))
    finally:
        store.close()


def test_missing_schema_on_postgresql_is_schema_not_current(pg_url: str) -> None:
    store = SqlStore.from_url(pg_url)
    try:
        with pytest.raises(SchemaNotCurrent):
            store.list_keys()
    finally:
        store.close()


def test_postgresql_pool_follows_settings(pg_url: str) -> None:
    store = SqlStore.from_url(pg_url, settings=Settings(db_pool_size=3))
    try:
        store.ping()
        assert store.engine.pool.size() == 3  # type: ignore[attr-defined]
    finally:
        store.close()


# -- error messages ----------------------------------------------------------------------


def test_conflict_message_carries_no_values(sqlite_url: str) -> None:
    store = migrated(sqlite_url)
    try:
        store.add_principal(Principal(id="p", name="p"))
        store.add_key(a_key("p", "k1", secret_hash="hash-that-must-not-leak"))
        with pytest.raises(Conflict) as raised:
            store.add_key(a_key("p", "k1", secret_hash="hash-that-must-not-leak"))
        assert "hash-that-must-not-leak" not in str(raised.value)
        assert isinstance(raised.value.__cause__, sa_exc.IntegrityError)
    finally:
        store.close()


def test_store_error_message_carries_no_values(pg_url: str) -> None:
    store = migrated(pg_url)
    try:
        # PostgreSQL refuses NUL in text: bad input, so 400 INVALID_REQUEST (never a 500), and
        # the value must not show up in the message.
        with pytest.raises(InvalidRequest) as raised:
            store.add_principal(Principal(id="p", name="secret-ish\x00value"))
        assert "secret-ish" not in str(raised.value)
    finally:
        store.close()


def test_a_bound_store_is_refused_after_its_block(sqlite_url: str) -> None:
    store = migrated(sqlite_url)
    try:
        with store.atomic() as tx:
            tx.add_principal(Principal(id="p", name="p"))
        with pytest.raises(StoreError):
            tx.get_principal("p")
        assert store.get_principal("p") is not None
    finally:
        store.close()


# -- SQLite specifics --------------------------------------------------------------------


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_url: str) -> None:
    store = migrated(sqlite_url)
    try:
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    finally:
        store.close()


def test_sqlite_keeps_utc_wall_time(sqlite_url: str, tmp_path: Path) -> None:
    store = migrated(sqlite_url)
    plus_five = datetime(2025, 1, 1, 17, 0, 0, 1, tzinfo=UTC) + timedelta(0)
    try:
        store.add_principal(Principal(id="p", name="p", created_at=plus_five))
    finally:
        store.close()
    raw = sqlite3.connect(tmp_path / "gateway.db")
    try:
        (stored,) = raw.execute("SELECT created_at FROM principals").fetchone()
    finally:
        raw.close()
    assert stored == "2025-01-01 17:00:00.000001"


def test_a_held_write_lock_ends_in_store_unavailable_not_a_raw_error(
    sqlite_url: str, tmp_path: Path
) -> None:
    store = migrated(sqlite_url, sqlite_busy_timeout_ms=50)
    blocker = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable) as raised:
            store.add_principal(Principal(id="p", name="p"))
        assert "locked" in str(raised.value)
        blocker.execute("ROLLBACK")
        store.add_principal(Principal(id="p", name="p"))
    finally:
        blocker.close()
        store.close()


def test_iter_credentials_crosses_batches(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql_module, "_ITER_BATCH", 2)
    store = migrated(sqlite_url)
    try:
        store.add_principal(Principal(id="p", name="p"))
        base = datetime(2025, 1, 1, tzinfo=UTC)
        made = [
            store.add_credential(
                UpstreamCredential(
                    id=f"c{i}",
                    owner_id="p",
                    label="l",
                    encrypted_token=b"x",
                    created_at=base + timedelta(seconds=i // 2),
                )
            )
            for i in range(5)
        ]
        assert list(store.iter_credentials()) == made
    finally:
        store.close()


def _hammer(url: str, worker: int, rounds: int) -> None:
    """One process's share of the concurrent-writers test (runs in a child process)."""
    store = SqlStore.from_url(url)
    try:
        for i in range(rounds):
            principal_id = f"w{worker}-{i}"
            with store.atomic() as tx:
                # Read before writing: the pattern that makes a DEFERRED SQLite transaction
                # fail at once with "database is locked" when another process wrote meanwhile.
                tx.list_keys(limit=1)
                tx.add_principal(Principal(id=principal_id, name=principal_id))
                tx.add_key(a_key(principal_id, f"k{worker}-{i}"))
            store.record_usage(
                [
                    UsageEvent(
                        id=f"u{worker}-{i}-{n}",
                        key_id=f"k{worker}-{i}",
                        owner_id=principal_id,
                        operation="predict",
                        status=200,
                        latency_ms=1.0,
                        rows=1,
                    )
                    for n in range(3)
                ]
            )
            store.touch_keys({f"k{worker}-{i}": datetime.now(UTC)})
            store.list_keys(limit=5)
    finally:
        store.close()


@pytest.mark.slow
def test_two_processes_writing_one_sqlite_file(sqlite_url: str, tmp_path: Path) -> None:
    migrated(sqlite_url).close()
    rounds = 120
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_hammer, args=(sqlite_url, worker, rounds)) for worker in (1, 2)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=240)
    assert [process.exitcode for process in workers] == [0, 0]

    store = SqlStore.from_url(sqlite_url)
    try:
        keys = []
        cursor = None
        while True:
            page = store.list_keys(limit=1000, cursor=cursor)
            keys.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert len(keys) == 2 * rounds
        assert all(key.last_used_at is not None for key in keys)
        summary = store.summarize_usage()
        assert sum(row.calls for row in summary) == 2 * rounds * 3
        assert sum(row.rows for row in summary) == 2 * rounds * 3
    finally:
        store.close()
    raw = sqlite3.connect(tmp_path / "gateway.db")
    try:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        raw.close()


def test_an_insert_that_skips_conflicts_is_never_written_as_multi_row_values() -> None:
    # Multi-row VALUES repeat the statement's one group of placeholders; an ON CONFLICT clause
    # after it must not be repeated with it (that statement would not parse).
    import sqlalchemy as sa

    from tabpfn_gateway.store import schema

    columns = ("upload_id", "owner_id", "kind", "created_at")
    engine = sa.create_engine("sqlite://")
    schema.upload_owners.create(engine)
    insert = sql_module._CompiledInsert.of(
        schema.upload_owners, columns, engine.dialect, skip_conflicts_on=("upload_id", "owner_id")
    )
    now = datetime.now(UTC)
    rows = [{"upload_id": "u0", "owner_id": "o", "kind": "train", "created_at": now}]
    rows += [dict(rows[0], upload_id=f"u{n}") for n in range(1, 4)]
    ((statement, parameters),) = insert.batches(rows)
    assert statement == insert.sql
    assert len(parameters) == 4
    with engine.begin() as connection:
        connection.exec_driver_sql(statement, parameters)
        connection.exec_driver_sql(statement, parameters[:1])  # skipped, not a conflict
        stored = connection.exec_driver_sql("SELECT count(*) FROM upload_owners").scalar()
    assert stored == 4
    engine.dispose()
