"""Test helpers users can import: FakeTabPFN, FakeHostedTabPFN, the store contract suite, an
offline gateway.

Imported lazily: ``tabpfn_gateway.testing`` costs nothing until a name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "ASGIBridgeTransport": "tabpfn_gateway.testing.transport",
    "FakeTabPFN": "tabpfn_gateway.testing.fake",
    "FakeHostedTabPFN": "tabpfn_gateway.testing.fake_hosted",
    "HostedLoggedRequest": "tabpfn_gateway.testing.fake_hosted",
    "serve_in_thread": "tabpfn_gateway.testing.fake_server",
    "StoreContractTests": "tabpfn_gateway.testing.store_contract",
    "local_gateway": "tabpfn_gateway.testing.local",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tabpfn_gateway.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
