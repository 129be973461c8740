"""`tabpfn-gateway info`: the version, the store in use and where things live (no secrets)."""

from __future__ import annotations

import argparse
from typing import Any

from tabpfn_gateway.cli._output import add_json_flag, emit

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("info", help="show the version, store and settings in use")
    add_json_flag(parser)
    parser.set_defaults(handler=_info)


def _info(args: argparse.Namespace) -> int:
    from tabpfn_gateway import __version__
    from tabpfn_gateway.config import get_settings
    from tabpfn_gateway.migrate import current_revision, head_revision
    from tabpfn_gateway.store.sql import describe_url

    settings = get_settings()
    current = current_revision(settings)
    head = head_revision()
    emit(
        {
            "version": __version__,
            "store": describe_url(settings.database_url),
            "schema_revision": current or "(empty: run `tabpfn-gateway db upgrade`)",
            "schema_current": current == head,
            "data_dir": str(settings.data_dir),
            "upstream_url": settings.upstream_url,
            "secret_key_set": settings.secret_key is not None,
            "log_level": settings.log_level,
        },
        as_json=args.json,
    )
    return 0
