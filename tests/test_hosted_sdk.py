"""GatewayClassifier/GatewayRegressor with a key on a hosted credential: the gateway tells the
SDK which protocol to speak, so the same code works with a cloud key and a hosted key, and
answers what tabpfn_client.hosted answers against the container directly."""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from tabpfn_client.hosted import TabPFNClassifier

from gateway_support import add_tenant, build_gateway, make_settings
from hosted_support import InProcessContainer, Make, hosted
from tabpfn_gateway import GatewayClassifier, GatewayRegressor
from tabpfn_gateway.errors import FittedModelNotFound
from tabpfn_gateway.testing import FakeHostedTabPFN, FakeTabPFN, serve_in_thread
from tabpfn_gateway_server import create_app

__all__ = ["hosted"]  # the fixture, imported to be used here

BEARER = "sdk-container-bearer-1"
CLOUD_TOKEN = "sdk-cloud-token-0001"


@dataclass
class World:
    url: str
    container: FakeHostedTabPFN
    container_url: str
    hosted_key: str
    cloud_key: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp_path: Path = tmp_path_factory.mktemp("sdk")
    container = FakeHostedTabPFN(tokens=[BEARER], max_cached_models=4)
    gateway = build_gateway(make_settings(tmp_path, "memory://"), FakeTabPFN([CLOUD_TOKEN]).app)
    principal = gateway.admin.add_principal("team-h", "team")
    with serve_in_thread(container.app) as container_url:
        credential = gateway.admin.add_hosted_credential(
            principal.id, "box", endpoint_url=container_url + "/predict", token=BEARER
        )
        hosted_key = gateway.keys.create(principal.id, credential.id, "k").plaintext
        cloud_key = add_tenant(gateway, "team-c", CLOUD_TOKEN).key
        app = create_app(gateway=gateway, hosted_transport=InProcessContainer(container.app))
        with serve_in_thread(app) as url:
            yield World(url, container, container_url + "/predict", hosted_key, cloud_key)
    gateway.close()


def test_the_same_code_works_with_a_cloud_key_and_a_hosted_key(world: World) -> None:
    X, y = make_classification(n_samples=200, n_features=6, random_state=7)
    scores = {}
    for name, key in (("cloud", world.cloud_key), ("hosted", world.hosted_key)):
        clf = GatewayClassifier(base_url=world.url, api_key=key).fit(X[:150], y[:150])
        probas = clf.predict_proba(X[150:])
        assert probas.shape == (50, 2)
        scores[name] = clf.score(X[150:], y[150:])
    assert min(scores.values()) > 0.7
    # The hosted key's calls reached the container; its fit is the container's cached model.
    assert {r.token for r in world.container.requests} == {BEARER}


def test_hosted_answers_equal_tabpfn_client_hosted_direct(world: World, hosted: Make) -> None:
    X, y = make_classification(n_samples=180, n_features=5, random_state=8)
    sdk = GatewayClassifier(base_url=world.url, api_key=world.hosted_key).fit(X[:120], y[:120])
    direct = hosted(
        TabPFNClassifier, endpoint_url=world.container_url, api_key=BEARER, payload_format="parquet"
    ).fit(X[:120], y[:120])
    np.testing.assert_allclose(sdk.predict_proba(X[120:]), direct.predict_proba(X[120:]))
    np.testing.assert_array_equal(sdk.predict(X[120:]), direct.predict(X[120:]))
    # Predictions send only the test rows: the fit is the container's cached model.
    last = world.container.requests[-2]  # the SDK's predict (then direct's)
    assert last.model_id_in == sdk.model_id_
    assert last.train_rows is None


def test_regressor_outputs_and_an_evicted_model(world: World) -> None:
    X, y = make_regression(n_samples=160, n_features=4, noise=2.0, random_state=9)
    reg = GatewayRegressor(base_url=world.url, api_key=world.hosted_key).fit(X[:120], y[:120])
    mean = reg.predict(X[120:])
    quantiles = np.asarray(reg.predict(X[120:], output_type="quantiles", quantiles=[0.2, 0.8]))
    assert mean.shape == (40,)
    assert quantiles.shape == (2, 40)
    # The container forgets the model: the SDK sends the training data it kept, same answer.
    world.container.evict(reg.model_id_)
    np.testing.assert_allclose(reg.predict(X[120:]), mean)
    assert world.container.requests[-1].train_rows == 120
    # A pickled estimator predicts from its model id (the container's cache).
    again = GatewayRegressor(base_url=world.url, api_key=world.hosted_key).fit(X[:120], y[:120])
    clone = pickle.loads(pickle.dumps(again))
    np.testing.assert_allclose(clone.predict(X[120:]), mean)


def test_the_python_block_of_docs_upstreams_runs(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "upstreams.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    monkeypatch.setenv("TABPFN_GATEWAY_URL", world.url)
    monkeypatch.setenv("TABPFN_GATEWAY_API_KEY", world.hosted_key)
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/upstreams.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "(100, 2)"
    assert float(printed[2]) > 0.7
    # The vendor's client reused the container's cached model on its second call.
    assert world.container.requests[-3].model_id_in is not None
    for name in ("clf", "sdk"):
        client = getattr(namespace[name], "_cached_client", None)
        if client is not None:
            client.close()


def test_an_in_process_gateway_serves_a_hosted_key_too(tmp_path: Path) -> None:
    from tabpfn_gateway.estimators.backends import InProcessBackend

    container = FakeHostedTabPFN(tokens=[BEARER])
    gateway = build_gateway(make_settings(tmp_path, "memory://"), FakeTabPFN([CLOUD_TOKEN]).app)
    try:
        principal = gateway.admin.add_principal("team-local", "team")
        with serve_in_thread(container.app) as url:
            credential = gateway.admin.add_hosted_credential(
                principal.id, "box", endpoint_url=url + "/predict", token=BEARER
            )
            key = gateway.keys.create(principal.id, credential.id, "k").plaintext
            other = gateway.admin.add_principal("team-other", "team")
            other_credential = gateway.admin.add_hosted_credential(
                other.id, "box", endpoint_url=url + "/predict", token=BEARER
            )
            other_key = gateway.keys.create(other.id, other_credential.id, "k").plaintext
            X, y = make_classification(n_samples=150, n_features=5, random_state=10)
            backend = InProcessBackend(gateway, key)
            clf = GatewayClassifier(backend=backend).fit(X[:100], y[:100])
            assert clf.predict_proba(X[100:]).shape == (50, 2)
            assert {r.token for r in container.requests} == {BEARER}
            # Ownership holds in process too: another principal's key cannot use the model.
            stolen = InProcessBackend(gateway, other_key)
            with pytest.raises(FittedModelNotFound):
                stolen.predict(clf.model_id_, X[100:], clf._predict_config("preds"))
            gateway.usage.flush()
            operations = {e.operation for e in gateway.store.list_usage(limit=100).items}
            assert "hosted_predict" in operations
    finally:
        gateway.close()
