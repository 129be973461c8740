"""A gateway's errors in its own words: its codes as its classes, and it named as the party.

The protocol client speaks of "the upstream" and maps answers by status code, which is right
when it talks to TabPFN. When the SDK talks to a gateway, the caller's peer is the gateway:
an unreachable gateway is "the gateway at URL", and an answer carrying one of the gateway's
own error codes (``CREDENTIAL_NOT_FOUND``, ``KEY_REVOKED``...) raises that code's class.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlsplit

from tabpfn_gateway.errors import GatewayError, UpstreamError, UpstreamTimeout, error_codes

__all__ = ["GatewayFacing", "as_gateway_error", "is_tabpfn_cloud"]


def is_tabpfn_cloud(base_url: str) -> bool:
    """Whether ``base_url`` is TabPFN cloud itself (the SDK can reach it without a gateway)."""
    try:
        host = (urlsplit(base_url).hostname or "").lower()
    except ValueError:
        return False
    return host == "priorlabs.ai" or host.endswith(".priorlabs.ai")


def as_gateway_error(exc: GatewayError, base_url: str) -> GatewayError | None:
    """The error to raise instead of ``exc`` when the peer at ``base_url`` is a gateway, or
    None when ``exc`` already says the right thing."""
    details = dict(exc.details)
    cause = details.get("cause")
    if isinstance(exc, UpstreamError) and cause and "upstream_error_code" not in details:
        # The gateway itself did not answer (the client's transport failed).
        verb = "did not answer in time" if isinstance(exc, UpstreamTimeout) else "cannot be reached"
        operation = details.get("operation", "call")
        return type(exc)(
            f"The gateway at {base_url} {verb} ({operation}: {cause}); check the URL "
            "(TABPFN_GATEWAY_URL) and that the gateway is running.",
            status_code=exc.status_code,
            retry_after=exc.retry_after,
            details=details,
        )
    code = details.get("upstream_error_code")
    own = error_codes().get(code) if isinstance(code, str) else None
    # Already that class or a more precise one (a 404 for a fitted model stays
    # UpstreamFittedModelNotFound, which is a NotFound too).
    if own is None or isinstance(exc, own):
        return None
    message = str(details.get("upstream_message") or own.default_message)
    status = getattr(exc, "status_code", None)
    if issubclass(own, UpstreamError):
        return own(
            message,
            status_code=status,
            trace_id=exc.trace_id,
            retry_after=exc.retry_after,
            details=details,
        )
    details.setdefault("status_code", status)
    return own(message, trace_id=exc.trace_id, retry_after=exc.retry_after, details=details)


class GatewayFacing:
    """Wraps a protocol client whose peer is a gateway: every call's error is re-raised in
    the gateway's words (:func:`as_gateway_error`); everything else passes through."""

    def __init__(self, client: Any, base_url: str) -> None:
        self._client = client
        self._base_url = base_url

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            except GatewayError as exc:
                replacement = as_gateway_error(exc, self._base_url)
                if replacement is None:
                    raise
                raise replacement from exc

        return call
