"""Mapping upstream answers and httpx failures to ``tabpfn_gateway.errors`` at the boundary.

Every error the protocol clients raise is built here, so the rules live in one place: the
status code picks the class, the body supplies the upstream's message and trace id, and no
message ever carries a credential or a signed URL's query string.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx

from tabpfn_gateway.errors import (
    BudgetExhausted,
    ClientTooOld,
    ConcurrencyLimited,
    GatewayError,
    InsufficientScope,
    InvalidKey,
    InvalidUpload,
    IpNotAllowed,
    KeyDisabled,
    KeyExpired,
    KeyRevoked,
    MalformedResponse,
    PayloadTooLarge,
    RateLimited,
    SetupDisabled,
    TooManyAttempts,
    UpstreamAuthenticationFailed,
    UpstreamError,
    UpstreamFittedModelNotFound,
    UpstreamForbidden,
    UpstreamKindMismatch,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    UsageLimitReached,
)
from tabpfn_gateway.logs import REDACTED, redact

__all__ = [
    "error_from_response",
    "error_from_storage",
    "error_from_transport",
    "is_connect_failure",
    "malformed",
    "parse_retry_after",
    "scrub",
]

# Fields that mark a 429 body as "your account's credits are used up" rather than "slow down".
_USAGE_FIELDS = ("usage_limit", "current_usage", "remaining_credits", "reset_time")
_USAGE_CODE = re.compile(r"LIMIT|QUOTA|CREDIT|USAGE", re.IGNORECASE)
# A URL's query string (a signed URL's signature lives there) or userinfo.
_URL_SECRETS = re.compile(r"(https?://)[^/\s@]*@|\?[^\s'\"]*")
_MAX_MESSAGE = 500

# Codes only a tabpfn-gateway server answers with (the SDK talking to a gateway): they are
# about the caller's gateway key or request, so the caller gets the gateway's own class
# (``except KeyRevoked`` works in user code) instead of a generic upstream error by status.
_GATEWAY_ERRORS: dict[str, type[GatewayError]] = {
    cls.error_code: cls
    for cls in (
        InvalidKey,
        KeyRevoked,
        KeyExpired,
        KeyDisabled,
        InsufficientScope,
        SetupDisabled,
        TooManyAttempts,
        PayloadTooLarge,
        InvalidUpload,
        UpstreamKindMismatch,
        # Governance refusals: typed, with ``retry_after`` from the Retry-After header.
        RateLimited,
        BudgetExhausted,
        ConcurrencyLimited,
        IpNotAllowed,
    )
}


def scrub(text: str, secret: str | None = None) -> str:
    """``text`` without ``secret``, secret-shaped strings, URL query strings or userinfo."""
    if secret:
        text = text.replace(secret, REDACTED)
    text = _URL_SECRETS.sub(lambda m: m.group(1) if m.group(1) else "?" + REDACTED, text)
    text = redact(text)
    return text[:_MAX_MESSAGE]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _json_body(content: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(content) if content else None
    except (ValueError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _upstream_message(response: httpx.Response, body: Mapping[str, Any]) -> str:
    message = body.get("message") or body.get("detail")
    if message is None:
        text = response.text.strip() if response.content else ""
        # An HTML error page from a proxy says nothing useful and may be long.
        message = response.reason_phrase if (not text or text.startswith("<")) else text
    if not isinstance(message, str):
        message = json.dumps(message, default=str)
    return message


def _is_usage_body(body: Mapping[str, Any]) -> bool:
    if any(field in body for field in _USAGE_FIELDS):
        return True
    code = body.get("error_code")
    return isinstance(code, str) and bool(_USAGE_CODE.search(code))


def error_from_response(
    response: httpx.Response,
    operation: str,
    *,
    secret: str | None = None,
    fitted_model: bool = False,
) -> GatewayError:
    """The error for an error answer (status >= 400) of ``operation``.

    An ``UpstreamError`` subclass picked by status code, except when a tabpfn-gateway server
    answered with one of its own key or request codes (``KEY_REVOKED``...): then that class.
    ``fitted_model`` marks operations that name a fitted model: their 404 becomes
    ``UpstreamFittedModelNotFound``. ``secret`` (the caller's credential) is scrubbed from
    the message whatever the upstream echoed.
    """
    status = response.status_code
    body = _json_body(response.content)
    upstream_message = scrub(_upstream_message(response, body), secret)
    trace_id = body.get("trace_id") or response.headers.get("x-trace-id")
    trace = str(trace_id) if trace_id else None
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    details: dict[str, Any] = {"operation": operation, "upstream_message": upstream_message}
    if isinstance(body.get("error_code"), str):
        details["upstream_error_code"] = body["error_code"]
        gateway_error = _GATEWAY_ERRORS.get(body["error_code"])
        if gateway_error is not None:
            details["status_code"] = status
            return gateway_error(
                upstream_message, trace_id=trace, retry_after=retry_after, details=details
            )

    cls: type[UpstreamError]
    if status == 401:
        cls = UpstreamAuthenticationFailed
    elif status == 402:
        cls = UsageLimitReached
    elif status == 403:
        cls = UpstreamForbidden
    elif status in (400, 422):
        cls = UpstreamRejected
    elif status == 404:
        cls = UpstreamFittedModelNotFound if fitted_model else UpstreamNotFound
    elif status == 426:
        cls = ClientTooOld
    elif status == 429:
        cls = UsageLimitReached if _is_usage_body(body) else UpstreamRateLimited
    elif status == 504:
        cls = UpstreamTimeout
    elif status == 408 or status >= 500:
        cls = UpstreamUnavailable
    else:
        cls = UpstreamError
    if cls is UsageLimitReached:
        details.update({k: body[k] for k in _USAGE_FIELDS if k in body})
    message = f"TabPFN {operation} failed (HTTP {status}): {upstream_message}"
    return cls(
        message, status_code=status, trace_id=trace, retry_after=retry_after, details=details
    )


def is_connect_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (mapped or not) proves the request never reached the upstream."""
    if isinstance(exc, UpstreamError):
        return bool(exc.details.get("connect_failed"))
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def error_from_transport(exc: httpx.HTTPError, operation: str) -> UpstreamError:
    """The ``UpstreamUnavailable`` (or ``UpstreamTimeout``) for an httpx failure.

    The message names the failure's kind and where it went (scheme, host, port), never a
    full URL: a signed URL's query string is a credential of its own.
    """
    where = ""
    try:
        url = exc.request.url
        where = f" at {url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
    except RuntimeError:  # an exception raised without a request attached
        pass
    kind = type(exc).__name__
    reason = scrub(str(exc)) if str(exc) else kind
    details: dict[str, Any] = {"operation": operation, "cause": kind}
    if is_connect_failure(exc):
        details["connect_failed"] = True
    cls = UpstreamTimeout if isinstance(exc, httpx.TimeoutException) else UpstreamUnavailable
    verb = "did not answer in time" if cls is UpstreamTimeout else "cannot be reached"
    message = f"TabPFN {operation}: the upstream{where} {verb} ({kind}: {reason})"
    return cls(message, details=details)


def malformed(
    response: httpx.Response, operation: str, problem: str, *, secret: str | None = None
) -> MalformedResponse:
    """A ``MalformedResponse`` for a success answer whose body does not fit the protocol."""
    body = _json_body(response.content)
    trace_id = body.get("trace_id") or response.headers.get("x-trace-id")
    return MalformedResponse(
        f"TabPFN {operation} answered HTTP {response.status_code} with a body that does not "
        f"fit the protocol: {scrub(problem, secret)}",
        status_code=response.status_code,
        trace_id=str(trace_id) if trace_id else None,
        details={"operation": operation},
    )


# Statuses of a signed-URL upload or download that a retry can clear (the vendor's set, plus
# 500: object stores answer it for transient faults too).
_RETRYABLE_STORAGE = frozenset({408, 429, 500, 502, 503, 504})


def error_from_storage(response: httpx.Response, operation: str) -> UpstreamError:
    """The error for a failed PUT/GET on a signed URL.

    A 401/403 there means a bad or expired signature, not a bad token, so it is a plain
    ``UpstreamError``; transient statuses are ``UpstreamUnavailable`` (retryable).
    """
    status = response.status_code
    body = _json_body(response.content)
    upstream_message = scrub(_upstream_message(response, body))
    cls = UpstreamUnavailable if status in _RETRYABLE_STORAGE else UpstreamError
    return cls(
        f"TabPFN {operation} failed (HTTP {status} from the signed URL): {upstream_message}",
        status_code=status,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        details={"operation": operation, "upstream_message": upstream_message},
    )
