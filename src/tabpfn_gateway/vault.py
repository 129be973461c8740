"""The token vault: TabPFN tokens encrypted at rest with AES-GCM under HKDF-derived keys.

Each configured secret (``TABPFN_GATEWAY_SECRET_KEY`` first, then
``TABPFN_GATEWAY_PREVIOUS_SECRET_KEYS``) yields one AES-256 key through HKDF-SHA256. The first
encrypts; all decrypt, so a secret can be rotated without downtime and ``tabpfn-gateway secrets
rotate`` then re-encrypts every row. A ciphertext is bound to its credential row: the
credential id is authenticated as associated data, so a ciphertext copied into another row
fails to decrypt.

Ciphertext layout (bytes)::

    version (1, = 0x01) | key fingerprint (8) | nonce (12) | AES-GCM ciphertext + tag (16)

The fingerprint (also HKDF-derived, not the key) says which secret encrypted a row, so
decryption tries one key and ``is_current`` needs no key at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

from tabpfn_gateway.config import Settings, get_settings
from tabpfn_gateway.errors import (
    ConfigurationError,
    InvalidRequest,
    SecretKeyMissing,
    TokenDecryptionFailed,
)
from tabpfn_gateway.logs import register_secret

__all__ = [
    "MIN_SECRET_LENGTH",
    "SECRET_KEY_FILE",
    "TokenVault",
    "check_token_text",
    "configured_secrets",
    "derive_key",
    "read_or_create_secret_file",
]

logger = logging.getLogger(__name__)

_MAX_TOKEN_LENGTH = 8192


def check_token_text(token: str | SecretStr, what: str = "The TabPFN token") -> SecretStr:
    """``token`` stripped, if it can travel in an ``Authorization`` header: printable ASCII
    only (no CR, LF, NUL or other control or non-ASCII characters), 1 to 8192 characters.
    Anything else is ``InvalidRequest`` (400), never stored, and never sent anywhere."""
    raw = token.get_secret_value() if isinstance(token, SecretStr) else token
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidRequest(f"{what} is empty.")
    raw = raw.strip()
    if len(raw) > _MAX_TOKEN_LENGTH or not all(" " <= ch <= "~" for ch in raw):
        raise InvalidRequest(
            f"{what} must be printable ASCII (no line breaks, NUL or non-ASCII characters), "
            f"at most {_MAX_TOKEN_LENGTH} characters."
        )
    return SecretStr(raw)


MIN_SECRET_LENGTH = 16
SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name, not a secret

_VERSION = b"\x01"
_FINGERPRINT_LENGTH = 8
_NONCE_LENGTH = 12
_HEADER_LENGTH = len(_VERSION) + _FINGERPRINT_LENGTH
_MIN_CIPHERTEXT_LENGTH = _HEADER_LENGTH + _NONCE_LENGTH + 16
_SALT = b"tabpfn-gateway/v1"
_SECRET_SETTINGS = "TABPFN_GATEWAY_SECRET_KEY / TABPFN_GATEWAY_PREVIOUS_SECRET_KEYS"  # noqa: S105


def derive_key(secret: str | SecretStr, purpose: str, length: int = 32) -> bytes:
    """HKDF-SHA256 of ``secret`` for one ``purpose`` (distinct purposes give unrelated keys)."""
    raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=purpose.encode()).derive(
        raw.encode("utf-8")
    )


@dataclass(frozen=True, slots=True, repr=False)
class _VaultKey:
    fingerprint: bytes
    aead: AESGCM


def _vault_key(secret: str | SecretStr) -> _VaultKey:
    raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if not isinstance(raw, str) or len(raw) < MIN_SECRET_LENGTH:
        raise ConfigurationError(
            f"A secret in {_SECRET_SETTINGS} is shorter than {MIN_SECRET_LENGTH} characters; "
            "use a long random value (e.g. `openssl rand -hex 32`)."
        )
    return _VaultKey(
        fingerprint=derive_key(raw, "vault fingerprint", _FINGERPRINT_LENGTH),
        aead=AESGCM(derive_key(raw, "vault aes-256-gcm")),
    )


def _associated_data(header: bytes, credential_id: str) -> bytes:
    return header + b"credential:" + credential_id.encode("utf-8")


class TokenVault:
    """Encrypts and decrypts upstream tokens; the first secret encrypts, all of them decrypt."""

    def __init__(self, secrets: Sequence[str | SecretStr]) -> None:
        if not secrets:
            raise SecretKeyMissing()
        keys: list[_VaultKey] = []
        for secret in secrets:
            key = _vault_key(secret)
            if all(key.fingerprint != k.fingerprint for k in keys):
                keys.append(key)
        self._keys = keys
        first = secrets[0]
        self._shared_fingerprint = derive_key(first, "secret fingerprint", 16).hex()

    @property
    def shared_fingerprint(self) -> str:
        """The encrypting secret's fingerprint, as ``secret_fingerprint`` computes it (the
        database keeps it: tabpfn_gateway.secret_fingerprint)."""
        return self._shared_fingerprint

    def __repr__(self) -> str:
        return f"TokenVault(secrets={len(self._keys)})"

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, generate: bool = False
    ) -> TokenVault:
        """The vault for ``TABPFN_GATEWAY_SECRET_KEY`` (+ ``_PREVIOUS_SECRET_KEYS``).

        With no secret configured, a secret persisted earlier in ``settings.data_dir /
        "secret_key"`` is used; with ``generate=True`` and none there, a strong one is generated
        and persisted (mode 0600) with a loud warning. Otherwise ``SecretKeyMissing``.
        A persisted secret is also kept as a decrypt-only secret once a secret is configured,
        so ``secrets rotate`` can move its rows over.
        """
        settings = settings if settings is not None else get_settings()
        found = configured_secrets(settings, generate=generate)
        if not found:
            raise SecretKeyMissing()
        return cls(found)

    # -- encryption --------------------------------------------------------------------

    def encrypt(self, token: str | SecretStr, *, credential_id: str) -> bytes:
        """Encrypt ``token`` for the credential row ``credential_id`` under the first secret."""
        raw = token.get_secret_value() if isinstance(token, SecretStr) else token
        if not isinstance(raw, str) or not raw:
            raise InvalidRequest("The TabPFN token is empty.")
        if not credential_id:
            raise InvalidRequest("A credential id is needed to bind the ciphertext to its row.")
        key = self._keys[0]
        header = _VERSION + key.fingerprint
        nonce = os.urandom(_NONCE_LENGTH)
        sealed = key.aead.encrypt(
            nonce, raw.encode("utf-8"), _associated_data(header, credential_id)
        )
        return header + nonce + sealed

    def decrypt(self, ciphertext: bytes, *, credential_id: str) -> SecretStr:
        """The token in ``ciphertext``, registered with the log redactor.

        Raises ``TokenDecryptionFailed`` (naming the settings, never the token) when no
        configured secret decrypts it: a wrong or missing secret, a tampered ciphertext, or
        one that belongs to another credential row.
        """
        failure = TokenDecryptionFailed(
            f"Cannot decrypt the TabPFN token of credential {credential_id!s}: it was not "
            f"encrypted with any secret in {_SECRET_SETTINGS}, or it was tampered with or "
            "copied from another row."
        )
        try:
            data = bytes(ciphertext)
        except TypeError:
            raise failure from None
        if len(data) < _MIN_CIPHERTEXT_LENGTH or data[:1] != _VERSION:
            raise failure
        header = data[:_HEADER_LENGTH]
        fingerprint = header[1:]
        key = next((k for k in self._keys if k.fingerprint == fingerprint), None)
        if key is None:
            raise failure
        nonce = data[_HEADER_LENGTH : _HEADER_LENGTH + _NONCE_LENGTH]
        sealed = data[_HEADER_LENGTH + _NONCE_LENGTH :]
        try:
            plain = key.aead.decrypt(nonce, sealed, _associated_data(header, credential_id))
            token = plain.decode("utf-8")
        except (InvalidTag, UnicodeDecodeError) as exc:
            raise failure from exc
        register_secret(token)
        return SecretStr(token)

    def is_current(self, ciphertext: bytes) -> bool:
        """Whether ``ciphertext`` was made with the first (current) secret."""
        data = bytes(ciphertext)
        return data[:_HEADER_LENGTH] == _VERSION + self._keys[0].fingerprint


# -- secrets from settings and the data dir ----------------------------------------------------


def configured_secrets(settings: Settings, *, generate: bool = False) -> list[SecretStr]:
    """The vault's secrets: the configured ones, then a persisted ``secret_key`` file if any.

    With nothing configured and no file, ``generate=True`` creates the file (0600) with a
    fresh secret and logs a warning that says where it is (never the secret itself). Only
    for the embedded SQLite store: on PostgreSQL only ``TABPFN_GATEWAY_SECRET_KEY`` (and the
    previous keys) count, so replicas and the CLI cannot silently hold different secrets.
    """
    found = settings.all_secret_keys()
    if not settings.is_sqlite:
        # A shared database needs a shared secret: never one from this machine's data dir
        # (an admin's home directory), never one generated here.
        return found
    path = Path(settings.data_dir) / SECRET_KEY_FILE
    persisted = _read_secret_file(path)
    if persisted is not None:
        found.append(SecretStr(persisted))
    elif not found and generate:
        value = read_or_create_secret_file(path, lambda: secrets.token_urlsafe(32))
        logger.warning(
            "No TABPFN_GATEWAY_SECRET_KEY is set: generated one and stored it in %s (mode "
            "0600). Anyone who can read that file can decrypt the stored TabPFN tokens. In "
            "production set TABPFN_GATEWAY_SECRET_KEY instead (and keep this file's secret "
            "in TABPFN_GATEWAY_PREVIOUS_SECRET_KEYS until `tabpfn-gateway secrets rotate` ran).",
            path,
        )
        found.append(SecretStr(value))
    return found


def _read_secret_file(path: Path) -> str | None:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot read the persisted secret file {path}: {exc.strerror}."
        ) from exc
    return value or None


def read_or_create_secret_file(path: Path, make: Callable[[], str]) -> str:
    """The secret stored in ``path``, or ``make()`` written there first with mode 0600.

    Creation is exclusive (``O_EXCL``), so two processes starting at once agree on one value.
    """
    existing = _read_secret_file(path)
    if existing is not None:
        return existing
    value = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        existing = _read_secret_file(path)
        if existing is None:
            raise ConfigurationError(f"The secret file {path} exists but is empty.") from None
        return existing
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot create the secret file {path} ({exc.strerror}); set the setting instead."
        ) from exc
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    # The umask may have narrowed the mode further; never let it widen it.
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)
    return value
