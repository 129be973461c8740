"""The SQL Store: SQLAlchemy 2.x Core over SQLite (embedded default) or PostgreSQL (psycopg 3)."""

from __future__ import annotations

import dataclasses
import math
import select
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from tabpfn_gateway.errors import (
    ConfigurationError,
    Conflict,
    GatewayError,
    InvalidRequest,
    SchemaNotCurrent,
    StoreError,
    StoreUnavailable,
)
from tabpfn_gateway.logs import redact
from tabpfn_gateway.store import schema
from tabpfn_gateway.store._common import (
    check_amount,
    check_aware,
    check_claim,
    check_json,
    check_key_changes,
    check_limit,
    check_scopes,
    check_session_filters,
    day_bounds,
    decode_cursor,
    encode_cursor,
    merge_rollups,
    normalize_record,
)
from tabpfn_gateway.store.records import (
    AdminSession,
    ApiKey,
    AuditEvent,
    BudgetClaim,
    BudgetCounter,
    CounterHit,
    FittedModel,
    KeyChanges,
    Membership,
    Page,
    Policy,
    Principal,
    PrincipalKind,
    PruneReport,
    UpstreamCredential,
    UsageEvent,
    UsageRollup,
    UsageSummary,
    utcnow,
)

if TYPE_CHECKING:
    from tabpfn_gateway.config import Settings

__all__ = [
    "SqlStore",
    "create_engine_for_url",
    "describe_url",
    "map_database_error",
    "normalize_database_url",
    "parse_database_url",
    "sqlite_path",
]

R = TypeVar("R")


class _Refused(Exception):
    """Raised inside a transaction to roll it back when a conditional write matched nothing."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


# The one-statement counters and budgets below apply several conditional writes in one
# statement; when one of them matches nothing, the statement divides by zero on purpose so
# that PostgreSQL rolls all of it back (all or nothing without a BEGIN/COMMIT round trip).
# Their SQL is fixed fragments and numbered placeholders, every value bound (hence S608).
_REFUSED_SQLSTATE = "22012"


def _is_refusal(exc: sa_exc.SQLAlchemyError) -> bool:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) == _REFUSED_SQLSTATE


# iter_credentials reads this many rows per query, so re-encrypting a large table never holds
# every row (or one long transaction) at once.
_ITER_BATCH = 500

# SQLSTATEs (PostgreSQL) and message fragments (SQLite) that mean "the schema is not there".
_MISSING_SCHEMA_SQLSTATES = {"42P01", "42703"}
_MISSING_SCHEMA_FRAGMENTS = ("no such table", "no such column", "has no column named")


def normalize_database_url(url: str) -> str:
    """``url`` with a plain ``postgresql://`` turned into ``postgresql+psycopg://`` (psycopg 3
    is the driver we ship; SQLAlchemy's default for the plain form is psycopg2)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def parse_database_url(url: str) -> URL:
    """``url`` parsed, or ``ConfigurationError`` naming the setting unless SQLite/PostgreSQL."""
    from tabpfn_gateway.config import check_database_url

    normalized = normalize_database_url(url)
    try:
        check_database_url(normalized)
    except ValueError as exc:
        raise ConfigurationError(
            f"The database URL (TABPFN_GATEWAY_DATABASE_URL) is {exc}."
        ) from None
    return make_url(normalized)


def describe_url(url: str) -> str:
    """A human description of a database URL, never showing its password.

    ``"sqlite (/path/gateway.db)"``, ``"postgresql (host:5432/db)"``, ``"memory"``.
    """
    if url.startswith("memory://"):
        return "memory"
    try:
        parsed = parse_database_url(url)
    except ConfigurationError:
        return "unparseable database URL"
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        return f"sqlite ({database})" if database and database != ":memory:" else "sqlite (memory)"
    where = parsed.host or "localhost"
    if parsed.port:
        where += f":{parsed.port}"
    return f"{backend} ({where}/{parsed.database or ''})"


def map_database_error(
    exc: sa_exc.SQLAlchemyError, what: str, description: str, *, conflict: str | None = None
) -> GatewayError:
    """The domain error for a SQLAlchemy error: ``Conflict``, ``SchemaNotCurrent``,
    ``StoreUnavailable`` or ``StoreError``. Messages never carry SQL parameters (they may be
    hashes or ciphertexts) nor the URL's password (``description`` comes from describe_url)."""
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None)
    first_line = (str(orig) if orig is not None else str(exc)).strip().splitlines()[:1]
    detail = redact(first_line[0]) if first_line else type(exc).__name__
    if isinstance(exc, sa_exc.IntegrityError):
        return Conflict(conflict or f"{what}: a unique value is taken or a reference is missing.")
    if isinstance(exc, sa_exc.DataError):
        # A value the database cannot hold (NUL in text on PostgreSQL, a number past BIGINT):
        # the caller's input, never a 500.
        return InvalidRequest(f"{what}: a value cannot be stored (out of range or invalid text).")
    if sqlstate in _MISSING_SCHEMA_SQLSTATES or any(
        fragment in detail for fragment in _MISSING_SCHEMA_FRAGMENTS
    ):
        return SchemaNotCurrent(
            f"The database schema is missing or old ({description}): "
            "run `tabpfn-gateway db upgrade`."
        )
    if isinstance(
        exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError
    ) or getattr(exc, "connection_invalidated", False):
        return StoreUnavailable(
            f"The database cannot be reached or is busy ({description}): {detail}"
        )
    reason = type(orig).__name__ if orig is not None else type(exc).__name__
    if sqlstate:
        reason += f", SQLSTATE {sqlstate}"
    return StoreError(f"{what} failed in the database ({description}): {reason}.")


def sqlite_path(parsed: URL) -> Path | None:
    """The file a SQLite URL points at, or None for an in-memory or URI-style database."""
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def create_engine_for_url(url: str, settings: Settings | None = None) -> Engine:
    """An engine set up the way the store (and the migrations) need it.

    SQLite: the parent directory is created, WAL journal, ``busy_timeout``, foreign keys on,
    and transactions begun explicitly so writers can take the write lock up front (see
    ``_sqlite_begin``). PostgreSQL: a pool sized from settings, whose connections are checked
    for liveness on checkout without a round trip (``_check_liveness_on_checkout``).
    """
    if settings is None:
        from tabpfn_gateway.config import get_settings

        settings = get_settings()
    parsed = parse_database_url(url)
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            path = sqlite_path(parsed)
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreUnavailable(
                        f"Cannot create the directory of the SQLite database "
                        f"({describe_url(url)}): {exc.strerror or type(exc).__name__}."
                    ) from exc
            engine = sa.create_engine(
                parsed, connect_args={"timeout": settings.sqlite_busy_timeout_ms / 1000}
            )
            _configure_sqlite(engine, settings.sqlite_busy_timeout_ms)
            return engine
        if backend == "postgresql":
            engine = sa.create_engine(
                parsed,
                pool_size=settings.db_pool_size,
                pool_timeout=settings.db_pool_timeout_seconds,
                # libpq takes whole seconds and treats anything below 2 as 2.
                connect_args={
                    "connect_timeout": max(2, math.ceil(settings.db_connect_timeout_seconds))
                },
            )
            _check_liveness_on_checkout(engine)
            return engine
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as exc:
        if backend == "postgresql":
            raise StoreError(
                "PostgreSQL needs psycopg 3: pip install tabpfn-gateway[postgres]"
            ) from exc
        raise InvalidRequest(
            f"Cannot use the database URL ({describe_url(url)}): {type(exc).__name__}."
        ) from exc


