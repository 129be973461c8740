"""Estimators over HTTP against a real gateway server on loopback (FakeTabPFN upstream):
pickles that predict in a new process, GridSearchCV(n_jobs=2) on loky workers, keys from the
environment that never enter pickles, and the HTTP backend straight against a TabPFN-shaped
upstream."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV, cross_val_score

from tabpfn_gateway import GatewayClassifier, GatewayRegressor
from tabpfn_gateway.errors import ConfigurationError, InvalidKey
from tabpfn_gateway.estimators import HTTPBackend
from tabpfn_gateway.testing import FakeTabPFN, local_gateway
from tabpfn_gateway.testing.fake_server import serve_in_thread
from tabpfn_gateway.testing.local import LOCAL_TABPFN_TOKEN, LocalGateway


@dataclass
class Served:
    url: str
    key: str
    local: LocalGateway
    fake: FakeTabPFN


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """One gateway server on a loopback port, its upstream an in-process FakeTabPFN."""
    from tabpfn_gateway_server.app import create_app

    fake = FakeTabPFN(tokens=[LOCAL_TABPFN_TOKEN])
    with local_gateway(fake=fake) as local:
        app = create_app(local.gateway.settings, gateway=local.gateway)
        with serve_in_thread(app) as url:
            yield Served(url, local.api_key.get_secret_value(), local, fake)


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_iris(return_X_y=True)
    return X, y


def _run(script: str, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_fit_and_predict_over_http_match_in_process(served: Served, iris: tuple) -> None:
    X, y = iris
    clf = GatewayClassifier(base_url=served.url, api_key=served.key, progress=False).fit(X, y)
    proba = clf.predict_proba(X)
    # The same fit, predicted in process through the same gateway, gives the same numbers.
    twin = GatewayClassifier(backend=served.local).fit(X[::10], y[::10])
    twin.model_id_, twin._n_train_rows = clf.model_id_, clf._n_train_rows
    twin.classes_, twin.tabpfn_config_ = clf.classes_, clf.tabpfn_config_
    np.testing.assert_array_equal(proba, twin.predict_proba(X))
    assert clf.score(X, y) > 0.9


def test_pickled_estimator_predicts_in_a_new_process(
    served: Served, iris: tuple, tmp_path: Path
) -> None:
    X, y = iris
    clf = GatewayRegressor(base_url=served.url, api_key=served.key, progress=False).fit(X, y)
    expected = clf.predict(X)
    path = tmp_path / "reg.pkl"
    path.write_bytes(pickle.dumps(clf))
    done = _run(
        f"""
        import pickle, numpy as np
        from sklearn.datasets import load_iris
        reg = pickle.loads(open({str(path)!r}, "rb").read())
        X, _ = load_iris(return_X_y=True)
        np.save({str(tmp_path / "pred.npy")!r}, reg.predict(X))
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "pred.npy"), expected)


def test_a_key_from_the_environment_never_enters_the_pickle(
    served: Served, iris: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y = iris
    monkeypatch.setenv("TABPFN_GATEWAY_API_KEY", served.key)
    clf = GatewayClassifier(base_url=served.url, progress=False).fit(X, y)
    data = pickle.dumps(clf)
    assert served.key.encode() not in data
    assert "_http_backend" not in pickle.loads(data).__dict__
    path = tmp_path / "clf.pkl"
    path.write_bytes(data)
    script = f"""
        import pickle
        from sklearn.datasets import load_iris
        from tabpfn_gateway.errors import MissingApiKey
        clf = pickle.loads(open({str(path)!r}, "rb").read())
        try:
            print("predicted", clf.predict(load_iris(return_X_y=True)[0]).shape[0])
        except MissingApiKey as exc:
            print("missing:", exc.error_code)
        """
    with_key = _run(script, env={"TABPFN_GATEWAY_API_KEY": served.key})
    assert with_key.stdout.strip() == "predicted 150", with_key.stderr[-3000:]
    env_without = {k: v for k, v in os.environ.items() if k != "TABPFN_GATEWAY_API_KEY"}
    without = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env_without,
        check=False,
    )
    assert without.stdout.strip() == "missing: MISSING_CREDENTIALS", without.stderr[-3000:]


