"""KeyManager on the memory store, SQLite and PostgreSQL: create, verify, cache, rotate, revoke."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tabpfn_gateway import migrate
from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import (
    Conflict,
    CredentialNotFound,
    InsufficientScope,
    InvalidKey,
    InvalidRequest,
    KeyDisabled,
    KeyExpired,
    KeyNotFound,
    KeyRevoked,
    PrincipalNotFound,
    StoreUnavailable,
)
from tabpfn_gateway.keys import (
    ROTATION_REPLAY_WINDOW,
    SCOPE_ADMIN,
    SCOPE_INFERENCE,
    SCOPE_USAGE,
    KeyManager,
)
from tabpfn_gateway.keys.format import format_key, new_key_id, new_secret
from tabpfn_gateway.store import Store, open_store
from tabpfn_gateway.store.memory import MemoryStore
from tabpfn_gateway.store.records import ApiKey, Principal, UpstreamCredential, new_id
from tabpfn_gateway.store.sql import SqlStore

PEPPER = b"test-pepper-0123456789abcdef0123"
START = datetime(2030, 1, 1, tzinfo=UTC)


class Clock:
    """A hand-moved clock: ``now()`` for datetimes and ``monotonic()`` for intervals."""

    def __init__(self) -> None:
        self.current = START

    def now(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        return (self.current - START).total_seconds()

    def advance(self, **kwargs: float) -> None:
        self.current += timedelta(**kwargs)


class CountingStore:
    """Wraps a store and counts every call by method name (proves what touches the store)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


def migrated(url: str) -> SqlStore:
    settings = Settings(database_url=url)
    migrate.upgrade(settings)
    return SqlStore.from_url(url, settings=settings)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[Store]:
    if request.param == "memory":
        built: Store = open_store(url="memory://")
    elif request.param == "sqlite":
        built = migrated(f"sqlite:///{tmp_path}/keys.db")
    else:
        built = migrated(request.getfixturevalue("pg_url"))
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def owner(store: Store, clock: Clock) -> Principal:
    return store.add_principal(Principal(id=new_id(), name="alice", created_at=clock.now()))


@pytest.fixture
def credential(store: Store, owner: Principal, clock: Clock) -> UpstreamCredential:
    return store.add_credential(
        UpstreamCredential(
            id=new_id(),
            owner_id=owner.id,
            label="main",
            encrypted_token=b"opaque",
            created_at=clock.now(),
        )
    )


class FlakyTouch(CountingStore):
    """A store whose ``touch_keys`` is unavailable while ``fail`` is set."""

    fail = True

    def touch_keys(self, last_used: Any) -> None:
        self.calls["touch_keys"] += 1
        if self.fail:
            raise StoreUnavailable()
        self.inner.touch_keys(last_used)


def manager_for(store: Store, clock: Clock, **kwargs: Any) -> KeyManager:
    options: dict[str, Any] = {"pepper": PEPPER, "clock": clock.now, "monotonic": clock.monotonic}
    options.update(kwargs)
    return KeyManager(store, **options)


@pytest.fixture
def manager(store: Store, clock: Clock) -> Iterator[KeyManager]:
    built = manager_for(store, clock)
    yield built
    built.close()


# -- create and verify -------------------------------------------------------------------------


def test_create_then_verify(
    manager: KeyManager, store: Store, owner: Principal, credential: UpstreamCredential
) -> None:
    created = manager.create(owner.id, credential.id, " laptop ", actor="admin:bob")
    record = created.record
    assert created.plaintext.startswith(f"tpg_{record.key_id}_")
    assert record.display_prefix == f"tpg_{record.key_id}"
    assert record.last4 == created.plaintext[-4:]
    assert record.name == "laptop"
    assert record.scopes == (SCOPE_INFERENCE, SCOPE_USAGE)
    assert record.hash_scheme == "hmac-sha256"
    assert created.plaintext not in record.secret_hash
    assert created.plaintext not in repr(created)
    assert store.get_key(record.key_id) == record
    assert manager.verify(created.plaintext, scope=SCOPE_INFERENCE) == record
    assert manager.get(record.key_id) == record
    events = store.list_audit(target_id=record.key_id).items
    assert [(e.action, e.actor, e.target_type) for e in events] == [
        ("key.create", "admin:bob", "key")
    ]
    assert created.plaintext not in repr(events[0])
    assert events[0].details["scopes"] == ["inference", "usage"]


