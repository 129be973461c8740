"""The error tree of tabpfn-gateway: every error a caller can see, each with a stable error code.

    GatewayError                      (base; .error_code, .retryable, .trace_id)
    ├── ConfigurationError            CONFIGURATION_ERROR   a setting is missing or invalid
    ├── InvalidRequest                INVALID_REQUEST       the caller sent something malformed
    │   ├── PayloadTooLarge           PAYLOAD_TOO_LARGE
    │   ├── HeadersTooLarge           HEADERS_TOO_LARGE     431, request line + headers past 64 KB
    │   ├── InvalidUpload             INVALID_UPLOAD        a broken, expired or foreign upload
    │   ├── HostNotAllowed            HOST_NOT_ALLOWED      a Host header outside ALLOWED_HOSTS
    │   ├── InvalidData               INVALID_DATA          bad X/y for an estimator (+ValueError)
    │   └── UpstreamKindMismatch      UPSTREAM_KIND_MISMATCH  the key's credential speaks the
    │                                                       other protocol (cloud vs hosted)
    ├── NotFound                      NOT_FOUND
    │   ├── PrincipalNotFound         PRINCIPAL_NOT_FOUND
    │   ├── CredentialNotFound        CREDENTIAL_NOT_FOUND
    │   ├── KeyNotFound               KEY_NOT_FOUND
    │   └── FittedModelNotFound       FITTED_MODEL_NOT_FOUND
    ├── Conflict                      CONFLICT              a unique name or id is taken
    │   └── IdempotencyKeyReused      IDEMPOTENCY_KEY_REUSED  a request id another caller used
    ├── StoreError                    STORE_ERROR           the store failed for a reason of its own
    │   ├── StoreUnavailable          STORE_UNAVAILABLE     database unreachable (retryable)
    │   └── SchemaNotCurrent          SCHEMA_NOT_CURRENT    migrations are missing: run `db upgrade`
    ├── AuthenticationError           (a gateway key was refused)
    │   ├── InvalidKey                INVALID_KEY           malformed, unknown or wrong: alike
    │   ├── KeyRevoked                KEY_REVOKED
    │   ├── KeyExpired                KEY_EXPIRED
    │   ├── KeyDisabled               KEY_DISABLED
    │   └── MissingApiKey             MISSING_CREDENTIALS   no key given anywhere (SDK)
    ├── InsufficientScope             INSUFFICIENT_SCOPE    the key is fine but may not do this
    ├── SetupDisabled                 SETUP_DISABLED        self-service setup is turned off
    ├── SetupBusy                     SETUP_BUSY            too many setups at once (retryable)
    ├── TooManyAttempts               TOO_MANY_ATTEMPTS     a client is rate limited (retryable)
    ├── PolicyRefused                 POLICY_REFUSED        a spend policy said no (governance)
    │   ├── RateLimited               RATE_LIMITED          429, over a request-rate limit
    │   ├── BudgetExhausted           BUDGET_EXHAUSTED      429, a hard credit budget is used up
    │   ├── ConcurrencyLimited        CONCURRENCY_LIMITED   429, too many fits at once (retryable)
    │   └── IpNotAllowed              IP_NOT_ALLOWED        403, the key's CIDR allowlist refuses
    ├── VaultError                    VAULT_ERROR
    │   ├── SecretKeyMissing          SECRET_KEY_MISSING    TABPFN_GATEWAY_SECRET_KEY is not set
    │   └── TokenDecryptionFailed     TOKEN_DECRYPTION_FAILED  wrong secret, tampered/moved data
    └── UpstreamError                 UPSTREAM_ERROR        TabPFN (or a gateway) answered an error
        ├── UpstreamAuthenticationFailed  UPSTREAM_AUTHENTICATION_FAILED 401
        ├── UpstreamForbidden         UPSTREAM_FORBIDDEN    403, e.g. e-mail not verified
        ├── UpstreamRejected          UPSTREAM_REJECTED     400/422: the request is invalid there
        ├── UsageLimitReached         USAGE_LIMIT_REACHED   402, or 429 with a usage body
        ├── UpstreamRateLimited       UPSTREAM_RATE_LIMITED 429 with Retry-After (retryable)
        ├── UpstreamNotFound          UPSTREAM_NOT_FOUND    404 (a fitted model the upstream lacks)
        │   └── UpstreamFittedModelNotFound  UPSTREAM_FITTED_MODEL_NOT_FOUND (+FittedModelNotFound)
        ├── UpstreamUnavailable       UPSTREAM_UNAVAILABLE  connection error, 408, 5xx (retryable)
        │   └── UpstreamTimeout       UPSTREAM_TIMEOUT      no answer in time (retryable)
        ├── ClientTooOld              CLIENT_TOO_OLD        426
        ├── MalformedResponse         MALFORMED_RESPONSE    a body that does not fit the protocol
        └── EgressRefused             EGRESS_REFUSED        a signed URL the gateway may not reach

Dependency errors (SQLAlchemy, httpx, cryptography) are mapped at the boundary and never reach
callers: ``raise StoreUnavailable(...) from exc``. Messages never contain a gateway key or a
TabPFN token.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AuthenticationError",
    "BudgetExhausted",
    "ClientTooOld",
    "ConcurrencyLimited",
    "ConfigurationError",
    "Conflict",
    "CredentialNotFound",
    "EgressRefused",
    "FittedModelNotFound",
    "GatewayError",
    "HeadersTooLarge",
    "HostNotAllowed",
    "IdempotencyKeyReused",
    "InsufficientScope",
    "InvalidData",
    "InvalidKey",
    "InvalidRequest",
    "InvalidUpload",
    "IpNotAllowed",
    "KeyDisabled",
    "KeyExpired",
    "KeyNotFound",
    "KeyRevoked",
    "MalformedResponse",
    "MissingApiKey",
    "NotFound",
    "PayloadTooLarge",
    "PolicyRefused",
    "PrincipalNotFound",
    "RateLimited",
    "SchemaNotCurrent",
    "SecretKeyMissing",
    "SetupBusy",
    "SetupDisabled",
    "StoreError",
    "StoreUnavailable",
    "TokenDecryptionFailed",
    "TooManyAttempts",
    "UpstreamAuthenticationFailed",
    "UpstreamError",
    "UpstreamFittedModelNotFound",
    "UpstreamForbidden",
    "UpstreamKindMismatch",
    "UpstreamNotFound",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "UsageLimitReached",
    "VaultError",
    "error_codes",
]


class GatewayError(Exception):
    """Base of every error tabpfn-gateway raises on purpose.

    ``error_code`` is stable and documented (clients may switch on it); ``message`` is for
    humans; ``retryable`` says whether the same call may succeed later; ``trace_id`` is the
    upstream's or the gateway's trace id when one is known; ``retry_after`` is a hint in
    seconds when the cause says how long to wait.
    """

    error_code: ClassVar[str] = "GATEWAY_ERROR"
    retryable: ClassVar[bool] = False
    default_message: ClassVar[str] = "tabpfn-gateway failed."

    def __init__(
        self,
        message: str | None = None,
        *,
        trace_id: str | None = None,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.trace_id = trace_id
        self.retry_after = retry_after
        self.details = details or {}
        super().__init__(self.message)

    def __str__(self) -> str:
        text = self.message
        if self.trace_id:
            text += f" (trace id: {self.trace_id})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The error as the JSON body every gateway error response carries."""
        return {"error_code": self.error_code, "message": self.message, "trace_id": self.trace_id}


