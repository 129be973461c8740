"""The HTTP status each stable error code answers with (the server's table, kept framework-free)."""

from __future__ import annotations

from tabpfn_gateway.errors import GatewayError

__all__ = ["HTTP_STATUS_BY_CODE", "http_status", "is_retry_hinted"]

# One status per code, never per call site: clients may switch on either. docs/server.md lists
# this table and a test keeps the two equal.
HTTP_STATUS_BY_CODE: dict[str, int] = {
    "GATEWAY_ERROR": 500,
    "CONFIGURATION_ERROR": 500,
    "INVALID_REQUEST": 400,
    "PAYLOAD_TOO_LARGE": 413,
    "HEADERS_TOO_LARGE": 431,
    "INVALID_UPLOAD": 400,
    "HOST_NOT_ALLOWED": 400,
    "INVALID_DATA": 400,
    "UPSTREAM_KIND_MISMATCH": 400,
    "NOT_FOUND": 404,
    "PRINCIPAL_NOT_FOUND": 404,
    "CREDENTIAL_NOT_FOUND": 404,
    "KEY_NOT_FOUND": 404,
    "FITTED_MODEL_NOT_FOUND": 404,
    "CONFLICT": 409,
    "IDEMPOTENCY_KEY_REUSED": 409,
    "STORE_ERROR": 500,
    # A database outage is the gateway's trouble, never the caller's key: 503, not 401.
    "STORE_UNAVAILABLE": 503,
    "SCHEMA_NOT_CURRENT": 503,
    "AUTHENTICATION_FAILED": 401,
    "INVALID_KEY": 401,
    "KEY_REVOKED": 401,
    "KEY_EXPIRED": 401,
    "KEY_DISABLED": 401,
    "MISSING_CREDENTIALS": 401,
    "INSUFFICIENT_SCOPE": 403,
    "SETUP_DISABLED": 403,
    "SETUP_BUSY": 503,
    "TOO_MANY_ATTEMPTS": 429,
    "POLICY_REFUSED": 429,
    "RATE_LIMITED": 429,
    "BUDGET_EXHAUSTED": 429,
    "CONCURRENCY_LIMITED": 429,
    "IP_NOT_ALLOWED": 403,
    "VAULT_ERROR": 500,
    "SECRET_KEY_MISSING": 500,
    "TOKEN_DECRYPTION_FAILED": 500,
    "UPSTREAM_ERROR": 502,
    # The setup flow answers a rejected TabPFN token with 401, as the seed design did.
    "UPSTREAM_AUTHENTICATION_FAILED": 401,
    "UPSTREAM_FORBIDDEN": 403,
    # The upstream found the request invalid: the caller's to fix, not a bad gateway.
    "UPSTREAM_REJECTED": 400,
    "USAGE_LIMIT_REACHED": 429,
    "UPSTREAM_RATE_LIMITED": 429,
    "UPSTREAM_NOT_FOUND": 404,
    "UPSTREAM_FITTED_MODEL_NOT_FOUND": 404,
    "UPSTREAM_UNAVAILABLE": 503,
    "UPSTREAM_TIMEOUT": 504,
    "CLIENT_TOO_OLD": 426,
    "MALFORMED_RESPONSE": 502,
    "EGRESS_REFUSED": 502,
}

# How long to suggest waiting when a retryable error carries no hint of its own.
DEFAULT_RETRY_AFTER_SECONDS = 5


def http_status(error: GatewayError | type[GatewayError]) -> int:
    """The status for ``error``: its own code's, else its nearest ancestor's, else 500."""
    cls = error if isinstance(error, type) else type(error)
    for klass in cls.__mro__:
        code = getattr(klass, "error_code", None)
        if isinstance(code, str) and code in HTTP_STATUS_BY_CODE:
            return HTTP_STATUS_BY_CODE[code]
    return 500


def is_retry_hinted(error: GatewayError) -> bool:
    """Whether the answer should carry ``Retry-After``: retryable errors, and 503s."""
    return error.retryable or http_status(error) == 503