def test_malformed_unknown_and_wrong_keys_get_one_error(
    manager: KeyManager, owner: Principal, credential: UpstreamCredential
) -> None:
    created = manager.create(owner.id, credential.id, "k")
    unknown = format_key(new_key_id(), new_secret())
    wrong = format_key(created.record.key_id, new_secret())
    errors = []
    for bad in ["tpg_nonsense", unknown, wrong]:
        with pytest.raises(InvalidKey) as info:
            manager.verify(bad)
        errors.append((info.value.error_code, str(info.value)))
    assert len(set(errors)) == 1
    assert errors[0][0] == "INVALID_KEY"


@settings(deadline=None)  # no timed assertions: these machines are shared
@given(st.text(max_size=80))
def test_malformed_keys_never_reach_the_store(text: str) -> None:
    counting = CountingStore(MemoryStore())
    manager = KeyManager(counting, pepper=PEPPER)  # type: ignore[arg-type]
    with pytest.raises(InvalidKey):
        manager.verify(text)
    assert sum(counting.calls.values()) == 0


def test_unknown_key_id_costs_one_lookup_and_a_dummy_compare(clock: Clock) -> None:
    counting = CountingStore(MemoryStore())
    manager = manager_for(counting, clock)  # type: ignore[arg-type]
    with pytest.raises(InvalidKey):
        manager.verify(format_key(new_key_id(), new_secret()))
    assert counting.calls == Counter({"get_key": 1})


def test_states_are_told_only_to_holders_of_the_secret(
    manager: KeyManager, clock: Clock, owner: Principal, credential: UpstreamCredential
) -> None:
    disabled = manager.create(owner.id, credential.id, "d")
    revoked = manager.create(owner.id, credential.id, "r")
    expiring = manager.create(
        owner.id, credential.id, "e", expires_at=clock.now() + timedelta(hours=1)
    )
    manager.disable(disabled.record.key_id)
    manager.revoke(revoked.record.key_id)
    with pytest.raises(KeyDisabled):
        manager.verify(disabled.plaintext)
    with pytest.raises(KeyRevoked):
        manager.verify(revoked.plaintext)
    manager.verify(expiring.plaintext)
    clock.advance(hours=1)
    with pytest.raises(KeyExpired):
        manager.verify(expiring.plaintext)
    # Without the right secret the state stays hidden: just an invalid key.
    for record in (disabled.record, revoked.record, expiring.record):
        with pytest.raises(InvalidKey):
            manager.verify(format_key(record.key_id, new_secret()))