def _check_liveness_on_checkout(engine: Engine) -> None:
    """Replace a pooled PostgreSQL connection the server has closed, without a round trip.

    A pre-ping (``SELECT 1`` on every checkout) would add a round trip to every store call.
    An idle connection has nothing to read; when its socket is readable (the server ended the
    session: a restart, ``pg_terminate_backend``, an idle timeout) or the driver knows it is
    closed, it is pinged for real and, if that fails, discarded (the pool then opens a new
    one). A path that fails silently (no FIN) is found by the first statement instead.
    """

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
        if not _looks_closed(dbapi_connection):
            return
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
        except engine.dialect.loaded_dbapi.Error as exc:  # the driver's own error tree
            raise sa_exc.DisconnectionError() from exc


def _looks_closed(dbapi_connection: Any) -> bool:
    if getattr(dbapi_connection, "closed", False) or getattr(dbapi_connection, "broken", False):
        return True
    try:
        readable, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
    except (OSError, ValueError, AttributeError):
        return True
    return bool(readable)


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Let SQLAlchemy's "begin" event (below) start transactions instead of pysqlite,
        # whose implicit BEGIN is always DEFERRED.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode = WAL")
            # NORMAL is durable across application crashes in WAL mode, and much faster.
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection: Connection) -> None:
        # A DEFERRED transaction that later writes cannot wait on busy_timeout when another
        # writer got there first (SQLite returns "database is locked" at once to avoid a
        # deadlock). Writers therefore begin IMMEDIATE: they queue for the lock up front.
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


_USAGE_FIELDS = tuple(field.name for field in dataclasses.fields(UsageEvent))
_FITTED_MODEL_FIELDS = tuple(field.name for field in dataclasses.fields(FittedModel))
_UPLOAD_OWNER_FIELDS = ("upload_id", "owner_id", "kind", "created_at")


def _usage_row(event: UsageEvent) -> dict[str, Any]:
    """The insert row of one usage event: its fields as they are (scalars: nothing to copy),
    ``created_at`` (its one datetime) checked aware and in UTC as ``normalize_record`` would.
    Written out for this record because the recorder flushes hundreds at a time on the GIL
    the event loop needs (``normalize_record`` walks ``dataclasses.fields`` per event)."""
    row = {name: getattr(event, name) for name in _USAGE_FIELDS}
    created_at = event.created_at
    if isinstance(created_at, datetime) and created_at.tzinfo is not UTC:
        row["created_at"] = check_aware(created_at, "UsageEvent.created_at")
    return row


# Values bound in one statement: SQLite's smallest limit (999, before 3.32) holds everywhere.
_MAX_BOUND = 999


