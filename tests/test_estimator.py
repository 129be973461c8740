"""GatewayClassifier / GatewayRegressor through an in-process gateway over FakeTabPFN:
parameters, input handling (numpy, pandas, NaN, strings, categories), outputs, errors,
batching within the upstream's limits, pickling and cloning in process."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_diabetes, load_iris, make_classification
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from tabpfn_gateway import GatewayClassifier, GatewayRegressor
from tabpfn_gateway.errors import (
    ConfigurationError,
    FittedModelNotFound,
    GatewayError,
    InvalidData,
    KeyRevoked,
    MissingApiKey,
)
from tabpfn_gateway.estimators import DetachedInProcessBackend, HTTPBackend
from tabpfn_gateway.protocol.messages import GetSettingsResponse, ModelLimit
from tabpfn_gateway.testing import FakeTabPFN, local_gateway
from tabpfn_gateway.testing.local import LOCAL_TABPFN_TOKEN, LocalGateway


@pytest.fixture
def backend() -> Iterator[LocalGateway]:
    with local_gateway() as gateway:
        yield gateway


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_iris(return_X_y=True)
    return X, y


@pytest.fixture(scope="module")
def diabetes() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return X, y


class RecordingBackend:
    """Delegates to a real backend and records what the estimator handed it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fit_args: list[tuple[Any, Any, Any, dict[str, Any]]] = []
        self.predict_args: list[tuple[str, Any, Any]] = []

    def get_settings(self) -> GetSettingsResponse:
        return self.inner.get_settings()  # type: ignore[no-any-return]

    def fit(self, X: Any, y: Any, task_config: Any, options: Any, **kwargs: Any) -> Any:
        # The options as keywords, so the tests below read them by name.
        named = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
        self.fit_args.append((X, y, task_config, {**named, **kwargs}))
        return self.inner.fit(X, y, task_config, options, **kwargs)

    def predict(self, fitted_train_set_id: str, X: Any, task_config: Any) -> Any:
        self.predict_args.append((fitted_train_set_id, X, task_config))
        return self.inner.predict(fitted_train_set_id, X, task_config)

    def get_api_usage(self) -> dict[str, Any]:
        return self.inner.get_api_usage()  # type: ignore[no-any-return]

    def close(self) -> None:
        self.inner.close()


# -- the estimator contract -------------------------------------------------------------------


def test_init_stores_arguments_unchanged() -> None:
    backend = object()
    clf = GatewayClassifier(n_estimators=4, api_key="tpg_x", backend=backend, progress=False)  # type: ignore[arg-type]
    params = clf.get_params()
    assert params["n_estimators"] == 4
    assert params["backend"] is backend
    assert params["api_key"] == "tpg_x"
    assert params["random_state"] == 0
    assert params["ignore_pretraining_limits"] is False
    # Nothing but parameters: no client, no environment read.
    assert set(vars(clf)) == set(params)


def test_tabpfn_client_parameter_names_are_all_there() -> None:
    import inspect

    from tabpfn_client import TabPFNClassifier, TabPFNRegressor

    for ours, theirs in (
        (GatewayClassifier, TabPFNClassifier),
        (GatewayRegressor, TabPFNRegressor),
    ):
        their_params = inspect.signature(theirs.__init__).parameters
        our_params = inspect.signature(ours.__init__).parameters
        # client_options is tabpfn-client's global-client knob; ours is timeout/backend.
        missing = set(their_params) - set(our_params) - {"self", "client_options"}
        assert not missing, f"{ours.__name__} lacks {sorted(missing)}"
        for name in set(their_params) & set(our_params) - {"self", "api_mode"}:
            assert our_params[name].default == their_params[name].default, name
        assert {"base_url", "api_key", "timeout", "backend", "progress"} <= set(our_params)


