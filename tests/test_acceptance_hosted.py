"""Acceptance: one gateway, one store, a TabPFN cloud credential and a self-hosted container
credential, a key on each, 32 concurrent callers. Every call reaches its own upstream with its
own token (the fakes' request logs show it), and neither side can use the other's fits or
model ids. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import make_classification
from tabpfn_client.hosted import TabPFNClassifier

from gateway_support import add_tenant, build_gateway, make_settings, serve_in_thread
from hosted_support import InProcessContainer, Make, hosted
from tabpfn_gateway import migrate
from tabpfn_gateway.errors import FittedModelNotFound, UpstreamKindMismatch
from tabpfn_gateway.gateway import Gateway
from tabpfn_gateway.protocol import ProtocolClient
from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    ClassifierFitTaskConfig,
    ClassifierPredictParams,
)
from tabpfn_gateway.store import open_store
from tabpfn_gateway.testing import FakeHostedTabPFN, FakeTabPFN
from tabpfn_gateway_server import create_app

__all__ = ["hosted"]  # the fixture, imported to be used here

pytestmark = pytest.mark.slow

CLOUD_TOKEN = "tok-accept-cloud-1"
BEARER = "tok-accept-container-2"
PROBAS = ClassifierConfig(predict_params=ClassifierPredictParams(output_type="probas"))


@dataclass
class Stack:
    url: str
    gateway: Gateway
    cloud: FakeTabPFN
    container: FakeHostedTabPFN
    cloud_key: str
    cloud_owner: str
    hosted_key: str
    hosted_owner: str
    other_hosted_key: str


@pytest.fixture(params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    if request.param == "postgres":
        database_url = str(request.getfixturevalue("pg_url"))
    else:
        database_url = f"sqlite:///{tmp_path}/gateway.db"
    cloud = FakeTabPFN(tokens=[CLOUD_TOKEN])
    container = FakeHostedTabPFN(tokens=[BEARER], max_cached_models=64)
    settings = make_settings(tmp_path, database_url)
    migrate.upgrade(settings)
    gateway = build_gateway(settings, cloud.app, store=open_store(settings))
    try:
        cloud_tenant = add_tenant(gateway, "cloud-team", CLOUD_TOKEN)
        keys = []
        for name in ("hosted-team", "hosted-other"):
            principal = gateway.admin.add_principal(name, "team", actor="test")
            credential = gateway.admin.add_hosted_credential(
                principal.id, "box", endpoint_url="http://container.test/predict", token=BEARER
            )
            key = gateway.keys.create(principal.id, credential.id, "k").plaintext
            keys.append((principal.id, key))
        app = create_app(
            settings, gateway=gateway, hosted_transport=InProcessContainer(container.app)
        )
        with serve_in_thread(app) as url:
            yield Stack(
                url, gateway, cloud, container, cloud_tenant.key, cloud_tenant.principal_id,
                keys[0][1], keys[0][0], keys[1][1],
            )  # fmt: skip
    finally:
        gateway.close()
        gateway.store.close()


def test_both_kinds_side_by_side_under_32_concurrent_callers(stack: Stack, hosted: Make) -> None:
    X, y = make_classification(n_samples=160, n_features=6, n_informative=4, random_state=5)
    Xn = np.asarray(X, dtype=float)

    def cloud_call(i: int) -> tuple[str, str]:
        with ProtocolClient(stack.url, stack.cloud_key, timeout=120) as client:
            fit = client.fit(Xn[:120], y[:120], ClassifierFitTaskConfig())
            probas = np.asarray(client.predict(fit.fitted_train_set_id, Xn[120:], PROBAS).y_pred)
            assert probas.shape == (40, 2)
            return "cloud", str(fit.fitted_train_set_id)

    def hosted_call(i: int) -> tuple[str, str]:
        clf = hosted(
            TabPFNClassifier,
            endpoint_url=stack.url + "/predict",
            api_key=stack.hosted_key,
            payload_format="parquet" if i % 4 == 1 else "json",
            fit_mode="fit_with_cache",
        )
        probas = clf.fit(X[:120], y[:120]).predict_proba(X[120:])
        assert probas.shape == (40, 2)
        return "hosted", str(clf.model_id_)

    def work(i: int) -> tuple[str, str]:
        return cloud_call(i) if i % 2 == 0 else hosted_call(i)

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(work, range(32)))

    fits = [ident for kind, ident in results if kind == "cloud"]
    model_ids = [ident for kind, ident in results if kind == "hosted"]
    assert len(fits) == 16
    assert len(set(model_ids)) == 16
    # The cloud fake saw 16 fits and 16 predictions, each with the cloud token, nothing else.
    posts = [r for r in stack.cloud.requests if r.method == "POST"]
    by_token = Counter((r.path, r.token) for r in posts)
    assert by_token[("/tabpfn/fit", CLOUD_TOKEN)] == 16
    assert by_token[("/tabpfn/predict", CLOUD_TOKEN)] == 16
    assert {r.token for r in posts} == {CLOUD_TOKEN}
    # The container saw 16 predictions, each with its own bearer token, and no gateway key.
    answered = stack.container.requests
    assert len(answered) == 16
    assert {(r.token, r.status) for r in answered} == {(BEARER, 200)}
    assert sorted(r.model_id_out for r in answered) == sorted(model_ids)
    everything = repr(stack.cloud.requests) + repr(answered)
    for key in (stack.cloud_key, stack.hosted_key, stack.other_hosted_key):
        assert key not in everything

    # Nobody can use the other's fits or model ids.
    with (
        ProtocolClient(stack.url, stack.hosted_key, timeout=60) as client,
        pytest.raises(UpstreamKindMismatch),
    ):
        client.predict(fits[0], Xn[:5], PROBAS)
    auth = {"Authorization": f"Bearer {stack.cloud_key}"}
    body: dict[str, Any] = {
        "task_config": {"task": "classification", "predict_params": {"output_type": "preds"}},
        "context": {"model_id": model_ids[0]},
        "X_test": Xn[:5].tolist(),
    }
    refused = httpx.post(stack.url + "/predict", json=body, headers=auth)
    assert refused.status_code == 400
    assert refused.json()["error_code"] == "UPSTREAM_KIND_MISMATCH"
    other = httpx.post(
        stack.url + "/predict",
        json=body,
        headers={"Authorization": f"Bearer {stack.other_hosted_key}"},
    )
    assert other.status_code == 404
    assert other.json()["error_code"] == "FITTED_MODEL_NOT_FOUND"
    mine = httpx.post(
        stack.url + "/predict", json=body, headers={"Authorization": f"Bearer {stack.hosted_key}"}
    )
    assert mine.status_code == 200
    assert len(mine.json()["prediction"]) == 5
    # Each record belongs to the principal whose key made it.
    for fit_id in fits:
        record = stack.gateway.store.get_fitted_model(fit_id)
        assert record is not None
        assert record.owner_id == stack.cloud_owner
    with (
        ProtocolClient(stack.url, stack.cloud_key, timeout=60) as client,
        pytest.raises(FittedModelNotFound),
    ):
        client.predict(model_ids[0], Xn[:5], PROBAS)
