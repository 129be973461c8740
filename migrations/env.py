"""Alembic environment: the database URL comes from tabpfn-gateway settings unless given."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from tabpfn_gateway.store.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # Our SQLite engines begin transactions themselves (see store.sql), so DDL is
        # transactional there too: a failed run leaves nothing half-done.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through a connection handed over by tabpfn_gateway.migrate, or one we open."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # Plain `alembic upgrade head` from the repository: same engine setup as the store, and
    # alembic.ini's logging (tabpfn_gateway.migrate never passes an ini file, so an
    # application's own logging setup is left alone).
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    from tabpfn_gateway.config import get_settings
    from tabpfn_gateway.store.sql import create_engine_for_url

    url = config.get_main_option("sqlalchemy.url") or get_settings().database_url
    engine = create_engine_for_url(url)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


def run_migrations_offline() -> None:
    """Emit SQL instead of running it (`alembic upgrade head --sql`)."""
    from tabpfn_gateway.config import get_settings
    from tabpfn_gateway.store.sql import normalize_database_url

    url = config.get_main_option("sqlalchemy.url") or get_settings().database_url
    context.configure(
        url=normalize_database_url(url),
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
