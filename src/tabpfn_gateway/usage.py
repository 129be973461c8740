"""``get_usage()``: a key holder's own spend and what is left of its budgets, from a gateway
(the counterpart of tabpfn-client's ``get_api_usage``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from pydantic import SecretStr

__all__ = ["get_usage"]


def get_usage(
    base_url: str | None = None,
    api_key: str | SecretStr | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    timeout: float = 30.0,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """Your key's usage and budgets, as the gateway's ``GET /api/v1/usage/summary`` answers.

    ``base_url`` and ``api_key`` are found the way the estimators find them (argument, then
    ``TABPFN_GATEWAY_URL`` / ``TABPFN_GATEWAY_API_KEY``, then the keyring). The answer has
    ``calls`` and ``credits`` (totals), ``operations`` (per operation: calls, errors, rows,
    bytes, credits) and ``budgets`` (each budget over the key: ``level``, ``budget``,
    ``spent``, ``reserved``, ``remaining``, ``resets_at``). The key needs the ``usage`` scope.

    Raises the gateway's error classes (``InvalidKey``, ``InsufficientScope``...) or
    ``UpstreamUnavailable`` when the gateway cannot be reached.

    Example::

        import tabpfn_gateway

        usage = tabpfn_gateway.get_usage()
        print(usage["credits"], [b["remaining"] for b in usage["budgets"]])
    """
    from tabpfn_gateway.api_key import resolve_api_key, resolve_base_url
    from tabpfn_gateway.errors import InvalidRequest
    from tabpfn_gateway.protocol._errors import error_from_response, error_from_transport

    url = resolve_base_url(base_url)
    key = resolve_api_key(url, api_key)
    params: dict[str, str] = {}
    for name, value in (("since", since), ("until", until)):
        if value is not None:
            if value.tzinfo is None:
                raise InvalidRequest(f"{name} needs a timezone (e.g. datetime.now(UTC)).")
            params[name] = value.isoformat()
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"}
    try:
        with httpx.Client(base_url=url, timeout=timeout, transport=transport) as client:
            response = client.get("/api/v1/usage/summary", params=params, headers=headers)
    except httpx.HTTPError as exc:
        raise error_from_transport(exc, "usage summary") from None
    if response.status_code >= 400:
        raise error_from_response(response, "usage summary", secret=key.get_secret_value())
    answer: dict[str, Any] = response.json()
    return answer
