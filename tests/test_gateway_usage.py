"""The usage recorder: batched writes, flush on close, no loss while the store is down."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from tabpfn_gateway.errors import StoreUnavailable
from tabpfn_gateway.gateway import UsageRecorder
from tabpfn_gateway.store import Principal, UsageEvent, new_id
from tabpfn_gateway.store.memory import MemoryStore


class FlakyStore(MemoryStore):
    """A real MemoryStore whose record_usage can be made to fail, counting calls."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.usage_writes = 0

    def record_usage(self, events: Sequence[UsageEvent]) -> None:
        if self.down:
            raise StoreUnavailable()
        self.usage_writes += 1
        super().record_usage(events)


def event(n: int = 0) -> UsageEvent:
    return UsageEvent(
        id=new_id(), key_id="k", owner_id="o", operation=f"op{n}", status=200, latency_ms=1.0
    )


def stored(store: MemoryStore) -> list[UsageEvent]:
    return list(store.list_usage(limit=1000).items)


@pytest.fixture
def store() -> FlakyStore:
    s = FlakyStore()
    s.add_principal(Principal(id="o", name="owner"))
    return s


def test_events_wait_in_memory_until_flushed(store: FlakyStore) -> None:
    recorder = UsageRecorder(store, flush_interval=3600, batch_size=1000)
    try:
        for n in range(5):
            recorder.record(event(n))
        assert store.usage_writes == 0
        assert recorder.pending == 5
        assert recorder.flush() == 5
        assert store.usage_writes == 1  # one write for the whole batch
        assert len(stored(store)) == 5
    finally:
        recorder.close()


def test_close_flushes_what_is_left(store: FlakyStore) -> None:
    recorder = UsageRecorder(store, flush_interval=3600)
    recorder.record(event())
    recorder.close()
    assert len(stored(store)) == 1
    assert recorder.pending == 0


def test_a_full_batch_wakes_the_background_flusher(store: FlakyStore) -> None:
    flushed = threading.Event()
    recorder = UsageRecorder(
        store, flush_interval=3600, batch_size=3, on_flush=lambda n: flushed.set()
    )
    try:
        for n in range(3):
            recorder.record(event(n))
        assert flushed.wait(30), "the flusher should wake once batch_size events wait"
        assert len(stored(store)) == 3
    finally:
        recorder.close()


def test_store_outage_keeps_events_for_the_next_flush(store: FlakyStore) -> None:
    recorder = UsageRecorder(store, flush_interval=3600)
    try:
        recorder.record(event(1))
        store.down = True
        with pytest.raises(StoreUnavailable):
            recorder.flush()
        recorder.record(event(2))
        assert recorder.pending == 2
        store.down = False
        assert recorder.flush() == 2
        assert sorted(e.operation for e in stored(store)) == ["op1", "op2"]
    finally:
        recorder.close()


def test_buffer_is_bounded_and_counts_what_it_drops(store: FlakyStore) -> None:
    recorder = UsageRecorder(store, flush_interval=3600, max_buffered=3, batch_size=100)
    try:
        store.down = True
        for n in range(5):
            recorder.record(event(n))
        assert recorder.pending == 3
        assert recorder.dropped == 2
        store.down = False
        recorder.flush()
        # The newest survive: the oldest were dropped first.
        assert sorted(e.operation for e in stored(store)) == ["op2", "op3", "op4"]
    finally:
        recorder.close()


def test_zero_interval_writes_synchronously(store: FlakyStore) -> None:
    recorder = UsageRecorder(store, flush_interval=0)
    recorder.record(event())
    assert len(stored(store)) == 1
    recorder.close()


def test_background_tasks_run_each_pass_and_a_failing_one_stops_nothing(
    store: FlakyStore,
) -> None:
    # Tasks ride on the flusher's thread: a store outage in the flush, a GatewayError or an
    # unexpected error in a task is logged, and the next pass runs them all again.
    calls: list[str] = []
    passes = threading.Semaphore(0)

    def unavailable() -> None:
        calls.append("unavailable")
        raise StoreUnavailable()

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("a bug in a task")

    recorder = UsageRecorder(store, flush_interval=0.01)
    recorder.add_background_task(unavailable)
    recorder.add_background_task(broken)
    recorder.add_background_task(passes.release)
    store.down = True
    try:
        recorder.record(event())
        for _ in range(3):
            assert passes.acquire(timeout=30), "the flusher should keep passing"
        assert calls[:4] == ["unavailable", "broken", "unavailable", "broken"]
        assert recorder.pending == 1  # the flush failed too, and kept its event
        store.down = False
        assert passes.acquire(timeout=30)
        assert passes.acquire(timeout=30)  # a whole pass after the store came back
        assert len(stored(store)) == 1
    finally:
        recorder.close()