def test_classifier_on_numpy(backend: LocalGateway, iris: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = iris
    clf = GatewayClassifier(backend=backend).fit(X, y)
    assert clf.n_features_in_ == 4
    assert not hasattr(clf, "feature_names_in_")
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    proba = clf.predict_proba(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    predicted = clf.predict(X)
    np.testing.assert_array_equal(predicted, clf.classes_[proba.argmax(axis=1)])
    assert clf.score(X, y) > 0.9
    assert isinstance(clf.model_id_, str)


def test_string_labels_come_back_as_given(backend: LocalGateway, iris: Any) -> None:
    X, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = GatewayClassifier(backend=backend).fit(X, names)
    np.testing.assert_array_equal(clf.classes_, ["setosa", "versicolor", "virginica"])
    predicted = clf.predict(X[:10])
    assert predicted.dtype == names.dtype
    assert set(predicted) <= set(names)
    # bool labels too
    flags = y == 2
    clf_bool = GatewayClassifier(backend=backend).fit(X, flags)
    assert clf_bool.predict(X[:5]).dtype == np.bool_


def test_dataframe_with_nan_strings_and_categories(backend: LocalGateway) -> None:
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 10, n),
            "city": rng.choice(["Berlin", "Paris", "Rome"], n),
            "plan": pd.Categorical(rng.choice(["free", "pro"], n)),
            "note": rng.choice(["likes tea,  a lot", "  quiet ", None], n),
        }
    )
    frame.loc[::7, "age"] = np.nan
    y = (frame["city"] == "Paris").astype(int).to_numpy()
    recorder = RecordingBackend(backend)
    clf = GatewayClassifier(backend=recorder).fit(frame, y)
    np.testing.assert_array_equal(clf.feature_names_in_, ["age", "city", "plan", "note"])
    sent_X = recorder.fit_args[0][0]
    assert isinstance(sent_X, pd.DataFrame), "a DataFrame goes upstream as a DataFrame"
    assert isinstance(sent_X["plan"].dtype, pd.CategoricalDtype)
    # Text cleaned like tabpfn-client: commas gone, whitespace collapsed; missing stays missing.
    assert set(sent_X["note"].dropna()) == {"likes tea a lot", "quiet"}
    assert sent_X["note"].isna().sum() == frame["note"].isna().sum()
    # The caller's frame is untouched.
    assert "likes tea,  a lot" in set(frame["note"].dropna())
    assert clf.score(frame, y) > 0.9
    # Columns in another order are refused (sklearn's feature-name check), with our code.
    with pytest.raises(InvalidData) as info:
        clf.predict(frame[["city", "age", "plan", "note"]])
    assert info.value.error_code == "INVALID_DATA"


def test_numpy_object_array_with_strings(backend: LocalGateway) -> None:
    X = np.array([[1.5, "a"], [2.5, "b"], [np.nan, "a"], [4.0, None]] * 10, dtype=object)
    y = np.array([0, 1, 0, 1] * 10)
    recorder = RecordingBackend(backend)
    clf = GatewayClassifier(backend=recorder).fit(X, y)
    sent = recorder.fit_args[0][0]
    assert isinstance(sent, pd.DataFrame)
    assert sent[0].dtype == np.float64  # numbers in an object column become numbers
    assert clf.predict(X).shape == (40,)


def test_labels_travel_encoded_and_config_carries_parameters(
    backend: LocalGateway, iris: Any
) -> None:
    X, y = iris
    recorder = RecordingBackend(backend)
    GatewayClassifier(
        backend=recorder, n_estimators=3, balance_probabilities=True, random_state=7
    ).fit(X, np.array(["a", "b", "c"])[y], description="iris")
    _, sent_y, task_config, kwargs = recorder.fit_args[0]
    assert sent_y.dtype == np.int64
    assert set(np.unique(sent_y)) == {0, 1, 2}
    config = task_config.tabpfn_config
    assert (config.n_estimators, config.balance_probabilities, config.random_state) == (3, True, 7)
    assert config.softmax_temperature is None  # None means "the upstream's default"
    assert kwargs["tabpfn_systems"] == ["preprocessing", "text"]
    assert kwargs["description"] == "iris"
    assert kwargs["thinking_config"] is None