def test_scopes(manager: KeyManager, owner: Principal, credential: UpstreamCredential) -> None:
    usage_only = manager.create(owner.id, credential.id, "u", scopes=[SCOPE_USAGE])
    assert usage_only.record.scopes == (SCOPE_USAGE,)
    manager.verify(usage_only.plaintext, scope=SCOPE_USAGE)
    with pytest.raises(InsufficientScope) as info:
        manager.verify(usage_only.plaintext, scope=SCOPE_INFERENCE)
    assert info.value.error_code == "INSUFFICIENT_SCOPE"
    admin = manager.create(owner.id, None, "ops", scopes=[SCOPE_USAGE], admin=True)
    assert admin.plaintext.startswith("tpga_")
    assert admin.record.display_prefix.startswith("tpga_")
    assert admin.record.scopes == (SCOPE_USAGE, SCOPE_ADMIN)
    for scope in (SCOPE_INFERENCE, SCOPE_USAGE, SCOPE_ADMIN):
        manager.verify(admin.plaintext, scope=scope)  # admin implies every scope
    single = manager.create(owner.id, credential.id, "s", scopes="inference")
    assert single.record.scopes == (SCOPE_INFERENCE,)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"scopes": ["admin"]}, InvalidRequest),
        ({"scopes": ["everything"]}, InvalidRequest),
        ({"scopes": []}, InvalidRequest),
        ({"name": "  "}, InvalidRequest),
        ({"name": "x" * 201}, InvalidRequest),
        ({"credential": None}, InvalidRequest),
        ({"credential": "missing"}, CredentialNotFound),
        ({"owner": "missing"}, PrincipalNotFound),
        ({"expires_at": START - timedelta(seconds=1)}, InvalidRequest),
        ({"expires_at": datetime(2031, 1, 1)}, InvalidRequest),
    ],
)
def test_create_refuses_bad_input_and_stores_nothing(
    manager: KeyManager,
    store: Store,
    owner: Principal,
    credential: UpstreamCredential,
    kwargs: dict[str, Any],
    error: type[Exception],
) -> None:
    arguments: dict[str, Any] = {"owner": owner.id, "credential": credential.id, "name": "k"}
    arguments.update(kwargs)
    with pytest.raises(error):
        manager.create(**arguments)
    assert list(store.list_keys().items) == []
    assert list(store.list_audit().items) == []


def test_get_list_and_missing_keys(
    manager: KeyManager, store: Store, owner: Principal, credential: UpstreamCredential
) -> None:
    other = store.add_principal(Principal(id=new_id(), name="bob"))
    mine = [manager.create(owner.id, credential.id, f"k{i}").record for i in range(3)]
    manager.create(other.id, credential.id, "theirs")
    first = manager.list(owner=owner.id, limit=2)
    assert len(first.items) == 2
    assert first.next_cursor is not None
    rest = manager.list(owner=owner.id, limit=2, cursor=first.next_cursor)
    assert {k.key_id for k in [*first.items, *rest.items]} == {k.key_id for k in mine}
    assert len(manager.list().items) == 4
    for action in (manager.get, manager.revoke, manager.disable, manager.enable, manager.rotate):
        with pytest.raises(KeyNotFound):
            action("nope")  # type: ignore[operator]


# -- state changes -----------------------------------------------------------------------------


def test_revoke_disable_enable_are_audited_and_idempotent(
    manager: KeyManager, store: Store, owner: Principal, credential: UpstreamCredential
) -> None:
    created = manager.create(owner.id, credential.id, "k")
    key_id = created.record.key_id
    changed: list[str] = []
    manager.add_change_listener(changed.append)
    assert manager.disable(key_id, actor="a").disabled_at is not None
    assert manager.disable(key_id, actor="a").disabled_at is not None
    assert manager.enable(key_id, actor="a").disabled_at is None
    assert manager.verify(created.plaintext).key_id == key_id
    assert manager.revoke(key_id, actor="a").revoked_at is not None
    manager.revoke(key_id, actor="a")
    with pytest.raises(KeyRevoked):
        manager.enable(key_id)
    actions = [e.action for e in store.list_audit(target_id=key_id).items]
    assert sorted(actions) == sorted(["key.create", "key.disable", "key.enable", "key.revoke"])
    assert changed == [key_id, key_id, key_id]


# -- the cache ---------------------------------------------------------------------------------


def test_cache_spares_lookups_and_is_cleared_by_changes_here(clock: Clock) -> None:
    counting = CountingStore(MemoryStore())
    owner = counting.add_principal(Principal(id=new_id(), name="alice"))
    manager = manager_for(counting, clock)  # type: ignore[arg-type]
    created = manager.create(owner.id, None, "ops", admin=True)
    counting.calls.clear()
    for _ in range(5):
        manager.verify(created.plaintext)
    assert counting.calls["get_key"] == 1
    clock.advance(seconds=5)  # the TTL
    manager.verify(created.plaintext)
    assert counting.calls["get_key"] == 2
    manager.disable(created.record.key_id)
    with pytest.raises(KeyDisabled):
        manager.verify(created.plaintext)
    # The cache is keyed by a hash of the key, never the key.
    entries = repr(manager._cache._entries)  # type: ignore[attr-defined]
    assert created.plaintext not in entries
    assert created.plaintext.split("_")[2] not in entries


