"""The gateway core (framework-free): keys in, TabPFN calls out, usage metered, fits owned.

``Gateway.from_settings(settings)`` wires the parts: the ``Authoriser`` (key -> caller ->
token, one cache), the ``SpendPolicy`` seam (budgets and rate limits plug in there), fit
ownership, the meter, setup, invalidation and readiness. ``gateway.session(api_key)`` is a
``SyncGatewaySession``: an in-process, synchronous client with ``ProtocolClient``'s high-level
shape; ``gateway.proxy`` is the ``AsyncGatewayProxy``: the asynchronous wire-level steps the
server's routes call.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it. Imported on first use: the admin CLI reaches this
# package for the invalidation bus alone and should not pay for the proxy, the protocol client
# and httpx (~150 ms of every command).
_LAZY: dict[str, str] = {
    "Authoriser": "tabpfn_gateway.gateway._authoriser",
    "Caller": "tabpfn_gateway.gateway._authoriser",
    "Decision": "tabpfn_gateway.gateway._authoriser",
    "Gateway": "tabpfn_gateway.gateway._core",
    "InvalidationBus": "tabpfn_gateway.gateway._invalidation",
    "LocalBus": "tabpfn_gateway.gateway._invalidation",
    "PostgresNotifyBus": "tabpfn_gateway.gateway._invalidation",
    "RedisBus": "tabpfn_gateway.gateway._invalidation",
    "bus_from_settings": "tabpfn_gateway.gateway._invalidation",
    "Meter": "tabpfn_gateway.gateway._metering",
    "UpstreamCall": "tabpfn_gateway.gateway._metering",
    "Admission": "tabpfn_gateway.gateway._policy",
    "AllowAll": "tabpfn_gateway.gateway._policy",
    "SpendPolicy": "tabpfn_gateway.gateway._policy",
    "AsyncGatewayProxy": "tabpfn_gateway.gateway._proxy",
    "SyncGatewaySession": "tabpfn_gateway.gateway._session",
    "SetupResult": "tabpfn_gateway.gateway._setup",
    "HTTP_STATUS_BY_CODE": "tabpfn_gateway.gateway._status",
    "http_status": "tabpfn_gateway.gateway._status",
    "is_retry_hinted": "tabpfn_gateway.gateway._status",
    "UPLOAD_PATH_PREFIX": "tabpfn_gateway.gateway._uploads",
    "UploadGrant": "tabpfn_gateway.gateway._uploads",
    "UploadSigner": "tabpfn_gateway.gateway._uploads",
    "UsageRecorder": "tabpfn_gateway.gateway._usage",
}

if TYPE_CHECKING:
    from tabpfn_gateway.gateway._authoriser import Authoriser as Authoriser
    from tabpfn_gateway.gateway._authoriser import Caller as Caller
    from tabpfn_gateway.gateway._authoriser import Decision as Decision
    from tabpfn_gateway.gateway._core import Gateway as Gateway
    from tabpfn_gateway.gateway._invalidation import InvalidationBus as InvalidationBus
    from tabpfn_gateway.gateway._invalidation import LocalBus as LocalBus
    from tabpfn_gateway.gateway._invalidation import PostgresNotifyBus as PostgresNotifyBus
    from tabpfn_gateway.gateway._invalidation import RedisBus as RedisBus
    from tabpfn_gateway.gateway._invalidation import bus_from_settings as bus_from_settings
    from tabpfn_gateway.gateway._metering import Meter as Meter
    from tabpfn_gateway.gateway._metering import UpstreamCall as UpstreamCall
    from tabpfn_gateway.gateway._policy import Admission as Admission
    from tabpfn_gateway.gateway._policy import AllowAll as AllowAll
    from tabpfn_gateway.gateway._policy import SpendPolicy as SpendPolicy
    from tabpfn_gateway.gateway._proxy import AsyncGatewayProxy as AsyncGatewayProxy
    from tabpfn_gateway.gateway._session import SyncGatewaySession as SyncGatewaySession
    from tabpfn_gateway.gateway._setup import SetupResult as SetupResult
    from tabpfn_gateway.gateway._status import HTTP_STATUS_BY_CODE as HTTP_STATUS_BY_CODE
    from tabpfn_gateway.gateway._status import http_status as http_status
    from tabpfn_gateway.gateway._status import is_retry_hinted as is_retry_hinted
    from tabpfn_gateway.gateway._uploads import UPLOAD_PATH_PREFIX as UPLOAD_PATH_PREFIX
    from tabpfn_gateway.gateway._uploads import UploadGrant as UploadGrant
    from tabpfn_gateway.gateway._uploads import UploadSigner as UploadSigner
    from tabpfn_gateway.gateway._usage import UsageRecorder as UsageRecorder

__all__ = [
    "HTTP_STATUS_BY_CODE",
    "UPLOAD_PATH_PREFIX",
    "Admission",
    "AllowAll",
    "AsyncGatewayProxy",
    "Authoriser",
    "Caller",
    "Decision",
    "Gateway",
    "InvalidationBus",
    "LocalBus",
    "Meter",
    "PostgresNotifyBus",
    "RedisBus",
    "SetupResult",
    "SpendPolicy",
    "SyncGatewaySession",
    "UploadGrant",
    "UploadSigner",
    "UpstreamCall",
    "UsageRecorder",
    "bus_from_settings",
    "http_status",
    "is_retry_hinted",
]

# Old names keep working for one minor release, with a warning naming the new one.
_RENAMED = {"GatewaySession": "SyncGatewaySession", "GatewayProxy": "AsyncGatewayProxy"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    if name in _RENAMED:
        import warnings

        new = _RENAMED[name]
        warnings.warn(
            f"tabpfn_gateway.gateway.{name} is deprecated; use {new} instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return __getattr__(new)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
