"""Upload URLs the gateway hands out: stateless, sealed (AES-GCM) tokens carrying the upstream URL.

A client never sees the upstream's signed URL: it gets ``{gateway}/gateway/upload/{token}``
where ``token`` seals the upstream URL, its required headers, the key and principal it was
issued to, the upload id the file belongs to, and an expiry. Any replica holding the same
secret can open it, so no state is kept between the ``prepare_*_upload`` call and the PUT.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tabpfn_gateway.errors import ConfigurationError, InvalidUpload

__all__ = ["UPLOAD_PATH_PREFIX", "UploadGrant", "UploadSigner"]

UPLOAD_PATH_PREFIX = "/gateway/upload/"

_VERSION = b"\x01"
_NONCE_BYTES = 12
_HKDF_INFO = b"tabpfn-gateway upload-url v1"
_AAD = b"tabpfn-gateway upload"
# What ``seal`` writes: base64url without padding (a length of 1 mod 4 is never one).
_TOKEN_TEXT = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class UploadGrant:
    """What an upload token carries. ``upstream_url`` is a credential of its own: not in repr."""

    upstream_url: str = field(repr=False)
    upstream_headers: Mapping[str, str] = field(repr=False)
    key_id: str
    owner_id: str
    credential_id: str | None
    dataset: str
    expires_at: float
    # The train or test set upload this file belongs to (None in tokens sealed before
    # upload ids were carried, whose ownership was recorded when they were prepared).
    upload_id: str | None = None


class UploadSigner:
    """Seals and opens upload tokens with keys derived (HKDF-SHA256) from the server secrets.

    The first secret seals; every secret opens, so a ``SECRET_KEY`` rotation does not break
    uploads already handed out. Tampered, truncated or foreign tokens raise ``InvalidUpload``
    with one message (no oracle); an authentic but expired one says it expired.
    """

    def __init__(
        self,
        secrets: Sequence[bytes],
        *,
        ttl_seconds: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secrets:
            raise ConfigurationError("The upload signer needs at least one secret.")
        self._aeads = [AESGCM(_derive(secret)) for secret in secrets]
        self._ttl = ttl_seconds
        self._clock = clock

    def __repr__(self) -> str:
        return f"UploadSigner(secrets={len(self._aeads)}, ttl_seconds={self._ttl})"

    def seal(
        self,
        *,
        upstream_url: str,
        upstream_headers: Mapping[str, str],
        key_id: str,
        owner_id: str,
        credential_id: str | None,
        dataset: str,
        upload_id: str | None = None,
        upstream_expires_at: float | None = None,
    ) -> tuple[str, float]:
        """A token for one upstream signed URL, and when it expires (epoch seconds).

        The expiry is the sooner of the gateway's TTL and the upstream URL's own.
        """
        expires_at = self._clock() + self._ttl
        if upstream_expires_at is not None:
            expires_at = min(expires_at, upstream_expires_at)
        payload = {
            "u": upstream_url,
            "h": dict(upstream_headers),
            "k": key_id,
            "o": owner_id,
            "c": credential_id,
            "d": dataset,
            "x": expires_at,
        }
        if upload_id is not None:
            payload["i"] = upload_id
        plaintext = json.dumps(payload, separators=(",", ":")).encode()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = _VERSION + nonce + self._aeads[0].encrypt(nonce, plaintext, _AAD)
        token = base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")
        return token, expires_at

    def open(self, token: str) -> UploadGrant:
        """The grant inside ``token``; ``InvalidUpload`` if it is not ours, broken or expired."""
        raw = _decode_token(token)
        if len(raw) <= 1 + _NONCE_BYTES or raw[:1] != _VERSION:
            raise InvalidUpload()
        nonce, body = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
        plaintext: bytes | None = None
        for aead in self._aeads:
            try:
                plaintext = aead.decrypt(nonce, body, _AAD)
                break
            except InvalidTag:
                continue
        if plaintext is None:
            raise InvalidUpload()
        payload: dict[str, Any] = json.loads(plaintext)
        grant = UploadGrant(
            upstream_url=payload["u"],
            upstream_headers=payload["h"],
            key_id=payload["k"],
            owner_id=payload["o"],
            credential_id=payload["c"],
            dataset=payload["d"],
            expires_at=float(payload["x"]),
            upload_id=payload.get("i"),
        )
        if self._clock() >= grant.expires_at:
            raise InvalidUpload("The upload URL has expired; prepare the upload again.")
        return grant


def _decode_token(token: str) -> bytes:
    """The bytes of ``token``, which must be exactly what ``seal`` wrote (unpadded base64url).

    The standard decoder forgives padding, stray characters and non-zero trailing bits, so
    one sealed token would have many spellings (and one upload many log and cache keys):
    only the canonical one is accepted.
    """
    if not _TOKEN_TEXT.fullmatch(token):
        raise InvalidUpload()
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidUpload() from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        raise InvalidUpload()
    return raw


def _derive(secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret)
