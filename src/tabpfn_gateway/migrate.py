"""Schema migrations (Alembic) run from code: upgrade, downgrade, and the current revision.

The migration scripts ship inside the wheel (``tabpfn_gateway/_migrations``, see pyproject's
``force-include``); in a source checkout they are the repository's ``migrations/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import Connection

from tabpfn_gateway.errors import InvalidRequest, StoreError

if TYPE_CHECKING:
    from alembic.config import Config

    from tabpfn_gateway.config import Settings

__all__ = [
    "current_revision",
    "downgrade",
    "head_revision",
    "is_current",
    "scripts_dir",
    "upgrade",
]

# Any constant works; it only has to be the same for every replica running `db upgrade`.
_PG_MIGRATION_LOCK = 7_319_046_221


def scripts_dir() -> Path:
    """The directory holding ``env.py`` and ``versions/``: from the installed package first,
    then from the source tree."""
    packaged = resources.files("tabpfn_gateway").joinpath("_migrations")
    candidates = [
        Path(str(packaged)),
        Path(__file__).resolve().parents[2] / "migrations",
    ]
    for candidate in candidates:
        if (candidate / "env.py").is_file() and (candidate / "versions").is_dir():
            return candidate
    raise StoreError(
        "The migration scripts are missing from this installation "
        f"(looked in {', '.join(str(c) for c in candidates)}); reinstall tabpfn-gateway."
    )


def _alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(scripts_dir()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _settings(settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    from tabpfn_gateway.config import get_settings

    return get_settings()


@contextmanager
def _migration_connection(settings: Settings) -> Iterator[Connection]:
    """One connection in one transaction for a whole migration run (DDL is transactional on
    both SQLite and PostgreSQL, so a failed run leaves the schema as it was)."""
    from tabpfn_gateway.store.sql import create_engine_for_url, describe_url, map_database_error

    engine = create_engine_for_url(settings.database_url, settings)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                connection.execution_options(sqlite_begin="IMMEDIATE")
            with connection.begin():
                if engine.dialect.name == "postgresql":
                    # Replicas starting together must not run the same migration twice.
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": _PG_MIGRATION_LOCK}
                    )
                yield connection
    except sa_exc.SQLAlchemyError as exc:
        raise map_database_error(exc, "migration", describe_url(settings.database_url)) from exc
    finally:
        engine.dispose()


def _run(command_name: str, settings: Settings | None, revision: str) -> None:
    from alembic import command
    from alembic.util import CommandError

    settings = _settings(settings)
    if settings.database_url.startswith("memory://"):
        raise InvalidRequest("The memory store keeps no schema: there is nothing to migrate.")
    try:
        with _migration_connection(settings) as connection:
            getattr(command, command_name)(_alembic_config(connection), revision)
    except CommandError as exc:
        raise InvalidRequest(f"Cannot {command_name} to {revision!r}: {exc}") from exc


def upgrade(settings: Settings | None = None, revision: str = "head") -> None:
    """Bring the database schema up to ``revision`` (default: the newest)."""
    _run("upgrade", settings, revision)


def downgrade(settings: Settings | None, revision: str) -> None:
    """Take the database schema back to ``revision`` (``"base"`` drops every table)."""
    _run("downgrade", settings, revision)


def head_revision() -> str:
    """The newest revision the installed migration scripts know."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise StoreError("The migration scripts define no revision; reinstall tabpfn-gateway.")
    return head


def current_revision(settings: Settings | None = None) -> str | None:
    """The revision the database is at, or None if it is empty or (SQLite) does not exist.

    Only reads: a missing SQLite file is not created.
    """
    from alembic.runtime.migration import MigrationContext

    from tabpfn_gateway.store.sql import (
        create_engine_for_url,
        describe_url,
        map_database_error,
        parse_database_url,
        sqlite_path,
    )

    settings = _settings(settings)
    url = settings.database_url
    if url.startswith("memory://"):
        return None
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(parsed)
        if path is not None and not path.is_file():
            return None
    engine = create_engine_for_url(url, settings)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except sa_exc.SQLAlchemyError as exc:
        raise map_database_error(exc, "read schema revision", describe_url(url)) from exc
    finally:
        engine.dispose()


def is_current(settings: Settings | None = None) -> bool:
    """Whether the database schema is at the newest revision."""
    return current_revision(settings) == head_revision()


def missing_tables(settings: Settings | None = None) -> list[str]:
    """The tables the store needs that the database lacks (e.g. dropped by hand after the
    migrations ran: the revision alone would still say "current")."""
    import sqlalchemy as sa

    from tabpfn_gateway.store import schema
    from tabpfn_gateway.store.sql import create_engine_for_url, describe_url, map_database_error

    settings = _settings(settings)
    url = settings.database_url
    if url.startswith("memory://"):
        return []
    engine = create_engine_for_url(url, settings)
    try:
        with engine.connect() as connection:
            present = set(sa.inspect(connection).get_table_names())
    except sa_exc.SQLAlchemyError as exc:
        raise map_database_error(exc, "read schema tables", describe_url(url)) from exc
    finally:
        engine.dispose()
    return sorted(set(schema.metadata.tables) - present)
