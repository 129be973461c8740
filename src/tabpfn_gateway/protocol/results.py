"""What the high-level ``fit`` and ``predict`` of the protocol clients return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FitResult", "PredictionResult"]


@dataclass(frozen=True)
class FitResult:
    """A fitted train set on the upstream: its id, and the upstream's timings (or None)."""

    fitted_train_set_id: str
    timings: dict[str, Any] | None = None


@dataclass(frozen=True)
class PredictionResult:
    """A prediction as arrays, with the upstream's metadata and timings.

    ``y_pred`` is an array for ``preds``/``probas``/``mean``/``median``/``mode``/``quantiles``
    and a dict of arrays for the regression ``full`` and ``main`` outputs. Classification
    ``probas`` columns are in sorted class order (``metadata["classes"]``).
    """

    y_pred: np.ndarray | dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] | None = None
