"""Hashing key secrets: keyed HMAC-SHA256 with a server-side pepper, or bcrypt/argon2 via passlib.

Key secrets carry about 190 random bits, so a slow hash buys nothing against guessing; what
matters is that a database dump alone is useless, which the pepper (never stored in the
database) gives. bcrypt and argon2 stay selectable through passlib's ``CryptContext`` (the
``libpass`` fork); a key hashed under one scheme is re-hashed under the configured one the
next time it verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import logging
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from tabpfn_gateway.errors import ConfigurationError

if TYPE_CHECKING:
    from tabpfn_gateway.config import Settings

__all__ = [
    "HASH_SCHEMES",
    "HMAC_SHA256",
    "PEPPER_FILE",
    "KeyHasher",
    "SecretMatch",
    "peppers_from_settings",
]

logger = logging.getLogger(__name__)

HMAC_SHA256: Final = "hmac-sha256"
BCRYPT: Final = "bcrypt"
ARGON2: Final = "argon2"
HASH_SCHEMES: Final = (HMAC_SHA256, BCRYPT, ARGON2)

# passlib scheme -> (module its backend needs, the extra that installs it)
_SLOW_BACKENDS = {BCRYPT: ("bcrypt", "bcrypt"), ARGON2: ("argon2", "argon2")}

# What an unknown key id is compared against, so that it costs what a wrong secret costs.
_DUMMY_MESSAGE = b"tpg_000000000000_00000000000000000000000000000000"


class SecretMatch:
    """How a secret matched a stored hash: ``stale`` means re-hash it under the current config."""

    __slots__ = ("stale",)

    def __init__(self, *, stale: bool) -> None:
        self.stale = stale


class KeyHasher:
    """Hashes key bodies under one configured scheme and verifies them under any known one.

    ``pepper`` keys the HMAC; ``previous_peppers`` are tried after it (a pepper derived from a
    secret that has since been rotated), and a match under one of them is reported stale so
    the caller re-hashes it under ``pepper``. The number of HMACs computed does not depend on
    whether, or under which pepper, a secret matches.
    """

    def __init__(
        self,
        pepper: bytes,
        scheme: str = HMAC_SHA256,
        *,
        previous_peppers: Sequence[bytes] = (),
    ) -> None:
        if scheme not in HASH_SCHEMES:
            raise ConfigurationError(
                f"Unknown key hash scheme {scheme!r}; TABPFN_GATEWAY_KEY_HASH_SCHEME must be "
                f"one of {', '.join(HASH_SCHEMES)}."
            )
        if len(pepper) < 16:
            raise ConfigurationError(
                "The key pepper is shorter than 16 bytes; set TABPFN_GATEWAY_KEY_PEPPER to a "
                "long random value (or leave it unset to derive one)."
            )
        self.scheme = scheme
        self._pepper = pepper
        self._previous_peppers = tuple(p for p in previous_peppers if p != pepper)
        self._contexts: dict[str, Any] = {}
        self._dummy_hash: str | None = None

    def __repr__(self) -> str:
        return f"KeyHasher(scheme={self.scheme!r})"

    # -- hashing -----------------------------------------------------------------------

    def hash(self, message: bytes) -> str:
        """The stored form of ``message`` under the configured scheme."""
        if self.scheme == HMAC_SHA256:
            return _hmac_hex(self._pepper, message)
        return str(self._context(self.scheme).hash(message))

    def verify(self, message: bytes, stored_hash: str, stored_scheme: str) -> SecretMatch | None:
        """Whether ``message`` matches ``stored_hash`` (hashed under ``stored_scheme``).

        Returns None on a mismatch, else a SecretMatch saying whether to re-hash. Constant
        time in the secret for HMAC (``hmac.compare_digest``); passlib's verifiers are too.
        """
        if stored_scheme == HMAC_SHA256:
            matched_at: int | None = None
            for index, pepper in enumerate((self._pepper, *self._previous_peppers)):
                if hmac.compare_digest(_hmac_hex(pepper, message), stored_hash):
                    matched_at = index if matched_at is None else matched_at
            if matched_at is None:
                return None
            return SecretMatch(stale=matched_at > 0 or self.scheme != HMAC_SHA256)
        if stored_scheme in _SLOW_BACKENDS:
            try:
                ok = bool(self._context(stored_scheme).verify(message, stored_hash))
            except ValueError:  # a corrupt stored hash is a mismatch, not a crash
                return None
            return SecretMatch(stale=self.scheme != stored_scheme) if ok else None
        return None

    def waste_time(self) -> None:
        """Do the work of one failed ``verify`` under the configured scheme (unknown key ids)."""
        if self._dummy_hash is None:
            self._dummy_hash = self.hash(_DUMMY_MESSAGE + b"!")
        self.verify(_DUMMY_MESSAGE, self._dummy_hash, self.scheme)

    # -- passlib -----------------------------------------------------------------------

    def _context(self, scheme: str) -> Any:
        context = self._contexts.get(scheme)
        if context is None:
            module, extra = _SLOW_BACKENDS[scheme]
            try:
                importlib.import_module(module)
                from passlib.context import CryptContext
            except ImportError as exc:
                raise ConfigurationError(
                    f"Key hash scheme {scheme!r} needs an extra: "
                    f"pip install tabpfn-gateway[{extra}]"
                ) from exc
            context = CryptContext(schemes=[scheme])
            self._contexts[scheme] = context
        return context


def _hmac_hex(pepper: bytes, message: bytes) -> str:
    return hmac.new(pepper, message, hashlib.sha256).hexdigest()


# -- the pepper, from settings ------------------------------------------------------------------

PEPPER_FILE = "key_pepper"


def peppers_from_settings(settings: Settings) -> tuple[bytes, list[bytes]]:
    """The HMAC pepper to hash with, and older peppers still accepted (re-hashed on use).

    In order: ``TABPFN_GATEWAY_KEY_PEPPER`` if set; else the pepper persisted in
    ``data_dir / "key_pepper"``; else one derived by HKDF from the current secret key and
    persisted there (mode 0600), so rotating ``TABPFN_GATEWAY_SECRET_KEY`` later keeps every
    key valid; else (no secret at all) a random one, persisted, with a warning. Peppers derived
    from every configured secret, and a persisted one that a configured pepper overrides, are
    accepted too: keys made under them verify and are re-hashed under the current pepper.
    """
    from tabpfn_gateway.vault import configured_secrets, derive_key, read_or_create_secret_file

    known_secrets = configured_secrets(settings)
    derived = [derive_key(s, "key pepper").hex().encode() for s in known_secrets]
    if not settings.is_sqlite:
        # A shared database: the pepper comes from settings alone (derived from the shared
        # secret is deterministic), never from a file on this machine.
        if settings.key_pepper is not None:
            primary = settings.key_pepper.get_secret_value().encode("utf-8")
        elif derived:
            primary = derived[0]
        else:
            from tabpfn_gateway.errors import SecretKeyMissing

            raise SecretKeyMissing(
                "TABPFN_GATEWAY_SECRET_KEY is not set: a shared database needs the same "
                "secret on every replica and CLI (nothing is generated for it)."
            )
        return primary, [p for p in dict.fromkeys(derived) if p != primary]
    path = Path(settings.data_dir) / PEPPER_FILE
    persisted = _read_pepper_file(path)
    if settings.key_pepper is not None:
        primary = settings.key_pepper.get_secret_value().encode("utf-8")
    elif persisted is not None:
        primary = persisted
    elif derived:
        try:
            primary = read_or_create_secret_file(path, derived[0].decode).encode()
        except ConfigurationError:
            # Derivation is deterministic, so an unwritable data dir only costs rotation safety.
            logger.warning(
                "Cannot persist the key pepper in %s; it stays derived from "
                "TABPFN_GATEWAY_SECRET_KEY, so set TABPFN_GATEWAY_KEY_PEPPER before rotating it.",
                path,
            )
            primary = derived[0]
    else:
        primary = read_or_create_secret_file(path, lambda: secrets.token_hex(32)).encode()
        logger.warning(
            "Neither TABPFN_GATEWAY_KEY_PEPPER nor TABPFN_GATEWAY_SECRET_KEY is set: using a "
            "generated key pepper stored in %s (mode 0600). Gateway keys verify only where "
            "that file is; in production set TABPFN_GATEWAY_KEY_PEPPER.",
            path,
        )
    previous = [p for p in (persisted, *derived) if p is not None and p != primary]
    return primary, list(dict.fromkeys(previous))


def _read_pepper_file(path: Path) -> bytes | None:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot read the key pepper file {path}: {exc.strerror}."
        ) from exc
    return value.encode("utf-8") or None