def test_grid_search_with_two_loky_workers(served: Served, iris: tuple) -> None:
    X, y = iris
    served.local.gateway.usage.flush()
    before = {s.operation: s.calls for s in served.local.usage()}
    search = GridSearchCV(
        GatewayClassifier(base_url=served.url, api_key=served.key, progress=False),
        {"n_estimators": [1, 2]},
        cv=3,
        n_jobs=2,
        error_score="raise",
    )
    search.fit(X, y)
    assert search.best_params_["n_estimators"] in (1, 2)
    assert search.best_score_ > 0.8
    after = {s.operation: s.calls for s in served.local.usage()}
    # 2 candidates x 3 folds in the workers, plus the refit here: all through the gateway.
    assert after["fit"] - before.get("fit", 0) == 7
    scores = cross_val_score(
        GatewayClassifier(base_url=served.url, api_key=served.key, progress=False),
        X,
        y,
        cv=2,
        n_jobs=2,
    )
    assert scores.min() > 0.8


def test_in_process_backend_in_loky_workers_fails_with_a_clear_message(iris: tuple) -> None:
    X, y = iris
    with local_gateway() as backend:
        search = GridSearchCV(
            GatewayClassifier(backend=backend, progress=False),
            {"n_estimators": [1, 2]},
            cv=2,
            n_jobs=2,
            error_score="raise",
        )
        with pytest.raises(ConfigurationError, match="exists only in the process"):
            search.fit(X, y)


def test_http_backend_straight_to_a_tabpfn_shaped_upstream(iris: tuple) -> None:
    # What the SDK does against TabPFN cloud with a TabPFN token: no gateway in between.
    X, y = iris
    fake = FakeTabPFN(tokens=["direct-token"])
    with serve_in_thread(fake.app) as url:
        backend = HTTPBackend(url, "direct-token")
        clf = GatewayClassifier(backend=backend, progress=False).fit(X, y)
        assert clf.score(X, y) > 0.9
        assert fake.requests_to("/tabpfn/fit")
        assert {r.token for r in fake.requests_to("/tabpfn/")} == {"direct-token"}
        backend.close()


def test_login_checks_the_key_against_the_gateway(served: Served, iris: tuple) -> None:
    import keyring
    from keyring.backend import KeyringBackend

    class DictKeyring(KeyringBackend):
        priority = 1  # type: ignore[assignment]
        store: dict[tuple[str, str], str] = {}

        def get_password(self, service: str, username: str) -> str | None:
            return self.store.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.store[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            self.store.pop((service, username))

    from tabpfn_gateway import login, logout

    previous = keyring.get_keyring()
    keyring.set_keyring(DictKeyring())
    try:
        with pytest.raises(InvalidKey):
            login(served.url, "tpg_AAAAAAAAAAAA_notarealkeynotarealkeynotarealkey")
        assert DictKeyring.store == {}
        login(served.url, served.key)
        assert list(DictKeyring.store.values()) == [served.key]
        X, y = iris
        clf = GatewayClassifier(base_url=served.url + "/", progress=False).fit(X, y)
        assert clf.predict(X[:2]).shape == (2,)
        assert logout(served.url) is True
    finally:
        keyring.set_keyring(previous)


def test_estimators_share_one_backend_per_gateway_and_key(served: Served, iris: tuple) -> None:
    # A new estimator per fit (or GridSearchCV's clones) reuses the connection pool and the
    # cached limits, like tabpfn-client's global client, but never across credentials.
    X, y = iris
    first = GatewayClassifier(base_url=served.url, api_key=served.key, progress=False).fit(X, y)
    second = GatewayClassifier(base_url=served.url, api_key=served.key, progress=False).fit(X, y)
    assert first._get_backend() is second._get_backend()
    record = served.local.gateway.keys.verify(served.key)
    other_key = served.local.gateway.keys.create(
        record.owner_id, record.credential_id, "second-laptop", actor="test"
    ).plaintext
    other = GatewayClassifier(base_url=served.url, api_key=other_key, progress=False).fit(X, y)
    assert other._get_backend() is not first._get_backend()
    slower = GatewayClassifier(base_url=served.url, api_key=served.key, timeout=5, progress=False)
    assert slower.fit(X, y)._get_backend() is not first._get_backend()
    np.testing.assert_array_equal(first.predict(X), other.predict(X))
