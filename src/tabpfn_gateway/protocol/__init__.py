"""The TabPFN wire protocol: one per-credential client (sync and async), its messages and helpers.

One protocol, three speakers (TabPFN cloud, the gateway, FakeTabPFN); this package is the one
client that talks to any of them. Nothing here keeps process-global state: each client carries its
own base URL, credential, timeouts and connection pool, and takes an injectable httpx transport.
"""

from __future__ import annotations

from tabpfn_gateway.protocol.aclient import AsyncProtocolClient
from tabpfn_gateway.protocol.client import ProtocolClient
from tabpfn_gateway.protocol.options import FitOptions
from tabpfn_gateway.protocol.results import FitResult, PredictionResult
from tabpfn_gateway.protocol.serialization import crc32c_b64, to_parquet
from tabpfn_gateway.protocol.verify import TokenStatus, verify_tabpfn_token

__all__ = [
    "AsyncProtocolClient",
    "FitOptions",
    "FitResult",
    "PredictionResult",
    "ProtocolClient",
    "TokenStatus",
    "crc32c_b64",
    "to_parquet",
    "verify_tabpfn_token",
]
