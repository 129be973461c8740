"""FakeHostedTabPFN: the inference-container protocol as the unmodified tabpfn_client.hosted speaks
it, real models, a bounded model cache, optional auth, fault knobs, and `fake-upstream --hosted`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from tabpfn_client.hosted import TabPFNClassifier, TabPFNRegressor

from hosted_support import Make, hosted
from tabpfn_gateway.testing import FakeHostedTabPFN, serve_in_thread
from test_fake_cli import RUN_CLI, free_port

TOKEN = "hosted-token-0001"

__all__ = ["hosted"]  # the fixture, imported to be used here


@pytest.fixture
def fake() -> FakeHostedTabPFN:
    return FakeHostedTabPFN(tokens=[TOKEN], max_cached_models=2)


@pytest.fixture
def endpoint(fake: FakeHostedTabPFN) -> Iterator[str]:
    with serve_in_thread(fake.app) as url:
        yield url + "/predict"


@pytest.fixture(scope="module")
def classification() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=160, n_features=6, random_state=1)


@pytest.mark.parametrize("payload_format", ["json", "parquet"])
def test_classifier_predicts_with_real_models_in_both_encodings(
    hosted: Make,
    fake: FakeHostedTabPFN,
    endpoint: str,
    classification: tuple[np.ndarray, np.ndarray],
    payload_format: str,
) -> None:
    X, y = classification
    clf = hosted(
        TabPFNClassifier, endpoint_url=endpoint, api_key=TOKEN, payload_format=payload_format
    )
    clf.fit(X[:120], y[:120])
    labels = clf.predict(X[120:])
    probas = clf.predict_proba(X[120:])
    assert (labels == y[120:]).mean() > 0.7
    assert probas.shape == (40, 2)
    np.testing.assert_allclose(probas.sum(axis=1), 1.0)
    assert clf.model_id_ is None  # no cache asked for, none built
    logged = fake.requests
    assert [r.encoding for r in logged] == [payload_format, payload_format]
    assert [r.token for r in logged] == [TOKEN, TOKEN]
    assert [(r.train_rows, r.test_rows) for r in logged] == [(120, 40), (120, 40)]
    assert fake.cached_model_ids == []


def test_json_and_parquet_answer_alike(
    hosted: Make, endpoint: str, classification: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = classification
    answers = []
    for payload_format in ("json", "parquet"):
        clf = hosted(
            TabPFNClassifier, endpoint_url=endpoint, api_key=TOKEN, payload_format=payload_format
        )
        answers.append(clf.fit(X[:120], y[:120]).predict_proba(X[120:]))
    np.testing.assert_allclose(answers[0], answers[1])


def test_regressor_mean_and_quantiles(hosted: Make, endpoint: str) -> None:
    X, y = make_regression(n_samples=150, n_features=4, noise=5.0, random_state=2)
    reg = hosted(TabPFNRegressor, endpoint_url=endpoint, api_key=TOKEN, payload_format="parquet")
    reg.fit(X[:100], y[:100])
    mean = reg.predict(X[100:])
    quantiles = reg.predict(X[100:], output_type="quantiles", quantiles=[0.1, 0.5, 0.9])
    assert mean.shape == (50,)
    assert quantiles.shape == (3, 50)
    assert (quantiles[0] <= quantiles[2]).all()
    assert np.corrcoef(mean, y[100:])[0, 1] > 0.8


def test_model_id_reuse_kv_cache_and_bounded_eviction(
    hosted: Make,
    fake: FakeHostedTabPFN,
    endpoint: str,
    classification: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = classification
    first = hosted(TabPFNClassifier, endpoint_url=endpoint, api_key=TOKEN, use_kv_cache=True)
    first.fit(X[:120], y[:120])
    expected = first.predict_proba(X[120:])
    assert first.model_id_ in fake.cached_model_ids
    again = first.predict_proba(X[120:])  # reuses the cached model: no training data sent
    np.testing.assert_allclose(again, expected)
    assert fake.requests[-1].model_id_in == first.model_id_
    assert fake.requests[-1].train_rows is None
    reused = hosted(
        TabPFNClassifier, endpoint_url=endpoint, api_key=TOKEN, model_id=first.model_id_
    )
    np.testing.assert_allclose(reused.predict_proba(X[120:]), expected)
    # Two more cached fits push the first out of a cache of two.
    for _ in range(2):
        hosted(
            TabPFNClassifier, endpoint_url=endpoint, api_key=TOKEN, fit_mode="fit_with_cache"
        ).fit(X[:120], y[:120]).predict(X[120:])
    assert first.model_id_ not in fake.cached_model_ids
    assert len(fake.cached_model_ids) == 2
    with pytest.raises(httpx.HTTPStatusError) as caught:
        reused.predict(X[120:])
    assert caught.value.response.status_code == 404


def test_auth_and_required_headers(
    hosted: Make, classification: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = classification
    fake = FakeHostedTabPFN(tokens=[TOKEN], required_headers={"X-Deployment": "blue"})
    with serve_in_thread(fake.app) as url:
        for api_key, headers, status in [
            (None, {"X-Deployment": "blue"}, 401),
            ("wrong", {"X-Deployment": "blue"}, 401),
            (TOKEN, None, 403),
            (TOKEN, {"X-Deployment": "green"}, 403),
        ]:
            clf = hosted(
                TabPFNClassifier,
                endpoint_url=url + "/predict",
                api_key=api_key,
                extra_headers=headers,
            ).fit(X[:100], y[:100])
            with pytest.raises(httpx.HTTPStatusError) as caught:
                clf.predict(X[100:])
            assert caught.value.response.status_code == status
        ok = hosted(
            TabPFNClassifier,
            endpoint_url=url + "/predict",
            api_key=TOKEN,
            extra_headers={"X-Deployment": "blue"},
        )
        assert ok.fit(X[:100], y[:100]).predict(X[100:]).shape == (60,)
    assert [r.status for r in fake.requests] == [401, 401, 403, 403, 200]
    assert fake.requests[-1].headers["x-deployment"] == "blue"
    assert "authorization" not in fake.requests[-1].headers


def test_no_tokens_means_no_authentication(
    hosted: Make, classification: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = classification
    fake = FakeHostedTabPFN()
    with serve_in_thread(fake.app) as url:
        clf = hosted(TabPFNClassifier, endpoint_url=url + "/predict").fit(X[:100], y[:100])
        assert clf.predict(X[100:]).shape == (60,)
    assert fake.requests[0].token is None


def test_fault_knobs(
    hosted: Make,
    fake: FakeHostedTabPFN,
    endpoint: str,
    classification: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = classification
    clf = hosted(TabPFNClassifier, endpoint_url=endpoint, api_key=TOKEN).fit(X[:100], y[:100])
    fake.fail_next(503, retry_after=2)
    with pytest.raises(httpx.HTTPStatusError) as caught:
        clf.predict(X[100:])
    assert caught.value.response.status_code == 503
    assert caught.value.response.headers["retry-after"] == "2"
    fake.drop_next()
    with pytest.raises(httpx.TransportError):
        clf.predict(X[100:])
    assert clf.predict(X[100:]).shape == (60,)
    assert [r.status for r in fake.requests] == [503, 0, 200]


def test_bad_bodies_are_422_not_500(fake: FakeHostedTabPFN, endpoint: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cases = [
        b"not json",
        b"[1, 2]",
        b'{"X_test": [[1]]}',
        b'{"task_config": {"task": "ranking"}, "X_test": [[1]]}',
        b'{"task_config": {"task": "classification"}, "X_test": [[1]]}',
        b'{"task_config": {"task": "classification"}, "X_train": [[1],[2]], "y_train": [[0],[1]]}',
    ]
    for body in cases:
        answer = httpx.post(endpoint, content=body, headers=auth)
        assert answer.status_code == 422, body
        assert "detail" in answer.json()


def test_cli_serves_the_hosted_protocol(
    hosted: Make, classification: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = classification
    port = free_port()
    command = [sys.executable, "-c", RUN_CLI, "fake-upstream", "--hosted", "--port", str(port)]
    command += ["--token", "tok-cli-hosted"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if process.poll() is not None:
                raise AssertionError(f"fake-upstream --hosted exited: {process.communicate()}")
            try:
                httpx.get(url + "/health", timeout=1.0)
                break
            except httpx.TransportError:
                import time

                time.sleep(0.1)
        clf = hosted(TabPFNClassifier, endpoint_url=url + "/predict", api_key="tok-cli-hosted")
        assert clf.fit(X[:100], y[:100]).predict(X[100:]).shape == (60,)
        refused = httpx.post(url + "/predict", json={}, headers={"Authorization": "Bearer no"})
        assert refused.status_code == 401
    finally:
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)
    assert f"{url}/predict" in stdout
    assert "tok-cli-hosted" not in stdout + stderr
