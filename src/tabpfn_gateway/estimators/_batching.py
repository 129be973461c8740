"""The upstream's limits for a model, train-set checks, and test sets split into allowed batches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tabpfn_gateway.errors import InvalidData

if TYPE_CHECKING:
    from tabpfn_gateway.protocol.messages import GetSettingsResponse, ModelLimit

__all__ = [
    "check_train_set",
    "limit_for_model",
    "merge_predictions",
    "plan_batches",
]

# model_path values that let the upstream pick its default model (tabpfn-client's aliases).
_AUTO_MODEL_PATHS = (None, "auto", "default")

# Axis along which each array of a regression "full"/"main" output runs over test rows;
# None: the same for every row (``borders`` describes the fitted target's histogram).
_DICT_OUTPUT_ROW_AXIS: dict[str, int | None] = {
    "mean": 0,
    "median": 0,
    "mode": 0,
    "logits": 0,
    "quantiles": 1,
    "borders": None,
}


def limit_for_model(settings: GetSettingsResponse, model_path: str | None) -> ModelLimit:
    """The limits that apply to ``model_path``, resolved the way tabpfn-client resolves them:
    the default version's for "auto", else the nearest version at or below the path's,
    else the most permissive limit the upstream declares."""
    limits = settings.model_limits
    if model_path in _AUTO_MODEL_PATHS:
        return limits.get(settings.default_model_version, settings.max_model_limit)
    version = _version_from_path(str(model_path), [str(_value(v)) for v in limits])
    if version is None:
        return settings.max_model_limit
    for key, limit in limits.items():
        if str(_value(key)) == version:
            return limit
    return settings.max_model_limit


def _value(member: Any) -> Any:
    return getattr(member, "value", member)


def _version_from_path(model_path: str, known: list[str]) -> str | None:
    # tabpfn-client's rule: "<version>_" or "<version>-fast_" prefixes, or "-<version>-"
    # inside checkpoint names; names without a marker are v2 hash names.
    from tabpfn_gateway.protocol.messages import ModelVersion

    found = ModelVersion.V2.value
    for version in ModelVersion:
        prefixes = (f"{version.value}_", f"{version.value}-fast_")
        if f"-{version.value}-" in model_path or model_path.startswith(prefixes):
            found = version.value
            break
    at_or_below = [v for v in sorted(known) if v <= found]
    return at_or_below[-1] if at_or_below else None


def check_train_set(limit: ModelLimit, n_rows: int, n_cols: int, *, n_classes: int | None) -> None:
    """Raise :class:`InvalidData` if a train set exceeds the upstream's limits (before upload)."""
    if n_rows > limit.train_set_max_rows:
        raise InvalidData(
            f"The number of train rows ({n_rows}) exceeds the maximum of "
            f"{limit.train_set_max_rows}; subsample the training data."
        )
    if n_cols > limit.max_cols:
        raise InvalidData(
            f"The number of train columns ({n_cols}) exceeds the maximum of {limit.max_cols}."
        )
    if n_rows * n_cols > limit.train_set_max_upload_cells:
        raise InvalidData(
            f"The training upload has {n_rows * n_cols} cells, exceeding the maximum of "
            f"{limit.train_set_max_upload_cells}."
        )
    if n_classes is not None and n_classes > limit.max_classes:
        raise InvalidData(
            f"The number of classes ({n_classes}) exceeds the maximum of {limit.max_classes} "
            "supported by TabPFN."
        )


def plan_batches(
    limit: ModelLimit,
    *,
    n_rows: int,
    n_cols: int,
    n_train_rows: int,
    subsampled: bool,
    full_output: bool,
) -> list[tuple[int, int]]:
    """Split ``n_rows`` test rows into ``[start, stop)`` batches the upstream accepts.

    Per call: at most ``test_set_max_rows`` rows, ``test_set_max_cells`` cells, and (unless
    the train set is subsampled, where the upstream checks itself) ``predict_row_pairs_budget``
    train x test row pairs; for the regression full output also
    ``test_set_max_rows_w_full_regression_output`` rows.
    """
    if n_cols > limit.max_cols:
        raise InvalidData(
            f"The number of test columns ({n_cols}) exceeds the maximum of {limit.max_cols}."
        )
    rows_per_call = limit.test_set_max_rows
    rows_per_call = min(rows_per_call, limit.test_set_max_cells // max(n_cols, 1))
    if not subsampled and n_train_rows > 0:
        rows_per_call = min(rows_per_call, limit.predict_row_pairs_budget // n_train_rows)
    if full_output:
        rows_per_call = min(rows_per_call, limit.test_set_max_rows_w_full_regression_output)
    if rows_per_call < 1:
        raise InvalidData(
            "The upstream's limits allow no test row at all for this model "
            f"({n_train_rows} train rows, {n_cols} columns); fit on fewer rows or columns."
        )
    starts = range(0, n_rows, rows_per_call)
    return [(start, min(start + rows_per_call, n_rows)) for start in starts]


def merge_predictions(parts: list[Any], output_type: str) -> Any:
    """Join per-batch predictions into what one call would have returned."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], dict):
        unknown = sorted(set(parts[0]) - set(_DICT_OUTPUT_ROW_AXIS))
        if unknown:
            raise InvalidData(
                f"Cannot join a prediction split into batches: the upstream returned the "
                f"unknown field(s) {unknown}. Predict fewer rows per call."
            )
        merged: dict[str, np.ndarray] = {}
        for key, axis in _DICT_OUTPUT_ROW_AXIS.items():
            if key in parts[0]:
                merged[key] = (
                    parts[0][key]
                    if axis is None
                    else np.concatenate([p[key] for p in parts], axis=axis)
                )
        return merged
    # Quantiles come as (n_quantiles, n_rows); every other array runs over rows first.
    axis = 1 if output_type == "quantiles" and np.ndim(parts[0]) == 2 else 0
    return np.concatenate([np.asarray(p) for p in parts], axis=axis)