def test_thinking_and_paper_version(backend: LocalGateway, iris: Any) -> None:
    X, y = iris
    recorder = RecordingBackend(backend)
    GatewayClassifier(backend=recorder, thinking_effort="high", thinking_metric="roc_auc").fit(X, y)
    kwargs = recorder.fit_args[0][3]
    assert kwargs["tabpfn_systems"] == ["preprocessing", "text", "thinking"]
    assert kwargs["thinking_config"].effort == "high"
    GatewayClassifier(backend=recorder, paper_version=True).fit(X, y)
    assert recorder.fit_args[1][3]["tabpfn_systems"] == []
    with pytest.raises(InvalidData, match="cannot be enabled together"):
        GatewayClassifier(backend=recorder, paper_version=True, thinking_mode=True).fit(X, y)
    with pytest.raises(InvalidData, match="thinking mode"):
        GatewayClassifier(backend=recorder, group_col="g").fit(X, y)


def test_regressor_outputs(backend: LocalGateway, diabetes: Any) -> None:
    X, y = diabetes
    reg = GatewayRegressor(backend=backend).fit(X, y)
    mean = reg.predict(X)
    assert mean.shape == (442,)
    assert mean.dtype == np.float64
    assert reg.score(X, y) > 0.5
    for kind in ("median", "mode"):
        assert reg.predict(X[:20], output_type=kind).shape == (20,)
    quantiles = reg.predict(X[:20], output_type="quantiles", quantiles=[0.1, 0.5, 0.9])
    assert isinstance(quantiles, list)
    assert len(quantiles) == 3
    assert all(q.shape == (20,) for q in quantiles)
    assert np.all(quantiles[0] <= quantiles[2])
    full = reg.predict(X[:20], output_type="full")
    assert {"mean", "median", "mode", "quantiles", "logits", "borders"} <= set(full)
    assert full["logits"].shape[0] == 20
    np.testing.assert_allclose(full["mean"], mean[:20])
    main = reg.predict(X[:20], output_type="main")
    assert "mean" in main
    with pytest.raises(InvalidData, match="output_type"):
        reg.predict(X, output_type="average")
    with pytest.raises(InvalidData, match="quantiles"):
        reg.predict(X, output_type="quantiles", quantiles=[1.5])


# -- errors ------------------------------------------------------------------------------------


def test_bad_input_gets_clear_coded_errors(backend: LocalGateway, iris: Any) -> None:
    X, y = iris
    clf = GatewayClassifier(backend=backend)
    with pytest.raises(NotFittedError):
        clf.predict(X)
    cases: list[tuple[Any, Any, str]] = [
        (X, y[:-1], "different numbers of samples"),
        (X, np.where(y == 0, np.nan, y), "NaN"),
        (X, np.zeros(150), "only one class"),
        (X, np.linspace(0, 1, 150), "Unknown label type"),
        (X[:1], y[:1], "1 sample"),
        (np.full((150, 4), np.inf), y, "infinity"),
        (X, None, "requires y"),
    ]
    for bad_X, bad_y, message in cases:
        with pytest.raises(InvalidData, match=message) as info:
            clf.fit(bad_X, bad_y)
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, GatewayError)
    # scikit-learn's TypeErrors for unusable X get our code too (and stay ValueErrors).
    import scipy.sparse

    for bad_X, message in (
        (scipy.sparse.random(150, 4, format="csr"), "Sparse data"),
        (pd.DataFrame({1: X[:, 0], "a": X[:, 1]}), "Feature names are only supported"),
        (X + 1j, "Complex data"),
    ):
        with pytest.raises(InvalidData, match=message):
            clf.fit(bad_X, y)
    with pytest.raises(InvalidParameterError):
        GatewayClassifier(backend=backend, n_estimators=0).fit(X, y)
    with pytest.raises(InvalidParameterError):
        GatewayClassifier(backend=backend, api_mode="fast").fit(X, y)


def test_failed_refit_keeps_the_previous_fit(backend: LocalGateway, iris: Any) -> None:
    X, y = iris
    clf = GatewayClassifier(backend=backend).fit(X, y)
    before = (clf.model_id_, clf.n_features_in_)
    with pytest.raises(InvalidData):
        clf.fit(np.c_[X, X], np.zeros(150))
    assert (clf.model_id_, clf.n_features_in_) == before
    assert clf.predict(X[:3]).shape == (3,)


