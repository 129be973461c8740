"""Input checks for the estimators: X as numpy or pandas (NaN, strings, categories), y per task."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_array, validate_data

from tabpfn_gateway.errors import InvalidData

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.base import BaseEstimator

__all__ = [
    "MAX_TEXT_CHARS",
    "check_target",
    "clean_text_features",
    "is_dataframe",
    "prepare_features",
    "row_slice",
]

# TabPFN reads at most this many characters of a text cell; tabpfn-client trims the same way.
MAX_TEXT_CHARS = 2500


def is_dataframe(X: Any) -> bool:  # noqa: N803 (scikit-learn's name)
    """True for a pandas DataFrame, without importing pandas for numpy users."""
    return type(X).__module__.startswith("pandas") and hasattr(X, "iloc") and hasattr(X, "columns")


def prepare_features(
    estimator: BaseEstimator,
    X: Any,  # noqa: N803
    *,
    reset: bool,
) -> pd.DataFrame | np.ndarray:
    """Check ``X`` and return what goes to the upstream.

    A DataFrame stays a DataFrame (its dtypes, categories and column names travel to
    TabPFN); anything else becomes a 2-D array (numeric, or object with strings). NaN is
    allowed everywhere, infinity in numeric arrays is not. ``reset`` sets
    ``n_features_in_`` / ``feature_names_in_`` (fit) or checks them (predict).
    """
    # TabPFN cannot learn from a single row; predicting a single row is fine.
    min_samples = 2 if reset else 1
    try:
        if is_dataframe(X):
            validate_data(estimator, X, reset=reset, skip_check_array=True)
            if X.shape[0] < min_samples or X.shape[1] < 1:
                raise InvalidData(
                    f"Found array with {X.shape[0]} sample(s) and {X.shape[1]} feature(s) "
                    f"while a minimum of {min_samples} sample(s) and 1 feature is required "
                    f"by {type(estimator).__name__}."
                )
            return clean_text_features(X)  # type: ignore[no-any-return]
        array = validate_data(
            estimator,
            X,
            reset=reset,
            dtype=None,
            ensure_all_finite="allow-nan",
            accept_sparse=False,
            ensure_min_samples=min_samples,
        )
    except InvalidData:
        raise
    except (TypeError, ValueError) as exc:
        # scikit-learn's own messages are precise (sparse input, complex numbers, mixed
        # column-name types...); keep them and add our error code.
        if isinstance(exc, NotFittedError):
            raise
        raise InvalidData(str(exc)) from exc
    if array.dtype.kind in "fiub":
        return np.asarray(array)
    if array.dtype.kind in "OUS":
        return clean_text_features(array)  # type: ignore[no-any-return]
    raise InvalidData(
        f"Unsupported dtype {array.dtype} for X; use numbers, strings or a DataFrame."
    )


def clean_text_features(X: Any) -> Any:  # noqa: N803
    """Make text columns safe to send: collapse whitespace, drop commas, trim to 2500 chars.

    The same cleaning ``tabpfn-client`` applies before upload, except that a non-string value
    in a text column is kept as its ``str()`` instead of becoming missing. Object columns
    holding only numbers become numeric. Numeric input is returned unchanged (no copy).
    """
    import pandas as pd

    if isinstance(X, np.ndarray):
        if X.dtype.kind in "fiub":
            return X
        frame = pd.DataFrame(X)
    else:
        frame = X
    changed: dict[Any, pd.Series[Any]] = {}
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.StringDtype):
            changed[name] = _clean_text_column(column.astype(object))
        elif column.dtype == object:
            values = column.dropna()
            if all(_is_number(v) for v in values):
                changed[name] = pd.to_numeric(column, errors="coerce")
            else:
                changed[name] = _clean_text_column(column)
    if not changed:
        return frame
    frame = frame.copy()
    for name, cleaned in changed.items():
        frame[name] = cleaned
    return frame


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, complex)


def _clean_text_column(column: pd.Series[Any]) -> pd.Series[Any]:
    as_text = column.map(lambda v: v if _is_missing(v) else str(v))
    return (
        as_text.str.replace(",", "", regex=False)
        .str.replace(r"\s+", " ", regex=True)
        .str.strip()
        .str.slice(0, MAX_TEXT_CHARS)
    )


def _is_missing(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # containers: never "missing"
        return False


def row_slice(X: Any, start: int, stop: int) -> Any:  # noqa: N803
    """Rows ``[start, stop)`` of ``X``, keeping its type (DataFrame or array)."""
    if is_dataframe(X):
        return X.iloc[start:stop]
    return X[start:stop]


def check_target(y: Any, *, numeric: bool, n_samples: int) -> np.ndarray:
    """``y`` as a 1-D array of ``n_samples`` values without NaN (numbers if ``numeric``).

    A column vector is accepted with scikit-learn's ``DataConversionWarning``.
    """
    from sklearn.utils import column_or_1d

    try:
        if y is None:
            raise InvalidData("This estimator requires y to be passed, but the target y is None.")
        array = check_array(
            y,
            input_name="y",
            ensure_2d=False,
            dtype="numeric" if numeric else None,
            ensure_all_finite=True,
            ensure_min_samples=1,
        )
        array = np.asarray(column_or_1d(array, warn=True))
    except InvalidData:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidData(str(exc)) from exc
    if array.shape[0] != n_samples:
        raise InvalidData(
            f"X and y have different numbers of samples: [{n_samples}, {array.shape[0]}]."
        )
    return array