def test_another_replica_sees_a_revocation_after_ttl_or_invalidate(
    store: Store, clock: Clock, owner: Principal, credential: UpstreamCredential
) -> None:
    replica_a = manager_for(store, clock, cache_ttl=5.0)
    replica_b = manager_for(store, clock, cache_ttl=5.0)
    first = replica_a.create(owner.id, credential.id, "k1")
    second = replica_a.create(owner.id, credential.id, "k2")
    replica_a.verify(first.plaintext)
    replica_a.verify(second.plaintext)
    replica_b.revoke(first.record.key_id)
    replica_b.revoke(second.record.key_id)
    # Within the TTL replica A still trusts its cache (the documented trade-off)...
    assert replica_a.verify(first.plaintext).key_id == first.record.key_id
    # ...unless told: the hook the server wires to cross-replica invalidation.
    replica_a.invalidate(first.record.key_id)
    with pytest.raises(KeyRevoked):
        replica_a.verify(first.plaintext)
    assert replica_a.verify(second.plaintext).key_id == second.record.key_id
    clock.advance(seconds=5)
    with pytest.raises(KeyRevoked):
        replica_a.verify(second.plaintext)


def test_uncached_manager_looks_up_every_time(clock: Clock) -> None:
    counting = CountingStore(MemoryStore())
    owner = counting.add_principal(Principal(id=new_id(), name="alice"))
    manager = manager_for(counting, clock, cache_ttl=0)  # type: ignore[arg-type]
    created = manager.create(owner.id, None, "ops", admin=True)
    counting.calls.clear()
    for _ in range(3):
        manager.verify(created.plaintext)
    assert counting.calls["get_key"] == 3


def test_cached_key_still_expires(
    manager: KeyManager, clock: Clock, owner: Principal, credential: UpstreamCredential
) -> None:
    created = manager.create(
        owner.id, credential.id, "k", expires_at=clock.now() + timedelta(seconds=2)
    )
    manager.verify(created.plaintext)
    clock.advance(seconds=2)
    with pytest.raises(KeyExpired):
        manager.verify(created.plaintext)


# -- last use ----------------------------------------------------------------------------------


def test_last_used_is_coalesced_and_flushed(
    store: Store, clock: Clock, owner: Principal, credential: UpstreamCredential
) -> None:
    counting = CountingStore(store)
    manager = manager_for(counting, clock, cache_ttl=0, last_used_flush=30.0)  # type: ignore[arg-type]
    created = manager.create(owner.id, credential.id, "k")
    key_id = created.record.key_id
    for _ in range(20):
        clock.advance(seconds=1)
        manager.verify(created.plaintext)
    assert counting.calls["touch_keys"] == 0
    assert store.get_key(key_id).last_used_at is None  # type: ignore[union-attr]
    clock.advance(seconds=10)
    manager.verify(created.plaintext)  # 31 s since the last flush: this one writes
    assert counting.calls["touch_keys"] == 1
    assert store.get_key(key_id).last_used_at == clock.now()  # type: ignore[union-attr]
    clock.advance(seconds=1)
    manager.verify(created.plaintext)
    manager.close()  # flushes what is pending
    assert counting.calls["touch_keys"] == 2
    assert store.get_key(key_id).last_used_at == clock.now()  # type: ignore[union-attr]


