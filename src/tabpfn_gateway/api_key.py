"""The SDK's gateway key: ``login`` / ``logout`` with the OS keyring, and the lookup order.

(This was ``tabpfn_gateway.credentials``; "credential" now means only a stored TabPFN token.)

Lookup order (:func:`resolve_api_key`): the ``api_key`` argument, then the
``TABPFN_GATEWAY_API_KEY`` environment variable, then the OS keyring entry stored by
:func:`login` for that base URL, then :class:`~tabpfn_gateway.errors.MissingApiKey`
with a message that says what to do. The gateway URL is looked up the same way
(:func:`resolve_base_url`): argument, then ``TABPFN_GATEWAY_URL``.

``keyring`` is imported on first use; a machine without a keyring backend (the ``fail``
backend) gets a clear message, never a traceback from keyring.
"""

from __future__ import annotations

import getpass
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from tabpfn_gateway.errors import ConfigurationError, InvalidKey, MissingApiKey

if TYPE_CHECKING:
    import httpx

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "KEYRING_SERVICE",
    "keyring_available",
    "login",
    "logout",
    "normalize_base_url",
    "resolve_api_key",
    "resolve_base_url",
]

API_KEY_ENV = "TABPFN_GATEWAY_API_KEY"
BASE_URL_ENV = "TABPFN_GATEWAY_URL"
KEYRING_SERVICE = "tabpfn-gateway"

_NO_KEYRING_HINT = (
    "This machine has no OS keyring backend, so login() cannot store a key here: set "
    f"{API_KEY_ENV} instead, pass api_key=..., or install a keyring backend "
    "(e.g. `pip install keyrings.alt`)."
)


def normalize_base_url(base_url: str) -> str:
    """The form a base URL is stored under in the keyring: scheme and host lower-cased,
    no trailing slash, no query or fragment (so ``https://GW.example/`` and
    ``https://gw.example`` share one entry)."""
    text = base_url.strip()
    parts = urlsplit(text)
    if not parts.scheme or not parts.netloc:
        raise ConfigurationError(
            f"Invalid gateway URL {text!r}: expected something like https://gateway.example.com"
        )
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), "", ""))


def resolve_base_url(base_url: str | None = None) -> str:
    """The gateway URL: ``base_url`` if given, else ``TABPFN_GATEWAY_URL``, else an error."""
    chosen = base_url or os.environ.get(BASE_URL_ENV)
    if not chosen:
        raise ConfigurationError(
            f"No gateway URL: pass base_url=... or set {BASE_URL_ENV} "
            "(for an offline gateway in tests, use backend=tabpfn_gateway.testing.local_gateway())."
        )
    return normalize_base_url(chosen)


def resolve_api_key(base_url: str, api_key: str | SecretStr | None = None) -> SecretStr:
    """The gateway key to use for ``base_url``, by the documented lookup order.

    Raises :class:`MissingApiKey` (error code ``MISSING_CREDENTIALS``) when no key is
    found; its message names every way to provide one and says so if the keyring is
    unusable on this machine.
    """
    if api_key is not None:
        value = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if value.strip():
            return SecretStr(value.strip())
    from_env = os.environ.get(API_KEY_ENV, "").strip()
    if from_env:
        return SecretStr(from_env)
    url = normalize_base_url(base_url)
    keyring_module = _import_keyring()
    try:
        stored = keyring_module.get_password(KEYRING_SERVICE, url)
    except Exception as exc:  # any keyring backend failure means "not in the keyring"
        raise MissingApiKey(
            f"No gateway key found for {url}. Pass api_key=... or set {API_KEY_ENV}. "
            + (_NO_KEYRING_HINT if _is_no_keyring(exc) else f"(The OS keyring failed: {exc}.)")
        ) from None
    if stored:
        return SecretStr(stored)
    raise MissingApiKey(
        f"No gateway key found for {url}. Run tabpfn_gateway.login({url!r}) once to store "
        f"one in your OS keyring, or set {API_KEY_ENV}, or pass api_key=...."
    )


def keyring_available() -> bool:
    """Whether an OS keyring backend is usable here (False with keyring's ``fail`` backend)."""
    keyring_module = _import_keyring()
    from keyring.backends import fail

    return not isinstance(keyring_module.get_keyring(), fail.Keyring)


