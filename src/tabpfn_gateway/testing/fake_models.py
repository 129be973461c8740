"""The scikit-learn models behind FakeTabPFN: small, tolerant of NaN and strings, quick to fit.

A gradient-boosted tree ensemble (``HistGradientBoosting*``) behind an ``OrdinalEncoder`` for
string and categorical columns; missing values are handled natively. Regression adds a
distribution around the point prediction (from the training residuals) so ``median``,
``mode``, ``quantiles`` and the ``full`` output (``borders`` and ``logits``) are real numbers
with the shapes TabPFN returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_QUANTILES",
    "FakeModel",
    "FitFailed",
    "predict_classification",
    "predict_regression",
    "train",
]

Task = Literal["classification", "regression"]

DEFAULT_QUANTILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
# Bars of the regression histogram (TabPFN uses thousands; a hundred keeps responses small).
N_BINS = 100
# HistGradientBoosting treats a column as categorical only below its bin count.
_MAX_CATEGORIES = 250


class FitFailed(ValueError):
    """The train set cannot be fitted (the fake reports it as the upstream would)."""


@dataclass
class FakeModel:
    """A fitted fake TabPFN model and what predicting with it needs."""

    task: Task
    estimator: Any
    columns: list[str]
    classes: list[Any] = field(default_factory=list)
    residuals: np.ndarray | None = None
    borders: np.ndarray | None = None


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as float64, everything else as strings with NaN for missing values."""
    out: dict[str, Any] = {}
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
            out[str(name)] = pd.to_numeric(column, errors="coerce").astype("float64")
        elif pd.api.types.is_datetime64_any_dtype(column):
            values = column.astype("int64").astype("float64")
            out[str(name)] = values.where(column.notna(), np.nan)
        else:
            out[str(name)] = (
                column.astype(object)
                .where(column.notna(), np.nan)
                .map(lambda v: v if isinstance(v, float) and np.isnan(v) else str(v))
            )
    return pd.DataFrame(out, index=frame.index)


class _TextColumnEncoder:
    """String columns to ordinal codes (NaN for missing or unseen), numbers passed through.

    Not a ColumnTransformer: that one runs through joblib's Parallel, which warns when many
    threads fit at once (the fake fits from worker threads).
    """

    def __init__(self, text_columns: list[str]) -> None:
        from sklearn.preprocessing import OrdinalEncoder

        self.text_columns = text_columns
        self.encoder = OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan
        )

    def fit(self, frame: pd.DataFrame) -> _TextColumnEncoder:
        if self.text_columns:
            self.encoder.fit(frame[self.text_columns])
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        numeric = frame.drop(columns=self.text_columns).to_numpy(dtype="float64")
        if not self.text_columns:
            return numeric
        codes = np.asarray(self.encoder.transform(frame[self.text_columns]), dtype="float64")
        # Encoded columns first: the categorical mask below relies on this order.
        return np.hstack([codes, numeric])


@dataclass
class _Estimator:
    """An encoder and a scikit-learn model, fitted and applied together."""

    encoder: _TextColumnEncoder
    model: Any

    def fit(self, frame: pd.DataFrame, target: Any) -> _Estimator:
        self.model.fit(self.encoder.fit(frame).transform(frame), target)
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.predict(self.encoder.transform(frame)))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.predict_proba(self.encoder.transform(frame)))


