"""The gateway core through in-process sessions, against FakeTabPFN (real scikit-learn models)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

from gateway_support import Tenant, add_admin_key, add_tenant, build_gateway, make_settings
from tabpfn_gateway import migrate
from tabpfn_gateway.errors import (
    CredentialNotFound,
    FittedModelNotFound,
    InsufficientScope,
    InvalidKey,
    KeyDisabled,
    KeyRevoked,
    UpstreamAuthenticationFailed,
    UpstreamUnavailable,
)
from tabpfn_gateway.gateway import Gateway, UpstreamCall
from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    ClassifierFitTaskConfig,
    ClassifierPredictParams,
    RegressorConfig,
    RegressorFitTaskConfig,
    RegressorPredictParams,
)
from tabpfn_gateway.store import open_store
from tabpfn_gateway.testing import FakeTabPFN

TOKENS = ("tok-alpha-123456", "tok-bravo-654321")
PROBAS = ClassifierConfig(predict_params=ClassifierPredictParams(output_type="probas"))


@pytest.fixture
def fake() -> FakeTabPFN:
    return FakeTabPFN(tokens=TOKENS, unverified_tokens=["tok-unverified-1"])


@pytest.fixture(params=["memory", "sqlite"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path, fake: FakeTabPFN) -> Iterator[Gateway]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/gateway.db"
    settings = make_settings(tmp_path, url)
    if request.param == "sqlite":
        migrate.upgrade(settings)
    gw = build_gateway(settings, fake.app, store=open_store(settings))
    yield gw
    gw.close()
    gw.store.close()


@pytest.fixture
def alice(gateway: Gateway) -> Tenant:
    return add_tenant(gateway, "alice", TOKENS[0])


@pytest.fixture
def bob(gateway: Gateway) -> Tenant:
    return add_tenant(gateway, "bob", TOKENS[1])


def classification() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(n_samples=200, n_features=6, n_informative=4, random_state=0)
    return X, y


def test_fit_and_predict_go_upstream_with_the_credentials_token_only(
    gateway: Gateway, fake: FakeTabPFN, alice: Tenant
) -> None:
    X, y = classification()
    session = gateway.session(alice.key)
    fit = session.fit(X[:150], y[:150], ClassifierFitTaskConfig())
    result = session.predict(fit.fitted_train_set_id, X[150:], PROBAS)
    probas = np.asarray(result.y_pred)
    assert probas.shape == (50, 2)
    assert np.allclose(probas.sum(axis=1), 1.0)
    # Better than chance: a real model answered.
    assert (probas.argmax(axis=1) == y[150:]).mean() > 0.7
    tokens_seen = {r.token for r in fake.requests if r.token is not None}
    assert tokens_seen == {alice.token}
    # The fit belongs to alice's principal.
    owned = gateway.store.get_fitted_model(str(fit.fitted_train_set_id))
    assert owned is not None
    assert owned.owner_id == alice.principal_id
    assert owned.task == "classification"
    assert (owned.n_rows, owned.n_cols) == (150, 6)


def test_regression_through_a_session(gateway: Gateway, alice: Tenant) -> None:
    X, y = make_regression(n_samples=120, n_features=4, random_state=1)
    session = gateway.session(alice.key)
    fit = session.fit(X[:100], y[:100], RegressorFitTaskConfig())
    config = RegressorConfig(predict_params=RegressorPredictParams(output_type="mean"))
    result = session.predict(fit.fitted_train_set_id, X[100:], config)
    assert np.asarray(result.y_pred).shape == (20,)


def test_another_principal_is_told_the_fit_does_not_exist(
    gateway: Gateway, fake: FakeTabPFN, alice: Tenant, bob: Tenant
) -> None:
    X, y = classification()
    fit = gateway.session(alice.key).fit(X, y, ClassifierFitTaskConfig())
    fake.clear_log()
    with pytest.raises(FittedModelNotFound) as foreign:
        gateway.session(bob.key).predict(fit.fitted_train_set_id, X[:5], PROBAS)
    with pytest.raises(FittedModelNotFound) as unknown:
        gateway.session(bob.key).predict("00000000-0000-4000-8000-000000000000", X[:5], PROBAS)
    # Same answer for "someone else's" and "no such fit": no oracle; nothing went upstream.
    assert foreign.value.message == unknown.value.message
    assert fake.requests_to("/tabpfn/") == []


def test_usage_is_metered_per_key_without_a_write_per_call(
    gateway: Gateway, alice: Tenant, bob: Tenant
) -> None:
    X, y = classification()
    session = gateway.session(alice.key)
    fit = session.fit(X[:150], y[:150], ClassifierFitTaskConfig())
    session.predict(fit.fitted_train_set_id, X[150:], PROBAS)
    with pytest.raises(FittedModelNotFound):
        gateway.session(bob.key).predict(fit.fitted_train_set_id, X[:3], PROBAS)
    # Buffered, not written yet (the flush interval is an hour in these settings).
    assert gateway.store.list_usage(limit=10).items == []
    assert gateway.usage.pending == 2
    gateway.usage.flush()
    events = {e.operation: e for e in gateway.store.list_usage(key_id=alice.key_id).items}
    assert set(events) == {"fit", "predict"}
    assert (events["fit"].rows, events["fit"].columns, events["fit"].status) == (150, 6, 200)
    assert (events["predict"].rows, events["predict"].status) == (50, 200)
    assert events["fit"].credential_id == alice.credential_id
    # bob's refused call is not metered: the ownership check comes before the upstream call.
    assert gateway.store.list_usage(key_id=bob.key_id).items == []


def test_failed_upstream_calls_are_metered_with_their_status(
    gateway: Gateway, fake: FakeTabPFN, alice: Tenant
) -> None:
    X, y = classification()
    session = gateway.session(alice.key)
    fit = session.fit(X, y, ClassifierFitTaskConfig())
    fake.fail_next(5, status=503, path="/tabpfn/prepare_test_set_upload")
    with pytest.raises(UpstreamUnavailable):
        session.predict(fit.fitted_train_set_id, X[:5], PROBAS)
    gateway.usage.flush()
    statuses = {e.operation: e.status for e in gateway.store.list_usage(limit=10).items}
    assert statuses["predict"] == 503


def test_observers_see_each_operation_by_key_id(gateway: Gateway, alice: Tenant) -> None:
    seen: list[UpstreamCall] = []
    gateway.add_observer(seen.append)
    gateway.session(alice.key).get_settings()
    assert [(c.operation, c.key_id, c.status) for c in seen] == [
        ("get_settings", alice.key_id, 200)
    ]
    assert alice.key not in repr(seen)


def test_revoked_and_disabled_keys_stop_working_at_once(gateway: Gateway, alice: Tenant) -> None:
    session = gateway.session(alice.key)
    session.get_settings()  # warm the key cache
    gateway.keys.disable(alice.key_id, actor="test")
    with pytest.raises(KeyDisabled):
        session.get_settings()
    gateway.keys.enable(alice.key_id, actor="test")
    session.get_settings()
    gateway.keys.revoke(alice.key_id, actor="test")
    with pytest.raises(KeyRevoked):
        session.get_settings()


def test_bad_keys_and_missing_scopes(gateway: Gateway, alice: Tenant) -> None:
    with pytest.raises(InvalidKey):
        gateway.session("tpg_not_a_real_key_at_all").get_settings()
    usage_only = gateway.keys.create(
        alice.principal_id, alice.credential_id, "usage-only", scopes=["usage"]
    )
    with pytest.raises(InsufficientScope):
        gateway.session(usage_only.plaintext).get_settings()


def test_removed_credential_and_admin_keys_cannot_call_upstream(
    gateway: Gateway, alice: Tenant
) -> None:
    session = gateway.session(alice.key)
    session.get_settings()  # caches the decrypted token
    gateway.remove_credential(alice.credential_id, actor="test")
    with pytest.raises(CredentialNotFound, match="removed"):
        session.get_settings()
    with pytest.raises(CredentialNotFound, match="admin key"):
        gateway.session(add_admin_key(gateway)).get_settings()


def test_secrets_stay_out_of_reprs(gateway: Gateway, alice: Tenant) -> None:
    session = gateway.session(alice.key)
    for text in (repr(session), repr(gateway), repr(gateway.uploads), str(vars(session))):
        assert alice.key not in text
        assert alice.token not in text


def test_setup_verifies_the_token_and_creates_everything_at_once(
    gateway: Gateway, fake: FakeTabPFN
) -> None:
    result = gateway.setup(TOKENS[1], name="carol")
    assert result.principal.name.startswith("setup:carol-")
    assert gateway.store.get_credential(result.credential.id) is not None
    record = gateway.keys.verify(result.key.plaintext, scope="inference")
    assert record.credential_id == result.credential.id
    assert TOKENS[1] not in repr(result)
    assert result.key.plaintext not in repr(result)
    # The stored token is the one given, and calls carry it.
    fake.clear_log()
    gateway.session(result.key.plaintext).get_settings()
    assert {r.token for r in fake.requests} == {TOKENS[1]}


@pytest.mark.parametrize("token", ["tok-unknown-000", "tok-unverified-1"])
def test_setup_with_a_rejected_token_stores_nothing(gateway: Gateway, token: str) -> None:
    with pytest.raises(UpstreamAuthenticationFailed):
        gateway.setup(token, name="mallory")
    names = [p.name for p in gateway.store.list_principals(limit=100).items]
    assert not [name for name in names if name.startswith("setup:")]
    assert gateway.store.list_credentials(limit=10).items == []


def test_setup_when_the_upstream_is_unreachable(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "memory://", upstream_url="http://127.0.0.1:1")
    gw = Gateway.from_settings(settings)
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            gw.setup(TOKENS[0], name="dave")
        assert info.value.retryable
        assert gw.store.list_principals(limit=10).items == []
    finally:
        gw.close()