class ConfigurationError(GatewayError):
    error_code = "CONFIGURATION_ERROR"
    default_message = "A setting is missing or invalid."


class InvalidRequest(GatewayError):
    error_code = "INVALID_REQUEST"
    default_message = "The request is malformed."


class PayloadTooLarge(InvalidRequest):
    error_code = "PAYLOAD_TOO_LARGE"
    default_message = "The request body exceeds the configured limit."


class HeadersTooLarge(InvalidRequest):
    """The request line and headers together exceed the server's limit (431)."""

    error_code = "HEADERS_TOO_LARGE"
    default_message = "The request line and headers exceed the limit."


class InvalidUpload(InvalidRequest):
    error_code = "INVALID_UPLOAD"
    default_message = "The upload URL is invalid, expired or not yours."


class HostNotAllowed(InvalidRequest):
    """The request's ``Host`` would become the base of upload URLs, and it is not allowed."""

    error_code = "HOST_NOT_ALLOWED"
    default_message = (
        "This Host is not one the gateway serves: set TABPFN_GATEWAY_PUBLIC_URL, or add the "
        "host to TABPFN_GATEWAY_ALLOWED_HOSTS."
    )


class NotFound(GatewayError):
    error_code = "NOT_FOUND"
    default_message = "Not found."


class PrincipalNotFound(NotFound):
    error_code = "PRINCIPAL_NOT_FOUND"
    default_message = "No such principal."


class CredentialNotFound(NotFound):
    error_code = "CREDENTIAL_NOT_FOUND"
    default_message = "No such upstream credential."