def test_uses_noted_from_a_cache_are_written_by_a_periodic_pass_when_due(
    store: Store, clock: Clock, owner: Principal, credential: UpstreamCredential
) -> None:
    # The authoriser answers cached keys and only notes their use; the gateway's background
    # flusher calls flush_last_used_if_due, which writes them at most every last_used_flush.
    counting = CountingStore(store)
    manager = manager_for(counting, clock, last_used_flush=30.0)  # type: ignore[arg-type]
    created = manager.create(owner.id, credential.id, "k")
    key_id = created.record.key_id
    manager.flush_last_used_if_due()  # nothing noted: no write
    assert counting.calls["touch_keys"] == 0
    clock.advance(seconds=5)
    manager.note_use(key_id)
    noted = clock.now()
    manager.flush_last_used_if_due()  # noted, but not due yet
    assert counting.calls["touch_keys"] == 0
    clock.advance(seconds=26)
    manager.flush_last_used_if_due()
    assert counting.calls["touch_keys"] == 1
    assert store.get_key(key_id).last_used_at == noted  # type: ignore[union-attr]
    clock.advance(seconds=31)
    manager.flush_last_used_if_due()  # due, but nothing new: no write
    assert counting.calls["touch_keys"] == 1


def test_a_periodic_last_use_pass_that_fails_keeps_the_uses_and_raises_nothing(
    clock: Clock,
) -> None:
    flaky = FlakyTouch(MemoryStore())
    owner = flaky.add_principal(Principal(id=new_id(), name="alice"))
    manager = manager_for(flaky, clock, last_used_flush=0.0)  # type: ignore[arg-type]
    created = manager.create(owner.id, None, "ops", admin=True)
    manager.note_use(created.record.key_id)
    manager.flush_last_used_if_due()  # logged, kept
    assert flaky.calls["touch_keys"] == 1
    flaky.fail = False
    manager.flush_last_used_if_due()
    assert flaky.calls["touch_keys"] == 2
    assert flaky.inner.get_key(created.record.key_id).last_used_at == START


def test_verifying_from_many_threads(
    store: Store, clock: Clock, owner: Principal, credential: UpstreamCredential
) -> None:
    manager = manager_for(store, clock, cache_ttl=0, last_used_flush=0.0)
    created = [manager.create(owner.id, credential.id, f"k{i}") for i in range(4)]
    failures: list[BaseException] = []

    def work(key: str) -> None:
        try:
            for _ in range(25):
                manager.verify(key, scope=SCOPE_INFERENCE)
        except BaseException as exc:  # collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(c.plaintext,)) for c in created]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    manager.close()
    assert all(store.get_key(c.record.key_id).last_used_at == START for c in created)  # type: ignore[union-attr]


# -- rotation ----------------------------------------------------------------------------------


def test_rotate_with_grace(
    manager: KeyManager,
    store: Store,
    clock: Clock,
    owner: Principal,
    credential: UpstreamCredential,
) -> None:
    old = manager.create(owner.id, credential.id, "k")
    manager.verify(old.plaintext)  # cached before the rotation
    new = manager.rotate(old.record.key_id, grace=timedelta(hours=1), actor="admin:bob")
    assert new.plaintext != old.plaintext
    assert new.record.key_id == old.record.key_id
    assert new.record.last4 == new.plaintext[-4:]
    assert new.record.previous_valid_until == clock.now() + timedelta(hours=1)
    assert manager.verify(new.plaintext).key_id == old.record.key_id
    assert manager.verify(old.plaintext).key_id == old.record.key_id
    clock.advance(minutes=59)
    manager.verify(old.plaintext)
    clock.advance(minutes=1)
    with pytest.raises(InvalidKey):
        manager.verify(old.plaintext)  # even though it was cached a moment ago
    manager.verify(new.plaintext)
    event = store.list_audit(target_id=old.record.key_id, action="key.rotate").items[0]
    assert event.actor == "admin:bob"
    assert event.details["grace_seconds"] == 3600


def test_rotation_grace_never_outlives_the_key(
    manager: KeyManager, clock: Clock, owner: Principal, credential: UpstreamCredential
) -> None:
    expires = clock.now() + timedelta(minutes=10)
    old = manager.create(owner.id, credential.id, "k", expires_at=expires)
    new = manager.rotate(old.record.key_id, grace=timedelta(days=1))
    assert new.record.previous_valid_until == expires
    clock.advance(minutes=10)
    with pytest.raises(InvalidKey):
        manager.verify(old.plaintext)
    with pytest.raises(KeyExpired):
        manager.verify(new.plaintext)
    with pytest.raises(KeyExpired):
        manager.rotate(old.record.key_id)


