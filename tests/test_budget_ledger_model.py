"""Reserve -> settle -> refund against a simple model (hypothesis): never overspends, never
loses a credit, on the memory store, SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tabpfn_gateway import migrate
from tabpfn_gateway.config import Settings
from tabpfn_gateway.store import Store
from tabpfn_gateway.store.memory import MemoryStore
from tabpfn_gateway.store.records import BudgetClaim
from tabpfn_gateway.store.sql import SqlStore

# Three subjects sharing buckets: a key, its user and their team (the tightest-of shape).
SUBJECTS = ("key", "user", "team")
BUCKET = "month:2026-12"


class Ledger(RuleBasedStateMachine):
    """The store's budget counters against a dict model. Amounts settle at most at their
    estimate here, so a hard limit must hold for spent + reserved at every step."""

    store: Store
    reservations = Bundle("reservations")

    @initialize(limits=st.fixed_dictionaries({s: st.none() | st.integers(0, 40) for s in SUBJECTS}))
    def start(self, limits: dict[str, int | None]) -> None:
        # A fresh namespace per example: the store is shared across examples.
        self.prefix = uuid.uuid4().hex[:8]
        self.limits = limits
        self.spent = dict.fromkeys(SUBJECTS, 0)
        self.reserved = dict.fromkeys(SUBJECTS, 0)
        self.settled_total = 0

    def _claims(self, subjects: tuple[str, ...], amount: int) -> list[BudgetClaim]:
        return [
            BudgetClaim(f"{self.prefix}-{s}", BUCKET, amount=amount, limit=self.limits[s])
            for s in subjects
        ]

    @rule(
        target=reservations,
        subjects=st.sampled_from([("key",), ("key", "user"), ("key", "user", "team"), ("team",)]),
        amount=st.integers(0, 15),
    )
    def reserve(self, subjects: tuple[str, ...], amount: int) -> object:
        expected = None
        for index, subject in enumerate(subjects):
            limit = self.limits[subject]
            if limit is not None and self.spent[subject] + self.reserved[subject] + amount > limit:
                expected = index
                break
        outcome = self.store.reserve_budget(self._claims(subjects, amount))
        assert outcome == expected
        if outcome is not None:
            return None
        for subject in subjects:
            self.reserved[subject] += amount
        return (subjects, amount)

    @rule(reservation=consumes(reservations), data=st.data())
    def settle(self, reservation: object, data: st.DataObject) -> None:
        if reservation is None:
            return
        subjects, amount = reservation  # type: ignore[misc]
        actual = data.draw(st.integers(0, amount))
        counters = self.store.settle_budget(self._claims(subjects, amount), actual)
        for subject, counter in zip(subjects, counters, strict=True):
            self.reserved[subject] -= amount
            self.spent[subject] += actual
            assert (counter.spent, counter.reserved) == (
                self.spent[subject],
                self.reserved[subject],
            )
        self.settled_total += actual

    @rule(reservation=consumes(reservations))
    def refund(self, reservation: object) -> None:
        if reservation is None:
            return
        subjects, amount = reservation  # type: ignore[misc]
        self.store.settle_budget(self._claims(subjects, amount), 0)
        for subject in subjects:
            self.reserved[subject] -= amount

    @invariant()
    def counters_match_the_model_and_never_overspend(self) -> None:
        if not hasattr(self, "prefix"):
            return
        for subject in SUBJECTS:
            [counter] = self.store.get_budget_counters(f"{self.prefix}-{subject}", [BUCKET])
            # No credit lost or invented: the store holds exactly what the model holds.
            assert (counter.spent, counter.reserved) == (
                self.spent[subject],
                self.reserved[subject],
            )
            limit = self.limits[subject]
            if limit is not None:
                assert counter.spent + counter.reserved <= limit


def _run(store: Store, max_examples: int) -> None:
    machine = type("LedgerOn", (Ledger,), {"store": store})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


@pytest.fixture
def sql_store(request: pytest.FixtureRequest) -> Iterator[SqlStore]:
    url = request.getfixturevalue(request.param)
    settings_ = Settings(database_url=url)
    migrate.upgrade(settings_)
    store = SqlStore.from_url(url, settings=settings_)
    try:
        yield store
    finally:
        store.close()


def test_memory_ledger_matches_the_model() -> None:
    _run(MemoryStore(), max_examples=150)


@pytest.mark.parametrize("sql_store", ["sqlite_url"], indirect=True)
def test_sqlite_ledger_matches_the_model(sql_store: SqlStore) -> None:
    _run(sql_store, max_examples=60)


@pytest.mark.parametrize("sql_store", ["pg_url"], indirect=True)
def test_postgres_ledger_matches_the_model(sql_store: SqlStore) -> None:
    _run(sql_store, max_examples=30)
