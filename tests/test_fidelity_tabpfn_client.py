"""Fidelity: the unmodified official tabpfn-client against FakeTabPFN, and our client beside it.

tabpfn-client runs in a subprocess (its state is process-global, and TABPFN_CLIENT_API_URL /
TABPFN_TOKEN must be set before it is imported) against FakeTabPFN served on a loopback port.
Our ProtocolClient runs the same scenarios against the same fake; where the two clients'
requests differ, a test pins the difference down as deliberate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tabpfn_gateway.errors import UpstreamAuthenticationFailed, UsageLimitReached
from tabpfn_gateway.protocol import FitOptions, ProtocolClient
from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    ClassifierFitTaskConfig,
    ClassifierPredictParams,
    ClassifierTabPFNConfig,
    RegressorConfig,
    RegressorFitTaskConfig,
    RegressorPredictParams,
)
from tabpfn_gateway.testing.fake import STORAGE_PREFIX, FakeTabPFN, LoggedRequest
from tabpfn_gateway.testing.fake_server import serve_in_thread

VENDOR_CACHE = Path(__import__("tabpfn_client.constants").constants.CACHE_DIR)

# One script, several scenarios: it prints one JSON line with what the estimators returned.
VENDOR_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    import numpy as np
    from sklearn.datasets import make_classification, make_regression

    scenario = sys.argv[1]
    out = {}
    try:
        from tabpfn_client import TabPFNClassifier, TabPFNRegressor
        X, y = make_classification(200, 6, n_informative=4, random_state=0)
        labels = np.array(["no", "yes"])[y]
        Xr, yr = make_regression(150, 5, noise=5.0, random_state=0)
        if scenario == "classifier":
            clf = TabPFNClassifier().fit(X, labels)
            out["classes"] = clf.classes_.tolist()
            out["probas"] = clf.predict_proba(X[:20]).tolist()
            out["preds"] = clf.predict(X[:20]).tolist()
        elif scenario == "regressor":
            reg = TabPFNRegressor().fit(Xr, yr)
            out["mean"] = reg.predict(Xr[:10]).tolist()
            q = reg.predict(Xr[:10], output_type="quantiles", quantiles=[0.25, 0.75])
            out["quantiles"] = [part.tolist() for part in q]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "tabpfn and torch are needed for criterion"
                full = reg.predict(Xr[:10], output_type="full")
            out["full_keys"] = sorted(full)
            out["logits_shape"] = list(np.asarray(full["logits"]).shape)
        elif scenario == "dedup":
            TabPFNClassifier().fit(X, labels)
            TabPFNClassifier().fit(X, labels)
        elif scenario == "async":
            clf = TabPFNClassifier().fit(X, labels)
            out["probas"] = clf.predict_proba(X[:5]).tolist()
        elif scenario == "predict_only":
            clf = TabPFNClassifier().fit(X, labels)
            clf.predict_proba(X[:5])
    except Exception as exc:
        out["error_type"] = type(exc).__name__
        out["error"] = str(exc)
    print(json.dumps(out))
    """
)

CLASSIFIER_ROWS = 200


@pytest.fixture
def fake() -> FakeTabPFN:
    return FakeTabPFN({"tok-vendor": None, "tok-ours": None, "tok-broke": 0}, pending_polls=2)


@pytest.fixture
def upstream(fake: FakeTabPFN) -> Iterator[str]:
    with serve_in_thread(fake.app) as url:
        yield url