def test_rotate_without_grace_ends_the_old_secret_now(
    manager: KeyManager, owner: Principal, credential: UpstreamCredential
) -> None:
    old = manager.create(owner.id, credential.id, "k")
    manager.verify(old.plaintext)
    new = manager.rotate(old.record.key_id, grace=timedelta(0))
    assert new.record.previous_secret_hash is None
    with pytest.raises(InvalidKey):
        manager.verify(old.plaintext)
    manager.verify(new.plaintext)
    with pytest.raises(InvalidRequest):
        manager.rotate(old.record.key_id, grace=timedelta(seconds=-1))
    with pytest.raises(InvalidRequest):
        manager.rotate(old.record.key_id, request_id=" ")


def test_rotate_is_idempotent_per_request_id(
    manager: KeyManager,
    store: Store,
    clock: Clock,
    owner: Principal,
    credential: UpstreamCredential,
) -> None:
    old = manager.create(owner.id, credential.id, "k", admin=True)
    first = manager.rotate(old.record.key_id, request_id="req-1")
    again = manager.rotate(old.record.key_id, request_id="req-1")
    assert again.plaintext == first.plaintext
    assert again.plaintext.startswith("tpga_")
    assert first.plaintext not in repr(store.get_key(old.record.key_id))
    assert len(store.list_audit(action="key.rotate").items) == 1
    other = manager.rotate(old.record.key_id, request_id="req-2")
    assert other.plaintext != first.plaintext
    with pytest.raises(InvalidKey):
        manager.verify(old.plaintext)  # two rotations: only the last one's grace remains
    manager.verify(first.plaintext)
    # Past the replay window the sealed copy is dropped on use and cannot be replayed.
    clock.advance(seconds=ROTATION_REPLAY_WINDOW.total_seconds() + 1)
    with pytest.raises(Conflict):
        manager.rotate(old.record.key_id, request_id="req-2")
    manager.verify(other.plaintext)
    assert store.get_key(old.record.key_id).rotation_ciphertext is None  # type: ignore[union-attr]


def test_rotate_revoked_key_is_refused(
    manager: KeyManager, owner: Principal, credential: UpstreamCredential
) -> None:
    created = manager.create(owner.id, credential.id, "k")
    manager.revoke(created.record.key_id)
    with pytest.raises(KeyRevoked):
        manager.rotate(created.record.key_id)


class StaleReads:
    """A store whose ``get_key`` answers with a snapshot: a rotation racing another one."""

    def __init__(self, inner: Store, snapshot: ApiKey) -> None:
        self.inner = inner
        self.snapshot = snapshot

    def get_key(self, key_id: str) -> ApiKey | None:
        return self.snapshot

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_concurrent_rotations_are_settled_by_compare_and_set(
    store: Store, clock: Clock, owner: Principal, credential: UpstreamCredential
) -> None:
    manager = manager_for(store, clock)
    created = manager.create(owner.id, credential.id, "k")
    winner = manager.rotate(created.record.key_id, request_id="req-a")
    loser = manager_for(StaleReads(store, created.record), clock)  # type: ignore[arg-type]
    with pytest.raises(Conflict):
        loser.rotate(created.record.key_id, request_id="req-b")
    # The same request retried while racing gets the winner's key, not a third one.
    assert loser.rotate(created.record.key_id, request_id="req-a").plaintext == winner.plaintext
    assert store.get_key(created.record.key_id).secret_hash == winner.record.secret_hash  # type: ignore[union-attr]
    manager.verify(winner.plaintext)


