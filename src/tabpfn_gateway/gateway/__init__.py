"""The gateway core (framework-free): keys in, TabPFN calls out, usage metered, fits owned.

``Gateway.from_settings(settings)`` wires the parts: the ``Authoriser`` (key -> caller ->
token, one cache), the ``SpendPolicy`` seam (budgets and rate limits plug in there), fit
ownership, the meter, setup, invalidation and readiness. ``gateway.session(api_key)`` is a
``SyncGatewaySession``: an in-process, synchronous client with ``ProtocolClient``'s high-level
shape; ``gateway.proxy`` is the ``AsyncGatewayProxy``: the asynchronous wire-level steps the
server's routes call.
"""

from __future__ import annotations

from tabpfn_gateway.gateway._authoriser import Authoriser, Caller, Decision
from tabpfn_gateway.gateway._core import Gateway
from tabpfn_gateway.gateway._invalidation import (
    InvalidationBus,
    LocalBus,
    PostgresNotifyBus,
    RedisBus,
    bus_from_settings,
)
from tabpfn_gateway.gateway._metering import Meter, UpstreamCall
from tabpfn_gateway.gateway._policy import Admission, AllowAll, SpendPolicy
from tabpfn_gateway.gateway._proxy import AsyncGatewayProxy
from tabpfn_gateway.gateway._session import SyncGatewaySession
from tabpfn_gateway.gateway._setup import SetupResult
from tabpfn_gateway.gateway._status import HTTP_STATUS_BY_CODE, http_status, is_retry_hinted
from tabpfn_gateway.gateway._uploads import UPLOAD_PATH_PREFIX, UploadGrant, UploadSigner
from tabpfn_gateway.gateway._usage import UsageRecorder

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


def __getattr__(name: str) -> object:
    if name in _RENAMED:
        import warnings

        new = _RENAMED[name]
        warnings.warn(
            f"tabpfn_gateway.gateway.{name} is deprecated; use {new} instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
