"""`tabpfn-gateway db`: upgrade, downgrade and show the database schema revision (Alembic)."""

from __future__ import annotations

import argparse
from typing import Any

from tabpfn_gateway.cli._output import add_json_flag, emit

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``db upgrade``, ``db downgrade`` and ``db current`` to the top-level parser."""
    parser = subparsers.add_parser(
        "db",
        help="create or migrate the database schema",
        description="Manage the database schema (Alembic migrations) of the configured "
        "database (TABPFN_GATEWAY_DATABASE_URL, default: a SQLite file in the data dir).",
    )
    commands = parser.add_subparsers(dest="db_command", metavar="COMMAND")
    parser.set_defaults(handler=lambda args: _help(parser))

    upgrade = commands.add_parser("upgrade", help="bring the schema up to REV (default: newest)")
    upgrade.add_argument("revision", nargs="?", default="head", metavar="REV")
    upgrade.set_defaults(handler=_upgrade)

    downgrade = commands.add_parser(
        "downgrade", help="take the schema back to REV ('base' drops every table)"
    )
    downgrade.add_argument("revision", metavar="REV")
    downgrade.set_defaults(handler=_downgrade)

    current = commands.add_parser("current", help="show the schema revision of the database")
    add_json_flag(current)
    current.set_defaults(handler=_current)

    from tabpfn_gateway.cli.governance import add_prune

    add_prune(commands)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _upgrade(args: argparse.Namespace) -> int:
    from tabpfn_gateway import migrate
    from tabpfn_gateway.config import get_settings
    from tabpfn_gateway.store.sql import describe_url

    settings = get_settings()
    where = describe_url(settings.database_url)
    before = migrate.current_revision(settings)
    migrate.upgrade(settings, args.revision)
    after = migrate.current_revision(settings)
    if before == after:
        print(f"{where}: schema already at revision {after or '(empty)'}.")
    else:
        print(f"{where}: schema upgraded from {before or '(empty)'} to {after}.")
    return 0


def _downgrade(args: argparse.Namespace) -> int:
    from tabpfn_gateway import migrate
    from tabpfn_gateway.config import get_settings
    from tabpfn_gateway.store.sql import describe_url

    settings = get_settings()
    where = describe_url(settings.database_url)
    before = migrate.current_revision(settings)
    migrate.downgrade(settings, args.revision)
    after = migrate.current_revision(settings)
    if before == after:
        print(f"{where}: schema already at revision {after or '(empty)'}.")
    else:
        print(f"{where}: schema downgraded from {before or '(empty)'} to {after or '(empty)'}.")
    return 0


def _current(args: argparse.Namespace) -> int:
    from tabpfn_gateway import migrate
    from tabpfn_gateway.config import get_settings
    from tabpfn_gateway.store.sql import describe_url

    settings = get_settings()
    current = migrate.current_revision(settings)
    head = migrate.head_revision()
    emit(
        {
            "store": describe_url(settings.database_url),
            "revision": current,
            "head": head,
            "current": current == head,
        },
        as_json=args.json,
    )
    return 0
