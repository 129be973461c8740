"""Checking a self-hosted inference container before storing it: one tiny prediction."""

from __future__ import annotations

import httpx

from tabpfn_gateway.errors import UpstreamNotFound
from tabpfn_gateway.hosted._endpoint import HostedEndpoint
from tabpfn_gateway.protocol._errors import error_from_response, error_from_transport
from tabpfn_gateway.protocol.verify import TokenStatus

__all__ = ["VERIFY_REQUEST", "verify_hosted_endpoint"]

#: The smallest prediction a container can answer: four training rows, one test row.
VERIFY_REQUEST = {
    "task_config": {
        "task": "classification",
        "tabpfn_config": {"n_estimators": 1},
        "predict_params": {"output_type": "preds"},
    },
    "X_train": [[0.0], [1.0], [0.0], [1.0]],
    "y_train": [[0], [1], [0], [1]],
    "X_test": [[0.0]],
}

_OPERATION = "hosted predict (verification)"


def verify_hosted_endpoint(
    endpoint: HostedEndpoint,
    *,
    transport: httpx.BaseTransport | None = None,
    timeout: float | None = None,
) -> TokenStatus:
    """Ask the container for one tiny prediction with ``endpoint``'s token and headers.

    ``VALID`` when it answers with a prediction (or refuses the data itself: it was reached
    and accepted the credentials); ``INVALID`` on 401/403 (the token or a header is refused).
    Raises ``UpstreamUnavailable``/``UpstreamTimeout`` (retryable) when it cannot be reached
    or fails (5xx), and ``UpstreamNotFound`` for a 404/405 (the URL is not its ``/predict``).
    """
    limit = timeout if timeout is not None else min(endpoint.timeout, 60.0)
    timeouts = httpx.Timeout(limit, connect=min(endpoint.connect_timeout, limit))
    # No redirects: a container answering with one is misconfigured, and a redirect could
    # carry the token elsewhere.
    with httpx.Client(transport=transport, timeout=timeouts, follow_redirects=False) as client:
        try:
            response = client.post(
                endpoint.url, json=VERIFY_REQUEST, headers=endpoint.request_headers()
            )
        except httpx.HTTPError as exc:
            raise error_from_transport(exc, _OPERATION) from None
    status = response.status_code
    if status in (401, 403):
        return TokenStatus.INVALID
    if status in (404, 405) or 300 <= status < 400:
        raise UpstreamNotFound(
            f"The hosted endpoint answered HTTP {status}: is {endpoint.url} the container's "
            "/predict URL?",
            status_code=status,
            details={"operation": _OPERATION},
        )
    secret = None if endpoint.token is None else endpoint.token.get_secret_value()
    if status == 408 or status == 429 or status >= 500:
        raise error_from_response(response, _OPERATION, secret=secret)
    return TokenStatus.VALID
