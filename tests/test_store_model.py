"""The SQL store against the memory store as a model: hypothesis drives both with the same calls."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    rule,
    run_state_machine_as_test,
)

from tabpfn_gateway import migrate
from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import GatewayError
from tabpfn_gateway.store import (
    ApiKey,
    AuditEvent,
    FittedModel,
    Principal,
    Store,
    UpstreamCredential,
    UsageEvent,
)
from tabpfn_gateway.store import schema as tables
from tabpfn_gateway.store.memory import MemoryStore
from tabpfn_gateway.store.sql import SqlStore

BASE = datetime(2025, 5, 1, 9, 30, 0, 250_000, tzinfo=UTC)

# Few distinct values, so that collisions (Conflict), ties in created_at and shared owners
# happen often; some non-ASCII to check that orderings agree byte for byte.
ids = st.sampled_from(["a", "b", "c", "B", "é", "z9", "ß", "a1"])
names = st.sampled_from(["alice", "Alice", "bob", "ümlaut", "team-x", ""])
times = st.builds(
    lambda seconds, micros, offset: (
        BASE + timedelta(seconds=seconds, microseconds=micros)
    ).astimezone(timezone(timedelta(hours=offset))),
    st.integers(0, 3),
    st.sampled_from([0, 1, 999_999]),
    st.sampled_from([0, 2, -5]),
)
optional_times = st.none() | times
scopes = st.lists(st.sampled_from(["fit", "predict", "admin"]), max_size=3).map(tuple)
# Multiples of 1/4 add up exactly in any order, so SQL and Python sums agree bit for bit.
latencies = st.integers(0, 400).map(lambda n: n / 4)
limits = st.integers(1, 4)

KEY_CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "name": names,
        "scopes": scopes,
        "secret_hash": st.sampled_from(["h1", "h2"]),
        "revoked_at": optional_times,
        "disabled_at": optional_times,
        "last_used_at": optional_times,
        "rotation_request_id": st.none() | st.sampled_from(["r1", "r2"]),
        "rotation_ciphertext": st.none() | st.sampled_from([b"x", b"\x00y"]),
    },
)


def _outcome(call: Callable[[], Any]) -> Any:
    """A call's result, or the error code it raised (the comparison is by code)."""
    try:
        result = call()
    except GatewayError as exc:
        return ("error", exc.error_code)
    if hasattr(result, "items") and hasattr(result, "next_cursor"):
        return ("page", list(result.items), result.next_cursor is None)
    return ("ok", result)


def _walk(store: Store, method: str, limit: int, **filters: Any) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        page = getattr(store, method)(limit=limit, cursor=cursor, **filters)
        items.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return items


