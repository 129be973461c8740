"""AdminSessions: an admin key exchanged for a short-lived server-side session (the console's).

The browser holds only a random session token; the store holds its SHA-256 hash, the admin key
it was opened with and its expiry, so every replica sharing the database sees the same
sessions and a database dump alone opens none. A session ends when it is idle too long, when
it reaches its absolute lifetime, on sign-out, or as soon as its admin key is revoked,
disabled, expired or loses the admin scope: the key is checked on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import SecretStr

from tabpfn_gateway.store.records import AdminSession, ApiKey, AuditEvent, new_id, utcnow

if TYPE_CHECKING:
    from tabpfn_gateway.config import Settings
    from tabpfn_gateway.keys.manager import KeyManager
    from tabpfn_gateway.store.base import Store

__all__ = ["AdminSessions", "OpenedSession", "SessionLookup"]

logger = logging.getLogger(__name__)

_TOKEN_BYTES = 32
# last_seen_at is written at most this often per session: a page view is not a write.
_TOUCH_EVERY = timedelta(seconds=60)
_SCOPE_ADMIN = "admin"

#: Why a token found no live session.
EndReason = Literal["unknown", "idle", "expired", "key"]


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """A session just opened: its record, the admin key record, and the token shown once
    (it goes into the cookie and nowhere else)."""

    session: AdminSession
    key: ApiKey
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class SessionLookup:
    """What a token resolves to: the live session and its admin key, or why there is none."""

    session: AdminSession | None
    key: ApiKey | None
    ended: EndReason | None = None

    @property
    def actor(self) -> str:
        """How audit events name the admin acting through this session (its key)."""
        assert self.key is not None
        return f"key:{self.key.key_id}"


def session_id_for(token: str) -> str:
    """The stored id of a session token: its SHA-256 (the token has 256 random bits, so no
    slow hash is needed)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class AdminSessions:
    """Opens, resolves and closes admin console sessions over a store and the key manager.

    ``idle``: how long a session lives without use; ``lifetime``: how long after sign-in it
    ends however busy; ``clock`` gives aware UTC datetimes.
    """

    def __init__(
        self,
        store: Store,
        keys: KeyManager,
        *,
        idle: timedelta = timedelta(minutes=30),
        lifetime: timedelta = timedelta(hours=12),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._keys = keys
        self.idle = idle
        self.lifetime = lifetime
        self._clock = clock

    def __repr__(self) -> str:
        return f"AdminSessions(idle={self.idle!r}, lifetime={self.lifetime!r})"

    @classmethod
    def from_settings(cls, settings: Settings, store: Store, keys: KeyManager) -> AdminSessions:
        """Sessions with the console's idle and absolute expiry settings."""
        return cls(
            store,
            keys,
            idle=timedelta(minutes=settings.console_session_idle_minutes),
            lifetime=timedelta(hours=settings.console_session_max_hours),
        )

    def open(self, admin_key: str | SecretStr) -> OpenedSession:
        """Exchange an admin key for a new session.

        The key is verified as for the admin API: ``InvalidKey``, ``KeyRevoked``,
        ``KeyDisabled``, ``KeyExpired`` or ``InsufficientScope`` (not an admin key).
        Expired sessions are pruned on the way.
        """
        raw = admin_key.get_secret_value() if isinstance(admin_key, SecretStr) else admin_key
        key = self._keys.verify(raw.strip(), scope=_SCOPE_ADMIN)
        now = self._clock()
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        expires_at = now + self.lifetime
        if key.expires_at is not None:
            expires_at = min(expires_at, key.expires_at)
        session = AdminSession(
            id=session_id_for(token),
            key_id=key.key_id,
            created_at=now,
            last_seen_at=now,
            expires_at=expires_at,
        )
        actor = f"key:{key.key_id}"
        with self._store.atomic() as tx:
            tx.delete_admin_sessions(expires_before=now)
            stored = tx.add_admin_session(session)
            tx.record_audit(_event(actor, "console.sign_in", key.key_id, now, expires_at))
        logger.info("Console session opened with key id %s", key.key_id)
        return OpenedSession(session=stored, key=key, token=token)

    def resolve(self, token: str | None) -> SessionLookup:
        """The live session for ``token`` and its admin key; a session found dead (idle,
        past its lifetime, or its key no longer usable as an admin key) is deleted."""
        if not token:
            return SessionLookup(None, None, "unknown")
        session = self._store.get_admin_session(session_id_for(token))
        if session is None:
            return SessionLookup(None, None, "unknown")
        now = self._clock()
        ended: EndReason | None = None
        if now >= session.expires_at:
            ended = "expired"
        elif now - session.last_seen_at >= self.idle:
            ended = "idle"
        key = self._store.get_key(session.key_id)
        if ended is None and not _usable_admin_key(key, now):
            ended = "key"
        if ended is not None:
            self._store.delete_admin_sessions(session_id=session.id)
            logger.info("Console session of key id %s ended (%s)", session.key_id, ended)
            return SessionLookup(None, None, ended)
        assert key is not None
        if now - session.last_seen_at >= _TOUCH_EVERY:
            self._store.touch_admin_session(session.id, now)
        return SessionLookup(session, key)

    def close(self, token: str | None) -> bool:
        """Sign out: delete the session (audited). False if there was none."""
        if not token:
            return False
        session = self._store.get_admin_session(session_id_for(token))
        if session is None:
            return False
        now = self._clock()
        with self._store.atomic() as tx:
            deleted = tx.delete_admin_sessions(session_id=session.id)
            if deleted:
                tx.record_audit(
                    _event(f"key:{session.key_id}", "console.sign_out", session.key_id, now, None)
                )
        return deleted > 0

    @staticmethod
    def csrf_token(token: str) -> str:
        """The anti-forgery token of a session: an HMAC of the session token, so it needs no
        storage and cannot be computed by a page that cannot read the HttpOnly cookie."""
        return hmac.new(token.encode("utf-8", "surrogatepass"), b"csrf", "sha256").hexdigest()

    @classmethod
    def check_csrf(cls, token: str, submitted: str | None) -> bool:
        """Whether ``submitted`` is this session's anti-forgery token (constant time)."""
        if not submitted:
            return False
        return hmac.compare_digest(cls.csrf_token(token), submitted)


def _usable_admin_key(key: ApiKey | None, now: datetime) -> bool:
    if key is None or key.revoked_at is not None or key.disabled_at is not None:
        return False
    if key.expires_at is not None and now >= key.expires_at:
        return False
    return _SCOPE_ADMIN in key.scopes


def _event(
    actor: str, action: str, key_id: str, now: datetime, expires_at: datetime | None
) -> AuditEvent:
    details = {"expires_at": expires_at.isoformat()} if expires_at is not None else {}
    return AuditEvent(
        id=new_id(),
        actor=actor,
        action=action,
        target_type="key",
        target_id=key_id,
        created_at=now,
        details=details,
    )