def test_too_many_classes_is_refused_before_upload(iris: Any) -> None:
    X, _ = iris
    fake = FakeTabPFN(tokens=[LOCAL_TABPFN_TOKEN], max_classes=3)
    with local_gateway(fake=fake) as backend:
        with pytest.raises(InvalidData, match=r"classes \(5\) exceeds the maximum of 3"):
            GatewayClassifier(backend=backend).fit(X, np.arange(150) % 5)
        assert fake.requests_to("/tabpfn/prepare_train_set_upload") == []


def test_revoked_key_and_foreign_fits_are_refused(backend: LocalGateway, iris: Any) -> None:
    X, y = iris
    clf = GatewayClassifier(backend=backend).fit(X, y)
    with local_gateway() as other:
        stranger = clone(clf).set_params(backend=other)
        stranger.model_id_ = clf.model_id_
        stranger.classes_ = clf.classes_
        stranger.n_features_in_ = 4
        stranger._n_train_rows = 150
        stranger.tabpfn_config_ = clf.tabpfn_config_
        with pytest.raises(FittedModelNotFound):
            stranger.predict(X)
    backend.gateway.keys.revoke(backend.key_id)
    backend.gateway.keys.invalidate()
    with pytest.raises(KeyRevoked):
        clf.predict(X)