def run_vendor(url: str, token: str, scenario: str, tmp_path: Path, **env: str) -> dict[str, Any]:
    script = tmp_path / "vendor.py"
    script.write_text(VENDOR_SCRIPT)
    environment = {
        **os.environ,
        "TABPFN_CLIENT_API_URL": url,
        "TABPFN_TOKEN": token,
        "HOME": str(tmp_path),  # nothing of the vendor's may land in the real home
        **env,
    }
    done = subprocess.run(
        [sys.executable, str(script), scenario],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The vendor caches tokens only for interactive_login(); make sure none was written.
    assert not VENDOR_CACHE.exists()
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def ours(url: str, token: str = "tok-ours", **options: Any) -> ProtocolClient:
    return ProtocolClient(url, token, retry_wait=0, **options)


def vendor_data() -> dict[str, Any]:
    from sklearn.datasets import make_classification, make_regression

    X, y = make_classification(200, 6, n_informative=4, random_state=0)
    Xr, yr = make_regression(150, 5, noise=5.0, random_state=0)
    return {"X": X, "labels": np.array(["no", "yes"])[y], "Xr": Xr, "yr": yr}


def shape(log: list[LoggedRequest]) -> list[str]:
    return [
        "PUT <signed url>" if r.path.startswith(STORAGE_PREFIX) else f"{r.method} {r.path}"
        for r in log
    ]


# -- the scenarios, vendor and ours ------------------------------------------------------


def test_classifier_predictions_match_between_clients(
    fake: FakeTabPFN, upstream: str, tmp_path: Path
) -> None:
    vendor = run_vendor(upstream, "tok-vendor", "classifier", tmp_path)
    assert "error" not in vendor
    assert vendor["classes"] == ["no", "yes"]
    data = vendor_data()
    with ours(upstream) as client:
        fitted = client.fit(data["X"], data["labels"], ClassifierFitTaskConfig())
        probas = client.predict(
            fitted.fitted_train_set_id,
            data["X"][:20],
            ClassifierConfig(predict_params=ClassifierPredictParams(output_type="probas")),
        )
        preds = client.predict(
            fitted.fitted_train_set_id,
            data["X"][:20],
            ClassifierConfig(predict_params=ClassifierPredictParams(output_type="preds")),
        )
    # Byte-identical uploads, the same deterministic model: the same numbers.
    np.testing.assert_allclose(probas.y_pred, np.array(vendor["probas"]))
    assert list(preds.y_pred) == vendor["preds"]
    assert probas.metadata["classes"] == vendor["classes"]


def test_regressor_outputs_match_between_clients(
    fake: FakeTabPFN, upstream: str, tmp_path: Path
) -> None:
    vendor = run_vendor(upstream, "tok-vendor", "regressor", tmp_path)
    assert "error" not in vendor
    # No "criterion": the vendor builds it only when tabpfn and torch are installed.
    assert vendor["full_keys"] == ["borders", "logits", "mean", "median", "mode", "quantiles"]
    assert vendor["logits_shape"] == [10, 100]
    data = vendor_data()

    def config(output: str, quantiles: list[float] | None = None) -> RegressorConfig:
        return RegressorConfig(
            predict_params=RegressorPredictParams(output_type=output, quantiles=quantiles)
        )

    with ours(upstream) as client:
        fitted = client.fit(data["Xr"], data["yr"], RegressorFitTaskConfig())
        mean = client.predict(fitted.fitted_train_set_id, data["Xr"][:10], config("mean"))
        quantiles = client.predict(
            fitted.fitted_train_set_id, data["Xr"][:10], config("quantiles", [0.25, 0.75])
        )
        full = client.predict(fitted.fitted_train_set_id, data["Xr"][:10], config("full"))
    np.testing.assert_allclose(mean.y_pred, vendor["mean"])
    np.testing.assert_allclose(quantiles.y_pred, vendor["quantiles"])
    assert isinstance(full.y_pred, dict)
    assert sorted(full.y_pred) == vendor["full_keys"]
    assert list(full.y_pred["logits"].shape) == vendor["logits_shape"]


def test_async_fit_path(fake: FakeTabPFN, upstream: str, tmp_path: Path) -> None:
    vendor = run_vendor(
        upstream, "tok-vendor", "async", tmp_path, TABPFN_CLIENT_ASYNC_USE_ABOVE_TRAINSET_SIZE="0"
    )
    assert "error" not in vendor
    vendor_log = [r for r in fake.requests if r.token == "tok-vendor"]
    assert "POST /tabpfn/submit_fit_job" in shape(vendor_log)
    assert "POST /tabpfn/fit" not in shape(vendor_log)
    polls = [r for r in vendor_log if r.path == "/tabpfn/get_fit_status"]
    assert len(polls) == 3  # pending, pending, completed
    data = vendor_data()
    with ours(upstream) as client:
        fitted = client.fit(
            data["X"], data["labels"], ClassifierFitTaskConfig(), FitOptions(api_mode="async")
        )
        probas = client.predict(
            fitted.fitted_train_set_id,
            data["X"][:5],
            ClassifierConfig(predict_params=ClassifierPredictParams(output_type="probas")),
        )
    np.testing.assert_allclose(probas.y_pred, vendor["probas"])
    our_polls = [r for r in fake.requests if r.token == "tok-ours" and r.path.endswith("status")]
    assert len(our_polls) == 3
    # Both poll with the same body: the fitted id and nothing else.
    assert set(polls[0].json) == set(our_polls[0].json) == {"fitted_train_set_id"}


def test_dedup_path_skips_the_second_upload(
    fake: FakeTabPFN, upstream: str, tmp_path: Path
) -> None:
    vendor = run_vendor(upstream, "tok-vendor", "dedup", tmp_path)
    assert "error" not in vendor
    log = shape(fake.requests)
    first_fit = log.index("POST /tabpfn/fit")
    after = fake.requests[first_fit + 1 :]
    assert [r.status for r in after if r.path.endswith("prepare_train_set_upload")] == [409]
    assert not any(r.path.startswith(STORAGE_PREFIX) for r in after)
    data = vendor_data()
    fake.clear_log()
    with ours(upstream) as client:
        client.fit(data["X"], data["labels"], ClassifierFitTaskConfig())
        client.fit(data["X"], data["labels"], ClassifierFitTaskConfig())
    assert shape(fake.requests).count("PUT <signed url>") == 2  # the first fit's x and y only
    prepares = [r.status for r in fake.requests if r.path.endswith("prepare_train_set_upload")]
    assert prepares == [200, 409]


def test_bad_token_errors(fake: FakeTabPFN, upstream: str, tmp_path: Path) -> None:
    vendor = run_vendor(upstream, "tok-wrong", "classifier", tmp_path)
    assert vendor["error_type"] == "RuntimeError"
    assert "rejected by the server" in vendor["error"]
    assert "tok-wrong" not in vendor["error"]
    data = vendor_data()
    with (
        ours(upstream, "tok-wrong") as client,
        pytest.raises(UpstreamAuthenticationFailed) as caught,
    ):
        client.fit(data["X"], data["labels"], ClassifierFitTaskConfig())
    assert caught.value.status_code == 401
    assert "tok-wrong" not in str(caught.value)


def test_exhausted_limit_errors(fake: FakeTabPFN, upstream: str, tmp_path: Path) -> None:
    vendor = run_vendor(upstream, "tok-broke", "predict_only", tmp_path)
    assert vendor["error_type"] == "RuntimeError"
    assert "HTTP 429" in vendor["error"]
    data = vendor_data()
    with ours(upstream, "tok-broke") as client, pytest.raises(UsageLimitReached) as caught:
        client.fit(data["X"], data["labels"], ClassifierFitTaskConfig())
    assert caught.value.status_code == 429
    assert caught.value.details["usage_limit"] == 0


# -- the request logs, side by side ------------------------------------------------------


def test_our_requests_differ_from_the_vendors_only_deliberately(
    fake: FakeTabPFN, upstream: str, tmp_path: Path
) -> None:
    run_vendor(upstream, "tok-vendor", "predict_only", tmp_path)
    vendor_log = [r for r in fake.requests if r.token == "tok-vendor"]
    fake.clear_log()
    data = vendor_data()
    # The vendor estimator sends its hyperparameters; pass the same ones.
    fit_body = next(r.json for r in vendor_log if r.path == "/tabpfn/fit")
    tabpfn_config = ClassifierTabPFNConfig.model_validate(fit_body["task_config"]["tabpfn_config"])
    predict_body = next(r.json for r in vendor_log if r.path == "/tabpfn/predict")
    with ours(upstream) as client:
        fitted = client.fit(
            data["X"], data["labels"], ClassifierFitTaskConfig(tabpfn_config=tabpfn_config)
        )
        client.predict(
            fitted.fitted_train_set_id,
            data["X"][:5],
            ClassifierConfig.model_validate(predict_body["task_config"]),
        )
    our_log = fake.requests

    # 1. We skip init()'s token check and greeting messages: a protocol client validates
    #    nothing up front and prints nothing (check_token() exists for callers who want it).
    assert shape(vendor_log)[:2] == ["GET /protected/", "GET /retrieve_greeting_messages/"]
    assert shape(vendor_log)[2:] == shape(our_log)

    # 2. The vendor sends its bearer token to signed upload URLs (its pooled client carries
    #    it); we send no credential there: a signed URL is a credential of its own.
    vendor_uploads = [r for r in vendor_log if r.path.startswith(STORAGE_PREFIX)]
    our_uploads = [r for r in our_log if r.path.startswith(STORAGE_PREFIX)]
    assert {r.token for r in vendor_uploads} == {"tok-vendor"}
    assert {r.token for r in our_uploads} == {None}

    # 3. Every JSON body is the same, field for field, but for the ids the upstream minted.
    ids = {"train_set_upload_id", "test_set_upload_id", "fitted_train_set_id"}
    vendor_bodies = [(r.path, r.json) for r in vendor_log if r.json is not None]
    our_bodies = [(r.path, r.json) for r in our_log if r.json is not None]
    assert [p for p, _ in vendor_bodies] == [p for p, _ in our_bodies]
    for (path, theirs), (_, mine) in zip(vendor_bodies, our_bodies, strict=True):
        assert set(theirs) == set(mine), path
        assert {k: v for k, v in theirs.items() if k not in ids} == {
            k: v for k, v in mine.items() if k not in ids
        }, path

    # 4. Headers: both announce the protocol generation; the vendor also sends a per-fit
    #    sentry-trace id (its telemetry), which we do not.
    assert {
        r.headers["prior-client-version"] for r in our_log if not r.path.startswith(STORAGE_PREFIX)
    } == {vendor_log[0].headers["prior-client-version"]}
    assert any("sentry-trace" in r.headers for r in vendor_log)
    assert not any("sentry-trace" in r.headers for r in our_log)
