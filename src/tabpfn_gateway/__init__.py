"""tabpfn-gateway: use TabPFN safely as a team, from notebooks, services and tabpfn-client code.

The heavy parts (estimators, the protocol client, the store) are imported on first use, so
``import tabpfn_gateway`` stays light.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("tabpfn-gateway")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0.dev0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "Settings": "tabpfn_gateway.config",
    "get_settings": "tabpfn_gateway.config",
    "GatewayError": "tabpfn_gateway.errors",
    "setup_logging": "tabpfn_gateway.logs",
    "open_store": "tabpfn_gateway.store",
}

__all__ = ["__version__", *sorted(_LAZY)]

if TYPE_CHECKING:
    from tabpfn_gateway.config import Settings as Settings
    from tabpfn_gateway.config import get_settings as get_settings
    from tabpfn_gateway.errors import GatewayError as GatewayError
    from tabpfn_gateway.logs import setup_logging as setup_logging
    from tabpfn_gateway.store import open_store as open_store


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tabpfn_gateway' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
