"""KeyManager: creates, verifies, rotates, disables and revokes gateway keys.

Verification is one indexed lookup by the key's public id and one constant-time compare, so
it costs the same with ten keys or a hundred thousand. Results are cached briefly in process
(keyed by a hash of the key), and ``last_used_at`` is coalesced in memory and written in
batches, so a busy key costs no write per request.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tabpfn_gateway.errors import (
    Conflict,
    CredentialNotFound,
    IdempotencyKeyReused,
    InsufficientScope,
    InvalidKey,
    InvalidRequest,
    KeyDisabled,
    KeyExpired,
    KeyNotFound,
    KeyRevoked,
    PrincipalNotFound,
    StoreError,
)
from tabpfn_gateway.keys.cache import VerifiedKeyCache, cache_fingerprint
from tabpfn_gateway.keys.format import ADMIN_PREFIX, ParsedKey, new_key_id, new_secret, parse_key
from tabpfn_gateway.keys.hashing import HMAC_SHA256, KeyHasher, SecretMatch, peppers_from_settings
from tabpfn_gateway.store.base import CHANGES_COUNTER
from tabpfn_gateway.store.records import ApiKey, AuditEvent, KeyChanges, Page, new_id, utcnow

if TYPE_CHECKING:
    from tabpfn_gateway.config import Settings
    from tabpfn_gateway.store.base import Store

__all__ = [
    "ALL_SCOPES",
    "DEFAULT_SCOPES",
    "ROTATION_REPLAY_WINDOW",
    "SCOPE_ADMIN",
    "SCOPE_INFERENCE",
    "SCOPE_USAGE",
    "CreatedKey",
    "KeyManager",
    "has_scope",
    "require_scope",
    "require_usable",
]

logger = logging.getLogger(__name__)
# Log lines name keys by their bare key id: the redactor hides anything shaped tpg_...,
# display prefixes included.

SCOPE_INFERENCE: Final = "inference"  # TabPFN calls: settings, uploads, fit, predict, cost estimate
SCOPE_USAGE: Final = "usage"  # read own usage
SCOPE_ADMIN: Final = "admin"  # admin API and CLI-equivalent operations; implies every scope
ALL_SCOPES: Final = (SCOPE_INFERENCE, SCOPE_USAGE, SCOPE_ADMIN)
DEFAULT_SCOPES: Final = (SCOPE_INFERENCE, SCOPE_USAGE)

#: How long a repeated ``rotate(..., request_id=...)`` can still answer with the new key.
ROTATION_REPLAY_WINDOW: Final = timedelta(hours=24)

_MAX_NAME_LENGTH = 200
_MAX_REQUEST_ID_LENGTH = 200
_CREATE_ATTEMPTS = 5
# Sealed rotation replays: version | HMAC tag of the actor (16) | nonce (12) | AES-GCM output.
# Version 1 (nonce | output, bound to key id and request id only) is never replayed: it names
# no caller.
_SEALED_VERSION = b"\x02"
_ACTOR_TAG_LENGTH = 16


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A key just created or rotated: the record, and the plaintext shown this once."""

    record: ApiKey
    plaintext: str = field(repr=False)