def test_http_backend_without_any_key_says_what_to_do(
    iris: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keyring
    from keyring.backends import fail

    monkeypatch.delenv("TABPFN_GATEWAY_API_KEY", raising=False)
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        clf = GatewayClassifier(base_url="http://127.0.0.1:9")
        with pytest.raises(MissingApiKey, match="TABPFN_GATEWAY_API_KEY"):
            clf.fit(*iris)
        with pytest.raises(ConfigurationError, match="TABPFN_GATEWAY_URL"):
            GatewayClassifier(api_key="tpg_x").fit(*iris)
    finally:
        keyring.set_keyring(previous)


def test_keys_never_show_in_reprs() -> None:
    key = "tpg_abcdefgh12_SECRETSECRETSECRETSECRETSECRET"
    clf = GatewayClassifier(api_key=key, base_url="https://gw.example")
    assert key not in repr(clf)
    assert "SecretStr('**********')" in repr(clf)
    pipeline = make_pipeline(StandardScaler(), GatewayRegressor(api_key=key))
    assert key not in repr(pipeline)
    assert key not in repr(GridSearchCV(pipeline, {"gatewayregressor__n_estimators": [1, 2]}))
    assert key not in pipeline._repr_mimebundle_()["text/html"]
    # Masked for display only: clone and pickling keep the working key.
    cloned = clone(pipeline)[-1]
    assert str(cloned.api_key) == key
    assert str(pickle.loads(pickle.dumps(cloned)).api_key) == key
    assert key not in clf._repr_mimebundle_()["text/html"]
    assert key not in repr(HTTPBackend("https://gw.example", key))
    assert clf.get_params()["api_key"] == key  # the parameter itself is unchanged


# -- batching ----------------------------------------------------------------------------------


class SmallLimitsFake(FakeTabPFN):
    """FakeTabPFN reporting small test-set limits (it has no public knob for them)."""

    def __init__(self, *, limit: ModelLimit, **kwargs: Any) -> None:
        super().__init__(tokens=[LOCAL_TABPFN_TOKEN], **kwargs)
        self.small_limit = limit

    async def _get_settings(self, request: Any) -> Any:
        settings = await super()._get_settings(request)
        return settings.model_copy(
            update={
                "max_model_limit": self.small_limit,
                "model_limits": {v: self.small_limit for v in settings.model_limits},
            }
        )


def _limit(**changes: int) -> ModelLimit:
    base = {
        "train_set_max_rows": 10_000,
        "train_set_max_cells": 10**7,
        "train_set_max_upload_cells": 10**7,
        "test_set_max_rows": 10_000,
        "max_classes": 10,
        "max_cols": 500,
        "test_set_max_rows_w_full_regression_output": 5_000,
        "predict_row_pairs_budget": 10**12,
        "test_set_max_cells": 10**7,
    }
    return ModelLimit(**{**base, **changes})


def _predict_rows(backend: LocalGateway) -> list[int]:
    backend.gateway.usage.flush()
    events = backend.store.list_usage(key_id=backend.key_id, limit=1000).items
    return [e.rows or 0 for e in reversed(events) if e.operation == "predict"]


@pytest.mark.parametrize(
    ("limit", "expected_calls"),
    [
        (_limit(test_set_max_rows=40), 4),  # 150 rows, 40 a call
        (_limit(test_set_max_cells=4 * 60), 3),  # 4 columns: 60 rows a call
        (_limit(predict_row_pairs_budget=150 * 50), 3),  # 150 train rows: 50 test rows a call
    ],
)
def test_large_test_sets_are_batched_within_limits(
    limit: ModelLimit, expected_calls: int, iris: Any
) -> None:
    X, y = iris
    fake = SmallLimitsFake(limit=limit)
    with local_gateway(fake=fake) as batched, local_gateway() as whole:
        clf = GatewayClassifier(backend=batched, progress=False).fit(X, y)
        reference = GatewayClassifier(backend=whole, progress=False).fit(X, y)
        fake.clear_log()
        proba = clf.predict_proba(X)
        assert len(fake.requests_to("/tabpfn/predict")) == expected_calls
        rows = _predict_rows(batched)
        assert sum(rows) == 150
        assert len(rows) == expected_calls
        per_call = min(
            limit.test_set_max_rows,
            limit.test_set_max_cells // 4,
            limit.predict_row_pairs_budget // 150,
        )
        assert max(rows) <= per_call
        # Joined exactly as one call (the same data and seed give the same model).
        np.testing.assert_array_equal(proba, reference.predict_proba(X))
        np.testing.assert_array_equal(clf.predict(X), reference.predict(X))


def test_subsampled_fits_skip_the_row_pairs_budget(iris: Any) -> None:
    X, y = iris
    fake = SmallLimitsFake(limit=_limit(predict_row_pairs_budget=150 * 50))
    with local_gateway(fake=fake) as backend:
        clf = GatewayClassifier(backend=backend, inference_config={"SUBSAMPLE_SAMPLES": 100}).fit(
            X, y
        )
        fake.clear_log()
        clf.predict(X)
        assert len(fake.requests_to("/tabpfn/predict")) == 1


def test_full_regression_output_is_split_and_joined(diabetes: Any) -> None:
    X, y = diabetes
    # The fake enforces this limit itself: a call with more rows would be refused.
    fake = FakeTabPFN(tokens=[LOCAL_TABPFN_TOKEN], full_output_max_rows=100)
    with local_gateway(fake=fake) as batched, local_gateway() as whole:
        reg = GatewayRegressor(backend=batched).fit(X, y)
        reference = GatewayRegressor(backend=whole).fit(X, y)
        fake.clear_log()
        full = reg.predict(X, output_type="full")
        assert len(fake.requests_to("/tabpfn/predict")) == 5  # 442 rows, 100 a call
        expected = reference.predict(X, output_type="full")
        assert set(full) == set(expected)
        for name in expected:
            np.testing.assert_array_equal(full[name], expected[name], err_msg=name)
        fake.clear_log()
        reg.predict(X, output_type="quantiles")  # other outputs are not split
        assert len(fake.requests_to("/tabpfn/predict")) == 1


def test_quantiles_split_into_batches_are_joined_per_quantile(diabetes: Any) -> None:
    X, y = diabetes
    fake = SmallLimitsFake(limit=_limit(test_set_max_rows=100))
    with local_gateway(fake=fake) as batched, local_gateway() as whole:
        reg = GatewayRegressor(backend=batched).fit(X, y)
        reference = GatewayRegressor(backend=whole).fit(X, y)
        got = reg.predict(X, output_type="quantiles", quantiles=[0.25, 0.75])
        want = reference.predict(X, output_type="quantiles", quantiles=[0.25, 0.75])
        assert len(got) == 2
        assert got[0].shape == (442,)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


def test_one_column_over_the_limits_is_refused() -> None:
    fake = SmallLimitsFake(limit=_limit(max_cols=3))
    X, y = make_classification(n_samples=50, n_features=5, random_state=0)
    with local_gateway(fake=fake) as backend, pytest.raises(InvalidData, match="columns"):
        GatewayClassifier(backend=backend).fit(X, y)


# -- pickling and cloning in process -------------------------------------------------------


def test_clone_and_deepcopy_share_the_backend(backend: LocalGateway, iris: Any) -> None:
    import copy

    clf = GatewayClassifier(backend=backend, n_estimators=2)
    twin = clone(clf)
    assert twin.backend is backend
    assert twin.get_params()["n_estimators"] == 2
    assert copy.deepcopy(backend) is backend


def test_pickle_in_process_restores_the_same_backend(backend: LocalGateway, iris: Any) -> None:
    X, y = iris
    clf = GatewayClassifier(backend=backend).fit(X, y)
    restored = pickle.loads(pickle.dumps(clf))
    assert restored.backend is backend
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))