class StoreModel(RuleBasedStateMachine):
    """Every rule runs on the SQL store and the memory store; outcomes must be equal."""

    sql: SqlStore  # set by the test that runs the machine

    # Ids that were added (or tried): later rules draw from them to hit existing records.
    principal_ids = Bundle("principal_ids")
    key_ids = Bundle("key_ids")
    credential_ids = Bundle("credential_ids")

    def __init__(self) -> None:
        super().__init__()
        with self.sql.engine.begin() as connection:
            for table in reversed(tables.metadata.sorted_tables):
                connection.execute(table.delete())
        self.model = MemoryStore()
        self.counter = 0

    def _both(self, call: Callable[[Store], Any]) -> Any:
        expected = _outcome(lambda: call(self.model))
        actual = _outcome(lambda: call(self.sql))
        assert actual == expected
        return expected

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    # -- writes --------------------------------------------------------------------------

    @rule(
        target=principal_ids,
        principal_id=ids,
        name=names,
        kind=st.sampled_from(["user", "team"]),
        at=times,
    )
    def add_principal(self, principal_id: str, name: str, kind: Any, at: datetime) -> str:
        principal = Principal(id=principal_id, name=name, kind=kind, created_at=at)
        self._both(lambda s: s.add_principal(principal))
        return principal_id

    @rule(
        target=credential_ids,
        credential_id=ids,
        owner_id=principal_ids | ids,
        at=times,
        token=st.binary(max_size=8),
    )
    def add_credential(self, credential_id: str, owner_id: str, at: datetime, token: bytes) -> str:
        credential = UpstreamCredential(
            id=credential_id, owner_id=owner_id, label="l", encrypted_token=token, created_at=at
        )
        self._both(lambda s: s.add_credential(credential))
        return credential_id

    @rule(
        target=key_ids,
        key_id=ids,
        owner_id=principal_ids | ids,
        credential_id=st.none() | credential_ids | ids,
        at=times,
        key_scopes=scopes,
    )
    def add_key(
        self,
        key_id: str,
        owner_id: str,
        credential_id: str | None,
        at: datetime,
        key_scopes: tuple[str, ...],
    ) -> str:
        key = ApiKey(
            key_id=key_id,
            name="k",
            owner_id=owner_id,
            credential_id=credential_id,
            scopes=key_scopes,
            secret_hash="h1",
            hash_scheme="hmac-sha256",
            display_prefix="tpg_" + key_id,
            last4="1234",
            created_at=at,
        )
        self._both(lambda s: s.add_key(key))
        return key_id

    @rule(target=key_ids, key_id=ids, name=names, at=times)
    def add_owner_and_key(self, key_id: str, name: str, at: datetime) -> str:
        # A shortcut to keys that exist, so key rules act on real rows often enough.
        owner_id = f"o{self._next()}"
        owner = Principal(id=owner_id, name=name + owner_id, created_at=at)
        self._both(lambda s: s.add_principal(owner))
        self.add_key(key_id, owner_id, None, at, ("fit",))
        return key_id

    @rule(key_id=key_ids | ids, changes=KEY_CHANGES, expected=st.none() | KEY_CHANGES)
    def update_key(self, key_id: str, changes: Any, expected: Any) -> None:
        self._both(lambda s: s.update_key(key_id, changes, expected=expected))

    @rule(
        touches=st.dictionaries(key_ids, times, min_size=1, max_size=3)
        | st.dictionaries(ids, times, max_size=2)
    )
    def touch_keys(self, touches: dict[str, datetime]) -> None:
        self._both(lambda s: s.touch_keys(touches))

    @rule(credential_id=credential_ids | ids, at=times)
    def mark_verified(self, credential_id: str, at: datetime) -> None:
        self._both(lambda s: s.mark_credential_verified(credential_id, at))

    @rule(credential_id=credential_ids | ids)
    def delete_credential(self, credential_id: str) -> None:
        self._both(lambda s: s.delete_credential(credential_id))

    @rule(ciphertexts=st.dictionaries(credential_ids | ids, st.binary(max_size=4), max_size=3))
    def reencrypt(self, ciphertexts: dict[str, bytes]) -> None:
        self._both(lambda s: s.update_credential_ciphertexts(ciphertexts))

    @rule(
        model_id=ids,
        owner_id=principal_ids | ids,
        at=times,
        n_rows=st.none() | st.integers(0, 10**12),
    )
    def add_fitted_model(
        self, model_id: str, owner_id: str, at: datetime, n_rows: int | None
    ) -> None:
        model = FittedModel(
            id=model_id,
            owner_id=owner_id,
            credential_id="c",
            key_id="k",
            task="regression",
            n_rows=n_rows,
            created_at=at,
        )
        self._both(lambda s: s.add_fitted_model(model))

    @rule(
        events=st.lists(
            st.tuples(
                ids,
                ids,
                st.sampled_from(["fit", "predict"]),
                st.sampled_from([200, 400, 429, 500]),
                latencies,
                st.none() | st.integers(0, 1000),
                times,
            ),
            max_size=3,
        ),
        reuse_id=st.booleans(),
    )
    def record_usage(self, events: list[Any], reuse_id: bool) -> None:
        batch = []
        for key_id, owner_id, operation, status, latency, rows, at in events:
            event_id = "u1" if reuse_id else f"u{self._next()}"
            batch.append(
                UsageEvent(
                    id=event_id,
                    key_id=key_id,
                    owner_id=owner_id,
                    operation=operation,
                    status=status,
                    latency_ms=latency,
                    rows=rows,
                    bytes=rows,
                    created_at=at,
                )
            )
        self._both(lambda s: s.record_usage(batch))

    @rule(target_id=ids, actor=names, action=st.sampled_from(["create", "revoke"]), at=times)
    def record_audit(self, target_id: str, actor: str, action: str, at: datetime) -> None:
        event = AuditEvent(
            id=f"a{self._next()}",
            actor=actor,
            action=action,
            target_type="key",
            target_id=target_id,
            created_at=at,
            details={"n": self.counter, "list": [1, "two"]},
        )
        self._both(lambda s: s.record_audit(event))

    @rule(principal_id=ids, key_id=key_ids | ids, at=times, fail=st.booleans())
    def atomic_block(self, principal_id: str, key_id: str, at: datetime, fail: bool) -> None:
        def block(store: Store) -> None:
            with store.atomic() as tx:
                tx.add_principal(
                    Principal(id=principal_id, name=f"n-{principal_id}", created_at=at)
                )
                tx.touch_keys({key_id: at})
                if fail:
                    raise RuntimeError("roll back")

        def run(store: Store) -> str:
            try:
                block(store)
            except RuntimeError:
                return "rolled back"
            return "committed"

        self._both(run)

    # -- reads ---------------------------------------------------------------------------

    @rule(principal_id=ids, name=names)
    def get_principal(self, principal_id: str, name: str) -> None:
        self._both(lambda s: s.get_principal(principal_id))
        self._both(lambda s: s.get_principal_by_name(name))

    @rule(record_id=ids)
    def get_records(self, record_id: str) -> None:
        self._both(lambda s: s.get_key(record_id))
        self._both(lambda s: s.get_credential(record_id))
        self._both(lambda s: s.get_fitted_model(record_id))

    @rule(
        limit=limits, owner_id=st.none() | ids, kind=st.none() | st.sampled_from(["user", "team"])
    )
    def first_pages(self, limit: int, owner_id: str | None, kind: Any) -> None:
        self._both(lambda s: s.list_principals(kind=kind, limit=limit))
        self._both(lambda s: s.list_keys(owner_id=owner_id, limit=limit))
        self._both(lambda s: s.list_credentials(owner_id=owner_id, limit=limit))
        self._both(lambda s: s.list_fitted_models(owner_id=owner_id, limit=limit))

    @rule(
        limit=limits,
        key_id=st.none() | ids,
        owner_id=st.none() | ids,
        since=optional_times,
        until=optional_times,
    )
    def usage_views(
        self,
        limit: int,
        key_id: str | None,
        owner_id: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> None:
        filters = {"key_id": key_id, "owner_id": owner_id, "since": since, "until": until}
        self._both(lambda s: _walk(s, "list_usage", limit, **filters))
        self._both(lambda s: s.summarize_usage(**filters))

    @rule(limit=limits, target_id=st.none() | ids, actor=st.none() | names)
    def audit_view(self, limit: int, target_id: str | None, actor: str | None) -> None:
        self._both(lambda s: _walk(s, "list_audit", limit, target_id=target_id, actor=actor))

    @rule()
    def everything_agrees(self) -> None:
        # A rule rather than an invariant: checked often enough, and shrinking stays quick.
        for method in ("list_principals", "list_keys", "list_credentials", "list_fitted_models"):
            self._both(lambda s, m=method: _walk(s, m, 3))
        self._both(lambda s: list(s.iter_credentials()))


def _run(store: SqlStore, max_examples: int, steps: int) -> None:
    machine = type("Machine", (StoreModel,), {"sql": store})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )


def _migrated(url: str) -> SqlStore:
    settings_ = Settings(database_url=url)
    migrate.upgrade(settings_)
    return SqlStore.from_url(url, settings=settings_)


@pytest.mark.slow
def test_sqlite_store_behaves_like_the_memory_store(sqlite_url: str) -> None:
    store = _migrated(sqlite_url)
    try:
        _run(store, max_examples=80, steps=40)
    finally:
        store.close()


@pytest.mark.slow
def test_postgres_store_behaves_like_the_memory_store(pg_url: str) -> None:
    store = _migrated(pg_url)
    try:
        _run(store, max_examples=25, steps=30)
    finally:
        store.close()