class KeyManager:
    """Everything done to gateway keys, over any ``Store``.

    ``pepper`` keys the HMAC hash (``previous_peppers`` are still accepted and re-hashed);
    ``hash_scheme`` is how new secrets are hashed (``hmac-sha256``, ``bcrypt``, ``argon2``);
    ``cache_ttl`` is how long a verified key is trusted without a lookup (0 disables);
    ``last_used_flush`` is the most seconds between ``last_used_at`` writes; ``clock`` gives
    aware UTC datetimes (expiry, audit times) and ``monotonic`` measures the intervals.
    """

    def __init__(
        self,
        store: Store,
        *,
        pepper: bytes,
        hash_scheme: str = HMAC_SHA256,
        cache_ttl: float = 5.0,
        last_used_flush: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
        previous_peppers: Iterable[bytes] = (),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._hasher = KeyHasher(pepper, hash_scheme, previous_peppers=tuple(previous_peppers))
        self._cache = VerifiedKeyCache(cache_ttl, monotonic=monotonic)
        self._rotation_aead = AESGCM(
            HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=b"tabpfn-gateway/v1",
                info=b"key rotation replay",
            ).derive(pepper)
        )
        # Binds a sealed replay to the actor who rotated, without storing the actor's name.
        self._rotation_actor_key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"tabpfn-gateway/v1",
            info=b"key rotation replay actor",
        ).derive(pepper)
        self._clock = clock
        self._monotonic = monotonic
        self._last_used_flush = last_used_flush
        self._pending_last_used: dict[str, datetime] = {}
        self._last_flush = monotonic()
        self._pending_lock = threading.Lock()
        self._listeners: list[Callable[[str], None]] = []
        self._owns_store = False

    def __repr__(self) -> str:
        return f"KeyManager(hash_scheme={self.hash_scheme!r}, cache_ttl={self._cache.ttl!r})"

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        cache_ttl: float | None = None,
    ) -> KeyManager:
        """A KeyManager configured from settings (pepper, scheme, cache TTL, flush interval).

        Without ``store``, opens the one ``settings.database_url`` names and closes it in
        ``close()``. See ``keys.hashing.peppers_from_settings`` for where the pepper comes from.
        ``cache_ttl`` overrides ``key_cache_ttl_seconds`` (the gateway passes 0: its
        authoriser caches whole decisions in front of this).
        """
        if settings is None:
            from tabpfn_gateway.config import get_settings

            settings = get_settings()
        pepper, previous = peppers_from_settings(settings)
        owns_store = store is None
        if store is None:
            from tabpfn_gateway.store import open_store

            store = open_store(settings)
        manager = cls(
            store,
            pepper=pepper,
            previous_peppers=previous,
            hash_scheme=settings.key_hash_scheme,
            cache_ttl=settings.key_cache_ttl_seconds if cache_ttl is None else cache_ttl,
            last_used_flush=settings.last_used_flush_seconds,
        )
        manager._owns_store = owns_store
        return manager

    @property
    def hash_scheme(self) -> str:
        """The scheme new secrets are hashed under."""
        return self._hasher.scheme

    @property
    def store(self) -> Store:
        """The store the keys are kept in."""
        return self._store

    # -- creating --------------------------------------------------------------------------

    def create(
        self,
        owner: str,
        credential: str | None,
        name: str,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        expires_at: datetime | None = None,
        *,
        admin: bool = False,
        actor: str = "system",
    ) -> CreatedKey:
        """Create a key for principal ``owner`` bound to upstream credential ``credential``.

        Admin keys (``admin=True``: prefix ``tpga_``, ``admin`` scope added) may have no
        credential; every other key needs one. The plaintext is in the result and nowhere
        else: only a hash of the secret is stored. Raises ``PrincipalNotFound``,
        ``CredentialNotFound`` or ``InvalidRequest`` (bad name, scopes or expiry).
        """
        now = self._clock()
        name = _check_name(name)
        granted = _check_scopes(scopes, admin=admin)
        if expires_at is not None:
            expires_at = _check_future(expires_at, now, "expires_at")
        if credential is None and not admin:
            raise InvalidRequest(
                "A key needs an upstream credential (only admin keys may have none)."
            )
        principal = self._store.get_principal(owner)
        if principal is None:
            raise PrincipalNotFound("No principal with that id.")
        if credential is not None and self._store.get_credential(credential) is None:
            raise CredentialNotFound("No upstream credential with that id.")
        for _ in range(_CREATE_ATTEMPTS):
            parsed = ParsedKey(key_id=new_key_id(), secret=new_secret(), admin=admin)
            plaintext = parsed.plaintext
            record = ApiKey(
                key_id=parsed.key_id,
                name=name,
                owner_id=principal.id,
                credential_id=credential,
                scopes=granted,
                secret_hash=self._hasher.hash(parsed.body.encode("ascii")),
                hash_scheme=self._hasher.scheme,
                display_prefix=parsed.display_prefix,
                last4=plaintext[-4:],
                created_at=now,
                expires_at=expires_at,
            )
            audit = self._audit(
                actor,
                "key.create",
                record.key_id,
                now,
                name=name,
                owner_id=principal.id,
                credential_id=credential,
                scopes=list(granted),
                admin=admin,
                expires_at=expires_at.isoformat() if expires_at else None,
            )
            try:
                with self._store.atomic() as tx:
                    stored = tx.add_key(record)
                    tx.record_audit(audit)
            except Conflict:
                # A key id collision (about 2**-71 per pair) is retried; anything else is real.
                if self._store.get_key(parsed.key_id) is None:
                    raise
                continue
            logger.info("Created key id %s for principal %s", stored.key_id, principal.id)
            return CreatedKey(record=stored, plaintext=plaintext)
        raise Conflict("Could not find a free key id; try again.")

    # -- verifying -------------------------------------------------------------------------

    def verify(self, key: str, *, scope: str | None = None) -> ApiKey:
        """The record of ``key`` if it may be used (for ``scope``, when given).

        ``InvalidKey`` for a malformed key, an unknown key id or a wrong secret, alike (each
        refusal costs two hash comparisons, dummy hashes standing in for what is missing);
        then ``KeyRevoked``, ``KeyDisabled``, ``KeyExpired`` (told only to a caller who holds
        the right secret);
        ``InsufficientScope``. A database failure is ``StoreUnavailable``/``StoreError``,
        never an invalid key. A malformed key never reaches the store.
        """
        parsed = parse_key(key)
        now = self._clock()
        fingerprint = cache_fingerprint(parsed.plaintext)
        cached = self._cache.get(fingerprint, now)
        if cached is not None:
            require_usable(cached, now)
            require_scope(cached, scope)
            self._note_use(cached.key_id, now)
            return cached

        record = self._store.get_key(parsed.key_id)
        message = parsed.body.encode("ascii")
        match, matched_previous = self._match_secret(record, message, now)
        if record is None or match is None:
            raise InvalidKey()
        require_usable(record, now)
        if match.stale:
            record = self._rehash(record, message, previous=matched_previous)
        if record.rotation_ciphertext is not None:
            record = self._expire_rotation_replay(record, now)
        self._cache.put(
            fingerprint,
            record,
            valid_until=record.previous_valid_until if matched_previous else None,
        )
        require_scope(record, scope)
        self._note_use(record.key_id, now)
        return record

    def _match_secret(
        self, record: ApiKey | None, message: bytes, now: datetime
    ) -> tuple[SecretMatch | None, bool]:
        # Every refusal compares the secret against two hashes: the current one and the
        # previous one of a rotation, or a dummy of the configured scheme where there is no
        # key or no live previous secret. So an unknown key id, a wrong secret and a wrong
        # secret during a rotation cost the same (only a match may stop after one).
        if record is None:
            self._hasher.waste_time()
        else:
            match = self._hasher.verify(message, record.secret_hash, record.hash_scheme)
            if match is not None:
                return match, False
        if (
            record is not None
            and record.previous_secret_hash is not None
            and record.previous_hash_scheme is not None
            and record.previous_valid_until is not None
            and now < record.previous_valid_until
        ):
            match = self._hasher.verify(
                message, record.previous_secret_hash, record.previous_hash_scheme
            )
            if match is not None:
                return match, True
        else:
            self._hasher.waste_time()
        return None, False

    def _rehash(self, record: ApiKey, message: bytes, *, previous: bool) -> ApiKey:
        new_hash = self._hasher.hash(message)
        changes: KeyChanges
        expected: KeyChanges
        if previous:
            changes = {"previous_secret_hash": new_hash, "previous_hash_scheme": self.hash_scheme}
            expected = {"previous_secret_hash": record.previous_secret_hash}
        else:
            changes = {"secret_hash": new_hash, "hash_scheme": self.hash_scheme}
            expected = {"secret_hash": record.secret_hash}
        try:
            updated = self._store.update_key(record.key_id, changes, expected=expected)
        except StoreError as exc:
            # The key did verify; re-hashing is an improvement that can wait for next time.
            logger.warning("Could not re-hash key id %s (%s)", record.key_id, exc.error_code)
            return record
        return updated if updated is not None else record

    def _expire_rotation_replay(self, record: ApiKey, now: datetime) -> ApiKey:
        # The sealed copy of a rotated key exists only to answer a retried rotation; past the
        # replay window it is dropped so the database holds no recoverable key for long.
        if record.rotated_at is None or now - record.rotated_at <= ROTATION_REPLAY_WINDOW:
            return record
        try:
            updated = self._store.update_key(
                record.key_id,
                {"rotation_ciphertext": None},
                expected={"rotated_at": record.rotated_at},
            )
        except StoreError as exc:
            logger.warning(
                "Could not drop the rotation replay of key id %s (%s)",
                record.key_id,
                exc.error_code,
            )
            return record
        return updated if updated is not None else record

    # -- reading ---------------------------------------------------------------------------

    def get(self, key_id: str) -> ApiKey:
        """The key with this public id; ``KeyNotFound`` if there is none."""
        record = self._store.get_key(key_id)
        if record is None:
            raise KeyNotFound("No gateway key with that id.")
        return record

    def list(
        self, *, owner: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[ApiKey]:
        """Keys (of principal id ``owner``, if given), newest first, one page."""
        return self._store.list_keys(owner_id=owner, limit=limit, cursor=cursor)

    # -- changing --------------------------------------------------------------------------

    def revoke(self, key_id: str, *, actor: str = "system") -> ApiKey:
        """Revoke a key for good (idempotent: revoking a revoked key changes nothing)."""
        record = self.get(key_id)
        if record.revoked_at is not None:
            return record
        now = self._clock()
        # A revoked key's sealed rotation replay could only ever be refused: drop it now.
        return self._change(
            record, {"revoked_at": now, "rotation_ciphertext": None}, actor, "key.revoke", now
        )

    def disable(self, key_id: str, *, actor: str = "system") -> ApiKey:
        """Refuse the key until ``enable`` (idempotent)."""
        record = self.get(key_id)
        if record.disabled_at is not None or record.revoked_at is not None:
            return record
        now = self._clock()
        return self._change(record, {"disabled_at": now}, actor, "key.disable", now)

    def enable(self, key_id: str, *, actor: str = "system") -> ApiKey:
        """Accept a disabled key again; a revoked key stays revoked (``KeyRevoked``)."""
        record = self.get(key_id)
        if record.revoked_at is not None:
            raise KeyRevoked("A revoked key cannot be enabled again; create a new key.")
        if record.disabled_at is None:
            return record
        return self._change(record, {"disabled_at": None}, actor, "key.enable", self._clock())

    def set_expiry(
        self, key_id: str, expires_at: datetime | None, *, actor: str = "system"
    ) -> ApiKey:
        """Move the key's expiry to ``expires_at`` (aware, in the future) or remove it (None).

        A revoked key stays revoked (``KeyRevoked``); a past expiry is ``InvalidRequest``
        (disable or revoke the key to stop it now).
        """
        record = self.get(key_id)
        if record.revoked_at is not None:
            raise KeyRevoked("A revoked key cannot be changed; create a new key.")
        now = self._clock()
        if expires_at is not None:
            expires_at = _check_future(expires_at, now, "expires_at")
        if record.expires_at == expires_at:
            return record
        return self._change(
            record,
            {"expires_at": expires_at},
            actor,
            "key.expiry",
            now,
            expires_at=expires_at.isoformat() if expires_at else None,
            previous=record.expires_at.isoformat() if record.expires_at else None,
        )

    def rotate(
        self,
        key_id: str,
        *,
        grace: timedelta = timedelta(hours=24),
        request_id: str | None = None,
        actor: str = "system",
    ) -> CreatedKey:
        """Give the key a new secret; the old one keeps working for ``grace`` (never past expiry).

        Rotating again with the same ``request_id`` (a retried request) answers with the same
        new key, for up to ``ROTATION_REPLAY_WINDOW`` and while no other rotation came in
        between (only the latest request id is kept). Only the same ``actor`` gets it back
        (anyone else: ``IdempotencyKeyReused``), never once the key is revoked (``KeyRevoked``)
        or expired (``KeyExpired``); replays and refused replays are audited
        (``key.rotate.replayed``, ``key.rotate.replay_refused``). Concurrent rotations are
        settled by a compare-and-set on the stored hash: the loser gets ``Conflict``. Only one
        previous secret is kept: rotating twice ends the first secret's grace at once.
        """
        if not isinstance(grace, timedelta) or grace < timedelta(0):
            raise InvalidRequest("grace must be a non-negative timedelta.")
        try:
            self._clock() + grace
        except OverflowError:
            raise InvalidRequest("grace reaches past the calendar's edge.") from None
        if request_id is not None and (
            not isinstance(request_id, str)
            or not request_id.strip()
            or len(request_id) > _MAX_REQUEST_ID_LENGTH
        ):
            raise InvalidRequest(
                f"request_id must be a non-empty string of at most {_MAX_REQUEST_ID_LENGTH} "
                "characters."
            )
        record = self.get(key_id)
        now = self._clock()
        if request_id is not None and record.rotation_request_id == request_id:
            return self._replay_rotation(record, request_id, actor, now)
        if record.revoked_at is not None:
            raise KeyRevoked("A revoked key cannot be rotated; create a new key.")
        if record.expires_at is not None and now >= record.expires_at:
            raise KeyExpired("An expired key cannot be rotated; create a new key.")

        parsed = ParsedKey(
            key_id=record.key_id,
            secret=new_secret(),
            admin=record.display_prefix.startswith(ADMIN_PREFIX),
        )
        plaintext = parsed.plaintext
        new_hash = self._hasher.hash(parsed.body.encode("ascii"))
        keep_previous = grace > timedelta(0)
        valid_until = now + grace
        if record.expires_at is not None:
            valid_until = min(valid_until, record.expires_at)
        changes: KeyChanges = {
            "secret_hash": new_hash,
            "hash_scheme": self.hash_scheme,
            "last4": plaintext[-4:],
            "previous_secret_hash": record.secret_hash if keep_previous else None,
            "previous_hash_scheme": record.hash_scheme if keep_previous else None,
            "previous_valid_until": valid_until if keep_previous else None,
            "rotated_at": now,
            "rotation_request_id": request_id,
            "rotation_ciphertext": (
                self._seal_rotation(plaintext, record.key_id, request_id, actor)
                if request_id
                else None
            ),
        }
        audit = self._audit(
            actor,
            "key.rotate",
            record.key_id,
            now,
            grace_seconds=grace.total_seconds(),
            previous_valid_until=valid_until.isoformat() if keep_previous else None,
            request_id=request_id,
        )
        with self._store.atomic() as tx:
            updated = tx.update_key(
                record.key_id, changes, expected={"secret_hash": record.secret_hash}
            )
            won = updated is not None and updated.secret_hash == new_hash
            if won:
                tx.record_audit(audit)
                tx.bump_counter(CHANGES_COUNTER)
        if updated is None:
            raise KeyNotFound("No gateway key with that id.")
        self._changed(record.key_id)
        if not won:
            if request_id is not None and updated.rotation_request_id == request_id:
                return self._replay_rotation(updated, request_id, actor, now)
            raise Conflict("The key was rotated concurrently; look at it again and retry.")
        logger.info("Rotated key id %s", updated.key_id)
        return CreatedKey(record=updated, plaintext=plaintext)

    def _actor_tag(self, key_id: str, actor: str) -> bytes:
        message = f"{key_id}\x00{actor}".encode("utf-8", "surrogatepass")
        digest = hmac.new(self._rotation_actor_key, message, "sha256").digest()
        return digest[:_ACTOR_TAG_LENGTH]

    @staticmethod
    def _rotation_aad(key_id: str, request_id: str, actor: str) -> bytes:
        return f"{key_id}\x00{request_id}\x00{actor}".encode("utf-8", "surrogatepass")

    def _seal_rotation(self, plaintext: str, key_id: str, request_id: str, actor: str) -> bytes:
        nonce = os.urandom(12)
        aad = self._rotation_aad(key_id, request_id, actor)
        return (
            _SEALED_VERSION
            + self._actor_tag(key_id, actor)
            + nonce
            + self._rotation_aead.encrypt(nonce, plaintext.encode("ascii"), aad)
        )

    def _replay_rotation(
        self, record: ApiKey, request_id: str, actor: str, now: datetime
    ) -> CreatedKey:
        gone = Conflict(
            f"Rotation request {request_id!r} was already applied and its new key can no "
            "longer be shown; rotate again with a new request id."
        )
        # The request id is no secret (the key.rotate audit event names it): the new key is
        # answered only to the actor who rotated, and never for a key that is gone.
        if record.revoked_at is not None:
            self._refuse_replay(record, request_id, actor, now, "revoked")
            raise KeyRevoked("The key was revoked after this rotation; its new key is not shown.")
        if record.expires_at is not None and now >= record.expires_at:
            self._refuse_replay(record, request_id, actor, now, "expired")
            raise KeyExpired("The key expired after this rotation; its new key is not shown.")
        sealed = record.rotation_ciphertext
        if sealed is None or record.rotated_at is None:
            raise gone
        if now - record.rotated_at > ROTATION_REPLAY_WINDOW:
            raise gone
        header = len(_SEALED_VERSION) + _ACTOR_TAG_LENGTH
        if not sealed.startswith(_SEALED_VERSION) or len(sealed) <= header + 12:
            raise gone  # sealed before replays named their caller
        if not hmac.compare_digest(sealed[1:header], self._actor_tag(record.key_id, actor)):
            self._refuse_replay(record, request_id, actor, now, "another_actor")
            raise IdempotencyKeyReused(
                f"Rotation request {request_id!r} was made by another caller; only that caller "
                "can replay it. Rotate with a request id of your own."
            )
        nonce, ciphertext = sealed[header : header + 12], sealed[header + 12 :]
        aad = self._rotation_aad(record.key_id, request_id, actor)
        try:
            plaintext = self._rotation_aead.decrypt(nonce, ciphertext, aad).decode("ascii")
            parsed = parse_key(plaintext)
        except (InvalidTag, UnicodeDecodeError, InvalidKey):
            # Sealed under another pepper, or damaged: the key cannot be recovered.
            raise gone from None
        if (
            self._hasher.verify(parsed.body.encode("ascii"), record.secret_hash, record.hash_scheme)
            is None
        ):
            raise gone
        # A replay hands out a key: audited before it is answered, or not answered at all.
        self._store.record_audit(
            self._audit(actor, "key.rotate.replayed", record.key_id, now, request_id=request_id)
        )
        logger.info("Replayed the rotation of key id %s to %s", record.key_id, actor)
        return CreatedKey(record=record, plaintext=plaintext)

    def _refuse_replay(
        self, record: ApiKey, request_id: str, actor: str, now: datetime, reason: str
    ) -> None:
        self._store.record_audit(
            self._audit(
                actor,
                "key.rotate.replay_refused",
                record.key_id,
                now,
                request_id=request_id,
                reason=reason,
            )
        )
        logger.warning(
            "Refused to replay a rotation of key id %s to %s (%s)", record.key_id, actor, reason
        )

    def _change(
        self,
        record: ApiKey,
        changes: KeyChanges,
        actor: str,
        action: str,
        now: datetime,
        **details: Any,
    ) -> ApiKey:
        audit = self._audit(actor, action, record.key_id, now, **details)
        with self._store.atomic() as tx:
            updated = tx.update_key(record.key_id, changes)
            if updated is not None:
                tx.record_audit(audit)
                # In the change's own transaction: every process that polls the counter sees
                # the change as soon as it is visible, whoever made it (CLI, library, server).
                tx.bump_counter(CHANGES_COUNTER)
        if updated is None:
            raise KeyNotFound("No gateway key with that id.")
        self._changed(record.key_id)
        logger.info("%s key id %s by %s", action, record.key_id, actor)
        return updated

    def _audit(
        self, actor: str, action: str, key_id: str, now: datetime, **details: Any
    ) -> AuditEvent:
        return AuditEvent(
            id=new_id(),
            actor=actor,
            action=action,
            target_type="key",
            target_id=key_id,
            created_at=now,
            details={k: v for k, v in details.items() if v is not None},
        )

    # -- cache and last use ----------------------------------------------------------------

    def invalidate(self, key_id: str | None = None) -> None:
        """Drop cached verifications of one key (or all). The hook for cross-replica
        invalidation: call it when another replica announces a change."""
        self._cache.invalidate(key_id)

    def add_change_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(key_id)`` after every revoke, disable, enable and rotate made here
        (after the local cache is cleared), e.g. to tell other replicas to ``invalidate``."""
        self._listeners.append(listener)

    def _changed(self, key_id: str) -> None:
        self._cache.invalidate(key_id)
        for listener in self._listeners:
            try:
                listener(key_id)
            except Exception:  # a broken listener must not undo a revocation
                logger.exception("A key change listener failed")

    def note_use(self, key_id: str) -> None:
        """Remember that ``key_id`` was used now, in memory only (written by the next flush):
        for callers that answered from a cache of their own, on a path that must not block."""
        now = self._clock()
        with self._pending_lock:
            seen = self._pending_last_used.get(key_id)
            if seen is None or now > seen:
                self._pending_last_used[key_id] = now

    def _note_use(self, key_id: str, now: datetime) -> None:
        with self._pending_lock:
            seen = self._pending_last_used.get(key_id)
            if seen is None or now > seen:
                self._pending_last_used[key_id] = now
            if not self._flush_due():
                return
            batch = self._take_pending()
        self._write_quietly(batch)

    def flush_last_used_if_due(self) -> None:
        """Write the coalesced ``last_used_at`` updates if ``last_used_flush`` seconds have
        passed since the last write; a store failure is logged and retried later.

        For a periodic caller (the gateway's background flusher): uses noted by ``note_use``
        alone, from callers answering from caches of their own, are written no later than
        the next due pass instead of waiting for a key lookup or ``close()``.
        """
        with self._pending_lock:
            if not self._pending_last_used or not self._flush_due():
                return
            batch = self._take_pending()
        self._write_quietly(batch)

    def _flush_due(self) -> bool:
        return self._monotonic() - self._last_flush >= self._last_used_flush

    def _write_quietly(self, batch: dict[str, datetime]) -> None:
        try:
            self._store.touch_keys(batch)
        except StoreError as exc:
            # last_used_at is informational: keep it for the next flush, never fail a request.
            self._restore_pending(batch)
            logger.warning("Could not record key last use (%s); will retry", exc.error_code)

    def _take_pending(self) -> dict[str, datetime]:
        batch = self._pending_last_used
        self._pending_last_used = {}
        self._last_flush = self._monotonic()
        return batch

    def _restore_pending(self, batch: dict[str, datetime]) -> None:
        with self._pending_lock:
            for key_id, when in batch.items():
                seen = self._pending_last_used.get(key_id)
                if seen is None or when > seen:
                    self._pending_last_used[key_id] = when

    def flush_last_used(self) -> None:
        """Write the coalesced ``last_used_at`` updates now (one ``touch_keys`` call).

        A store failure propagates and the updates are kept for the next flush.
        """
        with self._pending_lock:
            batch = self._take_pending()
        if not batch:
            return
        try:
            self._store.touch_keys(batch)
        except StoreError:
            self._restore_pending(batch)
            raise

    def close(self) -> None:
        """Flush ``last_used_at`` (a failure is logged, not raised) and close an owned store."""
        try:
            self.flush_last_used()
        except StoreError as exc:
            logger.warning("Could not record key last use on close (%s)", exc.error_code)
        finally:
            self._cache.invalidate()
            if self._owns_store:
                self._store.close()


# -- checks ------------------------------------------------------------------------------------


_REFUSALS: Final = {"revoked": KeyRevoked, "disabled": KeyDisabled, "expired": KeyExpired}


def require_usable(record: ApiKey, now: datetime | None = None) -> None:
    """Return if the key is active at ``now``; else KeyRevoked, KeyDisabled or KeyExpired."""
    refusal = _REFUSALS.get(record.state(now))
    if refusal is not None:
        raise refusal()


def has_scope(record: ApiKey, scope: str | None) -> bool:
    """Whether the key may be used for ``scope`` (None: any); ``admin`` implies every scope."""
    return scope is None or scope in record.scopes or SCOPE_ADMIN in record.scopes


def require_scope(record: ApiKey, scope: str | None) -> None:
    """Return if the key has ``scope``; else ``InsufficientScope``."""
    if not has_scope(record, scope):
        raise InsufficientScope(f"This gateway key lacks the {scope!r} scope.")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("A key needs a non-empty name.")
    name = name.strip()
    if len(name) > _MAX_NAME_LENGTH:
        raise InvalidRequest(f"A key name has at most {_MAX_NAME_LENGTH} characters.")
    return name


def _check_scopes(scopes: Iterable[str], *, admin: bool) -> tuple[str, ...]:
    # A bare string is one scope, not an iterable of one-letter scopes.
    wanted = {scopes} if isinstance(scopes, str) else set(scopes)
    unknown = sorted(str(s) for s in wanted if s not in ALL_SCOPES)
    if unknown:
        raise InvalidRequest(
            f"Unknown scope(s) {', '.join(unknown)}; known scopes: {', '.join(ALL_SCOPES)}."
        )
    if SCOPE_ADMIN in wanted and not admin:
        raise InvalidRequest("The admin scope needs an admin key (admin=True, prefix tpga_).")
    if admin:
        wanted.add(SCOPE_ADMIN)
    if not wanted:
        raise InvalidRequest("A key needs at least one scope.")
    return tuple(s for s in ALL_SCOPES if s in wanted)


def _check_future(value: datetime, now: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRequest(f"{name} must be a timezone-aware datetime.")
    if value <= now:
        raise InvalidRequest(f"{name} must be in the future.")
    return value
