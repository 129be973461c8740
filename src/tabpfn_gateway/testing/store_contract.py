"""The Store contract suite: subclass ``StoreContractTests`` and provide a ``store`` fixture.

Every store implementation runs these same tests (like keyring's ``BackendBasicTests``)::

    import pytest
    from tabpfn_gateway.store.memory import MemoryStore
    from tabpfn_gateway.testing import StoreContractTests

    @pytest.fixture
    def store():
        s = MemoryStore()
        yield s
        s.close()

    class TestMyStore(StoreContractTests):
        pass

The fixture must yield an empty store with its schema in place.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest

from tabpfn_gateway.errors import Conflict, InvalidRequest
from tabpfn_gateway.store.base import MAX_PAGE_SIZE, Store
from tabpfn_gateway.store.records import (
    AdminSession,
    ApiKey,
    AuditEvent,
    BudgetClaim,
    BudgetCounter,
    CounterHit,
    FittedModel,
    Membership,
    Page,
    Policy,
    Principal,
    UpstreamCredential,
    UsageEvent,
    UsageRollup,
    UsageSummary,
)

__all__ = ["StoreContractTests"]

T = TypeVar("T")

# A fixed, microsecond-precise origin: every store must keep microseconds.
BASE_TIME = datetime(2025, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)


class _Factory:
    """Records with unique ids and strictly increasing ``created_at`` unless told otherwise."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def tick(self) -> datetime:
        return BASE_TIME + timedelta(seconds=next(self._counter), microseconds=7)

    def hash_value(self, label: str) -> str:
        return f"{label}-hash-{next(self._counter)}"

    def principal(self, **fields: Any) -> Principal:
        n = next(self._counter)
        values: dict[str, Any] = {"id": f"principal-{n:05d}", "name": f"name-{n:05d}"}
        values["created_at"] = self.tick()
        values.update(fields)
        return Principal(**values)

    def credential(self, owner: Principal, **fields: Any) -> UpstreamCredential:
        n = next(self._counter)
        values: dict[str, Any] = {
            "id": f"credential-{n:05d}",
            "owner_id": owner.id,
            "label": f"label {n}",
            "encrypted_token": b"\x00ciphertext-" + str(n).encode(),
            "created_at": self.tick(),
        }
        values.update(fields)
        return UpstreamCredential(**values)

    def key(self, owner: Principal, **fields: Any) -> ApiKey:
        n = next(self._counter)
        values: dict[str, Any] = {
            "key_id": f"key{n:05d}",
            "name": f"key {n}",
            "owner_id": owner.id,
            "credential_id": None,
            "scopes": ("predict", "fit"),
            "secret_hash": f"hash-{n}",
            "hash_scheme": "hmac-sha256",
            "display_prefix": f"tpg_key{n:05d}",
            "last4": f"{n % 10000:04d}",
            "created_at": self.tick(),
        }
        values.update(fields)
        return ApiKey(**values)

    def fitted_model(self, owner: Principal, **fields: Any) -> FittedModel:
        n = next(self._counter)
        values: dict[str, Any] = {
            "id": f"fit-{n:05d}",
            "owner_id": owner.id,
            "credential_id": "credential-x",
            "key_id": "key-x",
            "task": "classification",
            "n_rows": 100 + n,
            "n_cols": 4,
            "created_at": self.tick(),
        }
        values.update(fields)
        return FittedModel(**values)

    def usage(self, key_id: str = "key-a", owner_id: str = "owner-a", **fields: Any) -> UsageEvent:
        n = next(self._counter)
        values: dict[str, Any] = {
            "id": f"usage-{n:05d}",
            "key_id": key_id,
            "owner_id": owner_id,
            "operation": "predict",
            "status": 200,
            "latency_ms": 12.5,
            "rows": 10,
            "bytes": 1000,
            "created_at": self.tick(),
        }
        values.update(fields)
        return UsageEvent(**values)

    def admin_session(self, key_id: str = "key-a", **fields: Any) -> AdminSession:
        n = next(self._counter)
        created = self.tick()
        values: dict[str, Any] = {
            "id": f"session-hash-{n:05d}",
            "key_id": key_id,
            "created_at": created,
            "last_seen_at": created,
            "expires_at": created + timedelta(hours=8),
        }
        values.update(fields)
        return AdminSession(**values)

    def audit(self, **fields: Any) -> AuditEvent:
        n = next(self._counter)
        values: dict[str, Any] = {
            "id": f"audit-{n:05d}",
            "actor": "admin",
            "action": "key.create",
            "target_type": "key",
            "target_id": f"target-{n % 3}",
            "created_at": self.tick(),
            "details": {"n": n, "names": ["a", "b"], "nested": {"ok": True}},
        }
        values.update(fields)
        return AuditEvent(**values)


def _walk(list_page: Callable[..., Page[T]], limit: int, **filters: Any) -> list[T]:
    """Every item of a paginated list, following cursors to the end."""
    items: list[T] = []
    cursor: str | None = None
    for _ in range(10_000):
        page = list_page(limit=limit, cursor=cursor, **filters)
        assert len(page.items) <= limit
        items.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return items
        assert page.items, "a page with a next cursor must not be empty"
    raise AssertionError("pagination never ended")


def _newest_first(records: list[Any], id_field: str = "id") -> list[Any]:
    return sorted(records, key=lambda r: (r.created_at, getattr(r, id_field)), reverse=True)


