"""The garbage collector of a serving process: what startup built is set aside, so a full
collection walks only what requests have made since."""

from __future__ import annotations

import gc

__all__ = ["settle_startup_heap"]


def settle_startup_heap() -> int:
    """Collect once, then freeze every object that survives (``gc.freeze``); return how
    many were frozen.

    A served gateway holds about 190,000 tracked objects after startup (FastAPI's routes and
    models, SQLAlchemy's metadata, pydantic's validators, imported modules). None of them is
    garbage, yet every full collection walked them all: under load a full collection came
    about once a second and stopped the event loop for tens of milliseconds, which was most
    of the 99th-percentile latency (``benchmarks/gateway.py``). Frozen objects are still
    freed by reference counting; only the cycle collector stops visiting them. For the
    serving process only (``serve`` and its workers), never a process that embeds the app.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
