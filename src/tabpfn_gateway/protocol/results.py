"""What the high-level ``fit`` and ``predict`` of the protocol clients return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["FitResult", "PredictionResult"]


@dataclass(frozen=True)
class FitResult:
    """A fitted train set on the upstream: its id, the upstream's timings (or None), and the
    size of the train set as uploaded (Parquet bytes of X and y: what usage records count)."""

    fitted_train_set_id: str
    timings: dict[str, Any] | None = None
    train_set_bytes: int | None = None


@dataclass(frozen=True)
class PredictionResult:
    """A prediction as arrays, with the upstream's metadata and timings.

    ``y_pred`` is an array for ``preds``/``probas``/``mean``/``median``/``mode``/``quantiles``
    and a dict of arrays for the regression ``full`` and ``main`` outputs. Classification
    ``probas`` columns are in sorted class order (``metadata["classes"]``). ``test_set_bytes``
    is the size of the test set as uploaded (Parquet).
    """

    y_pred: np.ndarray | dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] | None = None
    test_set_bytes: int | None = None