class KeyNotFound(NotFound):
    error_code = "KEY_NOT_FOUND"
    default_message = "No such gateway key."


class FittedModelNotFound(NotFound):
    error_code = "FITTED_MODEL_NOT_FOUND"
    default_message = "No such fitted model (it does not exist or belongs to someone else)."


class Conflict(GatewayError):
    error_code = "CONFLICT"
    default_message = "That name or id is already taken."


class IdempotencyKeyReused(Conflict):
    """A request id (``Idempotency-Key``) that another caller already used: its stored answer
    belongs to that caller and is not replayed to anyone else."""

    error_code = "IDEMPOTENCY_KEY_REUSED"
    default_message = "That request id was already used by another caller; use a new one."


class StoreError(GatewayError):
    error_code = "STORE_ERROR"
    default_message = "The store failed."


class StoreUnavailable(StoreError):
    error_code = "STORE_UNAVAILABLE"
    retryable = True
    default_message = "The database cannot be reached right now; try again shortly."


class SchemaNotCurrent(StoreError):
    error_code = "SCHEMA_NOT_CURRENT"
    default_message = "The database schema is not current: run `tabpfn-gateway db upgrade`."


class AuthenticationError(GatewayError):
    error_code = "AUTHENTICATION_FAILED"
    default_message = "Authentication failed."


class InvalidKey(AuthenticationError):
    error_code = "INVALID_KEY"
    # One message for malformed, unknown and wrong keys: no oracle.
    default_message = "The gateway key is invalid."


class KeyRevoked(AuthenticationError):
    error_code = "KEY_REVOKED"
    default_message = "The gateway key has been revoked."


class KeyExpired(AuthenticationError):
    error_code = "KEY_EXPIRED"
    default_message = "The gateway key has expired."


class KeyDisabled(AuthenticationError):
    error_code = "KEY_DISABLED"
    default_message = "The gateway key is disabled."


class MissingApiKey(AuthenticationError):
    """No gateway key was given anywhere. (Was ``MissingCredentials``; its stable code keeps
    the old spelling, since clients switch on it.)"""

    error_code = "MISSING_CREDENTIALS"
    default_message = (
        "No gateway key found. Pass api_key=..., set TABPFN_GATEWAY_API_KEY, "
        "or run tabpfn_gateway.login(base_url) once to store one in your keyring."
    )


class InsufficientScope(GatewayError):
    error_code = "INSUFFICIENT_SCOPE"
    default_message = "The gateway key lacks the scope this operation needs."


class SetupDisabled(GatewayError):
    error_code = "SETUP_DISABLED"
    default_message = "Self-service setup is turned off; ask an administrator for a key."


class SetupBusy(GatewayError):
    """This process is verifying as many setups upstream as it may at once; retry shortly."""

    error_code = "SETUP_BUSY"
    default_message = "Too many setups are being verified right now; retry shortly."
    retryable = True


class TooManyAttempts(GatewayError):
    error_code = "TOO_MANY_ATTEMPTS"
    retryable = True
    default_message = "Too many attempts; wait and try again."


class PolicyRefused(GatewayError):
    """A governance policy refused the call. ``details`` may carry ``policy`` (the limit's
    name, e.g. ``"key:requests_per_minute"``), ``limit``, ``remaining`` and ``window_seconds``:
    the server turns them into the IETF ``RateLimit-Policy``/``RateLimit`` headers."""

    error_code = "POLICY_REFUSED"
    default_message = "A spend policy refused this call."


class RateLimited(PolicyRefused):
    error_code = "RATE_LIMITED"
    retryable = True
    default_message = "Too many requests for this key's rate limit; retry after the wait given."


class BudgetExhausted(PolicyRefused):
    error_code = "BUDGET_EXHAUSTED"
    # Retrying helps only once the budget period rolls over (Retry-After says when).
    retryable = True
    default_message = "The credit budget for this period is used up."


class ConcurrencyLimited(PolicyRefused):
    error_code = "CONCURRENCY_LIMITED"
    retryable = True
    default_message = "Too many fits are running at once for this key; retry shortly."


class IpNotAllowed(PolicyRefused):
    error_code = "IP_NOT_ALLOWED"
    default_message = "This gateway key may not be used from this network address."


class VaultError(GatewayError):
    error_code = "VAULT_ERROR"
    default_message = "The token vault failed."


class SecretKeyMissing(VaultError, ConfigurationError):
    error_code = "SECRET_KEY_MISSING"
    default_message = (
        "TABPFN_GATEWAY_SECRET_KEY is not set; it is needed to encrypt and decrypt TabPFN tokens."
    )


