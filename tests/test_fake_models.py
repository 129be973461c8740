"""The scikit-learn models behind FakeTabPFN: tolerant inputs, TabPFN-shaped outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression

from tabpfn_gateway.testing.fake_models import (
    DEFAULT_QUANTILES,
    FitFailed,
    predict_classification,
    predict_regression,
    train,
)


def messy_frame(rows: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    X, y = make_classification(rows, 6, n_informative=4, random_state=seed)
    frame = pd.DataFrame(X, columns=[f"n{i}" for i in range(6)])
    frame.iloc[::5, 0] = np.nan
    frame["colour"] = np.where(X[:, 1] > 0, "red", "blue")
    frame.loc[::11, "colour"] = None
    frame["flag"] = X[:, 2] > 0
    frame["when"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(rows), unit="D")
    frame["free_text"] = [f"note {i}" for i in range(rows)]  # > 250 categories: ordinal
    frame["mixed"] = [1, "a", None] * (rows // 3) + [1] * (rows % 3)
    return frame, y


def test_nan_strings_bools_dates_and_text_are_tolerated() -> None:
    frame, y = messy_frame(600)
    model = train(frame, pd.DataFrame({"y": y}), "classification")
    preds = predict_classification(model, frame, "preds")
    assert np.mean(np.array(preds) == y) > 0.85
    unseen = frame.head(20).copy()
    unseen["colour"] = "green"  # a category never seen in training
    assert len(predict_classification(model, unseen, "probas")) == 20


def test_probas_columns_follow_sorted_classes() -> None:
    X, y = make_classification(300, 5, n_classes=3, n_informative=3, random_state=0)
    labels = np.array(["cherry", "apple", "banana"])[y]
    model = train(pd.DataFrame(X), pd.DataFrame({"y": labels}), "classification")
    assert model.classes == ["apple", "banana", "cherry"]
    probas = np.array(predict_classification(model, pd.DataFrame(X), "probas"))
    preds = predict_classification(model, pd.DataFrame(X), "preds")
    assert list(np.array(model.classes)[probas.argmax(axis=1)]) == preds


def test_a_single_class_target_predicts_that_class() -> None:
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0]})
    model = train(X, pd.DataFrame({"y": ["only"] * 3}), "classification")
    assert predict_classification(model, X, "preds") == ["only"] * 3
    assert predict_classification(model, X, "probas") == [[1.0]] * 3


@pytest.mark.parametrize(
    ("y", "task", "match"),
    [
        (pd.DataFrame({"y": [0, 1, 2, 3, 4, 5]}), "classification", "6 classes"),
        (pd.DataFrame({"y": ["a", "b", "c", "a", "b", "c"]}), "regression", "numeric"),
        (pd.DataFrame({"y": [0, 1, None, 1, 0, 1]}), "classification", "missing"),
    ],
)
def test_unfittable_train_sets_fail_with_a_reason(y: pd.DataFrame, task: str, match: str) -> None:
    X = pd.DataFrame({"a": np.arange(6.0)})
    with pytest.raises(FitFailed, match=match):
        train(X, y, task, max_classes=5)  # type: ignore[arg-type]


def test_regression_outputs_are_consistent() -> None:
    X, y = make_regression(400, 5, noise=10.0, random_state=0)
    model = train(pd.DataFrame(X), pd.DataFrame(y), "regression")
    rows = pd.DataFrame(X[:25])
    mean = np.array(predict_regression(model, rows, "mean"))
    quantiles = np.array(predict_regression(model, rows, "quantiles"))
    assert quantiles.shape == (len(DEFAULT_QUANTILES), 25)
    assert np.all(np.diff(quantiles, axis=0) >= 0)
    full = predict_regression(model, rows, "full")
    assert isinstance(full, dict)
    logits = np.array(full["logits"], dtype=float)
    borders = np.array(full["borders"])
    assert logits.shape == (25, len(borders) - 1)
    probabilities = np.exp(np.nan_to_num(logits, nan=-np.inf))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    # The distribution's mode sits in the bar with the highest logit, near the mean.
    mode = np.array(full["mode"])
    assert np.all(np.abs(mode - mean) <= np.diff(borders).max() * 1.5)
    np.testing.assert_allclose(full["mean"], mean)
    assert np.mean(np.abs(mean - y[:25])) < np.std(y)


def test_masked_logits_travel_as_null() -> None:
    # A very certain model puts zero mass on far bars: those are -inf, sent as null.
    X = pd.DataFrame({"a": np.arange(200.0)})
    y = pd.DataFrame({"y": np.arange(200.0)})
    model = train(X, y, "regression", max_iter=100)
    full = predict_regression(model, X.head(3), "full")
    assert isinstance(full, dict)
    assert any(value is None for row in full["logits"] for value in row)


def test_test_sets_with_the_wrong_width_are_refused() -> None:
    X, y = make_classification(50, 4, random_state=0)
    model = train(pd.DataFrame(X), pd.DataFrame(y), "classification")
    with pytest.raises(FitFailed, match="columns"):
        predict_classification(model, pd.DataFrame(X[:, :3]), "preds")


def test_unknown_regression_outputs_are_refused() -> None:
    X, y = make_regression(30, 2, random_state=0)
    model = train(pd.DataFrame(X), pd.DataFrame(y), "regression")
    with pytest.raises(FitFailed, match="output_type"):
        predict_regression(model, pd.DataFrame(X), "everything")
