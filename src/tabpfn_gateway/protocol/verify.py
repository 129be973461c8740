"""Checking a TabPFN token before storing it: valid, valid but over its limit, or invalid."""

from __future__ import annotations

import enum

import httpx
from pydantic import SecretStr

from tabpfn_gateway.config import DEFAULT_UPSTREAM_URL

__all__ = ["TokenStatus", "verify_tabpfn_token"]


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
    be reached or fails: "cannot verify now" is never "invalid".
    """
    raise NotImplementedError
