"""A short-lived, in-process cache of verified keys, keyed by a hash of the key, never the key."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pydantic import SecretStr

from tabpfn_gateway.store.records import ApiKey

__all__ = ["VerifiedKeyCache", "cache_fingerprint"]


def cache_fingerprint(key: str | SecretStr) -> bytes:
    """SHA-256 of the key as given: what every cache of verified keys is keyed by (the key
    itself is never kept). The one fingerprint: ``KeyManager`` and the gateway's authoriser
    both use it. Any string is accepted (lone surrogates too), so a hostile header cannot
    make fingerprinting fail."""
    raw = key.get_secret_value() if isinstance(key, SecretStr) else key
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class _Entry:
    record: ApiKey
    stored_at: float
    # Set when the key matched its previous (rotated) secret: the entry must not outlive
    # the grace window, whatever the TTL says.
    valid_until: datetime | None


class VerifiedKeyCache:
    """Maps a key's fingerprint to the record it verified as, for ``ttl`` seconds.

    Entries are dropped per key id by ``invalidate`` (revoke, disable, rotate; and the
    cross-replica hook). ``ttl <= 0`` disables the cache. At most ``max_entries`` are kept;
    the oldest goes first.
    """

    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._monotonic = monotonic
        self._entries: dict[bytes, _Entry] = {}
        self._by_key_id: dict[str, set[bytes]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def get(self, fingerprint: bytes, now: datetime) -> ApiKey | None:
        """The cached record, or None if absent, older than the TTL or past its grace window."""
        if not self.enabled:
            return None
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is None:
                return None
            fresh = self._monotonic() - entry.stored_at < self.ttl
            if fresh and (entry.valid_until is None or now < entry.valid_until):
                return entry.record
            self._drop(fingerprint, entry.record.key_id)
            return None

    def put(self, fingerprint: bytes, record: ApiKey, *, valid_until: datetime | None) -> None:
        """Remember that this key verified as ``record``."""
        if not self.enabled:
            return
        with self._lock:
            self._entries.pop(fingerprint, None)
            if len(self._entries) >= self.max_entries:
                self._evict()
            self._entries[fingerprint] = _Entry(record, self._monotonic(), valid_until)
            self._by_key_id.setdefault(record.key_id, set()).add(fingerprint)

    def invalidate(self, key_id: str | None = None) -> None:
        """Forget the entries of one key id, or every entry."""
        with self._lock:
            if key_id is None:
                self._entries.clear()
                self._by_key_id.clear()
                return
            for fingerprint in self._by_key_id.pop(key_id, set()):
                self._entries.pop(fingerprint, None)

    def _drop(self, fingerprint: bytes, key_id: str) -> None:
        self._entries.pop(fingerprint, None)
        siblings = self._by_key_id.get(key_id)
        if siblings is not None:
            siblings.discard(fingerprint)
            if not siblings:
                del self._by_key_id[key_id]

    def _evict(self) -> None:
        # Dicts keep insertion order (put re-inserts), so the first entry is the oldest.
        fingerprint, entry = next(iter(self._entries.items()))
        self._drop(fingerprint, entry.record.key_id)
