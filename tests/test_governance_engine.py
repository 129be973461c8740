"""The policy engine through in-process sessions: rate limits, budgets (hard and soft,
calendar and rolling), tightest-of across key, owner and team, fit slots, alerts, allowlists."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification

from gateway_support import Tenant, add_tenant, build_gateway, make_settings
from tabpfn_gateway import migrate
from tabpfn_gateway.errors import (
    BudgetExhausted,
    ConcurrencyLimited,
    InvalidRequest,
    IpNotAllowed,
    KeyNotFound,
    RateLimited,
)
from tabpfn_gateway.gateway import Gateway
from tabpfn_gateway.governance import (
    BudgetAlert,
    InProcessLimiter,
    PolicyEngine,
    RateCheck,
    StoreLimiter,
    address_allowed,
    budget_span,
    client_address,
)
from tabpfn_gateway.protocol.messages import ClassifierConfig, ClassifierFitTaskConfig
from tabpfn_gateway.store import open_store
from tabpfn_gateway.testing import FakeTabPFN

TOKEN = "tok-engine-1"


@pytest.fixture(params=["memory", "sqlite"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Gateway]:
    fake = FakeTabPFN(tokens=[TOKEN])
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/gateway.db"
    settings = make_settings(tmp_path, url)
    if request.param == "sqlite":
        migrate.upgrade(settings)
    gw = build_gateway(settings, fake.app, store=open_store(settings))
    gw.fake = fake  # type: ignore[attr-defined]
    yield gw
    gw.close()
    gw.store.close()


@pytest.fixture
def ann(gateway: Gateway) -> Tenant:
    return add_tenant(gateway, "ann", TOKEN)


def fitted(gateway: Gateway, tenant: Tenant) -> str:
    X, y = make_classification(
        n_samples=60, n_features=4, n_informative=2, n_redundant=0, random_state=0
    )
    session = gateway.session(tenant.key)
    return str(session.fit(X, y, ClassifierFitTaskConfig()).fitted_train_set_id)


def predict(gateway: Gateway, tenant: Tenant, fit_id: str, rows: int = 5) -> None:
    X_test = np.random.default_rng(rows).normal(size=(rows, 4))
    gateway.session(tenant.key).predict(fit_id, X_test, ClassifierConfig())


def test_no_policy_changes_nothing_and_credits_are_metered(gateway: Gateway, ann: Tenant) -> None:
    fit_id = fitted(gateway, ann)
    predict(gateway, ann, fit_id, rows=7)
    gateway.usage.flush()
    [summary] = [
        s for s in gateway.store.summarize_usage(key_id=ann.key_id) if s.operation == "predict"
    ]
    assert summary.credits == 7 * 4


def test_requests_per_minute_refuse_with_retry_after(gateway: Gateway, ann: Tenant) -> None:
    gateway.admin.set_policy(ann.key_id, {"requests_per_minute": 3}, kind="key")
    session = gateway.session(ann.key)
    for _ in range(3):
        session.check_token()
    with pytest.raises(RateLimited) as refused:
        session.check_token()
    assert refused.value.retry_after is not None
    assert 1 <= refused.value.retry_after <= 60
    assert refused.value.details["policy"] == "key-minute"
    assert refused.value.details["limit"] == 3


def test_a_hard_budget_spends_exactly_its_credits(gateway: Gateway, ann: Tenant) -> None:
    gateway.admin.set_policy(ann.key_id, {"budget_credits": 50}, kind="key")
    fit_id = fitted(gateway, ann)
    predict(gateway, ann, fit_id, rows=5)  # 20 credits
    predict(gateway, ann, fit_id, rows=5)  # 40
    with pytest.raises(BudgetExhausted) as refused:
        predict(gateway, ann, fit_id, rows=5)  # would be 60
    assert refused.value.details["remaining"] == 10
    predict(gateway, ann, fit_id, rows=2)  # 8 more fits: 48
    [status] = gateway.admin.budget_status(ann.key_id)
    assert (status.spent, status.reserved, status.remaining) == (48, 0, 2)


def test_a_failed_call_is_refunded(gateway: Gateway, ann: Tenant) -> None:
    gateway.admin.set_policy(ann.key_id, {"budget_credits": 20}, kind="key")
    fit_id = fitted(gateway, ann)
    gateway.fake.fail_next(1, status=400, path="/tabpfn/predict")  # type: ignore[attr-defined]
    with pytest.raises(Exception):  # noqa: B017 (the upstream's failure, whatever its class)
        predict(gateway, ann, fit_id, rows=5)
    [status] = gateway.admin.budget_status(ann.key_id)
    assert (status.spent, status.reserved) == (0, 0)
    predict(gateway, ann, fit_id, rows=5)  # the whole budget is still there


def test_a_call_of_unknown_price_holds_what_is_left(gateway: Gateway, ann: Tenant) -> None:
    gateway.admin.set_policy(
        ann.key_id, {"budget_credits": 100, "budget_window": "rolling"}, kind="key"
    )
    engine = gateway.policy_engine
    key = gateway.store.get_key(ann.key_id)
    assert engine is not None
    assert key is not None
    first = engine.admit(key, "predict", credits=None)
    # While it runs, nothing is left for anyone: calls in flight cannot overshoot together.
    with pytest.raises(BudgetExhausted):
        engine.admit(key, "predict", credits=None)
    with pytest.raises(BudgetExhausted):
        engine.admit(key, "predict", credits=5)
    first.settle(30)
    [status] = engine.budget_status(key)
    assert (status.spent, status.reserved) == (30, 0)
    second = engine.admit(key, "predict", credits=None)
    [status] = engine.budget_status(key)
    assert (status.spent, status.reserved) == (30, 70)
    second.refund()
    third = engine.admit(key, "predict", credits=70)
    third.settle(70)
    with pytest.raises(BudgetExhausted):
        engine.admit(key, "predict", credits=None)


def test_tightest_of_key_owner_and_team(gateway: Gateway, ann: Tenant) -> None:
    team = gateway.admin.add_principal("data-team", "team")
    gateway.admin.add_member("data-team", "ann")
    bob = add_tenant(gateway, "bob", TOKEN)
    gateway.admin.add_member("data-team", "bob")
    gateway.admin.set_policy(ann.key_id, {"budget_credits": 1000}, kind="key")
    gateway.admin.set_policy("ann", {"budget_credits": 500})
    gateway.admin.set_policy(team.id, {"budget_credits": 60})
    effective = gateway.admin.effective_policy(ann.key_id)
    assert [s.level for s in effective.sources] == ["key", "owner", "team"]
    fit_ann, fit_bob = fitted(gateway, ann), fitted(gateway, bob)
    predict(gateway, ann, fit_ann, rows=5)  # team: 20
    predict(gateway, bob, fit_bob, rows=5)  # team: 40 (bob's spend counts for the team)
    with pytest.raises(BudgetExhausted) as refused:
        predict(gateway, ann, fit_ann, rows=6)  # 24 > 20 left
    assert refused.value.details["policy"] == "team-budget"
    # The key and owner budgets were not charged for the refused call.
    budgets = {b.level: b for b in gateway.admin.budget_status(ann.key_id)}
    assert budgets["key"].spent == 20
    assert budgets["key"].reserved == 0
    assert budgets["team"].spent == 40


def test_the_tightest_rate_limit_wins(gateway: Gateway, ann: Tenant) -> None:
    gateway.admin.set_policy(ann.key_id, {"requests_per_minute": 100}, kind="key")
    gateway.admin.set_policy("ann", {"requests_per_minute": 2})
    assert gateway.admin.effective_policy(ann.key_id).requests_per_minute == 2
    session = gateway.session(ann.key)
    session.check_token()
    session.check_token()
    with pytest.raises(RateLimited) as refused:
        session.check_token()
    assert refused.value.details["policy"] == "owner-minute"


def test_a_soft_budget_alerts_but_never_refuses(gateway: Gateway, ann: Tenant) -> None:
    gateway.admin.set_policy(
        ann.key_id,
        {"budget_credits": 30, "budget_mode": "soft", "alert_thresholds": [50, 100]},
        kind="key",
    )
    seen: list[BudgetAlert] = []
    gateway.policy_engine.alerts.add_listener(seen.append)
    fit_id = fitted(gateway, ann)
    predict(gateway, ann, fit_id, rows=5)  # 20: 66%
    predict(gateway, ann, fit_id, rows=5)  # 40: 133%, not refused
    predict(gateway, ann, fit_id, rows=5)  # 60: no third alert
    assert [(a.threshold, a.spent) for a in seen] == [(50, 20), (100, 40)]
    audit = gateway.admin.list_audit(action="budget.alert").items
    assert sorted(e.details["threshold"] for e in audit) == [50, 100]


def test_an_alert_names_the_unit_its_budget_counts(gateway: Gateway, ann: Tenant) -> None:
    gateway.admin.set_policy(
        ann.key_id,
        {"budget_credits": 4, "budget_unit": "calls", "alert_thresholds": [50]},
        kind="key",
    )
    seen: list[BudgetAlert] = []
    gateway.policy_engine.alerts.add_listener(seen.append)
    fit_id = fitted(gateway, ann)
    predict(gateway, ann, fit_id, rows=5)
    predict(gateway, ann, fit_id, rows=5)  # 2 of 4 calls: 50%
    assert [(a.threshold, a.spent, a.budget, a.unit) for a in seen] == [(50, 2, 4, "calls")]
    assert seen[0].as_json()["unit"] == "calls"
    [audit] = gateway.admin.list_audit(action="budget.alert").items
    assert audit.details["unit"] == "calls"


def test_concurrent_fits_are_capped(gateway: Gateway, ann: Tenant) -> None:
    gateway.admin.set_policy(ann.key_id, {"max_concurrent_fits": 1}, kind="key")
    key = gateway.store.get_key(ann.key_id)
    assert key is not None
    held = gateway.policy_engine.admit(key, "fit")
    with pytest.raises(ConcurrencyLimited):
        gateway.policy_engine.admit(key, "fit")
    gateway.policy_engine.admit(key, "predict")  # other operations hold no slot
    held.refund()
    gateway.policy_engine.admit(key, "fit").settle(None)
    fitted(gateway, ann)  # the slot came back


def test_concurrent_fits_across_threads(gateway: Gateway, ann: Tenant) -> None:
    gateway.admin.set_policy(ann.key_id, {"max_concurrent_fits": 2}, kind="key")
    key = gateway.store.get_key(ann.key_id)
    assert key is not None
    admitted, refused = [], []
    barrier = threading.Barrier(8)

    def take() -> None:
        barrier.wait()
        try:
            admitted.append(gateway.policy_engine.admit(key, "submit_fit_job"))
        except ConcurrencyLimited:
            refused.append(1)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(admitted), len(refused)) == (2, 6)


def test_allowlist_needs_an_address_inside_every_list(gateway: Gateway, ann: Tenant) -> None:
    gateway.admin.set_policy(ann.key_id, {"allowed_cidrs": ["10.0.0.0/8"]}, kind="key")
    key = gateway.store.get_key(ann.key_id)
    assert key is not None
    token = client_address.set("10.2.3.4")
    try:
        gateway.session(ann.key).check_token()
    finally:
        client_address.reset(token)
    token = client_address.set("192.168.0.1")
    try:
        with pytest.raises(IpNotAllowed):
            gateway.session(ann.key).check_token()
    finally:
        client_address.reset(token)
    # In process there is no address: a key with an allowlist is refused, never guessed.
    with pytest.raises(IpNotAllowed):
        gateway.session(ann.key).check_token()


def test_policy_changes_are_checked_and_audited(gateway: Gateway, ann: Tenant) -> None:
    with pytest.raises(InvalidRequest):
        gateway.admin.set_policy("ann", {"budget_credits": -1})
    with pytest.raises(InvalidRequest):
        gateway.admin.set_policy("ann", {"allowed_cidrs": ["10.0.0.0/8"]})  # keys only
    with pytest.raises(InvalidRequest):
        gateway.admin.set_policy(ann.key_id, {"allowed_cidrs": ["not-a-net"]}, kind="key")
    with pytest.raises(InvalidRequest):
        gateway.admin.set_policy("ann", {"alert_thresholds": [0]})
    with pytest.raises(InvalidRequest):
        gateway.admin.set_policy("ann", {"colour": "red"})
    with pytest.raises(KeyNotFound):
        gateway.admin.set_policy("nokey", {"budget_credits": 1}, kind="key")
    policy = gateway.admin.set_policy(
        "ann", {"requests_per_hour": 10, "alert_thresholds": [80, 50, 80]}
    )
    assert policy.alert_thresholds == (50, 80)
    policy = gateway.admin.set_policy("ann", {"budget_credits": 5})
    assert (policy.requests_per_hour, policy.budget_credits) == (10, 5)  # merged
    assert gateway.admin.clear_policy("ann") is True
    assert gateway.admin.get_policy("ann") is None
    actions = [e.action for e in gateway.admin.list_audit(target_id=ann.principal_id).items]
    assert actions.count("policy.set") == 2
    assert "policy.clear" in actions


def test_rolling_windows_and_calendar_spans() -> None:
    now = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    month = budget_span("month", "calendar", now)
    assert (month.bucket, month.resets_at) == ("month:2026-12", datetime(2027, 1, 1, tzinfo=UTC))
    day = budget_span("day", "calendar", now)
    assert day.bucket == "day:2026-12-31"
    assert day.window == ()
    rolling = budget_span("day", "rolling", now)
    assert rolling.bucket == "hour:2026-12-31T23"
    assert len(rolling.window) == 23
    assert rolling.window[-1] == "hour:2026-12-31T00"
    rolling_month = budget_span("month", "rolling", now)
    assert len(rolling_month.window) == 29
    assert rolling_month.resets_at - now == timedelta(minutes=30)


def test_rolling_budget_counts_the_last_24_hours(tmp_path: Path) -> None:
    store = open_store(url="memory://")
    clock = [datetime(2026, 5, 1, 10, tzinfo=UTC)]
    engine = PolicyEngine(store, cache_ttl=0, clock=lambda: clock[0])
    from tabpfn_gateway.store.records import ApiKey, Policy, Principal

    store.add_principal(Principal(id="p", name="p"))
    key = ApiKey("k1", "k", "p", None, ("inference",), "h", "hmac-sha256", "tpg_k1", "0000")
    store.add_key(key)
    store.put_policy(
        Policy("k1", "key", budget_credits=10, budget_period="day", budget_window="rolling")
    )
    engine.admit(key, "predict", credits=6).settle(6)
    clock[0] += timedelta(hours=23)
    with pytest.raises(BudgetExhausted):
        engine.admit(key, "predict", credits=5)
    clock[0] += timedelta(hours=1, minutes=1)  # the first spend left the window
    engine.admit(key, "predict", credits=10).settle(10)


def test_address_allowed() -> None:
    assert address_allowed(None, [])
    assert address_allowed("10.1.2.3", [["10.0.0.0/8"], ["10.1.0.0/16"]])
    assert not address_allowed("10.2.0.1", [["10.0.0.0/8"], ["10.1.0.0/16"]])
    assert address_allowed("::ffff:10.0.0.1", [["10.0.0.0/8"]])
    assert address_allowed("2001:db8::1", [["2001:db8::/32"]])
    assert not address_allowed("garbage", [["0.0.0.0/0"]])


@pytest.mark.parametrize("backend", ["memory", "database"])
def test_a_refused_request_counts_against_no_window(backend: str) -> None:
    store = open_store(url="memory://")
    limiter = InProcessLimiter() if backend == "memory" else StoreLimiter(store)
    wide, narrow = RateCheck("user:u:hour", 5, 3600), RateCheck("key:k:minute", 2, 60)
    try:
        assert [limiter.hit([wide, narrow]).refused for _ in range(3)] == [None, None, narrow]
        # The wide window counted the two requests let through, not the refused one.
        assert limiter.hit([wide]).remaining == {"user:u:hour": 2}
    finally:
        limiter.close()
