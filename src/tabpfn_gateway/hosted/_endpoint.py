"""A self-hosted inference container as the gateway reaches it: URL, secrets, timeouts."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pydantic import SecretStr

from tabpfn_gateway.errors import InvalidRequest, TokenDecryptionFailed
from tabpfn_gateway.logs import register_secret

__all__ = [
    "HostedEndpoint",
    "check_endpoint_url",
    "check_extra_headers",
    "check_timeout",
    "open_secrets",
    "seal_secrets",
]

# RFC 9110 token characters: what a header name may be made of.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}")
# Visible ASCII and spaces; CR, LF and NUL would split or end a header line.
_HEADER_VALUE = re.compile(r"[\x20-\x7e]{0,4096}")
_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")
# The gateway sets these itself (the token goes in Authorization; framing is the body's).
_RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "accept-encoding",
    }
)
_MAX_HEADERS = 32
_MAX_URL_LENGTH = 2048
_SECRETS_VERSION = 1


@dataclass(frozen=True, slots=True)
class HostedEndpoint:
    """Where and how to POST a prediction: ``url`` (the container's ``/predict`` URL), the
    optional bearer ``token``, ``headers`` added to every request (values may be secrets, so
    neither they nor the token appear in the repr), and the timeouts in seconds."""

    url: str
    token: SecretStr | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout: float = 300.0
    connect_timeout: float = 10.0

    def request_headers(self) -> dict[str, str]:
        """The headers every request to the container carries (auth and extras)."""
        out = dict(self.headers)
        if self.token is not None:
            out["Authorization"] = f"Bearer {self.token.get_secret_value()}"
        return out


def check_endpoint_url(url: object) -> str:
    """``url`` if it is an absolute http(s) URL without userinfo or fragment, else
    ``InvalidRequest``. (An operator configures it: private and loopback hosts are allowed.)"""
    if not isinstance(url, str) or not url.strip() or len(url) > _MAX_URL_LENGTH:
        raise InvalidRequest(
            f"endpoint_url must be an http(s) URL of at most {_MAX_URL_LENGTH} characters."
        )
    cleaned = url.strip()
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in cleaned):
        raise InvalidRequest("endpoint_url must be printable ASCII without spaces.")
    try:
        parts = urlsplit(cleaned)
        port = parts.port
    except ValueError:
        raise InvalidRequest("endpoint_url is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(
            "endpoint_url must be an absolute http:// or https:// URL, e.g. "
            "https://tabpfn.internal.example/predict."
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest(
            "endpoint_url must not carry a user or password; give the bearer token separately."
        )
    if parts.fragment:
        raise InvalidRequest("endpoint_url must not have a #fragment.")
    del port
    return cleaned


def check_extra_headers(headers: Mapping[str, object] | None) -> dict[str, str]:
    """Extra headers for a container, checked: names are header tokens, values printable
    ASCII, at most 32, and none the gateway sets itself (``Authorization``, framing)."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping) or len(headers) > _MAX_HEADERS:
        raise InvalidRequest(f"extra_headers must be a mapping of at most {_MAX_HEADERS} headers.")
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise InvalidRequest("An extra header name must be a valid HTTP header name.")
        if name.lower() in _RESERVED_HEADERS:
            raise InvalidRequest(
                f"The gateway sets {name} itself; give a bearer token instead of an "
                "Authorization header."
                if name.lower() == "authorization"
                else f"The gateway sets {name} itself."
            )
        if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
            raise InvalidRequest(
                f"The value of extra header {name} must be printable ASCII (no line breaks)."
            )
        out[name] = value
    return out


def check_timeout(value: object, name: str) -> float | None:
    """A timeout in seconds (0 < t <= 86,400) or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 86_400:
        raise InvalidRequest(f"{name} must be a number of seconds above 0 and at most 86400.")
    return float(value)


def _check_token(token: SecretStr | str | None) -> SecretStr | None:
    if token is None:
        return None
    raw = token.get_secret_value() if isinstance(token, SecretStr) else token
    if not isinstance(raw, str) or not raw.strip():
        return None
    raw = raw.strip()
    if not _TOKEN.fullmatch(raw):
        raise InvalidRequest(
            "The bearer token must be printable ASCII without spaces or line breaks."
        )
    return SecretStr(raw)


def seal_secrets(
    token: SecretStr | str | None, headers: Mapping[str, str]
) -> tuple[SecretStr, SecretStr | None]:
    """The plaintext the vault encrypts for a hosted credential (a JSON object of the bearer
    token and the extra headers), and the checked token."""
    checked = _check_token(token)
    plain = json.dumps(
        {
            "v": _SECRETS_VERSION,
            "token": None if checked is None else checked.get_secret_value(),
            "headers": dict(headers),
        },
        separators=(",", ":"),
    )
    return SecretStr(plain), checked


def open_secrets(
    plain: SecretStr, *, credential_id: str
) -> tuple[SecretStr | None, dict[str, str]]:
    """The bearer token and extra headers from a decrypted hosted credential (each registered
    with the log redactor)."""
    try:
        data = json.loads(plain.get_secret_value())
        token = data["token"]
        headers = data["headers"]
        if not (token is None or isinstance(token, str)) or not isinstance(headers, dict):
            raise TypeError("bad fields")
    except (ValueError, KeyError, TypeError):
        raise TokenDecryptionFailed(
            f"The secrets of hosted credential {credential_id} are not in the expected form."
        ) from None
    if token:
        register_secret(token)
    for value in headers.values():
        if isinstance(value, str) and len(value) >= 8:
            register_secret(value)
    return (SecretStr(token) if token else None), {str(k): str(v) for k, v in headers.items()}