def _build_estimator(frame: pd.DataFrame, task: Task, max_iter: int, random_state: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    text_columns = [c for c in frame.columns if frame[c].dtype == object]
    # Only low-cardinality text columns fit HGB's categorical bins; the rest stay ordinal.
    categorical = [frame[c].nunique() <= _MAX_CATEGORIES for c in text_columns]
    categorical += [False] * (frame.shape[1] - len(text_columns))
    model_cls = (
        HistGradientBoostingClassifier
        if task == "classification"
        else HistGradientBoostingRegressor
    )
    model = model_cls(
        max_iter=max_iter,
        early_stopping=False,
        random_state=random_state,
        categorical_features=categorical if any(categorical) else None,
    )
    return _Estimator(_TextColumnEncoder(text_columns), model)


@contextmanager
def _single_threaded() -> Iterator[None]:
    # The fake serves many requests from worker threads on small shared machines: OpenMP
    # teams per thread spin and fight for the cores (a 70 ms fit took seconds). One thread
    # per fit is faster here; OpenMP's thread count is per calling thread, so this is local.
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def _train(
    X: pd.DataFrame,  # noqa: N803 (scikit-learn's name)
    y: pd.DataFrame,
    task: Task,
    *,
    max_classes: int = 10,
    max_iter: int = 30,
    random_state: int = 0,
) -> FakeModel:
    """Fit a fake TabPFN model on a train set as it arrived (Parquet-decoded frames)."""
    if y.shape[1] < 1 or X.shape[0] != y.shape[0]:
        raise FitFailed("y must have one column and as many rows as X.")
    if X.shape[0] < 2:
        raise FitFailed("The train set needs at least two rows.")
    features = _normalise(X)
    target = y.iloc[:, 0]
    if target.isna().any():
        raise FitFailed("The target contains missing values.")
    if task == "classification":
        classes = np.unique(target.to_numpy())
        if len(classes) > max_classes:
            raise FitFailed(
                f"The target has {len(classes)} classes; at most {max_classes} are supported."
            )
        if len(classes) < 2:
            from sklearn.dummy import DummyClassifier

            estimator: Any = DummyClassifier(strategy="prior").fit(features, target)
        else:
            estimator = _build_estimator(features, task, max_iter, random_state)
            estimator.fit(features, target)
        return FakeModel(task, estimator, list(features.columns), classes=list(classes))
    try:
        values = pd.to_numeric(target).astype("float64").to_numpy()
    except (ValueError, TypeError) as exc:
        raise FitFailed("A regression target must be numeric.") from exc
    estimator = _build_estimator(features, task, max_iter, random_state)
    estimator.fit(features, values)
    residuals = values - estimator.predict(features)
    spread = float(np.ptp(values)) or 1.0
    borders = np.linspace(values.min() - 0.1 * spread, values.max() + 0.1 * spread, N_BINS + 1)
    return FakeModel(task, estimator, list(features.columns), residuals=residuals, borders=borders)


def _features_for(model: FakeModel, X: pd.DataFrame) -> pd.DataFrame:  # noqa: N803
    features = _normalise(X)
    if features.shape[1] != len(model.columns):
        raise FitFailed(
            f"The test set has {features.shape[1]} columns; the model was fitted on "
            f"{len(model.columns)}."
        )
    features.columns = model.columns
    return features


def _tolist(array: np.ndarray) -> list[Any]:
    return cast("list[Any]", array.tolist())


def _to_python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _predict_classification(
    model: FakeModel,
    X: pd.DataFrame,  # noqa: N803
    output_type: str,
) -> list[Any]:
    """``preds`` (labels) or ``probas`` (rows x classes, columns in sorted class order)."""
    features = _features_for(model, X)
    if output_type == "probas":
        probas = np.asarray(model.estimator.predict_proba(features), dtype="float64")
        return _tolist(probas)
    return [_to_python(v) for v in model.estimator.predict(features)]


def _clean(array: np.ndarray) -> list[Any]:
    # JSON has no -inf/NaN: masked bars travel as null, like the real API's encoding.
    if np.all(np.isfinite(array)):
        return _tolist(array)
    as_objects = array.astype(object)
    as_objects[~np.isfinite(array)] = None
    return _tolist(as_objects)


def _predict_regression(
    model: FakeModel,
    X: pd.DataFrame,  # noqa: N803
    output_type: str,
    quantiles: list[float] | None = None,
) -> list[Any] | dict[str, list[Any]]:
    """``mean``/``median``/``mode``/``quantiles`` as lists, ``main``/``full`` as dicts."""
    from scipy.special import ndtr

    if model.residuals is None or model.borders is None:
        raise FitFailed("This model was not fitted for regression.")
    features = _features_for(model, X)
    mean = np.asarray(model.estimator.predict(features), dtype="float64")
    residuals = model.residuals
    levels = quantiles if quantiles else DEFAULT_QUANTILES
    quantile_rows = mean[None, :] + np.quantile(residuals, levels)[:, None]
    median = mean + float(np.median(residuals))
    sigma = max(float(np.std(residuals)), 1e-6 * (float(np.ptp(model.borders)) or 1.0))
    borders = model.borders
    centers = (borders[:-1] + borders[1:]) / 2

    def histogram_logits() -> np.ndarray:
        cdf = ndtr((borders[None, :] - mean[:, None]) / sigma)
        mass = np.diff(cdf, axis=1)
        with np.errstate(divide="ignore"):
            total = np.maximum(mass.sum(axis=1, keepdims=True), 1e-300)
            logits: np.ndarray = np.log(mass / total)
        return logits

    if output_type == "mean":
        return _tolist(mean)
    if output_type == "median":
        return _tolist(median)
    if output_type == "quantiles":
        return _tolist(quantile_rows)
    logits = histogram_logits()
    mode = centers[np.argmax(logits, axis=1)]
    if output_type == "mode":
        return _tolist(mode)
    main = {
        "mean": _tolist(mean),
        "median": _tolist(median),
        "mode": _tolist(mode),
        "quantiles": _tolist(quantile_rows),
    }
    if output_type == "main":
        return main
    if output_type == "full":
        return {**main, "logits": _clean(logits), "borders": _tolist(borders)}
    raise FitFailed(f"Unknown regression output_type {output_type!r}.")


def train(
    X: pd.DataFrame,  # noqa: N803 (scikit-learn's name)
    y: pd.DataFrame,
    task: Task,
    *,
    max_classes: int = 10,
    max_iter: int = 30,
    random_state: int = 0,
) -> FakeModel:
    """Fit a fake TabPFN model on a train set as it arrived (Parquet-decoded frames).

    Raises ``FitFailed`` for a train set TabPFN would refuse (too many classes, a missing or
    non-numeric regression target...).
    """
    with _single_threaded():
        return _train(
            X, y, task, max_classes=max_classes, max_iter=max_iter, random_state=random_state
        )


def predict_classification(
    model: FakeModel,
    X: pd.DataFrame,  # noqa: N803
    output_type: str,
) -> list[Any]:
    """``preds`` (labels) or ``probas`` (rows x classes, columns in sorted class order)."""
    with _single_threaded():
        return _predict_classification(model, X, output_type)


def predict_regression(
    model: FakeModel,
    X: pd.DataFrame,  # noqa: N803
    output_type: str,
    quantiles: list[float] | None = None,
) -> list[Any] | dict[str, list[Any]]:
    """``mean``/``median``/``mode``/``quantiles`` as lists, ``main``/``full`` as dicts.

    ``quantiles`` has one row per requested level (default: 0.1 ... 0.9); ``full`` adds
    ``logits`` (rows x bars, null where a bar is impossible) and ``borders`` (bars + 1).
    """
    with _single_threaded():
        return _predict_regression(model, X, output_type, quantiles)
