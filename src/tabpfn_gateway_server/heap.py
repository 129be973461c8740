"""The garbage collector of a serving process: what startup built is set aside, so a full
collection walks only what requests have made since."""

from __future__ import annotations

import gc
import importlib
from collections.abc import Sequence

__all__ = ["settle_startup_heap"]


def settle_startup_heap(preload: Sequence[str] = ()) -> int:
    """Import ``preload`` (modules requests would import on first use), collect once, then
    freeze every object that survives (``gc.freeze``); return how many were frozen.

    A served gateway holds about 190,000 tracked objects after startup (FastAPI's routes and
    models, SQLAlchemy's metadata, pydantic's validators, imported modules). None of them is
    garbage, yet every full collection walked them all: under load a full collection came
    about once a second and stopped the event loop for tens of milliseconds, which was most
    of the 99th-percentile latency (``benchmarks/gateway.py``). Frozen objects are still
    freed by reference counting; only the cycle collector stops visiting them. For the
    serving process only (``serve`` and its workers), never a process that embeds the app.
    A module first imported by a request would be walked again by every full collection
    (and its import would stall that request): what requests need is imported first.
    """
    for name in preload:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
