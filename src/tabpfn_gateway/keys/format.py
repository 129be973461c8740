"""The gateway key format: ``tpg_<key id>_<secret><checksum>``, its parser and its scanner regex.

A key is four parts, all in ``[0-9A-Za-z_]`` so that a double click selects it whole and the
log redactor (``tpga?_[0-9A-Za-z_]{8,}``) always matches it:

- the prefix ``tpg_`` (``tpga_`` for admin keys),
- a public key id of 12 base62 characters (the database lookup key),
- ``_``, then a secret of 32 base62 characters (about 190 random bits, from ``secrets``),
- a checksum of 6 base62 characters: CRC32 of everything before it, as GitHub tokens do,
  so a mistyped or truncated key is refused without a database lookup.
"""

from __future__ import annotations

import re
import secrets
import zlib
from dataclasses import dataclass, field

from tabpfn_gateway.errors import InvalidKey

__all__ = [
    "ADMIN_PREFIX",
    "KEY_ID_LENGTH",
    "KEY_PATTERN",
    "PREFIX",
    "SECRET_LENGTH",
    "ParsedKey",
    "base62",
    "checksum",
    "format_key",
    "new_key_id",
    "new_secret",
    "parse_key",
]

PREFIX = "tpg_"
ADMIN_PREFIX = "tpga_"
KEY_ID_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
BASE62_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

#: Matches a whole gateway key anywhere in text (for secret scanners; see docs/keys.md).
KEY_PATTERN: re.Pattern[str] = re.compile(
    r"\b(?P<prefix>tpga?_)(?P<key_id>[0-9A-Za-z]{12})_(?P<secret>[0-9A-Za-z]{32})"
    r"(?P<checksum>[0-9A-Za-z]{6})\b"
)

# Longest possible key; anything longer is refused before the regex sees it.
_MAX_KEY_LENGTH = len(ADMIN_PREFIX) + KEY_ID_LENGTH + 1 + SECRET_LENGTH + CHECKSUM_LENGTH


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A well-formed key split into its parts. ``secret`` never appears in the repr."""

    key_id: str
    secret: str = field(repr=False)
    admin: bool = False

    @property
    def prefix(self) -> str:
        """``tpga_`` for admin keys, ``tpg_`` for the others."""
        return ADMIN_PREFIX if self.admin else PREFIX

    @property
    def display_prefix(self) -> str:
        """What humans see in listings: prefix and key id, e.g. ``tpg_3xT9kQ2mLp0a``."""
        return self.prefix + self.key_id

    @property
    def body(self) -> str:
        """The key without its checksum: what the checksum covers and the hash binds."""
        return f"{self.prefix}{self.key_id}_{self.secret}"

    @property
    def plaintext(self) -> str:
        """The full key as the user holds it."""
        body = self.body
        return body + checksum(body)


def base62(number: int, width: int) -> str:
    """``number`` (>= 0) in base62, left-padded with ``0`` to ``width`` characters."""
    if number < 0:
        raise ValueError("base62 encodes non-negative numbers only")
    digits: list[str] = []
    while number:
        number, remainder = divmod(number, 62)
        digits.append(BASE62_ALPHABET[remainder])
    return "".join(reversed(digits)).rjust(width, "0")


def checksum(body: str) -> str:
    """The 6-character base62 CRC32 of ``body`` (62**6 > 2**32, so it always fits)."""
    return base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62_ALPHABET) for _ in range(length))


def new_key_id() -> str:
    """A fresh random public key id (about 71 bits: collisions are retried, not expected)."""
    return _random_base62(KEY_ID_LENGTH)


def new_secret() -> str:
    """A fresh key secret: 32 base62 characters from ``secrets``, about 190 bits."""
    return _random_base62(SECRET_LENGTH)


def format_key(key_id: str, secret: str, *, admin: bool = False) -> str:
    """The plaintext key for these parts, checksum included."""
    return ParsedKey(key_id=key_id, secret=secret, admin=admin).plaintext


def parse_key(text: str) -> ParsedKey:
    """Split a key into its parts, or raise ``InvalidKey``; no I/O, nothing else raised.

    Surrounding whitespace (a pasted newline) is ignored. The checksum is checked here, so
    a mistyped key never costs a database lookup. The error says nothing about which part
    is wrong: malformed, unknown and wrong keys all get the same ``InvalidKey``.
    """
    if not isinstance(text, str):
        raise InvalidKey()
    text = text.strip()
    if len(text) > _MAX_KEY_LENGTH:
        raise InvalidKey()
    match = KEY_PATTERN.fullmatch(text)
    if match is None:
        raise InvalidKey()
    parsed = ParsedKey(
        key_id=match["key_id"], secret=match["secret"], admin=match["prefix"] == ADMIN_PREFIX
    )
    if checksum(parsed.body) != match["checksum"]:
        raise InvalidKey()
    return parsed