# -- hash schemes and peppers ------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["bcrypt", "argon2"])
def test_slow_scheme_keys_are_rehashed_to_the_configured_scheme(
    store: Store, clock: Clock, owner: Principal, credential: UpstreamCredential, scheme: str
) -> None:
    slow = manager_for(store, clock, hash_scheme=scheme)
    created = slow.create(owner.id, credential.id, "k")
    assert created.record.hash_scheme == scheme
    assert created.record.secret_hash.startswith("$2" if scheme == "bcrypt" else "$argon2")
    assert slow.verify(created.plaintext).hash_scheme == scheme
    fast = manager_for(store, clock, cache_ttl=0)
    assert fast.verify(created.plaintext).hash_scheme == "hmac-sha256"
    stored = store.get_key(created.record.key_id)
    assert stored is not None
    assert stored.hash_scheme == "hmac-sha256"
    fast.verify(created.plaintext)
    with pytest.raises(InvalidKey):
        fast.verify(format_key(created.record.key_id, new_secret()))


def test_a_key_made_under_an_old_pepper_verifies_and_moves_to_the_new_one(
    store: Store, clock: Clock, owner: Principal, credential: UpstreamCredential
) -> None:
    old_pepper = b"old-pepper-0123456789abcdef01234"
    created = manager_for(store, clock, pepper=old_pepper).create(owner.id, credential.id, "k")
    with pytest.raises(InvalidKey):
        manager_for(store, clock).verify(created.plaintext)
    bridging = manager_for(store, clock, previous_peppers=[old_pepper], cache_ttl=0)
    bridging.verify(created.plaintext)
    # Re-hashed under the new pepper: the old one is no longer needed.
    manager_for(store, clock).verify(created.plaintext)


def test_rehash_also_moves_the_previous_secret(
    store: Store, clock: Clock, owner: Principal, credential: UpstreamCredential
) -> None:
    slow = manager_for(store, clock, hash_scheme="argon2")
    old = slow.create(owner.id, credential.id, "k")
    new = manager_for(store, clock).rotate(old.record.key_id)
    assert new.record.previous_hash_scheme == "argon2"
    fast = manager_for(store, clock, cache_ttl=0)
    fast.verify(old.plaintext)
    assert store.get_key(old.record.key_id).previous_hash_scheme == "hmac-sha256"  # type: ignore[union-attr]
    fast.verify(old.plaintext)
    fast.verify(new.plaintext)


def test_a_short_pepper_is_a_configuration_error() -> None:
    from tabpfn_gateway.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        KeyManager(MemoryStore(), pepper=b"short")
    with pytest.raises(ConfigurationError):
        KeyManager(MemoryStore(), pepper=PEPPER, hash_scheme="md5")


# -- outages -----------------------------------------------------------------------------------


def test_a_database_outage_is_store_unavailable_never_an_invalid_key() -> None:
    settings = Settings(db_connect_timeout_seconds=1.0)
    # Nothing listens on port 1: every connection is refused at once.
    down = SqlStore.from_url("postgresql+psycopg://postgres@127.0.0.1:1/none", settings=settings)
    manager = KeyManager(down, pepper=PEPPER, last_used_flush=0.0)
    try:
        with pytest.raises(StoreUnavailable) as info:
            manager.verify(format_key(new_key_id(), new_secret()))
        assert info.value.retryable
        with pytest.raises(InvalidKey):
            manager.verify("tpg_garbage")
        manager.close()  # a failed last-use flush on close is logged, not raised
    finally:
        down.close()


def test_a_failed_last_use_flush_is_retried_not_lost(clock: Clock) -> None:
    flaky = FlakyTouch(MemoryStore())
    owner = flaky.add_principal(Principal(id=new_id(), name="alice"))
    manager = manager_for(flaky, clock, last_used_flush=0.0)  # type: ignore[arg-type]
    created = manager.create(owner.id, None, "ops", admin=True)
    manager.verify(created.plaintext)  # the flush fails quietly; the request does not
    with pytest.raises(StoreUnavailable):
        manager.flush_last_used()
    flaky.fail = False
    manager.flush_last_used()
    assert flaky.inner.get_key(created.record.key_id).last_used_at == START
