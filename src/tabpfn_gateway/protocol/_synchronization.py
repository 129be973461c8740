"""The few primitives where the async and the sync protocol client really differ.

``aclient.py`` is written against the async names; ``scripts/unasync.py`` turns it into
``client.py`` by renaming each async name here to its sync twin (``AsyncLock`` -> ``Lock``,
``asleep`` -> ``sleep``, ``afan_out`` -> ``fan_out``, ``arun_blocking`` -> ``run_blocking``,
``AsyncContent`` -> ``Content``). Everything else is the same code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread

__all__ = [
    "AsyncContent",
    "AsyncLock",
    "Content",
    "Lock",
    "afan_out",
    "arun_blocking",
    "asleep",
    "fan_out",
    "run_blocking",
    "sleep",
]

P = ParamSpec("P")
T = TypeVar("T")
Job = TypeVar("Job")

#: What a signed-URL PUT can send: bytes (retried) or chunks streamed once.
Content = bytes | Iterable[bytes]
AsyncContent = bytes | Iterable[bytes] | AsyncIterable[bytes]

# -- locks ---------------------------------------------------------------------------------------

AsyncLock = anyio.Lock
Lock = threading.Lock

# -- sleeping ------------------------------------------------------------------------------------


async def asleep(seconds: float) -> None:
    """Sleep without blocking the event loop."""
    await anyio.sleep(seconds)


def sleep(seconds: float) -> None:
    """Sleep this thread."""
    time.sleep(seconds)


# -- blocking work (serialization) ----------------------------------------------------------------


async def arun_blocking(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run CPU-bound ``func`` in a worker thread so the event loop keeps serving."""
    return await anyio.to_thread.run_sync(lambda: func(*args, **kwargs))


def run_blocking(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``func`` here: a sync caller is already off any event loop."""
    return func(*args, **kwargs)


# -- fan-out (upload chunks) ----------------------------------------------------------------------


async def afan_out(
    call: Callable[[Job], Awaitable[None]], jobs: Sequence[Job], *, limit: int
) -> None:
    """Run ``call(job)`` for every job, at most ``limit`` at once, as tasks.

    The first failure is raised as itself (not an exception group); the rest are cancelled.
    """
    if len(jobs) == 1:
        await call(jobs[0])
        return
    limiter = anyio.CapacityLimiter(limit)

    async def bounded(job: Job) -> None:
        async with limiter:
            await call(job)

    try:
        async with anyio.create_task_group() as group:
            for job in jobs:
                group.start_soon(bounded, job)
    except BaseExceptionGroup as group_error:
        # The first failure is the cause; the rest were cancelled or failed alike.
        first = group_error.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def fan_out(call: Callable[[Job], None], jobs: Sequence[Job], *, limit: int) -> None:
    """Run ``call(job)`` for every job, at most ``limit`` at once, in a thread pool.

    The first failure is raised; jobs not yet started are cancelled.
    """
    if len(jobs) == 1:
        call(jobs[0])
        return
    workers = min(limit, len(jobs))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tabpfn-upload") as pool:
        futures = [pool.submit(call, job) for job in jobs]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in done:
            future.result()  # re-raises the first failure
        for future in pending:
            if not future.cancelled():
                future.result()
