"""FakeTabPFN's injected failures: the next N requests answered with a status, or dropped."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

__all__ = ["Fault", "Faults"]


@dataclass
class Fault:
    kind: str  # "status" | "drop"
    remaining: int
    status: int = 503
    retry_after: float | None = None
    path: str | None = None


class Faults:
    """Queued faults (by path prefix), plus a random ``error_rate`` (seeded: reproducible)."""

    def __init__(self, *, error_rate: float, seed: int) -> None:
        self.error_rate = error_rate
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._queued: list[Fault] = []

    def fail_next(
        self, count: int, *, status: int, retry_after: float | None, path: str | None
    ) -> None:
        with self._lock:
            self._queued.append(Fault("status", count, status, retry_after, path))

    def drop_next(self, count: int, *, path: str | None) -> None:
        with self._lock:
            self._queued.append(Fault("drop", count, path=path))

    def take(self, path: str) -> Fault | None:
        """The fault the request to ``path`` meets, if any (each queued fault counts down)."""
        with self._lock:
            for fault in self._queued:
                if fault.remaining > 0 and (fault.path is None or path.startswith(fault.path)):
                    fault.remaining -= 1
                    return fault
            self._queued = [f for f in self._queued if f.remaining > 0]
            if self.error_rate and self._random.random() < self.error_rate:
                return Fault("status", 1, 503)
        return None
