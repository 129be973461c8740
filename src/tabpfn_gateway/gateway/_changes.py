"""The change counter: every change to what authorises a call bumps one row (keys and
credentials in the change's own transaction); each process polls it cheaply and drops its
cached authorisations when it moves. A revocation is refused by every worker and replica
within about one poll interval (plus one read) on every store, with or without Redis."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tabpfn_gateway.gateway._invalidation import ALL
from tabpfn_gateway.store import Store
from tabpfn_gateway.store.base import CHANGES_COUNTER

__all__ = ["ChangeWatcher"]

logger = logging.getLogger(__name__)


class ChangeWatcher:
    """A daemon thread that reads the ``changes`` counter every ``interval`` seconds and calls
    ``listener(ALL)`` when it moved since the last read. A failed read is retried on the
    next tick (the key cache TTL still bounds what is trusted meanwhile)."""

    def __init__(self, store: Store, listener: Callable[[str], None], interval: float) -> None:
        self._store = store
        self._listener = listener
        self._interval = interval
        self._stop = threading.Event()
        self._last: int | None = None
        self._thread = threading.Thread(
            target=self._run, name="tabpfn-gateway-change-watcher", daemon=True
        )

    def start(self) -> None:
        self._last = self._read()
        self._thread.start()

    def _read(self) -> int | None:
        try:
            return self._store.read_counter(CHANGES_COUNTER)
        except Exception as exc:  # the watcher must survive anything a store does
            logger.debug("change counter unreadable (%s); retrying", type(exc).__name__)
            return None

    def poll(self) -> bool:
        """Read the counter once; True (and the listener told) if it moved."""
        value = self._read()
        if value is None:
            return False
        # Unknown before (the first read failed): drop anyway, it costs one cache refill.
        moved = value != self._last
        self._last = value
        if moved:
            self._listener(ALL)
        return moved

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.poll()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