class TokenDecryptionFailed(VaultError):
    error_code = "TOKEN_DECRYPTION_FAILED"
    default_message = (
        "A stored TabPFN token cannot be decrypted with TABPFN_GATEWAY_SECRET_KEY or "
        "TABPFN_GATEWAY_PREVIOUS_SECRET_KEYS (wrong secret, or a tampered or moved ciphertext)."
    )


class UpstreamError(GatewayError):
    error_code = "UPSTREAM_ERROR"
    default_message = "The upstream answered with an error."

    def __init__(
        self,
        message: str | None = None,
        *,
        status_code: int | None = None,
        trace_id: str | None = None,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, trace_id=trace_id, retry_after=retry_after, details=details)
        self.status_code = status_code


class UpstreamAuthenticationFailed(UpstreamError):
    error_code = "UPSTREAM_AUTHENTICATION_FAILED"
    default_message = "The upstream rejected the token."


class UpstreamRejected(UpstreamError):
    """The upstream answered 400 or 422: the request was invalid there (an upload not yet
    complete, a config it refuses). The caller's to fix, so the gateway answers 400."""

    error_code = "UPSTREAM_REJECTED"
    default_message = "The upstream refused the request as invalid."


class UpstreamForbidden(UpstreamError):
    error_code = "UPSTREAM_FORBIDDEN"
    default_message = "The upstream refused access (is the account's e-mail verified?)."


class UsageLimitReached(UpstreamError):
    error_code = "USAGE_LIMIT_REACHED"
    default_message = "The usage limit of this TabPFN account is reached."


class UpstreamRateLimited(UpstreamError):
    error_code = "UPSTREAM_RATE_LIMITED"
    retryable = True
    default_message = "The upstream is rate limiting; retry later."


class UpstreamNotFound(UpstreamError):
    error_code = "UPSTREAM_NOT_FOUND"
    default_message = "The upstream does not know that resource."


class UpstreamUnavailable(UpstreamError):
    error_code = "UPSTREAM_UNAVAILABLE"
    retryable = True
    default_message = "The upstream cannot be reached right now; try again shortly."


class UpstreamTimeout(UpstreamUnavailable):
    error_code = "UPSTREAM_TIMEOUT"
    default_message = "The upstream did not answer in time; try again shortly."


class ClientTooOld(UpstreamError):
    error_code = "CLIENT_TOO_OLD"
    default_message = "The upstream requires a newer client version."


class MalformedResponse(UpstreamError):
    error_code = "MALFORMED_RESPONSE"
    default_message = "The upstream sent a response that does not fit the protocol."


class EgressRefused(UpstreamError):
    """The upstream named a URL (upload or download) outside the operator's egress policy."""

    error_code = "EGRESS_REFUSED"
    default_message = "The upstream sent a URL this gateway may not reach."


class UpstreamFittedModelNotFound(FittedModelNotFound, UpstreamNotFound):
    """The upstream answered 404 for a fitted model: catchable as either parent."""

    error_code = "UPSTREAM_FITTED_MODEL_NOT_FOUND"
    default_message = (
        "The upstream has no such fitted model (deleted, or fitted with another token)."
    )


class InvalidData(InvalidRequest, ValueError):
    """Data an estimator cannot use (shape, NaN in y, limits): also a ValueError, the way
    scikit-learn reports bad input, so sklearn's tooling and checks recognise it."""

    error_code = "INVALID_DATA"
    default_message = "The data given to the estimator is invalid."


class UpstreamKindMismatch(InvalidRequest):
    """The call speaks one upstream protocol and the key's credential the other: a cloud
    TabPFN token used for ``POST /predict``, or a self-hosted container for the cloud steps."""

    error_code = "UPSTREAM_KIND_MISMATCH"
    default_message = "This key's credential speaks the other upstream protocol."


_RENAMED = {"MissingCredentials": "MissingApiKey"}


def __getattr__(name: str) -> Any:
    # Old names keep working for one minor release, with a warning naming the new one.
    if name in _RENAMED:
        import warnings

        new = _RENAMED[name]
        warnings.warn(
            f"tabpfn_gateway.errors.{name} is deprecated; use {new} instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def error_codes() -> dict[str, type[GatewayError]]:
    """Every stable error code and the class that carries it (documented in docs/errors)."""
    found: dict[str, type[GatewayError]] = {}
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.error_code, cls)
        pending.extend(cls.__subclasses__())
    return found
