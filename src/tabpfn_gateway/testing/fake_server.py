"""Serving an ASGI app (FakeTabPFN, the gateway) on a loopback port from a background thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tabpfn_gateway.errors import ConfigurationError

__all__ = ["serve_in_thread"]


@contextmanager
def serve_in_thread(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 30.0
) -> Iterator[str]:
    """Run ``app`` with uvicorn in a daemon thread; yield its base URL; stop it on exit.

    ``port=0`` takes a free port. For tests that need a real socket: another process (the
    official ``tabpfn-client`` in a subprocess) or real connection drops.
    """
    try:
        import uvicorn
    except ImportError:
        raise ConfigurationError(
            "Serving on a port needs uvicorn: pip install 'tabpfn-gateway[server]'"
        ) from None
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-upstream", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ConfigurationError(f"The server did not start on {host}:{port}.")
            time.sleep(0.02)
        bound = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
