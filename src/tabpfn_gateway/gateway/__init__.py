"""The gateway core (framework-free): keys in, TabPFN calls out, usage metered, fits owned.

``Gateway.from_settings(settings)`` wires the parts: the ``Authoriser`` (key -> caller ->
token, one cache), the ``SpendPolicy`` seam (budgets and rate limits plug in there), fit
ownership, the meter, setup, invalidation and readiness. ``gateway.session(api_key)`` is an
in-process client with ``ProtocolClient``'s high-level shape; ``gateway.proxy`` holds the
async wire-level steps the server's routes call.
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
from tabpfn_gateway.gateway._proxy import GatewayProxy
from tabpfn_gateway.gateway._session import GatewaySession
from tabpfn_gateway.gateway._setup import SetupResult
from tabpfn_gateway.gateway._status import HTTP_STATUS_BY_CODE, http_status, is_retry_hinted
from tabpfn_gateway.gateway._uploads import UPLOAD_PATH_PREFIX, UploadGrant, UploadSigner
from tabpfn_gateway.gateway._usage import UsageRecorder

__all__ = [
    "HTTP_STATUS_BY_CODE",
    "UPLOAD_PATH_PREFIX",
    "Admission",
    "AllowAll",
    "Authoriser",
    "Caller",
    "Decision",
    "Gateway",
    "GatewayProxy",
    "GatewaySession",
    "InvalidationBus",
    "LocalBus",
    "Meter",
    "PostgresNotifyBus",
    "RedisBus",
    "SetupResult",
    "SpendPolicy",
    "UploadGrant",
    "UploadSigner",
    "UpstreamCall",
    "UsageRecorder",
    "bus_from_settings",
    "http_status",
    "is_retry_hinted",
]
