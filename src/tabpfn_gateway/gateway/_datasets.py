"""What each uploaded dataset weighs, so one user action gets one usage record with its size.

Over HTTP a fit is several calls (prepare the upload, PUT each file, fit, poll) and a
prediction likewise. The gateway records one usage event per user action, at ``fit`` /
``submit_fit_job`` and ``predict``, with the rows, columns and bytes of the dataset: the bytes
are the Parquet sizes announced when the upload was prepared, the rows and columns are read
from the Parquet footer of X as it streams through (or, when the upstream answered "already
uploaded", from an earlier upload of the same file). The in-process session records the same
figures from the data it holds.

This is per replica and bounded: a fit whose upload went through another replica is recorded
without rows and columns (never wrong, at worst unknown).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["DatasetSize", "DatasetSizes"]

_KEPT = 20_000
K = TypeVar("K")
V = TypeVar("V")


@dataclass
class DatasetSize:
    """An uploaded train or test set: Parquet bytes (X and y), rows and columns of X."""

    nbytes: int | None = None
    rows: int | None = None
    columns: int | None = None


class DatasetSizes:
    """Dataset sizes by upload id, and X shapes by (owner, content hash) for deduplicated sets."""

    def __init__(self, kept: int = _KEPT) -> None:
        self._kept = kept
        self._lock = threading.Lock()
        self._by_upload: OrderedDict[str, DatasetSize] = OrderedDict()
        self._shape_by_hash: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()
        self._upload_of_url: OrderedDict[str, tuple[str, str, str | None]] = OrderedDict()

    def announce(
        self, owner_id: str, upload_id: str, nbytes: int | None, x_hash: str | None
    ) -> None:
        """A prepared upload: its announced bytes, and X's shape if this X was seen before."""
        with self._lock:
            size = DatasetSize(nbytes=nbytes)
            shape = self._shape_by_hash.get((owner_id, x_hash)) if x_hash else None
            if shape is not None:
                size.rows, size.columns = shape
            self._put(self._by_upload, upload_id, size)

    def expect_x(self, token: str, owner_id: str, upload_id: str, x_hash: str | None) -> None:
        """An upload URL (by its token) that carries X of ``upload_id``."""
        with self._lock:
            self._put(self._upload_of_url, token, (owner_id, upload_id, x_hash))

    def wants_shape(self, token: str) -> bool:
        """Whether the upload through ``token`` is an X whose shape is worth reading."""
        with self._lock:
            return token in self._upload_of_url

    def learn_shape(self, token: str, rows: int, columns: int | None) -> None:
        """X of an upload streamed through ``token`` has this shape (read from its footer)."""
        if columns is None:
            return
        with self._lock:
            target = self._upload_of_url.get(token)
            if target is None:
                return
            owner_id, upload_id, x_hash = target
            size = self._by_upload.get(upload_id)
            if size is not None:
                size.rows, size.columns = rows, columns
            if x_hash:
                self._put(self._shape_by_hash, (owner_id, x_hash), (rows, columns))

    def of(self, upload_id: str) -> DatasetSize:
        """What is known of ``upload_id`` (all None when nothing is)."""
        with self._lock:
            size = self._by_upload.get(upload_id)
            return DatasetSize(size.nbytes, size.rows, size.columns) if size else DatasetSize()

    def _put(self, table: OrderedDict[K, V], key: K, value: V) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self._kept:
            table.popitem(last=False)
