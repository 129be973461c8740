"""The optional self-hosted gateway server (FastAPI): ``create_app(settings)``.

Needs the ``server`` extra: ``pip install 'tabpfn-gateway[server]'``.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "The gateway server needs FastAPI: pip install 'tabpfn-gateway[server]'"
    ) from exc

from tabpfn_gateway_server.app import create_app, create_app_from_env

__all__ = ["create_app", "create_app_from_env"]
