"""Moving or removing a key's expiry (KeyManager.set_expiry, Admin.set_key_expiry)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tabpfn_gateway.admin import Admin
from tabpfn_gateway.errors import InvalidRequest, KeyExpired, KeyRevoked
from tabpfn_gateway.keys import KeyManager
from tabpfn_gateway.store.memory import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def setup() -> tuple[Admin, KeyManager, Clock, str, str]:
    clock = Clock()
    store = MemoryStore()
    keys = KeyManager(store, pepper=b"p" * 32, clock=clock, cache_ttl=60)
    admin = Admin(store, None, keys)
    owner = admin.add_principal("ops", "team")
    created = keys.create(owner.id, None, "ops admin", admin=True)
    return admin, keys, clock, created.record.key_id, created.plaintext


def test_set_expiry_moves_it_clears_it_and_is_audited(
    setup: tuple[Admin, KeyManager, Clock, str, str],
) -> None:
    admin, keys, clock, key_id, plaintext = setup
    later = clock.now + timedelta(days=3)
    assert admin.set_key_expiry(key_id, later, actor="key:x").expires_at == later
    assert keys.verify(plaintext).key_id == key_id  # cached now
    clock.now = later
    with pytest.raises(KeyExpired):
        keys.verify(plaintext)
    assert admin.set_key_expiry(key_id, None, actor="key:x").expires_at is None
    assert keys.verify(plaintext).key_id == key_id
    events = admin.list_audit(target_id=key_id, action="key.expiry").items
    assert [e.details.get("expires_at") for e in events] == [None, later.isoformat()]
    assert events[0].details["previous"] == later.isoformat()


def test_a_shorter_expiry_drops_the_cached_verification(
    setup: tuple[Admin, KeyManager, Clock, str, str],
) -> None:
    admin, keys, clock, key_id, plaintext = setup
    admin.set_key_expiry(key_id, clock.now + timedelta(days=30))
    keys.verify(plaintext)
    admin.set_key_expiry(key_id, clock.now + timedelta(hours=1))
    clock.now += timedelta(hours=2)
    with pytest.raises(KeyExpired):
        keys.verify(plaintext)


def test_past_naive_and_revoked_are_refused(
    setup: tuple[Admin, KeyManager, Clock, str, str],
) -> None:
    admin, _, clock, key_id, _ = setup
    with pytest.raises(InvalidRequest):
        admin.set_key_expiry(key_id, clock.now - timedelta(seconds=1))
    with pytest.raises(InvalidRequest):
        admin.set_key_expiry(key_id, datetime(2031, 1, 1))
    admin.revoke_key(key_id)
    with pytest.raises(KeyRevoked):
        admin.set_key_expiry(key_id, clock.now + timedelta(days=1))
    assert admin.get_key(key_id).expires_at is None
