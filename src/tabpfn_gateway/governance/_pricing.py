"""Prices of predictions in TabPFN credits, as the upstream's ``estimate_cost`` quotes them,
remembered per shape (a quote depends on the dimensions only)."""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["PriceBook"]


class PriceBook:
    """Quotes by (train rows, test rows, columns): at most one upstream round trip per new
    shape. Bounded; thread-safe."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._max = max_entries
        self._prices: OrderedDict[tuple[int, int, int], int] = OrderedDict()
        self._fit_rows: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, train_rows: int, test_rows: int, columns: int) -> int | None:
        with self._lock:
            return self._prices.get((train_rows, test_rows, columns))

    def put(self, train_rows: int, test_rows: int, columns: int, credits: int) -> None:
        with self._lock:
            self._prices[(train_rows, test_rows, columns)] = credits
            while len(self._prices) > self._max:
                self._prices.popitem(last=False)

    def fit_rows(self, fit_id: str) -> int | None:
        """The training rows of a fit, if known here (they enter the quote)."""
        with self._lock:
            return self._fit_rows.get(fit_id)

    def remember_fit_rows(self, fit_id: str, rows: int) -> None:
        with self._lock:
            self._fit_rows[fit_id] = rows
            while len(self._fit_rows) > self._max:
                self._fit_rows.popitem(last=False)