class StoreContractTests:
    """The contract of ``tabpfn_gateway.store.base.Store``, one test per promise.

    Needs a ``store`` fixture yielding an empty, ready store.
    """

    @pytest.fixture
    def make(self) -> _Factory:
        return _Factory()

    @pytest.fixture
    def owner(self, store: Store, make: _Factory) -> Principal:
        return store.add_principal(make.principal())

    # -- lifecycle ---------------------------------------------------------------------

    def test_is_a_store_and_answers_ping(self, store: Store) -> None:
        assert isinstance(store, Store)
        store.ping()

    # -- principals --------------------------------------------------------------------

    def test_principal_round_trip(self, store: Store, make: _Factory) -> None:
        principal = make.principal(kind="team")
        assert store.add_principal(principal) == principal
        assert store.get_principal(principal.id) == principal
        assert store.get_principal_by_name(principal.name) == principal

    def test_principal_missing_is_none(self, store: Store) -> None:
        assert store.get_principal("nope") is None
        assert store.get_principal_by_name("nope") is None

    def test_principal_name_lookup_is_case_sensitive(self, store: Store, make: _Factory) -> None:
        store.add_principal(make.principal(name="Alice"))
        assert store.get_principal_by_name("alice") is None
        lower = store.add_principal(make.principal(name="alice"))
        assert store.get_principal_by_name("alice") == lower

    def test_principal_duplicate_id_conflicts_and_changes_nothing(
        self, store: Store, make: _Factory
    ) -> None:
        first = store.add_principal(make.principal())
        with pytest.raises(Conflict):
            store.add_principal(make.principal(id=first.id))
        assert store.get_principal(first.id) == first
        assert len(_walk(store.list_principals, 10)) == 1

    def test_principal_duplicate_name_conflicts_and_changes_nothing(
        self, store: Store, make: _Factory
    ) -> None:
        first = store.add_principal(make.principal(name="shared"))
        second = make.principal(name="shared")
        with pytest.raises(Conflict):
            store.add_principal(second)
        assert store.get_principal(second.id) is None
        assert store.get_principal_by_name("shared") == first

    def test_list_principals_filters_by_kind(self, store: Store, make: _Factory) -> None:
        users = [store.add_principal(make.principal(kind="user")) for _ in range(3)]
        teams = [store.add_principal(make.principal(kind="team")) for _ in range(2)]
        assert _walk(store.list_principals, 2, kind="user") == _newest_first(users)
        assert _walk(store.list_principals, 2, kind="team") == _newest_first(teams)
        assert _walk(store.list_principals, 100) == _newest_first(users + teams)

    def test_timestamps_come_out_aware_utc(self, store: Store, make: _Factory) -> None:
        plus_two = timezone(timedelta(hours=2))
        local = datetime(2025, 6, 1, 14, 30, 15, 123456, tzinfo=plus_two)
        principal = store.add_principal(make.principal(created_at=local))
        stored = store.get_principal(principal.id)
        assert stored is not None
        assert stored.created_at == local
        assert stored.created_at.utcoffset() == timedelta(0)
        assert stored.created_at.hour == 12
        assert stored.created_at.microsecond == 123456

    def test_naive_timestamp_is_refused(self, store: Store, make: _Factory) -> None:
        naive = datetime(2025, 1, 1, 12, 0, 0)
        with pytest.raises(InvalidRequest):
            store.add_principal(make.principal(created_at=naive))
        assert _walk(store.list_principals, 10) == []

    # -- upstream credentials ----------------------------------------------------------

    def test_credential_round_trip(self, store: Store, make: _Factory, owner: Principal) -> None:
        credential = make.credential(owner, verified_at=make.tick())
        assert store.add_credential(credential) == credential
        assert store.get_credential(credential.id) == credential
        assert store.get_credential("nope") is None

    def test_credential_duplicate_id_conflicts(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        first = store.add_credential(make.credential(owner))
        with pytest.raises(Conflict):
            store.add_credential(make.credential(owner, id=first.id, label="other"))
        assert store.get_credential(first.id) == first

    def test_credential_with_missing_owner_conflicts(self, store: Store, make: _Factory) -> None:
        ghost = make.principal()
        credential = make.credential(ghost)
        with pytest.raises(Conflict):
            store.add_credential(credential)
        assert store.get_credential(credential.id) is None

    def test_list_credentials_filters_by_owner(self, store: Store, make: _Factory) -> None:
        alice = store.add_principal(make.principal())
        bob = store.add_principal(make.principal())
        mine = [store.add_credential(make.credential(alice)) for _ in range(3)]
        theirs = [store.add_credential(make.credential(bob)) for _ in range(2)]
        assert _walk(store.list_credentials, 2, owner_id=alice.id) == _newest_first(mine)
        assert _walk(store.list_credentials, 2, owner_id=bob.id) == _newest_first(theirs)
        assert _walk(store.list_credentials, 2) == _newest_first(mine + theirs)
        assert _walk(store.list_credentials, 2, owner_id="nobody") == []

    def test_iter_credentials_yields_all_in_stable_order(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        same_time = make.tick()
        credentials = [store.add_credential(make.credential(owner)) for _ in range(4)]
        credentials += [
            store.add_credential(make.credential(owner, created_at=same_time)) for _ in range(3)
        ]
        first = list(store.iter_credentials())
        assert sorted(first, key=lambda c: c.id) == sorted(credentials, key=lambda c: c.id)
        assert list(store.iter_credentials()) == first

    def test_update_credential_ciphertexts(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        a = store.add_credential(make.credential(owner))
        b = store.add_credential(make.credential(owner))
        untouched = store.add_credential(make.credential(owner))
        count = store.update_credential_ciphertexts({a.id: b"new-a", b.id: b"new-b", "nope": b"x"})
        assert count == 2
        assert store.get_credential(a.id) == replace(a, encrypted_token=b"new-a")
        assert store.get_credential(b.id) == replace(b, encrypted_token=b"new-b")
        assert store.get_credential(untouched.id) == untouched
        assert store.update_credential_ciphertexts({}) == 0

    def test_update_credential_ciphertexts_is_all_or_nothing(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        a = store.add_credential(make.credential(owner))
        b = store.add_credential(make.credential(owner))
        bad: dict[str, Any] = {a.id: b"new-a", b.id: "not bytes"}
        with pytest.raises(InvalidRequest):
            store.update_credential_ciphertexts(bad)
        assert store.get_credential(a.id) == a
        assert store.get_credential(b.id) == b

    def test_mark_credential_verified(self, store: Store, make: _Factory, owner: Principal) -> None:
        credential = store.add_credential(make.credential(owner))
        when = make.tick()
        assert store.mark_credential_verified(credential.id, when) is True
        assert store.get_credential(credential.id) == replace(credential, verified_at=when)
        assert store.mark_credential_verified("nope", when) is False

    def test_delete_credential_keeps_its_keys(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        credential = store.add_credential(make.credential(owner))
        key = store.add_key(make.key(owner, credential_id=credential.id))
        assert store.delete_credential(credential.id) is True
        assert store.get_credential(credential.id) is None
        assert store.delete_credential(credential.id) is False
        assert store.get_key(key.key_id) == key

    # -- gateway keys ------------------------------------------------------------------

    def test_key_round_trip_with_every_field(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        credential = store.add_credential(make.credential(owner))
        key = make.key(
            owner,
            credential_id=credential.id,
            scopes=("admin", "fit", "predict"),
            expires_at=make.tick(),
            revoked_at=make.tick(),
            disabled_at=make.tick(),
            last_used_at=make.tick(),
            previous_secret_hash=make.hash_value("old"),
            previous_hash_scheme="bcrypt",
            previous_valid_until=make.tick(),
            rotated_at=make.tick(),
            rotation_request_id="request-1",
            rotation_ciphertext=b"\x01\x02sealed",
        )
        assert store.add_key(key) == key
        stored = store.get_key(key.key_id)
        assert stored == key
        assert stored is not None
        assert isinstance(stored.scopes, tuple)
        assert store.get_key("nope") is None

    def test_key_scopes_come_back_as_a_tuple(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        key = make.key(owner, scopes=["predict"])
        store.add_key(key)
        stored = store.get_key(key.key_id)
        assert stored is not None
        assert stored.scopes == ("predict",)

    def test_key_scopes_must_be_a_sequence_of_strings(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        bare_string: Any = "predict"
        with pytest.raises(InvalidRequest):
            store.add_key(make.key(owner, scopes=bare_string))
        key = store.add_key(make.key(owner))
        with pytest.raises(InvalidRequest):
            store.update_key(key.key_id, {"scopes": bare_string})
        with pytest.raises(InvalidRequest):
            store.update_key(key.key_id, {"scopes": (1, 2)})  # type: ignore[typeddict-item]
        assert store.get_key(key.key_id) == key

    def test_key_duplicate_id_conflicts(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        first = store.add_key(make.key(owner))
        with pytest.raises(Conflict):
            store.add_key(make.key(owner, key_id=first.key_id, name="other"))
        assert store.get_key(first.key_id) == first

    def test_key_with_missing_owner_conflicts(self, store: Store, make: _Factory) -> None:
        key = make.key(make.principal())
        with pytest.raises(Conflict):
            store.add_key(key)
        assert store.get_key(key.key_id) is None

    def test_list_keys_filters_by_owner(self, store: Store, make: _Factory) -> None:
        alice = store.add_principal(make.principal())
        bob = store.add_principal(make.principal())
        mine = [store.add_key(make.key(alice)) for _ in range(4)]
        theirs = [store.add_key(make.key(bob)) for _ in range(2)]
        assert _walk(store.list_keys, 3, owner_id=alice.id) == _newest_first(mine, "key_id")
        assert _walk(store.list_keys, 3, owner_id=bob.id) == _newest_first(theirs, "key_id")
        assert _walk(store.list_keys, 3) == _newest_first(mine + theirs, "key_id")

    def test_update_key_applies_changes(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        key = store.add_key(make.key(owner))
        revoked = make.tick()
        updated = store.update_key(
            key.key_id, {"name": "renamed", "revoked_at": revoked, "scopes": ("predict",)}
        )
        expected = replace(key, name="renamed", revoked_at=revoked, scopes=("predict",))
        assert updated == expected
        assert store.get_key(key.key_id) == expected

    def test_update_key_can_clear_a_field(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        key = store.add_key(make.key(owner, disabled_at=make.tick()))
        assert store.update_key(key.key_id, {"disabled_at": None}) == replace(key, disabled_at=None)

    def test_update_key_missing_is_none(self, store: Store) -> None:
        assert store.update_key("nope", {"name": "x"}) is None
        assert store.update_key("nope", {"name": "x"}, expected={"name": "y"}) is None

    def test_update_key_with_no_changes_returns_current(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        key = store.add_key(make.key(owner))
        assert store.update_key(key.key_id, {}) == key

    def test_update_key_compare_and_set(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        key = store.add_key(make.key(owner))
        new_hash, newer_hash = make.hash_value("new"), make.hash_value("newer")
        first = store.update_key(
            key.key_id,
            {"secret_hash": new_hash, "rotation_request_id": "r1"},
            expected={"secret_hash": key.secret_hash, "rotation_request_id": None},
        )
        assert first == replace(key, secret_hash=new_hash, rotation_request_id="r1")
        # The same expectation again is stale now: nothing changes, the current key comes back.
        second = store.update_key(
            key.key_id,
            {"secret_hash": newer_hash, "rotation_request_id": "r2"},
            expected={"secret_hash": key.secret_hash, "rotation_request_id": None},
        )
        assert second == first
        assert store.get_key(key.key_id) == first

    def test_update_key_compare_and_set_on_timestamps_and_scopes(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        rotated = make.tick()
        key = store.add_key(make.key(owner, rotated_at=rotated, scopes=("fit", "predict")))
        stale = store.update_key(
            key.key_id, {"name": "x"}, expected={"rotated_at": rotated + timedelta(microseconds=1)}
        )
        assert stale == key
        assert store.update_key(key.key_id, {"name": "y"}, expected={"scopes": ("fit",)}) == key
        fresh = store.update_key(
            key.key_id,
            {"name": "z"},
            expected={"rotated_at": rotated, "scopes": ("fit", "predict")},
        )
        assert fresh == replace(key, name="z")

    def test_update_key_compare_and_set_is_atomic_across_threads(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        key = store.add_key(make.key(owner))
        winners: list[str] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def rotate(request_id: str) -> None:
            try:
                result = store.update_key(
                    key.key_id,
                    {"rotation_request_id": request_id},
                    expected={"rotation_request_id": None},
                )
                if result is not None and result.rotation_request_id == request_id:
                    with lock:
                        winners.append(request_id)
            except BaseException as exc:  # collected: a thread's failure must fail the test
                errors.append(exc)

        threads = [threading.Thread(target=rotate, args=(f"r{i}",)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(winners) == 1
        stored = store.get_key(key.key_id)
        assert stored is not None
        assert stored.rotation_request_id == winners[0]

    def test_update_key_refuses_unknown_fields(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        key = store.add_key(make.key(owner))
        not_changeable: Any = {"owner_id": "someone"}
        with pytest.raises(InvalidRequest):
            store.update_key(key.key_id, not_changeable)
        with pytest.raises(InvalidRequest):
            store.update_key(key.key_id, {"name": "x"}, expected=not_changeable)
        assert store.get_key(key.key_id) == key

    def test_touch_keys_never_moves_backwards(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        a = store.add_key(make.key(owner))
        b = store.add_key(make.key(owner))
        early, late = make.tick(), make.tick()
        store.touch_keys({a.key_id: late, b.key_id: early, "unknown": late})
        store.touch_keys({a.key_id: early, b.key_id: late})
        stored_a, stored_b = store.get_key(a.key_id), store.get_key(b.key_id)
        assert stored_a is not None
        assert stored_a.last_used_at == late
        assert stored_b is not None
        assert stored_b.last_used_at == late
        assert stored_a == replace(a, last_used_at=late)
        store.touch_keys({})
        assert store.get_key("unknown") is None

    # -- fitted models -----------------------------------------------------------------

    def test_fitted_model_round_trip_and_conflict(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        model = make.fitted_model(owner, n_rows=None, n_cols=None)
        assert store.add_fitted_model(model) == model
        assert store.get_fitted_model(model.id) == model
        assert store.get_fitted_model("nope") is None
        with pytest.raises(Conflict):
            store.add_fitted_model(make.fitted_model(owner, id=model.id))
        assert store.get_fitted_model(model.id) == model

    def test_upload_owners_are_pairs_and_claiming_twice_is_harmless(
        self, store: Store, make: _Factory
    ) -> None:
        alice = store.add_principal(make.principal())
        bob = store.add_principal(make.principal())
        store.add_upload_owner("upload-1", alice.id, "train")
        store.add_upload_owner("upload-1", alice.id, "train")  # a retried claim: no Conflict
        assert store.is_upload_owner("upload-1", alice.id)
        assert not store.is_upload_owner("upload-1", bob.id)
        assert not store.is_upload_owner("upload-2", alice.id)
        # The same content uploaded by another principal (a shared token's dedup): theirs too.
        store.add_upload_owner("upload-1", bob.id, "train")
        assert store.is_upload_owner("upload-1", bob.id)
        with store.atomic() as inner:
            inner.add_upload_owner("upload-2", alice.id, "test")
            inner.add_upload_owner("upload-2", alice.id, "test")
        assert store.is_upload_owner("upload-2", alice.id)

    def test_list_fitted_models_filters_by_owner(self, store: Store, make: _Factory) -> None:
        alice = store.add_principal(make.principal())
        bob = store.add_principal(make.principal())
        mine = [store.add_fitted_model(make.fitted_model(alice)) for _ in range(3)]
        theirs = [store.add_fitted_model(make.fitted_model(bob)) for _ in range(3)]
        assert _walk(store.list_fitted_models, 2, owner_id=alice.id) == _newest_first(mine)
        assert _walk(store.list_fitted_models, 5) == _newest_first(mine + theirs)

    # -- usage -------------------------------------------------------------------------

    def test_usage_round_trip_and_filters(self, store: Store, make: _Factory) -> None:
        events = [
            make.usage("k1", "o1", credential_id="c1", columns=3, upstream_trace_id="t"),
            make.usage("k1", "o1", rows=None, bytes=None),
            make.usage("k2", "o1"),
            make.usage("k3", "o2"),
        ]
        store.record_usage(events)
        store.record_usage([])
        assert _walk(store.list_usage, 3) == _newest_first(events)
        assert _walk(store.list_usage, 1, key_id="k1") == _newest_first(events[:2])
        assert _walk(store.list_usage, 2, owner_id="o1") == _newest_first(events[:3])
        assert _walk(store.list_usage, 2, key_id="k3", owner_id="o1") == []

    def test_usage_errors_only_skips_every_success(self, store: Store, make: _Factory) -> None:
        refused = make.usage("k1", status=429)
        failed = make.usage("k2", status=503)
        # Many successes after them: a page of errors is not a page of the newest events.
        store.record_usage([refused, failed, *(make.usage("k1") for _ in range(30))])
        assert store.list_usage(errors_only=True, limit=5).items == [failed, refused]
        assert _walk(store.list_usage, 1, errors_only=True) == [failed, refused]
        assert store.list_usage(key_id="k1", errors_only=True).items == [refused]
        assert store.list_usage(errors_only=True, since=failed.created_at).items == [failed]
        assert len(_walk(store.list_usage, 10)) == 32

    def test_usage_time_window_is_since_inclusive_until_exclusive(
        self, store: Store, make: _Factory
    ) -> None:
        events = [make.usage() for _ in range(5)]
        store.record_usage(events)
        since, until = events[1].created_at, events[3].created_at
        window = _walk(store.list_usage, 10, since=since, until=until)
        assert window == _newest_first(events[1:3])
        assert _walk(store.list_usage, 10, since=events[4].created_at) == [events[4]]
        assert _walk(store.list_usage, 10, until=events[0].created_at) == []

    def test_usage_batch_with_a_duplicate_id_records_nothing(
        self, store: Store, make: _Factory
    ) -> None:
        existing = make.usage()
        store.record_usage([existing])
        batch = [make.usage(), make.usage(id=existing.id), make.usage()]
        with pytest.raises(Conflict):
            store.record_usage(batch)
        assert _walk(store.list_usage, 10) == [existing]

    def test_a_large_usage_batch_lands_whole_or_not_at_all(
        self, store: Store, make: _Factory
    ) -> None:
        # More rows than one statement binds (SQLite writes a batch as several multi-row
        # inserts): every field of every row back, and a duplicate in the last chunk undoes
        # the first chunks too.
        events = [
            make.usage(f"k{n % 3}", credits=n, credential_id=None if n % 2 else "c", rows=n)
            for n in range(230)
        ]
        store.record_usage(events)
        assert _walk(store.list_usage, 100) == _newest_first(events)
        batch = [make.usage() for _ in range(200)] + [make.usage(id=events[0].id)]
        with pytest.raises(Conflict):
            store.record_usage(batch)
        assert len(_walk(store.list_usage, 100)) == 230

    def test_summarize_usage_adds_up(self, store: Store, make: _Factory) -> None:
        events = [
            make.usage(
                "k2", "o1", operation="predict", status=200, rows=5, bytes=50, latency_ms=1.5
            ),
            make.usage(
                "k2", "o1", operation="predict", status=429, rows=None, bytes=None, latency_ms=2.0
            ),
            make.usage("k2", "o1", operation="fit", status=500, rows=7, bytes=70, latency_ms=3.25),
            make.usage(
                "k1", "o1", operation="predict", status=200, rows=1, bytes=2, latency_ms=4.0
            ),
            make.usage("k3", "o2", operation="fit", status=399, rows=9, bytes=9, latency_ms=5.0),
        ]
        store.record_usage(events)
        assert store.summarize_usage(owner_id="o1") == [
            UsageSummary("k1", "predict", calls=1, errors=0, rows=1, bytes=2, total_latency_ms=4.0),
            UsageSummary("k2", "fit", calls=1, errors=1, rows=7, bytes=70, total_latency_ms=3.25),
            UsageSummary(
                "k2", "predict", calls=2, errors=1, rows=5, bytes=50, total_latency_ms=3.5
            ),
        ]
        assert store.summarize_usage(key_id="k3") == [
            UsageSummary("k3", "fit", calls=1, errors=0, rows=9, bytes=9, total_latency_ms=5.0)
        ]
        window = store.summarize_usage(since=events[1].created_at, until=events[3].created_at)
        assert [(s.key_id, s.operation, s.calls) for s in window] == [
            ("k2", "fit", 1),
            ("k2", "predict", 1),
        ]
        assert store.summarize_usage(key_id="none") == []

    # -- audit -------------------------------------------------------------------------

    def test_audit_round_trip_and_filters(self, store: Store, make: _Factory) -> None:
        events = [
            make.audit(actor="alice", action="key.create", target_id="k1"),
            make.audit(actor="alice", action="key.revoke", target_id="k1"),
            make.audit(actor="bob", action="key.create", target_id="k2", details={}),
        ]
        for event in events:
            store.record_audit(event)
        assert _walk(store.list_audit, 2) == _newest_first(events)
        assert _walk(store.list_audit, 2, target_id="k1") == _newest_first(events[:2])
        assert _walk(store.list_audit, 2, actor="bob") == [events[2]]
        assert _walk(store.list_audit, 2, action="key.create") == _newest_first(
            [events[0], events[2]]
        )
        assert _walk(store.list_audit, 2, actor="alice", action="key.create") == [events[0]]

    def test_audit_details_are_kept_not_aliased(self, store: Store, make: _Factory) -> None:
        details: dict[str, Any] = {"changed": ["name"], "count": 2}
        event = make.audit(details=details)
        store.record_audit(event)
        details["changed"].append("scopes")
        stored = _walk(store.list_audit, 10)
        assert stored[0].details == {"changed": ["name"], "count": 2}

    def test_audit_details_must_be_json(self, store: Store, make: _Factory) -> None:
        with pytest.raises(InvalidRequest):
            store.record_audit(make.audit(details={"when": object()}))
        assert _walk(store.list_audit, 10) == []

    # -- pagination --------------------------------------------------------------------

    @pytest.mark.parametrize("limit", [1, 2, 3, 7, 10, 11])
    def test_walking_pages_yields_everything_once_newest_first(
        self, store: Store, make: _Factory, limit: int
    ) -> None:
        tied = make.tick()
        principals = [store.add_principal(make.principal()) for _ in range(6)]
        # Equal timestamps are ordered by id, descending.
        principals += [store.add_principal(make.principal(created_at=tied)) for _ in range(4)]
        walked = _walk(store.list_principals, limit)
        assert walked == _newest_first(principals)

    def test_a_full_last_page_has_no_cursor(self, store: Store, make: _Factory) -> None:
        for _ in range(4):
            store.add_principal(make.principal())
        first = store.list_principals(limit=2)
        assert len(first.items) == 2
        assert first.next_cursor is not None
        second = store.list_principals(limit=2, cursor=first.next_cursor)
        assert len(second.items) == 2
        assert second.next_cursor is None
        assert store.list_principals(limit=4).next_cursor is None

    def test_empty_list(self, store: Store) -> None:
        page = store.list_keys()
        assert list(page.items) == []
        assert page.next_cursor is None

    def test_pagination_is_stable_while_inserting(self, store: Store, make: _Factory) -> None:
        before = [store.add_principal(make.principal()) for _ in range(9)]
        seen: list[Principal] = []
        cursor: str | None = None
        while True:
            page = store.list_principals(limit=2, cursor=cursor)
            seen.extend(page.items)
            # Newer records arrive between pages, and so does one back-dated into the past.
            store.add_principal(make.principal())
            store.add_principal(make.principal(created_at=BASE_TIME - timedelta(days=len(seen))))
            cursor = page.next_cursor
            if cursor is None:
                break
        seen_ids = [p.id for p in seen]
        assert len(seen_ids) == len(set(seen_ids)), "a record was returned twice"
        assert {p.id for p in before} <= set(seen_ids)
        assert seen == sorted(seen, key=lambda p: (p.created_at, p.id), reverse=True)

    def test_cursor_works_for_its_filter(self, store: Store, make: _Factory) -> None:
        alice = store.add_principal(make.principal())
        keys = [store.add_key(make.key(alice)) for _ in range(5)]
        first = store.list_keys(owner_id=alice.id, limit=2)
        rest = store.list_keys(owner_id=alice.id, limit=10, cursor=first.next_cursor)
        assert list(first.items) + list(rest.items) == _newest_first(keys, "key_id")

    @pytest.mark.parametrize("limit", [0, -1, MAX_PAGE_SIZE + 1])
    def test_limit_out_of_range_is_refused(self, store: Store, limit: int) -> None:
        with pytest.raises(InvalidRequest):
            store.list_principals(limit=limit)
        with pytest.raises(InvalidRequest):
            store.list_usage(limit=limit)

    def test_largest_limit_is_accepted(self, store: Store, make: _Factory) -> None:
        store.add_principal(make.principal())
        assert len(store.list_principals(limit=MAX_PAGE_SIZE).items) == 1

    @pytest.mark.parametrize(
        "cursor", ["garbage", "", "!!!", "eyJub3QiOiAiYSBsaXN0In0", "WyJub3QgYSBkYXRlIiwgIngiXQ"]
    )
    def test_bad_cursor_is_refused(self, store: Store, make: _Factory, cursor: str) -> None:
        store.add_principal(make.principal())
        with pytest.raises(InvalidRequest):
            store.list_principals(cursor=cursor)
        with pytest.raises(InvalidRequest):
            store.list_audit(cursor=cursor)

    # -- atomic ------------------------------------------------------------------------

    def test_atomic_rolls_back_everything_on_error(self, store: Store, make: _Factory) -> None:
        principal = make.principal()
        credential = make.credential(principal)
        key = make.key(principal, credential_id=credential.id)
        failure = RuntimeError("abort the block")

        def block() -> None:
            with store.atomic() as tx:
                tx.add_principal(principal)
                tx.add_credential(credential)
                tx.add_key(key)
                assert tx.get_key(key.key_id) == key  # the block sees its own writes
                raise failure

        with pytest.raises(RuntimeError) as raised:
            block()
        assert raised.value is failure
        assert store.get_principal(principal.id) is None
        assert store.get_credential(credential.id) is None
        assert store.get_key(key.key_id) is None
        assert _walk(store.list_principals, 10) == []

    def test_atomic_commits_on_success(self, store: Store, make: _Factory) -> None:
        principal = make.principal()
        key = make.key(principal)
        with store.atomic() as tx:
            tx.add_principal(principal)
            tx.add_key(key)
            tx.record_audit(make.audit(target_id=key.key_id))
        assert store.get_principal(principal.id) == principal
        assert store.get_key(key.key_id) == key
        assert len(_walk(store.list_audit, 10, target_id=key.key_id)) == 1

    def test_atomic_nested_joins_the_outer_block(self, store: Store, make: _Factory) -> None:
        outer_principal, inner_principal = make.principal(), make.principal()

        def block() -> None:
            with store.atomic() as outer:
                outer.add_principal(outer_principal)
                with outer.atomic() as inner:
                    inner.add_principal(inner_principal)
                raise KeyError("outer fails after the inner block finished")

        with pytest.raises(KeyError):
            block()
        assert store.get_principal(outer_principal.id) is None
        assert store.get_principal(inner_principal.id) is None

    def test_atomic_block_survives_a_caught_conflict(self, store: Store, make: _Factory) -> None:
        existing = store.add_principal(make.principal())
        newcomer = make.principal()
        with store.atomic() as tx:
            with pytest.raises(Conflict):
                tx.add_principal(make.principal(name=existing.name))
            tx.add_principal(newcomer)
        assert store.get_principal(newcomer.id) == newcomer

    def test_atomic_rolls_back_updates_and_deletes(
        self, store: Store, make: _Factory, owner: Principal
    ) -> None:
        credential = store.add_credential(make.credential(owner))
        key = store.add_key(make.key(owner))

        def block() -> None:
            with store.atomic() as tx:
                tx.update_key(key.key_id, {"name": "changed"})
                tx.touch_keys({key.key_id: make.tick()})
                tx.delete_credential(credential.id)
                tx.update_credential_ciphertexts({credential.id: b"x"})
                tx.record_usage([make.usage(key.key_id, owner.id)])
                raise ValueError("undo")

        with pytest.raises(ValueError, match="undo"):
            block()
        assert store.get_key(key.key_id) == key
        assert store.get_credential(credential.id) == credential
        assert _walk(store.list_usage, 10) == []

    # -- threads -----------------------------------------------------------------------

    def test_concurrent_writers_from_threads(self, store: Store, make: _Factory) -> None:
        principals = [make.principal() for _ in range(24)]
        errors: list[BaseException] = []

        def add(chunk: list[Principal]) -> None:
            try:
                for principal in chunk:
                    store.add_principal(principal)
                    store.record_usage([make.usage(owner_id=principal.id)])
            except BaseException as exc:  # collected: a thread's failure must fail the test
                errors.append(exc)

        threads = [threading.Thread(target=add, args=(principals[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert {p.id for p in _walk(store.list_principals, 100)} == {p.id for p in principals}
        assert len(_walk(store.list_usage, 100)) == len(principals)

    # -- usage credits, roll-ups and pruning ---------------------------------------------

    def test_usage_credits_round_trip_and_add_up(self, store: Store, make: _Factory) -> None:
        events = [
            make.usage("k1", "o1", credits=40),
            make.usage("k1", "o1", credits=None),
            make.usage("k1", "o1", credits=2),
        ]
        store.record_usage(events)
        assert sorted(_walk(store.list_usage, 10), key=lambda e: e.id) == events
        [summary] = store.summarize_usage(key_id="k1")
        assert summary.credits == 42
        assert summary.calls == 3

    def test_usage_rollup_groups_by_utc_day(self, store: Store, make: _Factory) -> None:
        day1 = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
        # 00:30 on March 2nd at +02:00 is 22:30 on March 1st in UTC: days are UTC days.
        other_zone = datetime(2026, 3, 2, 0, 30, tzinfo=timezone(timedelta(hours=2)))
        day2 = datetime(2026, 3, 2, 0, 30, tzinfo=UTC)
        store.record_usage(
            [
                make.usage("k1", "o1", created_at=day1, credits=5, rows=1, bytes=10),
                make.usage("k1", "o1", created_at=other_zone, credits=7, rows=2, bytes=20),
                make.usage("k1", "o1", created_at=day2, credits=11, status=500, rows=None),
                make.usage("k2", "o1", created_at=day2, operation="fit", credits=None),
            ]
        )
        assert store.usage_rollup(owner_id="o1") == [
            UsageRollup(date(2026, 3, 1), "k1", "o1", "predict", 2, 0, 3, 30, 12),
            UsageRollup(date(2026, 3, 2), "k1", "o1", "predict", 1, 1, 0, 1000, 11),
            UsageRollup(date(2026, 3, 2), "k2", "o1", "fit", 1, 0, 10, 1000, 0),
        ]
        assert [r.day for r in store.usage_rollup(since=day2)] == [date(2026, 3, 2)] * 2
        assert store.usage_rollup(key_id="nobody") == []

    def test_prune_keeps_daily_rollups_and_drops_old_rows(
        self, store: Store, make: _Factory
    ) -> None:
        old = datetime(2025, 1, 10, 12, tzinfo=UTC)
        new = datetime(2026, 1, 10, 12, tzinfo=UTC)
        store.record_usage(
            [
                make.usage("k1", "o1", created_at=old, credits=3),
                make.usage("k1", "o1", created_at=old + timedelta(hours=1), credits=4),
                make.usage("k1", "o1", created_at=new, credits=5),
            ]
        )
        store.record_audit(make.audit(created_at=old))
        kept_audit = make.audit(created_at=new)
        store.record_audit(kept_audit)
        before = store.usage_rollup()
        report = store.prune(datetime(2025, 6, 1, tzinfo=UTC))
        assert (report.usage_events, report.audit_events) == (2, 1)
        assert store.usage_rollup() == before
        assert [e.created_at for e in _walk(store.list_usage, 10)] == [new]
        assert _walk(store.list_audit, 10) == [kept_audit]
        # Pruning again changes nothing, and adds nothing twice.
        assert store.prune(datetime(2025, 6, 1, tzinfo=UTC)).usage_events == 0
        assert store.usage_rollup() == before

    def test_prune_drops_expired_counters(self, store: Store) -> None:
        past = datetime.now(UTC) - timedelta(minutes=5)
        future = datetime.now(UTC) + timedelta(hours=1)
        store.hit_counters([CounterHit("old", 5, past), CounterHit("new", 5, future)])
        report = store.prune(datetime(2000, 1, 1, tzinfo=UTC))
        assert report.counters == 1
        assert store.hit_counters([CounterHit("new", 5, future)]) == (None, [2])
        assert store.hit_counters([CounterHit("old", 5, future)]) == (None, [1])

    # -- policies and membership -------------------------------------------------------

    def test_policy_round_trip_replace_and_delete(self, store: Store, make: _Factory) -> None:
        policy = Policy(
            target_id="key00001",
            target_type="key",
            requests_per_minute=60,
            requests_per_hour=None,
            max_concurrent_fits=2,
            budget_credits=1000,
            budget_period="day",
            budget_window="rolling",
            budget_mode="soft",
            budget_unit="cells",
            alert_thresholds=(50, 80, 100),
            allowed_cidrs=("10.0.0.0/8", "2001:db8::/32"),
            updated_at=make.tick(),
        )
        assert store.put_policy(policy) == policy
        assert store.get_policy("key00001") == policy
        replaced = replace(
            policy, requests_per_minute=None, alert_thresholds=(), updated_at=make.tick()
        )
        store.put_policy(replaced)
        assert store.get_policy("key00001") == replaced
        other = Policy(target_id="p-2", target_type="principal", budget_credits=5)
        store.put_policy(other)
        assert [p.target_id for p in store.list_policies()] == ["key00001", "p-2"]
        assert store.list_policies(target_ids=["p-2", "missing"]) == [store.get_policy("p-2")]
        assert store.list_policies(target_ids=[]) == []
        assert store.delete_policy("key00001") is True
        assert store.delete_policy("key00001") is False
        assert store.get_policy("key00001") is None

    def test_membership_add_list_remove(self, store: Store, make: _Factory) -> None:
        team = store.add_principal(make.principal(kind="team"))
        alice = store.add_principal(make.principal())
        bob = store.add_principal(make.principal())
        joined = store.add_membership(Membership(team.id, alice.id, make.tick()))
        store.add_membership(Membership(team.id, bob.id, make.tick()))
        assert joined in store.list_memberships(team_id=team.id)
        assert [m.user_id for m in store.list_memberships(team_id=team.id)] == sorted(
            [alice.id, bob.id]
        )
        assert store.list_memberships(user_id=alice.id) == [joined]
        with pytest.raises(Conflict):
            store.add_membership(Membership(team.id, alice.id, make.tick()))
        with pytest.raises(Conflict):
            store.add_membership(Membership(team.id, "nobody", make.tick()))
        assert store.remove_membership(team.id, alice.id) is True
        assert store.remove_membership(team.id, alice.id) is False
        assert [m.user_id for m in store.list_memberships()] == [bob.id]

    # -- the reservation primitive -------------------------------------------------------

    def test_reserve_within_the_limit_then_refuse(self, store: Store) -> None:
        claim = BudgetClaim("s1", "month:2026-12", amount=4, limit=10)
        assert store.reserve_budget([claim]) is None
        assert store.reserve_budget([claim]) is None
        assert store.reserve_budget([claim]) == 0
        assert store.get_budget_counters("s1", ["month:2026-12"]) == [
            BudgetCounter("s1", "month:2026-12", spent=0, reserved=8)
        ]

    def test_settle_and_refund_move_reserved_to_spent(self, store: Store) -> None:
        claim = BudgetClaim("s1", "day:2026-12-01", amount=5, limit=10)
        assert store.reserve_budget([claim]) is None
        assert store.reserve_budget([claim]) is None
        [after] = store.settle_budget([claim], 3)
        assert (after.spent, after.reserved) == (3, 5)
        [after] = store.settle_budget([claim], 0)
        assert (after.spent, after.reserved) == (3, 0)
        # 3 spent: 7 more fit, 8 do not.
        assert store.reserve_budget([replace(claim, amount=8)]) == 0
        assert store.reserve_budget([replace(claim, amount=7)]) is None

    def test_reserve_is_all_or_nothing_across_claims(self, store: Store) -> None:
        key = BudgetClaim("key", "b", amount=5, limit=100)
        team = BudgetClaim("team", "b", amount=5, limit=4)
        assert store.reserve_budget([key, team]) == 1
        assert store.get_budget_counters("key", ["b"])[0].reserved == 0
        assert store.get_budget_counters("team", ["b", "other"]) == [
            BudgetCounter("team", "b"),
            BudgetCounter("team", "other"),
        ]

    def test_soft_claims_always_reserve(self, store: Store) -> None:
        soft = BudgetClaim("s", "b", amount=50, limit=None)
        assert store.reserve_budget([soft, soft]) is None
        assert store.get_budget_counters("s", ["b"])[0].reserved == 100

    def test_rolling_window_counts_earlier_buckets(self, store: Store) -> None:
        earlier = BudgetClaim("s", "h:01", amount=6, limit=10)
        assert store.reserve_budget([earlier]) is None
        store.settle_budget([earlier], 6)
        now = BudgetClaim("s", "h:02", amount=5, limit=10, window=("h:01",))
        assert store.reserve_budget([now]) == 0
        assert store.reserve_budget([replace(now, amount=4)]) is None
        # Outside the window, the old bucket no longer counts.
        later = BudgetClaim("s", "h:30", amount=10, limit=10, window=("h:29",))
        assert store.reserve_budget([later]) is None

    def test_reserve_refuses_bad_amounts(self, store: Store) -> None:
        with pytest.raises(InvalidRequest):
            store.reserve_budget([BudgetClaim("s", "b", amount=-1, limit=10)])
        with pytest.raises(InvalidRequest):
            store.settle_budget([BudgetClaim("s", "b", amount=1)], -5)

    def test_reserve_is_exact_across_threads(self, store: Store) -> None:
        claim = BudgetClaim("shared", "b", amount=3, limit=30)
        outcomes: list[int | None] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        barrier = threading.Barrier(16)

        def worker() -> None:
            try:
                barrier.wait()
                for _ in range(4):
                    outcome = store.reserve_budget([claim])
                    with lock:
                        outcomes.append(outcome)
            except BaseException as exc:  # collected: a thread's failure must fail the test
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert outcomes.count(None) == 10
        assert store.get_budget_counters("shared", ["b"])[0].reserved == 30

    def test_budget_alert_is_marked_once(self, store: Store) -> None:
        claim = BudgetClaim("s", "b", amount=1, limit=10)
        store.reserve_budget([claim])
        assert store.mark_budget_alert("s", "b", 50) is True
        assert store.mark_budget_alert("s", "b", 50) is False
        assert store.mark_budget_alert("s", "b", 20) is False
        assert store.mark_budget_alert("s", "b", 80) is True
        assert store.get_budget_counters("s", ["b"])[0].alerted == 80

    # -- shared counters (rate limits, concurrency) ---------------------------------------

    def test_hit_counters_up_to_the_limit(self, store: Store) -> None:
        expires = datetime.now(UTC) + timedelta(minutes=1)
        assert store.hit_counters([CounterHit("rpm", 2, expires)]) == (None, [1])
        assert store.hit_counters([CounterHit("rpm", 2, expires)]) == (None, [2])
        assert store.hit_counters([CounterHit("rpm", 2, expires)]) == (0, [2])
        assert store.hit_counters([]) == (None, [])

    def test_hit_counters_is_all_or_nothing(self, store: Store) -> None:
        expires = datetime.now(UTC) + timedelta(minutes=1)
        store.hit_counters([CounterHit("full", 1, expires)])
        assert store.hit_counters(
            [CounterHit("fresh", 5, expires), CounterHit("full", 1, expires)]
        ) == (1, [0, 1])
        assert store.hit_counters([CounterHit("fresh", 5, expires)]) == (None, [1])

    def test_release_counters_never_below_zero(self, store: Store) -> None:
        expires = datetime.now(UTC) + timedelta(minutes=1)
        store.hit_counters([CounterHit("slots", 2, expires, amount=2)])
        assert store.hit_counters([CounterHit("slots", 2, expires)])[0] == 0
        store.release_counters({"slots": 1, "unknown": 3})
        assert store.hit_counters([CounterHit("slots", 2, expires)]) == (None, [2])
        store.release_counters({"slots": 10})
        assert store.hit_counters([CounterHit("slots", 2, expires)]) == (None, [1])

    def test_hit_counters_is_exact_across_threads(self, store: Store) -> None:
        expires = datetime.now(UTC) + timedelta(minutes=1)
        allowed: list[bool] = []
        lock = threading.Lock()
        barrier = threading.Barrier(8)

        def worker() -> None:
            barrier.wait()
            for _ in range(5):
                refused, _counts = store.hit_counters([CounterHit("shared", 17, expires)])
                with lock:
                    allowed.append(refused is None)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert allowed.count(True) == 17

    # -- admin console sessions --------------------------------------------------------

    def test_admin_session_round_trip_and_conflict(self, store: Store, make: _Factory) -> None:
        session = make.admin_session()
        assert store.add_admin_session(session) == session
        assert store.get_admin_session(session.id) == session
        assert store.get_admin_session("no-such-session") is None
        with pytest.raises(Conflict):
            store.add_admin_session(replace(session, key_id="key-b"))
        assert store.get_admin_session(session.id) == session

    def test_touch_admin_session_never_moves_backwards(self, store: Store, make: _Factory) -> None:
        session = store.add_admin_session(make.admin_session())
        later = session.last_seen_at + timedelta(minutes=5)
        assert store.touch_admin_session(session.id, later)
        assert store.touch_admin_session(session.id, session.last_seen_at)
        found = store.get_admin_session(session.id)
        assert found is not None
        assert found.last_seen_at == later
        assert not store.touch_admin_session("no-such-session", later)

    def test_delete_admin_sessions_by_id_key_and_expiry(self, store: Store, make: _Factory) -> None:
        a1 = store.add_admin_session(make.admin_session("key-a"))
        a2 = store.add_admin_session(make.admin_session("key-a"))
        b = store.add_admin_session(make.admin_session("key-b"))
        old = store.add_admin_session(
            make.admin_session("key-c", expires_at=BASE_TIME + timedelta(seconds=1))
        )
        assert store.delete_admin_sessions(expires_before=BASE_TIME + timedelta(minutes=1)) == 1
        assert store.get_admin_session(old.id) is None
        assert store.delete_admin_sessions(session_id=a1.id) == 1
        assert store.delete_admin_sessions(session_id=a1.id) == 0
        assert store.get_admin_session(a2.id) == a2
        assert store.delete_admin_sessions(key_id="key-a") == 1
        assert store.get_admin_session(a2.id) is None
        assert store.get_admin_session(b.id) == b

    def test_delete_admin_sessions_needs_a_filter(self, store: Store, make: _Factory) -> None:
        session = store.add_admin_session(make.admin_session())
        with pytest.raises(InvalidRequest):
            store.delete_admin_sessions()
        assert store.get_admin_session(session.id) == session

    # -- deployment state and upload ids -----------------------------------------------------

    def test_claim_state_keeps_the_first_value(self, store: Store) -> None:
        assert store.get_state("secret") is None
        assert store.claim_state("secret", "fp-1") == "fp-1"
        assert store.claim_state("secret", "fp-2") == "fp-1"
        assert store.get_state("secret") == "fp-1"
        store.put_state("secret", "fp-3")
        assert store.get_state("secret") == "fp-3"
        assert store.claim_state("secret", "fp-4") == "fp-3"

    def test_counters_count_from_zero_exactly_across_threads(self, store: Store) -> None:
        import threading

        assert store.read_counter("changes") == 0
        threads = [
            threading.Thread(target=lambda: [store.bump_counter("changes") for _ in range(5)])
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert store.read_counter("changes") == 20
        assert store.read_counter("other") == 0

    def test_upload_ids_belong_to_the_principals_recorded_for_them(self, store: Store) -> None:
        assert not store.is_upload_owner("up-1", "alice")
        store.add_upload_owner("up-1", "alice", "train")
        store.add_upload_owner("up-1", "alice", "train")  # idempotent
        assert store.is_upload_owner("up-1", "alice")
        assert not store.is_upload_owner("up-1", "bob")
        assert not store.is_upload_owner("up-2", "alice")
        store.add_upload_owner("up-1", "bob", "train")
        assert store.is_upload_owner("up-1", "bob")
        assert store.is_upload_owner("up-1", "alice")
