"""The admin console: server-rendered pages at /console over the core's Admin service.

Enabled by ``TABPFN_GATEWAY_CONSOLE_ENABLED``. Jinja2 templates and the static files (one
stylesheet, one small script) ship inside the package: no CDN, no build step.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from tabpfn_gateway.gateway import Gateway
from tabpfn_gateway_server.console._routes import (
    Console,
    build_console_router,
    install_console_handlers,
)
from tabpfn_gateway_server.console._security import CONSOLE_PREFIX, ConsoleHeadersMiddleware
from tabpfn_gateway_server.ratelimit import AttemptLimiter

__all__ = ["CONSOLE_PREFIX", "STATIC_DIR", "mount_console"]

STATIC_DIR = Path(__file__).parent / "static"


def mount_console(app: FastAPI, gateway: Gateway, limiter: AttemptLimiter | None) -> None:
    """Serve the console at ``/console`` on ``app``. Failed sign-ins count against
    ``limiter`` (the setup limit's, per client address)."""
    console = Console(gateway, limiter)
    app.state.console = console
    app.include_router(build_console_router(console))
    app.mount(f"{CONSOLE_PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    install_console_handlers(app, console)
    app.add_middleware(ConsoleHeadersMiddleware)
