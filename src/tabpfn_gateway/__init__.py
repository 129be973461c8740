"""tabpfn-gateway: use TabPFN safely as a team, from notebooks, services and tabpfn-client code.

The heavy parts (estimators, the protocol client, the store) are imported on first use, so
``import tabpfn_gateway`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "Settings": "tabpfn_gateway.config",
    "get_settings": "tabpfn_gateway.config",
    "GatewayError": "tabpfn_gateway.errors",
    "setup_logging": "tabpfn_gateway.logs",
    "open_store": "tabpfn_gateway.store",
    "GatewayClassifier": "tabpfn_gateway.estimators",
    "GatewayRegressor": "tabpfn_gateway.estimators",
    "HTTPBackend": "tabpfn_gateway.estimators",
    "InProcessBackend": "tabpfn_gateway.estimators",
    "login": "tabpfn_gateway.api_key",
    "logout": "tabpfn_gateway.api_key",
    "get_usage": "tabpfn_gateway.usage",
    "Admin": "tabpfn_gateway.admin",
    "Gateway": "tabpfn_gateway.gateway",
    "KeyManager": "tabpfn_gateway.keys",
    "ProtocolClient": "tabpfn_gateway.protocol",
    "TokenVault": "tabpfn_gateway.vault",
}

# Explicit, and kept equal to {"__version__"} | set(_LAZY) by tests/test_public_api.py.
__all__ = [
    "Admin",
    "Gateway",
    "GatewayClassifier",
    "GatewayError",
    "GatewayRegressor",
    "HTTPBackend",
    "InProcessBackend",
    "KeyManager",
    "ProtocolClient",
    "Settings",
    "TokenVault",
    "__version__",
    "get_settings",
    "get_usage",
    "login",
    "logout",
    "open_store",
    "setup_logging",
]

if TYPE_CHECKING:
    __version__: str
    from tabpfn_gateway.admin import Admin as Admin
    from tabpfn_gateway.api_key import login as login
    from tabpfn_gateway.api_key import logout as logout
    from tabpfn_gateway.config import Settings as Settings
    from tabpfn_gateway.config import get_settings as get_settings
    from tabpfn_gateway.errors import GatewayError as GatewayError
    from tabpfn_gateway.estimators import GatewayClassifier as GatewayClassifier
    from tabpfn_gateway.estimators import GatewayRegressor as GatewayRegressor
    from tabpfn_gateway.estimators import HTTPBackend as HTTPBackend
    from tabpfn_gateway.estimators import InProcessBackend as InProcessBackend
    from tabpfn_gateway.gateway import Gateway as Gateway
    from tabpfn_gateway.keys import KeyManager as KeyManager
    from tabpfn_gateway.logs import setup_logging as setup_logging
    from tabpfn_gateway.protocol import ProtocolClient as ProtocolClient
    from tabpfn_gateway.store import open_store as open_store
    from tabpfn_gateway.usage import get_usage as get_usage
    from tabpfn_gateway.vault import TokenVault as TokenVault


def _version() -> str:
    # Looked up on first use: importlib.metadata alone costs ~30 ms and ~6 MB at import.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tabpfn-gateway")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0.0.0.dev0"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = globals()["__version__"] = _version()
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tabpfn_gateway' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
