"""Self-hosted TabPFN inference containers as a second kind of upstream (``POST /predict``).

A ``hosted`` credential names a container's ``/predict`` URL, an optional bearer token and
extra headers (stored encrypted) and timeouts. ``endpoint_of`` opens one for a call;
``verify_hosted_endpoint`` asks the container for one tiny prediction before it is stored.
"""

from __future__ import annotations

from tabpfn_gateway.hosted._endpoint import (
    HostedEndpoint,
    check_endpoint_url,
    check_extra_headers,
    check_timeout,
    open_secrets,
    seal_secrets,
)
from tabpfn_gateway.hosted.verify import VERIFY_REQUEST, verify_hosted_endpoint

__all__ = [
    "VERIFY_REQUEST",
    "HostedEndpoint",
    "check_endpoint_url",
    "check_extra_headers",
    "check_timeout",
    "open_secrets",
    "seal_secrets",
    "verify_hosted_endpoint",
]
