"""Usage metering without a store write per call: events are buffered and written in batches."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from tabpfn_gateway.errors import Conflict, GatewayError, StoreUnavailable
from tabpfn_gateway.store import Store, UsageEvent

__all__ = ["UsageRecorder"]

logger = logging.getLogger(__name__)


class UsageRecorder:
    """Buffers ``UsageEvent``s in memory and writes them with one ``store.record_usage`` call.

    A background thread flushes every ``flush_interval`` seconds, sooner once ``batch_size``
    events wait, and ``close()`` flushes what is left. When the store is down the events stay
    buffered and the next flush retries them; past ``max_buffered`` the oldest are dropped
    (counted in ``dropped`` and logged) so an outage cannot exhaust memory. Any other failure
    of a batch (a value the database refuses, an unexpected exception) writes its events one
    at a time: the good ones are recorded, each bad one is dropped, logged and counted in
    ``rejected``, so one caller's poison cannot block or erase everyone else's usage.

    Parameters
    ----------
    store:
        Where the events go.
    flush_interval:
        Seconds between background flushes. ``0`` writes synchronously on every ``record``
        (for tests and short scripts).
    batch_size:
        Buffered events that wake the flusher early.
    max_buffered:
        Events kept at most while the store cannot take them.
    """

    def __init__(
        self,
        store: Store,
        *,
        flush_interval: float = 5.0,
        batch_size: int = 500,
        max_buffered: int = 100_000,
        on_flush: Callable[[int], None] | None = None,
    ) -> None:
        self._store = store
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._buffer: deque[UsageEvent] = deque(maxlen=max_buffered)
        self._lock = threading.Lock()
        # One flush at a time: concurrent flushes would write the same events twice.
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._flush_listeners: list[Callable[[int], None]] = [on_flush] if on_flush else []
        self._background_tasks: list[Callable[[], object]] = []
        self.dropped = 0
        self.rejected = 0
        self._thread: threading.Thread | None = None
        if flush_interval > 0:
            self._thread = threading.Thread(
                target=self._run, name="tabpfn-gateway-usage-flusher", daemon=True
            )
            self._thread.start()

    def record(self, event: UsageEvent) -> None:
        """Queue one event (no I/O unless ``flush_interval`` is 0)."""
        with self._lock:
            if len(self._buffer) == self._buffer.maxlen:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    logger.warning(
                        "usage buffer full (store unreachable?): %d events dropped so far",
                        self.dropped,
                    )
            self._buffer.append(event)
            pending = len(self._buffer)
        if self._thread is None:
            self.flush()
        elif pending >= self._batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Events recorded but not yet written."""
        with self._lock:
            return len(self._buffer)

    def flush(self) -> int:
        """Write every buffered event now; return how many were written.

        When the store is unreachable (``StoreUnavailable``) the events go back to the front
        of the buffer and the error is raised, so callers that care can tell. Any other
        failure is handled here: events are retried one by one and bad ones rejected.
        """
        with self._flush_lock:
            with self._lock:
                batch = list(self._buffer)
                self._buffer.clear()
            if not batch:
                return 0
            try:
                self._store.record_usage(batch)
                written = len(batch)
            except StoreUnavailable:
                self._put_back(batch)
                raise
            except Exception:  # a data error, or anything else: find the bad event(s)
                written = self._write_one_by_one(batch)
        for listener in self._flush_listeners:
            listener(written)
        return written

    def _write_one_by_one(self, batch: list[UsageEvent]) -> int:
        written = 0
        for index, event in enumerate(batch):
            try:
                self._store.record_usage([event])
                written += 1
            except Conflict:
                written += 1  # already recorded (an earlier partial write)
            except StoreUnavailable:
                self._put_back(batch[index:])
                raise
            except Exception as exc:
                self.rejected += 1
                # Ids and the operation only: the event's values are what the store refused.
                logger.error(
                    "usage event %s (%s by key %s) rejected by the store and dropped: %s",
                    event.id,
                    event.operation,
                    event.key_id,
                    type(exc).__name__,
                )
        return written

    def _put_back(self, batch: list[UsageEvent]) -> None:
        with self._lock:
            # Oldest first, ahead of anything recorded meanwhile.
            room = (self._buffer.maxlen or len(batch)) - len(self._buffer)
            lost = max(0, len(batch) - room)
            self.dropped += lost
            self._buffer.extendleft(reversed(batch[lost:]))

    def add_flush_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(count)`` after each successful write (e.g. a metrics counter)."""
        self._flush_listeners.append(listener)

    def add_background_task(self, task: Callable[[], object]) -> None:
        """Run ``task()`` on the background flusher's thread after each of its passes (every
        ``flush_interval`` seconds or sooner), whether or not usage was written: other
        write-behind state (keys' ``last_used_at``) rides on the same thread. A failure is
        logged. Without a background flusher (``flush_interval`` 0) it is never run."""
        self._background_tasks.append(task)

    def close(self) -> None:
        """Stop the background flusher and write what is left (errors logged, not raised)."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        try:
            self.flush()
        except GatewayError as exc:
            logger.error("could not write %d usage events at shutdown: %s", self.pending, exc)
        except Exception:  # shutdown goes on whatever the store does
            logger.exception("could not write %d usage events at shutdown", self.pending)

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            if self._stopped.is_set():
                return
            # The flush, then the write-behind tasks riding on this thread: each one's
            # failure is logged and the next pass tries again.
            for step in (self.flush, *self._background_tasks):
                what = (
                    "usage flush"
                    if step == self.flush
                    else getattr(step, "__qualname__", repr(step))
                )
                try:
                    step()
                except GatewayError as exc:
                    logger.warning("%s failed, will retry: %s", what, exc)
                except Exception:  # the flusher must survive anything a store does
                    logger.exception("%s failed unexpectedly, will retry", what)