@dataclasses.dataclass(frozen=True)
class _CompiledInsert:
    """An INSERT of every column of a table, compiled for one dialect, and how to turn rows
    (dicts by column name) into the driver's executemany parameters: the columns' own bind
    processors applied (SQLite's datetime text, say), in the driver's parameter style."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]
    positional: bool

    @classmethod
    def of(
        cls,
        table: sa.Table,
        columns: Sequence[str],
        dialect: sa.Dialect,
        *,
        skip_conflicts_on: Sequence[str] = (),
    ) -> _CompiledInsert:
        """The insert of ``columns``; with ``skip_conflicts_on``, a row that conflicts on
        those columns is skipped (``ON CONFLICT (...) DO NOTHING``, on both databases)."""
        statement: Any = table.insert()
        if skip_conflicts_on:
            from sqlalchemy.dialects import postgresql, sqlite

            dialect_insert = sqlite.insert if dialect.name == "sqlite" else postgresql.insert
            statement = dialect_insert(table).on_conflict_do_nothing(
                index_elements=list(skip_conflicts_on)
            )
        compiled = statement.compile(dialect=dialect, column_keys=list(columns))
        names = tuple(compiled.positiontup or ()) if compiled.positional else ()
        processors = tuple(
            (name, processor)
            for name in columns
            if (processor := table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
            is not None
        )
        return cls(str(compiled), names, processors, bool(compiled.positional))

    def batches(self, rows: list[dict[str, Any]]) -> Iterator[tuple[str, Any]]:
        """What to execute for ``rows``: (statement, parameters) pairs.

        With positional parameters (SQLite), rows go in multi-row ``VALUES`` of up to
        ``_MAX_BOUND`` values each: one statement per chunk. ``executemany`` steps row by row,
        letting go of the GIL and taking it back each time, and while the event loop's thread
        keeps the GIL busy each retake waits out the switch interval (5 ms): a flush of 500
        usage rows under load took seconds. Named parameters (psycopg's pipeline) keep one
        ``executemany``.
        """
        parameters = self.parameters(rows)
        head, values, group = self.sql.rpartition(" VALUES ")
        # Only a plain "INSERT ... VALUES (?, ...)" repeats its group (an ON CONFLICT clause
        # after it would be repeated too): anything else keeps one executemany.
        plain = group.startswith("(") and group.endswith(")") and ")" not in group[:-1]
        if not self.positional or not values or not self.names or not plain:
            yield self.sql, parameters
            return
        per_statement = max(1, _MAX_BOUND // len(self.names))
        for start in range(0, len(parameters), per_statement):
            chunk = parameters[start : start + per_statement]
            flat = tuple(value for row in chunk for value in row)
            yield f"{head} VALUES {', '.join([group] * len(chunk))}", flat

    def parameters(self, rows: list[dict[str, Any]]) -> list[Any]:
        for row in rows:
            for name, processor in self.processors:
                row[name] = processor(row[name])
        if self.positional:
            names = self.names
            return [tuple(row[name] for name in names) for row in rows]
        return rows


class SqlStore:
    """A ``Store`` over a SQLAlchemy engine; one code path for SQLite and PostgreSQL.

    The store does not create tables: the schema belongs to Alembic
    (``tabpfn-gateway db upgrade`` or ``tabpfn_gateway.migrate.upgrade``).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        description: str | None = None,
        _connection: Connection | None = None,
    ) -> None:
        self._engine = engine
        # Inserts on the request path, compiled once: building and compiling a statement
        # per call cost several times the write itself (SQLite: 270 µs against 60).
        self._compiled_inserts: dict[tuple[str, tuple[str, ...]], _CompiledInsert] = {}
        self._is_sqlite = engine.dialect.name == "sqlite"
        self._description = description or describe_url(
            engine.url.render_as_string(hide_password=True)
        )
        self._connection = _connection
        self._bound_open = _connection is not None

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> SqlStore:
        """A store on the database at ``url`` (``postgresql://`` is accepted for psycopg 3)."""
        return cls(create_engine_for_url(url, settings), description=describe_url(url))

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for migrations and diagnostics)."""
        return self._engine

    def __repr__(self) -> str:
        return f"SqlStore({self._description})"

    # -- plumbing ----------------------------------------------------------------------

    def _map_error(
        self, exc: sa_exc.SQLAlchemyError, what: str, conflict: str | None
    ) -> GatewayError:
        return map_database_error(exc, what, self._description, conflict=conflict)

    @contextmanager
    def _transaction(
        self, what: str, *, write: bool = False, conflict: str | None = None
    ) -> Iterator[Connection]:
        """A connection in a transaction for one store call, committed when the block ends.

        Inside ``atomic()`` the block's connection is reused; a write gets a savepoint so that
        a failed call (say, a Conflict the caller catches) leaves the outer block usable.
        """
        try:
            if self._connection is not None:
                if not self._bound_open:
                    raise StoreError("This store belonged to an atomic() block that has ended.")
                if write:
                    with self._connection.begin_nested():
                        yield self._connection
                else:
                    yield self._connection
                return
            with self._engine.connect() as connection:
                if write and self._is_sqlite:
                    connection.execution_options(sqlite_begin="IMMEDIATE")
                with connection.begin():
                    yield connection
        except sa_exc.SQLAlchemyError as exc:
            raise self._map_error(exc, what, conflict) from exc
        except (OverflowError, UnicodeError) as exc:
            # The DBAPI refused a value before sending it (SQLite: an integer past 64 bits).
            raise InvalidRequest(
                f"{what}: a value cannot be stored (out of range or invalid text)."
            ) from exc

    @contextmanager
    def _one_statement(self, what: str) -> Iterator[Connection]:
        """A connection for one statement that is its own transaction: on PostgreSQL a
        single round trip (no BEGIN, no COMMIT). Not inside ``atomic()``."""
        try:
            with self._engine.connect() as connection:
                yield connection.execution_options(isolation_level="AUTOCOMMIT")
        except sa_exc.SQLAlchemyError as exc:
            if _is_refusal(exc):
                raise _Refused(-1) from exc
            raise self._map_error(exc, what, None) from exc

    def _single_statements(self) -> bool:
        """Whether counters and budgets use the one-statement forms (PostgreSQL, outside
        ``atomic()``); SQLite keeps its transactions (in process: no round trips)."""
        return not self._is_sqlite and self._connection is None

    # -- lifecycle ---------------------------------------------------------------------

    def ping(self) -> None:
        with self._transaction("ping") as connection:
            connection.execute(sa.text("SELECT 1"))

    def schema_state(self) -> tuple[str | None, frozenset[str]]:
        """The Alembic revision the database is at (None before any migration) and the
        tables it holds, read over a pooled connection (readiness asks on every check)."""
        with self._transaction("read the schema") as connection:
            tables = frozenset(sa.inspect(connection).get_table_names())
            revision = None
            if "alembic_version" in tables:
                revision = connection.execute(
                    sa.text("SELECT version_num FROM alembic_version")
                ).scalar()
        return (str(revision) if revision is not None else None), tables

    def close(self) -> None:
        if self._connection is None:
            self._engine.dispose()

    @contextmanager
    def atomic(self) -> Iterator[SqlStore]:
        if self._connection is not None:
            yield self
            return
        bound: SqlStore | None = None
        try:
            with self._engine.connect() as connection:
                if self._is_sqlite:
                    connection.execution_options(sqlite_begin="IMMEDIATE")
                with connection.begin():
                    bound = SqlStore(
                        self._engine, description=self._description, _connection=connection
                    )
                    try:
                        yield bound
                    finally:
                        bound._bound_open = False
        except sa_exc.SQLAlchemyError as exc:
            raise self._map_error(exc, "atomic block", None) from exc

    # -- helpers -----------------------------------------------------------------------

    def _insert(self, table: sa.Table, record: Any, what: str, conflict: str) -> None:
        values = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
        with self._transaction(what, write=True, conflict=conflict) as connection:
            connection.execute(table.insert().values(**values))

    def _get(
        self, table: sa.Table, column: sa.ColumnElement[Any], value: Any, record: type[R]
    ) -> R | None:
        with self._transaction(f"read {table.name}") as connection:
            row = connection.execute(sa.select(table).where(column == value)).mappings().first()
        return None if row is None else record(**row)

    def _page(
        self,
        table: sa.Table,
        id_column: sa.ColumnElement[str],
        filters: Sequence[sa.ColumnElement[bool]],
        record: type[R],
        limit: int,
        cursor: str | None,
    ) -> Page[R]:
        check_limit(limit)
        created_at = table.c.created_at
        conditions = list(filters)
        if cursor is not None:
            after_created, after_id = decode_cursor(cursor)
            conditions.append(
                sa.or_(
                    created_at < sa.literal(after_created, schema.UTCDateTime()),
                    sa.and_(
                        created_at == sa.literal(after_created, schema.UTCDateTime()),
                        id_column < after_id,
                    ),
                )
            )
        query = (
            sa.select(table)
            .where(*conditions)
            .order_by(created_at.desc(), id_column.desc())
            .limit(limit + 1)
        )
        with self._transaction(f"list {table.name}") as connection:
            rows = connection.execute(query).mappings().all()
        items = [record(**row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor(last["created_at"], last[id_column])
        return Page(items=items, next_cursor=next_cursor)

    # -- principals --------------------------------------------------------------------

    def add_principal(self, principal: Principal) -> Principal:
        principal = normalize_record(principal)
        self._insert(
            schema.principals,
            principal,
            "add principal",
            "A principal with this id or name already exists.",
        )
        return principal

    def get_principal(self, principal_id: str) -> Principal | None:
        return self._get(schema.principals, schema.principals.c.id, principal_id, Principal)

    def get_principal_by_name(self, name: str) -> Principal | None:
        return self._get(schema.principals, schema.principals.c.name, name, Principal)

    def list_principals(
        self, *, kind: PrincipalKind | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[Principal]:
        table = schema.principals
        filters = [] if kind is None else [table.c.kind == kind]
        return self._page(table, table.c.id, filters, Principal, limit, cursor)

    # -- upstream credentials ----------------------------------------------------------

    def add_credential(self, credential: UpstreamCredential) -> UpstreamCredential:
        credential = normalize_record(credential)
        self._insert(
            schema.upstream_credentials,
            credential,
            "add credential",
            "An upstream credential with this id exists, or its owner does not.",
        )
        return credential

    def get_credential(self, credential_id: str) -> UpstreamCredential | None:
        table = schema.upstream_credentials
        return self._get(table, table.c.id, credential_id, UpstreamCredential)

    def list_credentials(
        self, *, owner_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[UpstreamCredential]:
        table = schema.upstream_credentials
        filters = [] if owner_id is None else [table.c.owner_id == owner_id]
        return self._page(table, table.c.id, filters, UpstreamCredential, limit, cursor)

    def iter_credentials(self) -> Iterator[UpstreamCredential]:
        table = schema.upstream_credentials
        after: tuple[datetime, str] | None = None
        while True:
            query = sa.select(table).order_by(table.c.created_at, table.c.id).limit(_ITER_BATCH)
            if after is not None:
                when = sa.literal(after[0], schema.UTCDateTime())
                query = query.where(
                    sa.or_(
                        table.c.created_at > when,
                        sa.and_(table.c.created_at == when, table.c.id > after[1]),
                    )
                )
            with self._transaction("iterate credentials") as connection:
                rows = connection.execute(query).mappings().all()
            for row in rows:
                yield UpstreamCredential(**row)
            if len(rows) < _ITER_BATCH:
                return
            after = (rows[-1]["created_at"], rows[-1]["id"])

    def update_credential_ciphertexts(self, ciphertexts: Mapping[str, bytes]) -> int:
        for credential_id, ciphertext in ciphertexts.items():
            if not isinstance(ciphertext, bytes):
                raise InvalidRequest(
                    f"The ciphertext for credential {credential_id!r} must be bytes."
                )
        table = schema.upstream_credentials
        updated = 0
        with self._transaction("update credential ciphertexts", write=True) as connection:
            for credential_id, ciphertext in ciphertexts.items():
                result = connection.execute(
                    table.update()
                    .where(table.c.id == credential_id)
                    .values(encrypted_token=ciphertext)
                )
                updated += result.rowcount
        return updated

    def mark_credential_verified(self, credential_id: str, verified_at: datetime) -> bool:
        verified_at = check_aware(verified_at, "verified_at")  # type: ignore[assignment]
        table = schema.upstream_credentials
        with self._transaction("mark credential verified", write=True) as connection:
            result = connection.execute(
                table.update().where(table.c.id == credential_id).values(verified_at=verified_at)
            )
        return result.rowcount > 0

    def delete_credential(self, credential_id: str) -> bool:
        table = schema.upstream_credentials
        with self._transaction("delete credential", write=True) as connection:
            result = connection.execute(table.delete().where(table.c.id == credential_id))
        return result.rowcount > 0

    # -- gateway keys ------------------------------------------------------------------

    def add_key(self, key: ApiKey) -> ApiKey:
        key = normalize_record(dataclasses.replace(key, scopes=check_scopes(key.scopes)))
        self._insert(
            schema.api_keys,
            key,
            "add key",
            "A gateway key with this key id exists, or its owner does not.",
        )
        return key

    def get_key(self, key_id: str) -> ApiKey | None:
        return self._get(schema.api_keys, schema.api_keys.c.key_id, key_id, ApiKey)

    def list_keys(
        self, *, owner_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[ApiKey]:
        table = schema.api_keys
        filters = [] if owner_id is None else [table.c.owner_id == owner_id]
        return self._page(table, table.c.key_id, filters, ApiKey, limit, cursor)

    def update_key(
        self, key_id: str, changes: KeyChanges, *, expected: KeyChanges | None = None
    ) -> ApiKey | None:
        new_values = check_key_changes(changes, "changes")
        expected_values = check_key_changes(expected or {}, "expected")
        table = schema.api_keys
        select_key = sa.select(table).where(table.c.key_id == key_id)
        with self._transaction("update key", write=True) as connection:
            # The expectations go into the UPDATE's WHERE, so compare-and-set is one atomic
            # statement; whether it matched or not, the answer is the key as it now stands.
            if new_values:
                conditions = [table.c.key_id == key_id]
                for field_name, value in expected_values.items():
                    column = table.c[field_name]
                    conditions.append(column.is_(None) if value is None else column == value)
                connection.execute(table.update().where(*conditions).values(**new_values))
            row = connection.execute(select_key).mappings().first()
        return None if row is None else ApiKey(**row)

    def touch_keys(self, last_used: Mapping[str, datetime]) -> None:
        if not last_used:
            return
        params = [
            {"target_key_id": key_id, "when": check_aware(when, f"last_used[{key_id!r}]")}
            for key_id, when in last_used.items()
        ]
        table = schema.api_keys
        when = sa.bindparam("when", type_=schema.UTCDateTime())
        statement = (
            table.update()
            .where(
                table.c.key_id == sa.bindparam("target_key_id"),
                sa.or_(table.c.last_used_at.is_(None), table.c.last_used_at < when),
            )
            .values(last_used_at=when)
        )
        with self._transaction("touch keys", write=True) as connection:
            connection.execute(statement, params)

    # -- fitted models -----------------------------------------------------------------

    def add_fitted_model(self, model: FittedModel) -> FittedModel:
        model = normalize_record(model)
        # Every fit through the gateway writes one before it answers: compiled once.
        insert = self._compiled_insert(schema.fitted_models, _FITTED_MODEL_FIELDS)
        row = {name: getattr(model, name) for name in _FITTED_MODEL_FIELDS}
        with self._transaction(
            "add fitted model",
            write=True,
            conflict="A fitted model with this id is already recorded.",
        ) as connection:
            connection.exec_driver_sql(insert.sql, insert.parameters([row])[0])
        return model

    def get_fitted_model(self, model_id: str) -> FittedModel | None:
        table = schema.fitted_models
        return self._get(table, table.c.id, model_id, FittedModel)

    def list_fitted_models(
        self, *, owner_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[FittedModel]:
        table = schema.fitted_models
        filters = [] if owner_id is None else [table.c.owner_id == owner_id]
        return self._page(table, table.c.id, filters, FittedModel, limit, cursor)

    # -- usage -------------------------------------------------------------------------

    def record_usage(self, events: Sequence[UsageEvent]) -> None:
        # A shallow row per event: dataclasses.asdict deep-copies every value, six times the
        # cost, paid on the GIL the event loop needs (the recorder flushes every proxied call).
        rows = [_usage_row(event) for event in events]
        if not rows:
            return
        insert = self._usage_insert()
        with self._transaction(
            "record usage", write=True, conflict="A usage event with this id is already recorded."
        ) as connection:
            for statement, parameters in insert.batches(rows):
                connection.exec_driver_sql(statement, parameters)

    def _usage_insert(self) -> _CompiledInsert:
        # The usage recorder writes hundreds of rows per flush, and SQLAlchemy's per-row
        # parameter processing cost more GIL time than the insert.
        return self._compiled_insert(schema.usage_events, _USAGE_FIELDS)

    def _compiled_insert(
        self, table: sa.Table, columns: Sequence[str], *, skip_conflicts_on: Sequence[str] = ()
    ) -> _CompiledInsert:
        key = (table.name, tuple(skip_conflicts_on))
        insert = self._compiled_inserts.get(key)
        if insert is None:
            insert = _CompiledInsert.of(
                table, columns, self._engine.dialect, skip_conflicts_on=skip_conflicts_on
            )
            self._compiled_inserts[key] = insert
        return insert

    def _usage_filters(
        self,
        key_id: str | None,
        owner_id: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> list[sa.ColumnElement[bool]]:
        table = schema.usage_events
        filters: list[sa.ColumnElement[bool]] = []
        if key_id is not None:
            filters.append(table.c.key_id == key_id)
        if owner_id is not None:
            filters.append(table.c.owner_id == owner_id)
        since = check_aware(since, "since")
        until = check_aware(until, "until")
        if since is not None:
            filters.append(table.c.created_at >= since)
        if until is not None:
            filters.append(table.c.created_at < until)
        return filters

    def list_usage(
        self,
        *,
        key_id: str | None = None,
        owner_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        errors_only: bool = False,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[UsageEvent]:
        table = schema.usage_events
        filters = self._usage_filters(key_id, owner_id, since, until)
        if errors_only:
            filters.append(table.c.status >= 400)
        return self._page(table, table.c.id, filters, UsageEvent, limit, cursor)

    def summarize_usage(
        self,
        *,
        key_id: str | None = None,
        owner_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageSummary]:
        table = schema.usage_events
        query = (
            sa.select(
                table.c.key_id,
                table.c.operation,
                sa.func.count().label("calls"),
                sa.func.sum(sa.case((table.c.status >= 400, 1), else_=0)).label("errors"),
                sa.func.sum(sa.func.coalesce(table.c.rows, 0)).label("rows"),
                sa.func.sum(sa.func.coalesce(table.c.bytes, 0)).label("bytes"),
                sa.func.sum(table.c.latency_ms).label("total_latency_ms"),
                sa.func.sum(sa.func.coalesce(table.c.credits, 0)).label("credits"),
            )
            .where(*self._usage_filters(key_id, owner_id, since, until))
            .group_by(table.c.key_id, table.c.operation)
            .order_by(table.c.key_id, table.c.operation)
        )
        with self._transaction("summarize usage") as connection:
            rows = connection.execute(query).mappings().all()
        return [
            UsageSummary(
                key_id=row["key_id"],
                operation=row["operation"],
                calls=int(row["calls"]),
                errors=int(row["errors"] or 0),
                rows=int(row["rows"] or 0),
                bytes=int(row["bytes"] or 0),
                total_latency_ms=float(row["total_latency_ms"] or 0.0),
                credits=int(row["credits"] or 0),
            )
            for row in rows
        ]

    def _day_of(self, column: sa.ColumnElement[datetime]) -> sa.ColumnElement[Any]:
        # The UTC calendar day of a timestamp. SQLite keeps UTC wall time as text.
        if self._is_sqlite:
            return sa.func.date(column)
        return sa.cast(sa.func.timezone("UTC", column), sa.Date)

    def usage_rollup(
        self,
        *,
        key_id: str | None = None,
        owner_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageRollup]:
        raw = schema.usage_events
        day = self._day_of(raw.c.created_at).label("day")
        raw_query = (
            sa.select(
                day,
                raw.c.key_id,
                raw.c.owner_id,
                raw.c.operation,
                sa.func.count().label("calls"),
                sa.func.sum(sa.case((raw.c.status >= 400, 1), else_=0)).label("errors"),
                sa.func.sum(sa.func.coalesce(raw.c.rows, 0)).label("rows"),
                sa.func.sum(sa.func.coalesce(raw.c.bytes, 0)).label("bytes"),
                sa.func.sum(sa.func.coalesce(raw.c.credits, 0)).label("credits"),
            )
            .where(*self._usage_filters(key_id, owner_id, since, until))
            .group_by(day, raw.c.key_id, raw.c.owner_id, raw.c.operation)
        )
        daily = schema.usage_daily
        conditions: list[sa.ColumnElement[bool]] = []
        if key_id is not None:
            conditions.append(daily.c.key_id == key_id)
        if owner_id is not None:
            conditions.append(daily.c.owner_id == owner_id)
        since_day, until_day = day_bounds(since, until)
        if since_day is not None:
            conditions.append(daily.c.day >= since_day)
        if until_day is not None:
            conditions.append(daily.c.day < until_day)
        with self._transaction("usage roll-up") as connection:
            raw_rows = connection.execute(raw_query).mappings().all()
            daily_rows = connection.execute(sa.select(daily).where(*conditions)).mappings().all()
        return merge_rollups([*raw_rows, *daily_rows])

    def prune(self, before: datetime) -> PruneReport:
        cutoff = check_aware(before, "before")
        assert cutoff is not None
        raw = schema.usage_events
        daily = schema.usage_daily
        old = raw.c.created_at < cutoff
        with self._transaction("prune", write=True) as connection:
            day = self._day_of(raw.c.created_at).label("day")
            grouped = connection.execute(
                sa.select(
                    day,
                    raw.c.key_id,
                    raw.c.owner_id,
                    raw.c.operation,
                    sa.func.count().label("calls"),
                    sa.func.sum(sa.case((raw.c.status >= 400, 1), else_=0)).label("errors"),
                    sa.func.sum(sa.func.coalesce(raw.c.rows, 0)).label("rows"),
                    sa.func.sum(sa.func.coalesce(raw.c.bytes, 0)).label("bytes"),
                    sa.func.sum(sa.func.coalesce(raw.c.credits, 0)).label("credits"),
                )
                .where(old)
                .group_by(day, raw.c.key_id, raw.c.owner_id, raw.c.operation)
            ).mappings()
            for rollup in merge_rollups(list(grouped)):
                values = dataclasses.asdict(rollup)
                insert = self._dialect_insert(daily).values(**values)
                sums = ("calls", "errors", "rows", "bytes", "credits")
                connection.execute(
                    insert.on_conflict_do_update(
                        index_elements=["day", "key_id", "owner_id", "operation"],
                        set_={name: daily.c[name] + insert.excluded[name] for name in sums},
                    )
                )
            usage = connection.execute(raw.delete().where(old)).rowcount
            audit_table = schema.audit_events
            audit = connection.execute(
                audit_table.delete().where(audit_table.c.created_at < cutoff)
            ).rowcount
            now = datetime.now(UTC)
            counters = connection.execute(
                schema.rate_counters.delete().where(schema.rate_counters.c.expires_at < now)
            ).rowcount
            budgets = schema.budget_counters
            counters += connection.execute(
                budgets.delete().where(
                    budgets.c.expires_at.is_not(None), budgets.c.expires_at < now
                )
            ).rowcount
        return PruneReport(usage_events=usage, audit_events=audit, counters=counters)

    # -- governance: policies and membership ----------------------------------------------

    def _dialect_insert(self, table: sa.Table) -> Any:
        # INSERT ... ON CONFLICT exists on both databases, under dialect-specific constructs.
        if self._is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(table)
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)

    def put_policy(self, policy: Policy) -> Policy:
        policy = normalize_record(policy)
        table = schema.policies
        values = dataclasses.asdict(policy)
        values["alert_thresholds"] = tuple(policy.alert_thresholds)
        values["allowed_cidrs"] = tuple(policy.allowed_cidrs)
        insert = self._dialect_insert(table).values(**values)
        statement = insert.on_conflict_do_update(
            index_elements=["target_id"],
            set_={name: insert.excluded[name] for name in values if name != "target_id"},
        )
        with self._transaction("put policy", write=True) as connection:
            connection.execute(statement)
        return policy

    def get_policy(self, target_id: str) -> Policy | None:
        return self._get(schema.policies, schema.policies.c.target_id, target_id, Policy)

    def list_policies(self, *, target_ids: Sequence[str] | None = None) -> list[Policy]:
        table = schema.policies
        query = sa.select(table).order_by(table.c.target_id)
        if target_ids is not None:
            if not target_ids:
                return []
            query = query.where(table.c.target_id.in_(list(target_ids)))
        with self._transaction("list policies") as connection:
            rows = connection.execute(query).mappings().all()
        return [Policy(**row) for row in rows]

    def delete_policy(self, target_id: str) -> bool:
        table = schema.policies
        with self._transaction("delete policy", write=True) as connection:
            result = connection.execute(table.delete().where(table.c.target_id == target_id))
        return result.rowcount > 0

    def add_membership(self, membership: Membership) -> Membership:
        membership = normalize_record(membership)
        self._insert(
            schema.team_memberships,
            membership,
            "add membership",
            "This user is already a member of this team, or one of them does not exist.",
        )
        return membership

    def remove_membership(self, team_id: str, user_id: str) -> bool:
        table = schema.team_memberships
        with self._transaction("remove membership", write=True) as connection:
            result = connection.execute(
                table.delete().where(table.c.team_id == team_id, table.c.user_id == user_id)
            )
        return result.rowcount > 0

    def list_memberships(
        self, *, team_id: str | None = None, user_id: str | None = None
    ) -> list[Membership]:
        table = schema.team_memberships
        query = sa.select(table).order_by(table.c.team_id, table.c.user_id)
        if team_id is not None:
            query = query.where(table.c.team_id == team_id)
        if user_id is not None:
            query = query.where(table.c.user_id == user_id)
        with self._transaction("list memberships") as connection:
            rows = connection.execute(query).mappings().all()
        return [Membership(**row) for row in rows]

    # -- governance: counters ---------------------------------------------------------------

    def _fast_commit(self, connection: Connection) -> None:
        # Rate counters are on every governed request's path. On PostgreSQL their commits need
        # not wait for the WAL flush: the write is atomic and visible at once either way (so the
        # limits stay exact under concurrency); a server crash may forget the last moment's
        # request counts (docs/governance.md). Budget reservations and settlements are money and
        # always wait for a durable commit.
        if not self._is_sqlite:
            connection.execute(sa.text("SET LOCAL synchronous_commit = off"))

    def _reserve_upsert(self, i: int, claim: BudgetClaim, params: dict[str, Any]) -> str:
        """Claim ``i``'s conditional upsert (its parameters go into ``params``): it takes the
        claim's amount only if the limit still holds, checked by the database in the same
        statement under the row's lock, and a bucket's first reservation inserts its row.
        ``RETURNING`` gives a row when it took the amount, none when the limit refused.
        The same SQL on SQLite and PostgreSQL."""
        params[f"s{i}"] = claim.subject_id
        params[f"b{i}"] = claim.bucket
        params[f"a{i}"] = claim.amount
        params[f"e{i}"] = check_aware(claim.expires_at, "expires_at")
        # SQLite's upsert needs a WHERE on its SELECT (else ON CONFLICT parses as a join's ON).
        insert_if, update_if = "WHERE true", ""
        if claim.limit is not None:
            params[f"l{i}"] = claim.limit
            earlier = "0"
            if claim.window:
                names = []
                for j, bucket in enumerate(claim.window):
                    params[f"w{i}_{j}"] = bucket
                    names.append(f":w{i}_{j}")
                earlier = (
                    "(SELECT COALESCE(SUM(e.spent + e.reserved), 0) FROM budget_counters AS e"  # noqa: S608
                    f" WHERE e.subject_id = :s{i} AND e.bucket IN ({', '.join(names)}))"
                )
            insert_if = f"WHERE CAST(:a{i} AS bigint) + {earlier} <= :l{i}"
            update_if = (
                "WHERE budget_counters.spent + budget_counters.reserved + excluded.reserved"
                f" + {earlier} <= :l{i}"
            )
        # SQLite has no timestamptz: the bound value is already the column's form there.
        expires = f":e{i}" if self._is_sqlite else f"CAST(:e{i} AS timestamptz)"
        return f"""
            INSERT INTO budget_counters (subject_id, bucket, spent, reserved, alerted, expires_at)
            SELECT CAST(:s{i} AS text), CAST(:b{i} AS text), 0, CAST(:a{i} AS bigint), 0, {expires}
            {insert_if}
            ON CONFLICT (subject_id, bucket) DO UPDATE
            SET reserved = budget_counters.reserved + excluded.reserved
            {update_if}
            RETURNING 1 AS taken"""  # noqa: S608

    def _budget_text(self, sql: str, claims: Sequence[BudgetClaim]) -> sa.TextClause:
        """``sql`` with each claim's expiry bound as the column's type (UTC wall time on
        SQLite, timestamptz on PostgreSQL)."""
        return sa.text(sql).bindparams(
            *(sa.bindparam(f"e{i}", type_=schema.UTCDateTime()) for i in range(len(claims)))
        )

    def reserve_budget(self, claims: Sequence[BudgetClaim]) -> int | None:
        claims = [check_claim(claim) for claim in claims]
        if not claims:
            return None
        if self._single_statements() and len({(c.subject_id, c.bucket) for c in claims}) == len(
            claims
        ):
            return self._reserve_in_one_statement(claims)
        # One write transaction (SQLite: BEGIN IMMEDIATE, writers queue for the lock up front)
        # with one conditional upsert per claim; a claim that does not fit rolls all back.
        try:
            with self._transaction("reserve budget", write=True) as connection:
                for index, claim in enumerate(claims):
                    params: dict[str, Any] = {}
                    upsert = self._budget_text(self._reserve_upsert(0, claim, params), [claim])
                    if connection.execute(upsert, params).first() is None:
                        raise _Refused(index)
        except _Refused as refused:
            return refused.index
        return None

    def _reserve_in_one_statement(self, claims: Sequence[BudgetClaim]) -> int | None:
        """``reserve_budget`` on PostgreSQL in one round trip: every claim's conditional
        upsert in one statement that rolls back whole when one claim does not fit; a durable
        commit (money)."""
        params: dict[str, Any] = {}
        parts = [
            f"up{i} AS ({self._reserve_upsert(i, claim, params)})" for i, claim in enumerate(claims)
        ]
        taken = " + ".join(f"(SELECT count(*) FROM up{i})" for i in range(len(claims)))  # noqa: S608
        statement = self._budget_text(
            f"""
            WITH {", ".join(parts)}, got AS (SELECT {taken} AS n)
            SELECT CASE WHEN got.n = {len(claims)} THEN got.n ELSE got.n / (got.n - got.n) END
            FROM got
            """,  # noqa: S608
            claims,
        )
        try:
            with self._one_statement("reserve budget") as connection:
                got = connection.execute(statement, params).scalar_one()
        except _Refused:
            got = -1
        if got == len(claims):
            return None
        return self._first_refused(claims)

    def _first_refused(self, claims: Sequence[BudgetClaim]) -> int:
        """Which claim a refused reservation failed on (for the refusal's message), as the
        counters stand now; the first limited claim if none looks full any more."""
        for index, claim in enumerate(claims):
            if claim.limit is None:
                continue
            counters = self.get_budget_counters(claim.subject_id, [claim.bucket, *claim.window])
            held = sum(c.spent + c.reserved for c in counters)
            if held + claim.amount > claim.limit:
                return index
        return next((i for i, c in enumerate(claims) if c.limit is not None), 0)

    def _settle_upsert(self, i: int, claim: BudgetClaim, params: dict[str, Any]) -> str:
        """Claim ``i``'s settlement as one upsert (parameters into ``params``; ``:spent`` is
        the caller's): the reservation is given back (never below zero) and ``spent`` added;
        a bucket with no row yet gets one. The same SQL on SQLite and PostgreSQL."""
        params[f"s{i}"] = claim.subject_id
        params[f"b{i}"] = claim.bucket
        params[f"a{i}"] = claim.amount
        params[f"e{i}"] = check_aware(claim.expires_at, "expires_at")
        expires = f":e{i}" if self._is_sqlite else f"CAST(:e{i} AS timestamptz)"
        return f"""
            INSERT INTO budget_counters (subject_id, bucket, spent, reserved, alerted, expires_at)
            VALUES (CAST(:s{i} AS text), CAST(:b{i} AS text), CAST(:spent AS bigint), 0, 0,
                    {expires})
            ON CONFLICT (subject_id, bucket) DO UPDATE
            SET reserved = CASE WHEN budget_counters.reserved >= CAST(:a{i} AS bigint)
                                THEN budget_counters.reserved - CAST(:a{i} AS bigint) ELSE 0 END,
                spent = budget_counters.spent + excluded.spent
            RETURNING {i} AS ord, subject_id, bucket, spent, reserved, alerted"""  # noqa: S608

    def settle_budget(self, claims: Sequence[BudgetClaim], spent: int) -> list[BudgetCounter]:
        claims = [check_claim(claim) for claim in claims]
        spent = check_amount(spent, "spent")
        if not claims:
            return []
        if self._single_statements() and len({(c.subject_id, c.bucket) for c in claims}) == len(
            claims
        ):
            return self._settle_in_one_statement(claims, spent)
        counters: list[BudgetCounter] = []
        with self._transaction("settle budget", write=True) as connection:
            for claim in claims:
                params: dict[str, Any] = {"spent": spent}
                upsert = self._budget_text(self._settle_upsert(0, claim, params), [claim])
                row = connection.execute(upsert, params).mappings().one()
                counters.append(_budget_counter(row))
        return counters

    def _settle_in_one_statement(
        self, claims: Sequence[BudgetClaim], spent: int
    ) -> list[BudgetCounter]:
        """``settle_budget`` on PostgreSQL in one round trip (every claim's upsert in one
        statement)."""
        params: dict[str, Any] = {"spent": spent}
        parts = [
            f"up{i} AS ({self._settle_upsert(i, claim, params)})" for i, claim in enumerate(claims)
        ]
        union = " UNION ALL ".join(f"SELECT * FROM up{i}" for i in range(len(claims)))  # noqa: S608
        statement = self._budget_text(
            f"WITH {', '.join(parts)} {union} ORDER BY ord",
            claims,
        )
        with self._one_statement("settle budget") as connection:
            rows = connection.execute(statement, params).mappings().all()
        return [_budget_counter(row) for row in rows]

    def get_budget_counters(self, subject_id: str, buckets: Sequence[str]) -> list[BudgetCounter]:
        if not buckets:
            return []
        table = schema.budget_counters
        query = sa.select(table).where(
            table.c.subject_id == subject_id, table.c.bucket.in_(list(buckets))
        )
        with self._transaction("read budget counters") as connection:
            rows = {row["bucket"]: row for row in connection.execute(query).mappings()}
        return [
            _budget_counter(rows[bucket])
            if bucket in rows
            else BudgetCounter(subject_id=subject_id, bucket=bucket)
            for bucket in buckets
        ]

    def mark_budget_alert(self, subject_id: str, bucket: str, threshold: int) -> bool:
        table = schema.budget_counters
        with self._transaction("mark budget alert", write=True) as connection:
            result = connection.execute(
                table.update()
                .where(
                    table.c.subject_id == subject_id,
                    table.c.bucket == bucket,
                    table.c.alerted < threshold,
                )
                .values(alerted=threshold)
            )
        return result.rowcount == 1

    def hit_counters(self, hits: Sequence[CounterHit]) -> tuple[int | None, list[int]]:
        if not hits:
            return None, []
        if self._single_statements() and len({hit.name for hit in hits}) == len(hits):
            return self._hit_counters_in_one_statement(hits)
        table = schema.rate_counters
        try:
            with self._transaction("hit counters", write=True) as connection:
                self._fast_commit(connection)
                counts: list[int] = []
                for index, hit in enumerate(hits):
                    amount = check_amount(hit.amount, "amount")
                    increment = (
                        table.update()
                        .where(table.c.name == hit.name, table.c.count + amount <= hit.limit)
                        .values(count=table.c.count + amount)
                        .returning(table.c.count)
                    )
                    # Conditional increment: one statement, checked under the row's lock. A
                    # window's first hit finds no row: insert it (a racing insert is ignored)
                    # and increment again.
                    row = connection.execute(increment).first()
                    if row is None:
                        connection.execute(
                            self._dialect_insert(table)
                            .values(
                                name=hit.name,
                                count=0,
                                expires_at=check_aware(hit.expires_at, "expires_at"),
                            )
                            .on_conflict_do_nothing(index_elements=["name"])
                        )
                        row = connection.execute(increment).first()
                    if row is None:
                        raise _Refused(index)
                    counts.append(int(row[0]))
        except _Refused as refused:
            names = [hit.name for hit in hits]
            with self._transaction("read counters") as connection:
                found = dict(
                    connection.execute(
                        sa.select(table.c.name, table.c.count).where(table.c.name.in_(names))
                    ).all()
                )
            return refused.index, [int(found.get(name, 0)) for name in names]
        return None, counts

    def _hit_counters_in_one_statement(
        self, hits: Sequence[CounterHit]
    ) -> tuple[int | None, list[int]]:
        """``hit_counters`` on PostgreSQL in one round trip: every counter's conditional
        upsert in one statement (all or nothing), committed without waiting for the WAL flush
        (``set_config(..., true)`` is local to the statement's own transaction)."""
        params: dict[str, Any] = {}
        rows: list[str] = []
        for i, hit in enumerate(hits):
            params[f"n{i}"] = hit.name
            params[f"a{i}"] = check_amount(hit.amount, "amount")
            params[f"l{i}"] = max(0, int(hit.limit))
            params[f"e{i}"] = check_aware(hit.expires_at, "expires_at")
            rows.append(
                f"(CAST(:n{i} AS text), CAST(:a{i} AS bigint), CAST(:l{i} AS bigint), "
                f"CAST(:e{i} AS timestamptz))"
            )
        statement = sa.text(
            f"""
            WITH req(name, amount, lim, expires_at) AS (VALUES {", ".join(rows)}),
            quick AS (SELECT set_config('synchronous_commit', 'off', true) AS done),
            up AS (
                INSERT INTO rate_counters (name, count, expires_at)
                SELECT name, amount, expires_at FROM req WHERE amount <= lim
                ON CONFLICT (name) DO UPDATE SET count = rate_counters.count + excluded.count
                WHERE rate_counters.count + excluded.count
                    <= (SELECT r.lim FROM req AS r WHERE r.name = excluded.name)
                RETURNING rate_counters.name, rate_counters.count
            )
            SELECT up.name,
                   CASE WHEN (SELECT count(*) FROM up) = {len(hits)} THEN up.count
                        ELSE up.count / 0 END AS count,
                   quick.done
            FROM up, quick
            """  # noqa: S608
        )
        try:
            with self._one_statement("hit counters") as connection:
                found = {row[0]: int(row[1]) for row in connection.execute(statement, params)}
        except _Refused:
            found = {}
        if len(found) == len(hits):
            return None, [found[hit.name] for hit in hits]
        # Refused (nothing was counted): which counter, and the counts as they stand.
        table = schema.rate_counters
        names = [hit.name for hit in hits]
        with self._transaction("read counters") as connection:
            current = dict(
                connection.execute(
                    sa.select(table.c.name, table.c.count).where(table.c.name.in_(names))
                ).all()
            )
        counts = [int(current.get(name, 0)) for name in names]
        refused = next(
            (i for i, hit in enumerate(hits) if counts[i] + hit.amount > max(0, hit.limit)), 0
        )
        return refused, counts

    def release_counters(self, amounts: Mapping[str, int]) -> None:
        if not amounts:
            return
        table = schema.rate_counters
        with self._transaction("release counters", write=True) as connection:
            for name, amount in amounts.items():
                amount = check_amount(amount, "amount")
                connection.execute(
                    table.update()
                    .where(table.c.name == name)
                    .values(
                        count=sa.case((table.c.count >= amount, table.c.count - amount), else_=0)
                    )
                )

    # -- audit -------------------------------------------------------------------------

    def record_audit(self, event: AuditEvent) -> None:
        event = normalize_record(dataclasses.replace(event, details=check_json(event.details)))
        self._insert(
            schema.audit_events,
            event,
            "record audit event",
            "An audit event with this id is already recorded.",
        )

    def list_audit(
        self,
        *,
        target_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[AuditEvent]:
        table = schema.audit_events
        filters: list[sa.ColumnElement[bool]] = []
        if target_id is not None:
            filters.append(table.c.target_id == target_id)
        if actor is not None:
            filters.append(table.c.actor == actor)
        if action is not None:
            filters.append(table.c.action == action)
        return self._page(table, table.c.id, filters, AuditEvent, limit, cursor)

    # -- admin console sessions --------------------------------------------------------

    # -- deployment state --------------------------------------------------------------

    def claim_state(self, name: str, value: str) -> str:
        table = schema.gateway_state
        insert = self._dialect_insert(table).values(
            name=name, value=value, counter=0, updated_at=utcnow()
        )
        with self._transaction("claim state", write=True) as connection:
            connection.execute(insert.on_conflict_do_nothing(index_elements=["name"]))
            stored = connection.execute(
                sa.select(table.c.value).where(table.c.name == name)
            ).scalar_one()
        return str(stored) if stored is not None else value

    def get_state(self, name: str) -> str | None:
        table = schema.gateway_state
        with self._transaction("read state") as connection:
            value = connection.execute(
                sa.select(table.c.value).where(table.c.name == name)
            ).scalar_one_or_none()
        return None if value is None else str(value)

    def put_state(self, name: str, value: str) -> None:
        table = schema.gateway_state
        insert = self._dialect_insert(table).values(
            name=name, value=value, counter=0, updated_at=utcnow()
        )
        statement = insert.on_conflict_do_update(
            index_elements=["name"],
            set_={"value": insert.excluded.value, "updated_at": insert.excluded.updated_at},
        )
        with self._transaction("put state", write=True) as connection:
            connection.execute(statement)

    def bump_counter(self, name: str) -> int:
        table = schema.gateway_state
        insert = self._dialect_insert(table).values(
            name=name, value=None, counter=1, updated_at=utcnow()
        )
        statement = insert.on_conflict_do_update(
            index_elements=["name"],
            set_={"counter": table.c.counter + 1, "updated_at": insert.excluded.updated_at},
        )
        with self._transaction("bump counter", write=True) as connection:
            connection.execute(statement)
            value = connection.execute(
                sa.select(table.c.counter).where(table.c.name == name)
            ).scalar_one()
        return int(value)

    def read_counter(self, name: str) -> int:
        table = schema.gateway_state
        with self._transaction("read counter") as connection:
            value = connection.execute(
                sa.select(table.c.counter).where(table.c.name == name)
            ).scalar_one_or_none()
        return int(value or 0)

    # -- upload ids --------------------------------------------------------------------

    def add_upload_owner(self, upload_id: str, owner_id: str, kind: str) -> None:
        # Each train or test set uploaded writes one (beside its X's upload): compiled once.
        insert = self._compiled_insert(
            schema.upload_owners,
            _UPLOAD_OWNER_FIELDS,
            skip_conflicts_on=("upload_id", "owner_id"),
        )
        row = {"upload_id": upload_id, "owner_id": owner_id, "kind": kind, "created_at": utcnow()}
        with self._transaction("record upload owner", write=True) as connection:
            connection.exec_driver_sql(insert.sql, insert.parameters([row])[0])

    def is_upload_owner(self, upload_id: str, owner_id: str) -> bool:
        table = schema.upload_owners
        query = sa.select(sa.literal(1)).where(
            table.c.upload_id == upload_id, table.c.owner_id == owner_id
        )
        with self._transaction("read upload owner") as connection:
            return connection.execute(query).first() is not None

    def add_admin_session(self, session: AdminSession) -> AdminSession:
        session = normalize_record(session)
        self._insert(
            schema.admin_sessions,
            session,
            "add admin session",
            "An admin session with this id already exists.",
        )
        return session

    def get_admin_session(self, session_id: str) -> AdminSession | None:
        table = schema.admin_sessions
        return self._get(table, table.c.id, session_id, AdminSession)

    def touch_admin_session(self, session_id: str, last_seen_at: datetime) -> bool:
        when = check_aware(last_seen_at, "last_seen_at")
        table = schema.admin_sessions
        with self._transaction("touch admin session", write=True) as connection:
            # Never backwards: a slow request finishing late must not shorten the session.
            connection.execute(
                table.update()
                .where(table.c.id == session_id, table.c.last_seen_at < when)
                .values(last_seen_at=when)
            )
            found = connection.execute(
                sa.select(table.c.id).where(table.c.id == session_id)
            ).first()
        return found is not None

    def delete_admin_sessions(
        self,
        *,
        session_id: str | None = None,
        key_id: str | None = None,
        expires_before: datetime | None = None,
    ) -> int:
        check_session_filters(session_id, key_id, expires_before)
        before = check_aware(expires_before, "expires_before")
        table = schema.admin_sessions
        conditions: list[sa.ColumnElement[bool]] = []
        if session_id is not None:
            conditions.append(table.c.id == session_id)
        if key_id is not None:
            conditions.append(table.c.key_id == key_id)
        if before is not None:
            conditions.append(table.c.expires_at < before)
        with self._transaction("delete admin sessions", write=True) as connection:
            result = connection.execute(table.delete().where(*conditions))
        return int(result.rowcount)


def _budget_counter(row: Any) -> BudgetCounter:
    return BudgetCounter(
        subject_id=row["subject_id"],
        bucket=row["bucket"],
        spent=int(row["spent"]),
        reserved=int(row["reserved"]),
        alerted=int(row["alerted"]),
    )
