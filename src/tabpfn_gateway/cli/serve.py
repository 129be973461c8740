"""`tabpfn-gateway serve`: run the gateway server with uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tabpfn_gateway.config import Settings

__all__ = ["register", "startup_line"]

_SERVER_EXTRA = "The server needs its extra: pip install 'tabpfn-gateway[server]'"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the gateway server (embedded SQLite by default, or PostgreSQL)",
        description="Serve the gateway: setup, admin and TabPFN-compatible routes. Settings "
        "come from TABPFN_GATEWAY_* variables (database_url, secret_key, upstream_url...).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1; they share the DB)"
    )
    parser.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not upgrade the database schema on start (run `tabpfn-gateway db upgrade`)",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help="comma-separated CIDRs of proxies whose X-Forwarded-For is believed; the same as "
        "TABPFN_GATEWAY_TRUSTED_PROXIES (default: none)",
    )
    parser.set_defaults(handler=_serve)


def startup_line(settings: Settings, host: str, port: int) -> str:
    """What ``serve`` says first: where it listens, its store (no password), its upstream,
    and whether self-service setup is open."""
    from tabpfn_gateway.store.sql import describe_url

    setup = "open" if settings.allow_self_service_setup else "closed"
    store = describe_url(settings.database_url)
    return (
        f"tabpfn-gateway starting on http://{host}:{port}: store {store}, "
        f"upstream {settings.upstream_url}, self-service setup {setup}"
    )


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise SystemExit(_SERVER_EXTRA) from None
    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    if args.no_migrate:
        # Workers build their app from the environment, so the choice travels there.
        os.environ["TABPFN_GATEWAY_MIGRATE_ON_START"] = "false"
    if args.forwarded_allow_ips:
        os.environ["TABPFN_GATEWAY_TRUSTED_PROXIES"] = args.forwarded_allow_ips

    from tabpfn_gateway.config import get_settings
    from tabpfn_gateway.logs import setup_logging
    from tabpfn_gateway_server.httpserver import uvicorn_http_options
    from tabpfn_gateway_server.logfilter import install_access_log_filter

    settings = get_settings()
    setup_logging(settings.log_level, log_format=settings.log_format)
    install_access_log_filter()
    logging.getLogger(__name__).info("%s", startup_line(settings, args.host, args.port))
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        # Our logging setup (stdout, redaction) instead of uvicorn's own handlers.
        "log_config": None,
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 by default; the app decides
        # instead, from TABPFN_GATEWAY_TRUSTED_PROXIES (tabpfn_gateway.netpolicy).
        "proxy_headers": False,
        # Request heads past 64 KB: 431 while they arrive, not megabytes held by a worker.
        **uvicorn_http_options(),
    }
    if args.workers == 1:
        from tabpfn_gateway_server import create_app

        uvicorn.run(create_app(settings, settle_heap=True), **options)
    else:
        uvicorn.run(
            "tabpfn_gateway_server:create_app_from_env",
            factory=True,
            workers=args.workers,
            **options,
        )
    return 0
