"""POST /predict through the gateway: the unmodified tabpfn_client.hosted estimators against a
gateway key answer exactly what they answer against the container directly (JSON and Parquet,
classifier and regressor, model_id reuse); model ids are owned; calls are metered and refused
with codes, never 500."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from tabpfn_client.hosted import TabPFNClassifier, TabPFNRegressor

from gateway_support import add_tenant, build_gateway, make_settings
from hosted_support import InProcessContainer, Make, hosted
from tabpfn_gateway.errors import UpstreamKindMismatch
from tabpfn_gateway.gateway import Gateway
from tabpfn_gateway.gateway._hosted import HOSTED_OPERATION
from tabpfn_gateway.testing import FakeHostedTabPFN, FakeTabPFN, serve_in_thread
from tabpfn_gateway_server import create_app

__all__ = ["hosted"]  # the fixture, imported to be used here

BEARER = "container-bearer-0001"
HEADER = "container-header-secret-1"
CLOUD_TOKEN = "tabpfn-token-cloud-0001"


@dataclass
class World:
    gateway: Gateway
    container: FakeHostedTabPFN
    cloud: FakeTabPFN
    direct: str  # the container's /predict
    via: str  # the gateway's /predict
    key_a: str
    key_a2: str  # a second key of principal A
    key_b: str  # principal B, same container credential kind, its own credential
    cloud_key: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp_path: Path = tmp_path_factory.mktemp("hosted")
    container = FakeHostedTabPFN(
        tokens=[BEARER], required_headers={"X-Api-Key": HEADER}, max_cached_models=64
    )
    cloud = FakeTabPFN({CLOUD_TOKEN: None})
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/gateway.db")
    from tabpfn_gateway import migrate

    migrate.upgrade(settings)
    gateway = build_gateway(settings, cloud.app)
    with serve_in_thread(container.app) as container_url:
        direct = container_url + "/predict"
        admin = gateway.admin
        keys = {}
        for name in ("team-a", "team-b"):
            principal = admin.add_principal(name, "team", actor="test")
            credential = admin.add_hosted_credential(
                principal.id, f"{name}-box", endpoint_url=direct, token=BEARER,
                extra_headers={"X-Api-Key": HEADER}, actor="test",
            )  # fmt: skip
            keys[name] = (principal.id, credential.id)
        key_a = gateway.keys.create(keys["team-a"][0], keys["team-a"][1], "a1").plaintext
        key_a2 = gateway.keys.create(keys["team-a"][0], keys["team-a"][1], "a2").plaintext
        key_b = gateway.keys.create(keys["team-b"][0], keys["team-b"][1], "b1").plaintext
        cloud_key = add_tenant(gateway, "cloud-user", CLOUD_TOKEN).key
        # The gateway reaches the container in process (its pooled connections then never
        # outlive the test's event loops); clients reach both over sockets.
        app = create_app(gateway=gateway, hosted_transport=InProcessContainer(container.app))
        with serve_in_thread(app) as gateway_url:
            yield World(
                gateway, container, cloud, direct, gateway_url + "/predict",
                key_a, key_a2, key_b, cloud_key,
            )  # fmt: skip
    gateway.close()


@pytest.fixture(scope="module")
def classification() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=220, n_features=7, n_informative=4, random_state=3)


@pytest.fixture(scope="module")
def regression() -> tuple[np.ndarray, np.ndarray]:
    return make_regression(n_samples=200, n_features=5, noise=3.0, random_state=4)


def pair(hosted: Make, world: World, cls: type, **kwargs: object) -> tuple[object, object]:
    direct = hosted(
        cls, endpoint_url=world.direct, api_key=BEARER, extra_headers={"X-Api-Key": HEADER},
        **kwargs,
    )  # fmt: skip
    via = hosted(cls, endpoint_url=world.via, api_key=world.key_a, **kwargs)
    return direct, via


@pytest.mark.parametrize("payload_format", ["json", "parquet"])
def test_classifier_through_the_gateway_equals_direct(
    hosted: Make, world: World, classification: tuple[np.ndarray, np.ndarray],
    payload_format: str,
) -> None:  # fmt: skip
    X, y = classification
    direct, via = pair(hosted, world, TabPFNClassifier, payload_format=payload_format)
    answers = []
    for estimator in (direct, via):
        estimator.fit(X[:160], y[:160])  # type: ignore[attr-defined]
        answers.append(
            (estimator.predict(X[160:]), estimator.predict_proba(X[160:]))  # type: ignore[attr-defined]
        )
    np.testing.assert_array_equal(answers[0][0], answers[1][0])
    np.testing.assert_allclose(answers[0][1], answers[1][1])
    last = world.container.requests[-1]
    # The container saw the credential's token and header, never the gateway key.
    assert last.token == BEARER
    assert last.headers["x-api-key"] == HEADER
    assert last.encoding == payload_format
    assert world.key_a not in repr(world.container.requests)


@pytest.mark.parametrize("payload_format", ["json", "parquet"])
def test_regressor_mean_and_quantiles_through_the_gateway_equal_direct(
    hosted: Make, world: World, regression: tuple[np.ndarray, np.ndarray], payload_format: str
) -> None:
    X, y = regression
    direct, via = pair(hosted, world, TabPFNRegressor, payload_format=payload_format)
    answers = []
    for estimator in (direct, via):
        estimator.fit(X[:150], y[:150])  # type: ignore[attr-defined]
        answers.append(
            (
                estimator.predict(X[150:]),  # type: ignore[attr-defined]
                estimator.predict(X[150:], output_type="quantiles", quantiles=[0.1, 0.5, 0.9]),  # type: ignore[attr-defined]
            )
        )
    np.testing.assert_allclose(answers[0][0], answers[1][0])
    np.testing.assert_allclose(answers[0][1], answers[1][1])
    assert np.asarray(answers[1][1]).shape == (3, 50)


@pytest.mark.parametrize("payload_format", ["json", "parquet"])
def test_kv_cache_and_model_id_reuse_are_owned_by_the_principal(
    hosted: Make, world: World, classification: tuple[np.ndarray, np.ndarray],
    payload_format: str,
) -> None:  # fmt: skip
    X, y = classification
    first = hosted(
        TabPFNClassifier, endpoint_url=world.via, api_key=world.key_a, use_kv_cache=True,
        payload_format=payload_format,
    )  # fmt: skip
    first.fit(X[:160], y[:160])
    expected = first.predict_proba(X[160:])
    model_id = first.model_id_
    assert model_id in world.container.cached_model_ids
    np.testing.assert_allclose(first.predict_proba(X[160:]), expected)  # reuses the cache
    assert world.container.requests[-1].model_id_in == model_id
    assert world.container.requests[-1].train_rows is None
    # Another key of the same principal may reuse it.
    same_team = hosted(
        TabPFNClassifier, endpoint_url=world.via, api_key=world.key_a2, model_id=model_id,
        payload_format=payload_format,
    )  # fmt: skip
    np.testing.assert_allclose(same_team.predict_proba(X[160:]), expected)
    # Another principal may not, though its credential reaches the same container.
    seen = len(world.container.requests)
    other = hosted(
        TabPFNClassifier, endpoint_url=world.via, api_key=world.key_b, model_id=model_id,
        payload_format=payload_format,
    )  # fmt: skip
    with pytest.raises(httpx.HTTPStatusError) as caught:
        other.predict(X[160:])
    assert caught.value.response.status_code == 404
    assert caught.value.response.json()["error_code"] == "FITTED_MODEL_NOT_FOUND"
    # Nothing was answered by the container for that request.
    assert all(r.status != 200 for r in world.container.requests[seen:])
    unknown = hosted(
        TabPFNClassifier, endpoint_url=world.via, api_key=world.key_a, model_id="no-such-model",
        payload_format=payload_format,
    )  # fmt: skip
    with pytest.raises(httpx.HTTPStatusError) as caught:
        unknown.predict(X[160:])
    assert caught.value.response.status_code == 404


def test_an_evicted_model_is_the_containers_404(
    hosted: Make, world: World, classification: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = classification
    est = hosted(TabPFNClassifier, endpoint_url=world.via, api_key=world.key_a, use_kv_cache=True)
    est.fit(X[:160], y[:160]).predict(X[160:])
    world.container.evict(est.model_id_)
    with pytest.raises(httpx.HTTPStatusError) as caught:
        est.predict(X[160:])
    assert caught.value.response.status_code == 404
    assert caught.value.response.json()["error_code"] == "UPSTREAM_NOT_FOUND"


def test_calls_are_metered_with_rows_columns_and_bytes(
    hosted: Make, world: World, classification: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = classification
    est = hosted(TabPFNClassifier, endpoint_url=world.via, api_key=world.key_b)
    est.fit(X[:100], y[:100]).predict(X[100:130])
    world.gateway.usage.flush()
    events = [
        e
        for e in world.gateway.store.list_usage(limit=1000).items
        if e.operation == HOSTED_OPERATION and e.status == 200 and e.rows == 130
    ]
    assert events, "no hosted_predict usage event with 100 + 30 rows"
    event = events[0]
    assert event.columns == 7
    assert event.bytes is not None
    assert event.bytes > 1000


def test_a_cloud_key_on_predict_and_bad_bodies_get_codes(world: World) -> None:
    cloud = httpx.post(
        world.via, json={"task_config": {}}, headers={"Authorization": f"Bearer {world.cloud_key}"}
    )
    assert cloud.status_code == 400
    assert cloud.json()["error_code"] == "UPSTREAM_KIND_MISMATCH"
    auth = {"Authorization": f"Bearer {world.key_a}"}
    for content, content_type in [
        (b"not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"task_config": {"task": "classification"}', "application/json"),
        (b"x", "text/plain"),
        (b"--x\r\n", "multipart/form-data"),
        (b"--b\r\nContent-Disposition: form-data; name=\"x_test\"\r\n\r\nzz\r\n--b--\r\n",
         "multipart/form-data; boundary=b"),
    ]:  # fmt: skip
        answer = httpx.post(
            world.via, content=content, headers={**auth, "Content-Type": content_type}
        )
        assert answer.status_code == 400, (content, answer.text)
        assert answer.json()["error_code"] in ("INVALID_REQUEST", "PAYLOAD_TOO_LARGE")
    missing = httpx.post(world.via, json={})
    assert missing.status_code == 401
    bad_key = httpx.post(world.via, json={}, headers={"Authorization": "Bearer tpg_nope"})
    assert bad_key.status_code == 401


def test_container_failures_are_upstream_errors(
    hosted: Make, world: World, classification: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = classification
    est = hosted(TabPFNClassifier, endpoint_url=world.via, api_key=world.key_a).fit(X[:50], y[:50])
    world.container.fail_next(503, retry_after=3)
    with pytest.raises(httpx.HTTPStatusError) as caught:
        est.predict(X[50:60])
    assert caught.value.response.status_code == 503
    assert caught.value.response.json()["error_code"] == "UPSTREAM_UNAVAILABLE"
    world.container.drop_next()
    with pytest.raises(httpx.HTTPStatusError) as caught:
        est.predict(X[50:60])
    assert caught.value.response.status_code in (502, 503)
    assert est.predict(X[50:60]).shape == (10,)


def test_whoami_tells_the_upstream_kind(world: World) -> None:
    base = world.via.rsplit("/predict", 1)[0]
    for key, kind in ((world.key_a, "hosted"), (world.cloud_key, "cloud")):
        answer = httpx.get(base + "/api/v1/whoami", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200
        assert answer.json()["upstream_kind"] == kind


def test_a_hosted_key_on_the_cloud_routes_is_refused_and_leaks_nothing(world: World) -> None:
    base = world.via.rsplit("/predict", 1)[0]
    auth = {"Authorization": f"Bearer {world.key_a}"}
    seen = len(world.cloud.requests)
    settings = httpx.get(base + "/tabpfn/get_settings", headers=auth)
    assert settings.status_code == 400
    assert settings.json()["error_code"] == "UPSTREAM_KIND_MISMATCH"
    usage = httpx.post(base + "/get_api_usage/", headers=auth)
    assert usage.json()["error_code"] == "UPSTREAM_KIND_MISMATCH"
    with pytest.raises(UpstreamKindMismatch):
        world.gateway.session(world.key_a).get_settings()
    # The cloud upstream never saw the container's token (or anything) for these calls.
    assert world.cloud.requests[seen:] == []
    assert BEARER not in repr(world.cloud.requests)