def login(
    base_url: str,
    api_key: str | SecretStr | None = None,
    *,
    verify: bool = True,
    transport: httpx.BaseTransport | None = None,
) -> None:
    """Store a gateway key for ``base_url`` in the OS keyring, after checking it.

    Without ``api_key`` the key is asked for with :func:`getpass.getpass` (never echoed).
    With ``verify`` (the default) the key is checked against the gateway's ``/protected/``
    first: a refused key raises :class:`InvalidKey` and nothing is stored; an unreachable
    gateway raises :class:`~tabpfn_gateway.errors.UpstreamUnavailable`. ``transport`` is
    passed to the HTTP client (tests use it to reach an in-process server).

    Prints one line saying what was stored and where (the key's public id, never the key).
    Raises :class:`ConfigurationError` when the machine has no keyring backend: set
    ``TABPFN_GATEWAY_API_KEY`` instead.
    """
    url = normalize_base_url(base_url)
    if api_key is None:
        entered = getpass.getpass(f"Gateway key for {url}: ")
        secret = SecretStr(entered.strip())
    else:
        raw = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        secret = SecretStr(raw.strip())
    if not secret.get_secret_value():
        raise InvalidKey("No gateway key was entered.")
    keyring_module = _import_keyring()
    if not keyring_available():
        raise ConfigurationError(_NO_KEYRING_HINT)
    if verify:
        _check_key(url, secret, transport=transport)
    try:
        keyring_module.set_password(KEYRING_SERVICE, url, secret.get_secret_value())
    except Exception as exc:
        raise ConfigurationError(
            f"The OS keyring refused to store the key ({type(exc).__name__}). "
            f"Set {API_KEY_ENV} instead."
        ) from None
    # Say what was stored and where (the key's public id, never the key itself).
    print(
        f"Stored {_describe_key(secret)} for {url} in the OS keyring "
        f"({type(keyring_module.get_keyring()).__name__}, service {KEYRING_SERVICE!r}); "
        f"estimators with base_url={url!r} use it."
    )


def _describe_key(secret: SecretStr) -> str:
    from tabpfn_gateway.keys.format import parse_key

    try:
        parsed = parse_key(secret.get_secret_value())
    except InvalidKey:
        return "the key"
    return f"gateway key {parsed.display_prefix}"


def logout(base_url: str) -> bool:
    """Remove the stored key of ``base_url`` from the OS keyring. True if one was removed."""
    url = normalize_base_url(base_url)
    keyring_module = _import_keyring()
    from keyring.errors import PasswordDeleteError

    try:
        keyring_module.delete_password(KEYRING_SERVICE, url)
    except PasswordDeleteError:
        return False
    except Exception as exc:
        if _is_no_keyring(exc):
            return False
        raise ConfigurationError(
            f"The OS keyring refused to delete the key ({type(exc).__name__})."
        ) from None
    return True


def _check_key(url: str, secret: SecretStr, *, transport: httpx.BaseTransport | None) -> None:
    from tabpfn_gateway.errors import AuthenticationError, UpstreamAuthenticationFailed
    from tabpfn_gateway.protocol import ProtocolClient

    client = ProtocolClient(url, secret, transport=transport)
    reason = ""
    try:
        accepted = client.check_token()
    except (UpstreamAuthenticationFailed, AuthenticationError) as exc:
        # A gateway says why (revoked, expired, disabled): keep its code in the message.
        accepted = False
        reason = f" ({exc.error_code})" if isinstance(exc, AuthenticationError) else ""
    finally:
        client.close()
    if not accepted:
        raise InvalidKey(f"The gateway at {url} refused this key{reason}; nothing was stored.")


def _import_keyring() -> Any:
    try:
        import keyring
    except ImportError as exc:  # pragma: no cover - keyring is a core dependency
        raise ConfigurationError(
            f"The keyring package is missing: pip install keyring, or set {API_KEY_ENV}."
        ) from exc
    return keyring


def _is_no_keyring(exc: BaseException) -> bool:
    from keyring.errors import NoKeyringError

    return isinstance(exc, NoKeyringError)
