"""Checking a TabPFN token before storing it: valid, valid but over its limit, or invalid."""

from __future__ import annotations

import enum

import httpx
from pydantic import SecretStr

from tabpfn_gateway.config import DEFAULT_UPSTREAM_URL
from tabpfn_gateway.errors import (
    UpstreamAuthenticationFailed,
    UpstreamForbidden,
    UsageLimitReached,
)
from tabpfn_gateway.protocol.aclient import AsyncProtocolClient
from tabpfn_gateway.protocol.client import ProtocolClient

__all__ = ["TokenStatus", "averify_tabpfn_token", "verify_tabpfn_token"]


class TokenStatus(enum.Enum):
    """What the upstream said about a token."""

    VALID = "valid"
    VALID_LIMIT_REACHED = "valid_limit_reached"
    INVALID = "invalid"


def verify_tabpfn_token(
    token: str | SecretStr,
    *,
    base_url: str = DEFAULT_UPSTREAM_URL,
    transport: httpx.BaseTransport | None = None,
    timeout: float = 10.0,
) -> TokenStatus:
    """Ask the upstream's usage endpoint whether ``token`` works (the seed design's rule).

    ``VALID`` when the usage call succeeds, ``VALID_LIMIT_REACHED`` when it reports a usage
    limit, ``INVALID`` on an authentication failure (401, or 403: an unverified account's token
    cannot be used either). Raises ``UpstreamUnavailable`` (retryable) when the upstream cannot
    be reached or fails: "cannot verify now" is never "invalid". Any other upstream error
    (e.g. a 404 from a wrong ``base_url``) propagates as the ``UpstreamError`` it is.
    """
    # No retries here: the caller (a CLI command, a setup request) decides whether to retry,
    # and a person is waiting for the answer.
    client = ProtocolClient(
        base_url,
        token,
        transport=transport,
        timeout=timeout,
        connect_timeout=timeout,
        max_retries=0,
    )
    with client:
        try:
            usage = client.get_api_usage()
        except UsageLimitReached:
            return TokenStatus.VALID_LIMIT_REACHED
        except (UpstreamAuthenticationFailed, UpstreamForbidden):
            return TokenStatus.INVALID
    return TokenStatus.VALID_LIMIT_REACHED if _limit_reached(usage) else TokenStatus.VALID


async def averify_tabpfn_token(client: AsyncProtocolClient) -> TokenStatus:
    """``verify_tabpfn_token`` for async code, over ``client`` carrying the token (a
    ``with_token`` sibling of a pooled client): no worker thread waits on the upstream."""
    try:
        usage = await client.get_api_usage()
    except UsageLimitReached:
        return TokenStatus.VALID_LIMIT_REACHED
    except (UpstreamAuthenticationFailed, UpstreamForbidden):
        return TokenStatus.INVALID
    return TokenStatus.VALID_LIMIT_REACHED if _limit_reached(usage) else TokenStatus.VALID


def _limit_reached(usage: dict[str, object]) -> bool:
    """Whether a usage body says the limit is used up (``usage_limit`` -1 is unlimited)."""
    try:
        limit = float(str(usage.get("usage_limit")))
        used = float(str(usage.get("current_usage")))
    except ValueError:
        return False
    return limit >= 0 and used >= limit
