"""The authoriser: a gateway key -> its caller -> its TabPFN token -> a decision, cached once.

One cache layer sits on the whole path, keyed by the one key fingerprint
(``keys.cache.cache_fingerprint``): a hit answers "who is this, and with which token do we
call upstream" from memory, with no thread hop and no I/O. A miss asks ``KeyManager.verify``
(which raises the precise refusal) and decrypts the credential's token with the vault.
Entries are dropped per key id and per credential id by the invalidation messages, and never
outlive a key's expiry or a rotation's grace window. Whether the caller may *spend* now is the
``SpendPolicy``'s question (``_policy``), asked by the meter for each operation.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import SecretStr

from tabpfn_gateway.errors import CredentialNotFound, UpstreamKindMismatch
from tabpfn_gateway.gateway._invalidation import ALL, CREDENTIAL, KEY
from tabpfn_gateway.keys.cache import cache_fingerprint
from tabpfn_gateway.keys.manager import has_scope, require_usable
from tabpfn_gateway.store import ApiKey, Store, utcnow

if TYPE_CHECKING:
    from tabpfn_gateway.keys import KeyManager
    from tabpfn_gateway.vault import TokenVault

__all__ = ["Authoriser", "Caller", "Decision"]

_MAX_DECISIONS = 10_000


def _by_id(key_id: str) -> bytes:
    """The cache slot of decisions made from a key's id alone (upload URLs name the key by
    id): never a fingerprint of a key's secret, which are digests of fixed length."""
    return b"\0id:" + key_id.encode()


@dataclass(frozen=True)
class Caller:
    """Who is calling: the verified key record (its secret never leaves ``KeyManager``)."""

    key: ApiKey

    @property
    def key_id(self) -> str:
        """The public id of the caller's gateway key."""
        return self.key.key_id

    @property
    def owner_id(self) -> str:
        """The principal (user or team) the key belongs to."""
        return self.key.owner_id

    @property
    def credential_id(self) -> str | None:
        """The stored TabPFN credential the key's calls use, if one is bound."""
        return self.key.credential_id

    @property
    def actor(self) -> str:
        """How audit events name this caller."""
        return f"key:{self.key.key_id}"


@dataclass(frozen=True)
class Decision:
    """An authorised caller, the TabPFN token its calls go upstream with, and the cloud URL
    its credential names (``base_url``; None: the configured ``upstream_url``)."""

    caller: Caller
    token: SecretStr = field(repr=False)
    base_url: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _Entry:
    caller: Caller
    # None until a call needed the token (admin and usage-only calls never do).
    token: SecretStr | None = field(repr=False)
    until: float
    base_url: str | None = field(default=None, repr=False)


class _DecisionCache:
    """Fingerprint -> (caller, token), for at most ``ttl`` seconds; oldest evicted first.

    Every drop starts a new generation, and a decision is only stored in the generation its
    lookup began in: a verification that read the key before a revocation, and finishes
    after the revocation's invalidation, cannot put the stale decision back.
    """

    def __init__(self, ttl: float, max_entries: int = _MAX_DECISIONS) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._items: dict[bytes, _Entry] = {}
        # The fingerprints cached for each key id: an upload (which names its key by id)
        # finds its decision without walking the whole cache.
        self._by_key: dict[str, set[bytes]] = {}
        self._lock = threading.Lock()
        self._generation = 0

    @property
    def generation(self) -> int:
        """Take it before reading the store; pass it to ``put``."""
        with self._lock:
            return self._generation

    def get(self, fingerprint: bytes) -> _Entry | None:
        with self._lock:
            entry = self._items.get(fingerprint)
        if entry is None or time.monotonic() >= entry.until:
            return None
        return entry

    def put(
        self,
        fingerprint: bytes,
        caller: Caller,
        token: SecretStr | None,
        base_url: str | None,
        generation: int,
    ) -> None:
        if self._ttl <= 0:
            return
        ttl = self._ttl
        now = utcnow()
        # Never trusted past the key's expiry or the end of a rotation's grace window
        # (whether this secret is the old or the new one is KeyManager's to decide).
        for limit in (caller.key.expires_at, caller.key.previous_valid_until):
            if limit is not None:
                ttl = min(ttl, (limit - now).total_seconds())
        if ttl <= 0:
            return
        with self._lock:
            if generation != self._generation:
                # Invalidated since the lookup began: the decision may predate the change.
                return
            self._remove(fingerprint)
            if len(self._items) >= self._max:
                self._remove(next(iter(self._items)))
            self._items[fingerprint] = _Entry(caller, token, time.monotonic() + ttl, base_url)
            self._by_key.setdefault(caller.key_id, set()).add(fingerprint)

    def caller_for_key(self, key_id: str) -> Caller | None:
        """A current decision for ``key_id`` (any of its secrets), if one is cached."""
        entry = self._current_for_key(key_id, with_token=False)
        return None if entry is None else entry.caller

    def upstream_for_key(self, key_id: str) -> tuple[SecretStr, str | None] | None:
        """The token and cloud URL of a current decision for ``key_id``, if one is cached."""
        entry = self._current_for_key(key_id, with_token=True)
        if entry is None or entry.token is None:
            return None
        return entry.token, entry.base_url

    def _current_for_key(self, key_id: str, *, with_token: bool) -> _Entry | None:
        now = time.monotonic()
        with self._lock:
            for fingerprint in self._by_key.get(key_id, ()):
                entry = self._items[fingerprint]
                if now < entry.until and (entry.token is not None or not with_token):
                    return entry
        return None

    def drop(self, *, key_id: str | None = None, credential_id: str | None = None) -> None:
        with self._lock:
            self._generation += 1
            if key_id is None and credential_id is None:
                self._items.clear()
                self._by_key.clear()
                return
            if credential_id is None:
                stale = list(self._by_key.get(key_id or "", ()))
            else:
                stale = [
                    fingerprint
                    for fingerprint, entry in self._items.items()
                    if entry.caller.key_id == key_id or entry.caller.credential_id == credential_id
                ]
            for fingerprint in stale:
                self._remove(fingerprint)

    def _remove(self, fingerprint: bytes) -> None:
        entry = self._items.pop(fingerprint, None)
        if entry is None:
            return
        fingerprints = self._by_key.get(entry.caller.key_id)
        if fingerprints is not None:
            fingerprints.discard(fingerprint)
            if not fingerprints:
                del self._by_key[entry.caller.key_id]