def test_in_process_backend_refuses_clearly_in_another_process(
    backend: LocalGateway, iris: Any, tmp_path: Path
) -> None:
    X, y = iris
    clf = GatewayClassifier(backend=backend).fit(X, y)
    path = tmp_path / "clf.pkl"
    path.write_bytes(pickle.dumps(clf))
    script = textwrap.dedent(
        f"""
        import pickle
        from sklearn.datasets import load_iris
        from tabpfn_gateway.errors import ConfigurationError
        clf = pickle.loads(open({str(path)!r}, "rb").read())
        print(type(clf.backend).__name__)
        try:
            clf.predict(load_iris(return_X_y=True)[0])
        except ConfigurationError as exc:
            print("refused:", exc.error_code, exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.splitlines()[0] == DetachedInProcessBackend.__name__
    assert "refused: CONFIGURATION_ERROR" in done.stdout
    assert "exists only in the process that created it" in done.stdout


# -- scikit-learn tooling in process -------------------------------------------------------------


def test_pipeline_cross_val_and_grid_search(backend: LocalGateway, iris: Any) -> None:
    X, y = iris
    pipeline = make_pipeline(StandardScaler(), GatewayClassifier(backend=backend, progress=False))
    scores = cross_val_score(pipeline, X, y, cv=3)
    assert scores.shape == (3,)
    assert scores.min() > 0.8
    search = GridSearchCV(
        GatewayClassifier(backend=backend, progress=False),
        {"n_estimators": [1, 2]},
        cv=2,
        n_jobs=1,
    )
    search.fit(X, y)
    assert search.best_params_["n_estimators"] in (1, 2)
    assert search.predict(X[:4]).shape == (4,)


def test_usage_is_metered_per_key(backend: LocalGateway, iris: Any) -> None:
    X, y = iris
    GatewayClassifier(backend=backend).fit(X, y).predict(X)
    by_operation = {s.operation: s for s in backend.usage()}
    assert by_operation["fit"].calls == 1
    assert by_operation["fit"].rows == 150
    assert by_operation["predict"].calls == 1
    assert by_operation["predict"].rows == 150


def test_http_backend_follows_set_params_and_keeps_no_key_copy() -> None:
    clf = GatewayClassifier(base_url="http://gw.example", api_key="tpg_first_key_0123456789")
    first = clf._get_backend()
    assert isinstance(first, HTTPBackend)
    assert clf._get_backend() is first
    assert "tpg_first_key_0123456789" not in repr(clf.__dict__["_http_backend"])
    clf.set_params(api_key="tpg_second_key_0123456789")
    second = clf._get_backend()
    assert second is not first
    clf.set_params(timeout=30.0)
    assert clf._get_backend() is not second
    assert clf._get_backend().timeout == 30.0