class Authoriser:
    """Turns a gateway key into a ``Caller`` (and, for upstream calls, a ``Decision``).

    ``ttl`` is how long a decision is trusted without asking the store again
    (``key_cache_ttl_seconds``; 0 disables the cache). ``keys`` verifies keys (give it
    ``cache_ttl=0``: this is the cache); ``store`` and ``vault`` find and decrypt tokens.
    """

    def __init__(self, keys: KeyManager, store: Store, vault: TokenVault, *, ttl: float) -> None:
        self._keys = keys
        self._store = store
        self._vault = vault
        self._decisions = _DecisionCache(ttl)

    def __repr__(self) -> str:
        return f"Authoriser(keys={self._keys!r})"

    # -- the decision ------------------------------------------------------------------------

    def authenticate(self, api_key: str | SecretStr, *, scope: str | None = None) -> Caller:
        """The caller holding ``api_key``, if it may be used for ``scope``.

        ``InvalidKey``/``KeyRevoked``/``KeyExpired``/``KeyDisabled``/``InsufficientScope``;
        a database outage is ``StoreUnavailable``, never an authentication error.
        """
        fingerprint = cache_fingerprint(api_key)
        entry = self._usable(self._decisions.get(fingerprint), scope)
        if entry is not None:
            return entry.caller
        generation = self._decisions.generation
        caller = self._verify(api_key, scope)
        self._decisions.put(fingerprint, caller, None, None, generation)
        return caller

    def authorise(self, api_key: str | SecretStr, *, scope: str) -> Decision:
        """``authenticate`` plus the TabPFN token of the key's credential."""
        fingerprint = cache_fingerprint(api_key)
        # Taken before the cache is read: a cached caller without a token may be dropped
        # while the token is fetched, and must then not come back.
        generation = self._decisions.generation
        entry = self._usable(self._decisions.get(fingerprint), scope)
        if entry is not None and entry.token is not None:
            return Decision(entry.caller, entry.token, entry.base_url)
        caller = entry.caller if entry is not None else self._verify(api_key, scope)
        token, base_url = self._upstream(caller)
        self._decisions.put(fingerprint, caller, token, base_url, generation)
        return Decision(caller, token, base_url)

    def authorise_from_memory(self, api_key: str | SecretStr, *, scope: str) -> Decision | None:
        """What ``authorise`` would answer, if the cache can say so without any I/O; None
        means "ask ``authorise``" (which may block, and raises the precise error)."""
        entry = self._usable(self._decisions.get(cache_fingerprint(api_key)), scope)
        if entry is None or entry.token is None:
            return None
        return Decision(entry.caller, entry.token, entry.base_url)

    def upstream_token(self, caller: Caller) -> SecretStr:
        """The TabPFN token of the credential ``caller``'s key is bound to (from a cached
        decision when there is one); ``CredentialNotFound`` once it has been removed."""
        return self.upstream(caller)[0]

    def upstream(self, caller: Caller) -> tuple[SecretStr, str | None]:
        """The TabPFN token and the cloud URL (None: the configured one) of the credential
        ``caller``'s key is bound to; ``CredentialNotFound`` once it has been removed."""
        cached = self.upstream_from_memory(caller)
        return cached if cached is not None else self._upstream(caller)

    def token_from_memory(self, caller: Caller) -> SecretStr | None:
        """The token of a current cached decision for ``caller``'s key, else None (no I/O).
        Removing the credential drops those decisions at once."""
        cached = self.upstream_from_memory(caller)
        return None if cached is None else cached[0]

    def upstream_from_memory(self, caller: Caller) -> tuple[SecretStr, str | None] | None:
        """``upstream(caller)`` from a current cached decision, else None (no I/O)."""
        return self._decisions.upstream_for_key(caller.key_id)

    def _usable(self, entry: _Entry | None, scope: str | None) -> _Entry | None:
        if entry is None:
            return None
        record = entry.caller.key
        if record.state() != "active" or not has_scope(record, scope):
            return None  # the slow path raises the precise error
        self._keys.note_use(record.key_id)
        return entry

    def _verify(self, api_key: str | SecretStr, scope: str | None) -> Caller:
        raw = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        return Caller(self._keys.verify(raw, scope=scope))

    def _upstream(self, caller: Caller) -> tuple[SecretStr, str | None]:
        credential_id = caller.credential_id
        if credential_id is None:
            raise CredentialNotFound(
                "This key is not bound to a TabPFN credential (an admin key); use an inference key."
            )
        credential = self._store.get_credential(credential_id)
        if credential is None:
            raise CredentialNotFound(
                "The TabPFN credential this key was bound to has been removed; "
                "ask an administrator for a new key."
            )
        if credential.kind != "cloud":
            # Its secret is a container's token and headers: never sent as a TabPFN token.
            # (Hosted calls are authorised by tabpfn_gateway.gateway._hosted.)
            raise UpstreamKindMismatch(
                "This key's credential is a self-hosted inference container: use POST /predict "
                "(tabpfn_client.hosted, or GatewayClassifier), not the TabPFN cloud protocol."
            )
        token = self._vault.decrypt(credential.encrypted_token, credential_id=credential.id)
        return token, credential.endpoint_url

    # -- keys seen through something they issued (upload URLs) -------------------------------

    def key_alive_from_memory(self, key_id: str) -> Caller | None:
        """The caller for ``key_id`` if a current authorisation of it is cached (revocations
        drop it at once), else None: ask ``check_key_alive``."""
        caller = self._decisions.caller_for_key(key_id)
        if caller is None or caller.key.state() != "active":
            return None
        return caller

    def check_key_alive(self, key_id: str) -> Caller:
        """The caller for ``key_id`` if its key is neither revoked, disabled nor expired.

        For requests authenticated by something the key was issued (an upload URL) rather
        than the key itself: they stop working when the key does. The answer is cached like
        a decision (the many chunk uploads of one large set ask once per ``ttl``), and
        dropped with the key's other decisions when it is revoked or changed.
        """
        generation = self._decisions.generation
        record = self._keys.get(key_id)
        require_usable(record)
        caller = Caller(record)
        self._decisions.put(_by_id(key_id), caller, None, None, generation)
        return caller

    def upload_upstream(self, caller: Caller) -> tuple[SecretStr, str | None]:
        """``upstream(caller)`` for an upload URL's key, cached by key id (a cached decision
        of the key, from any of its calls, answers it first)."""
        cached = self.upstream_from_memory(caller)
        if cached is not None:
            return cached
        generation = self._decisions.generation
        token, base_url = self._upstream(caller)
        self._decisions.put(_by_id(caller.key_id), caller, token, base_url, generation)
        return token, base_url

    # -- invalidation ------------------------------------------------------------------------

    def invalidate(self, message: str) -> None:
        """Drop what an invalidation message (``_invalidation``) names: a key, a credential,
        or everything."""
        if message == ALL:
            self._keys.invalidate()
            self._decisions.drop()
        elif message.startswith(KEY):
            key_id = message[len(KEY) :]
            self._decisions.drop(key_id=key_id)
            self._keys.invalidate(key_id)
        elif message.startswith(CREDENTIAL):
            self._decisions.drop(credential_id=message[len(CREDENTIAL) :])
