"""The meter: every user action through the gateway is timed, admitted by the spend policy,
and recorded as one usage event (batched by ``UsageRecorder``), failed or not; the wire-level
steps of an action are timed for the metrics only."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tabpfn_gateway.errors import GatewayError
from tabpfn_gateway.gateway._authoriser import Caller
from tabpfn_gateway.gateway._policy import AllowAll, SpendPolicy
from tabpfn_gateway.gateway._status import http_status
from tabpfn_gateway.gateway._usage import UsageRecorder
from tabpfn_gateway.store import UsageEvent, new_id

__all__ = ["Meter", "Metering", "UpstreamCall"]

logger = logging.getLogger(__name__)


@dataclass
class Meter:
    """Dimensions of one metered call, filled in while it runs."""

    rows: int | None = None
    columns: int | None = None
    nbytes: int | None = None
    trace_id: str | None = None
    #: TabPFN credits: the estimate a budget reserves before the call, the final figure after.
    credits: int | None = None
    #: A spend-policy decision made ahead, off the event loop, by the async face (or the
    #: refusal it raised); the policy's ``admit`` takes it from here.
    admission: object | None = field(default=None, repr=False)
    #: Set (to a list) by the async face: a settlement or refund that needs I/O is put here
    #: by the policy, and run by that face off the event loop when the call has ended.
    deferred: list[Callable[[], None]] | None = field(default=None, repr=False)
    #: Set by the caller when rows and columns are known only once the body has streamed
    #: (a hosted prediction): a cell budget is then reserved through ``reserve_cells``.
    cells_later: bool = False
    #: Set by the policy when ``cells_later`` left something to reserve: call it (blocking)
    #: with the call's rows x columns before the call may complete; it raises the refusal.
    reserve_cells: Callable[[int | None], None] | None = field(default=None, repr=False)

    @property
    def cells(self) -> int | None:
        """Rows x columns, when both are known (what a cell budget counts)."""
        if self.rows is None or self.columns is None:
            return None
        return self.rows * self.columns


@dataclass(frozen=True)
class UpstreamCall:
    """One metered operation, as observers (the server's metrics) see it. No secrets."""

    operation: str
    key_id: str
    status: int
    seconds: float


class Metering:
    """Times operations, asks ``policy`` to admit them, records usage, tells observers."""

    def __init__(self, usage: UsageRecorder, *, policy: SpendPolicy | None = None) -> None:
        self.usage = usage
        self.policy: SpendPolicy = policy if policy is not None else AllowAll()
        self._observers: list[Callable[[UpstreamCall], None]] = []

    def add_observer(self, observer: Callable[[UpstreamCall], None]) -> None:
        """Call ``observer`` after every metered operation (the server's metrics hook)."""
        self._observers.append(observer)

    @contextmanager
    def metered(
        self, caller: Caller, operation: str, meter: Meter | None = None
    ) -> Iterator[Meter]:
        """Admit, time and record one operation (the block forwards it upstream).

        The policy's ``admit`` runs first (a refusal is recorded with its status and
        forwards nothing); the admission is settled when the block succeeds and refunded
        when it fails. The status is 200, or the HTTP status of the ``GatewayError`` that
        ended the block (500 for anything else); the block fills the meter's dimensions.
        """
        meter = meter if meter is not None else Meter()
        started = time.perf_counter()
        status = 200
        error_code: str | None = None
        try:
            admission = self.policy.admit(caller, operation, meter)
            try:
                yield meter
            except BaseException:
                admission.refund()
                raise
            admission.settle(meter)
        except GatewayError as exc:
            status = http_status(exc)
            error_code = exc.error_code
            meter.trace_id = meter.trace_id or exc.trace_id
            meter.credits = None  # refused or failed: nothing was charged
            raise
        except BaseException:
            status = 500
            error_code = GatewayError.error_code  # what the server answers for it
            meter.credits = None
            raise
        finally:
            seconds = time.perf_counter() - started
            self._record(caller, operation, status, seconds, meter, error_code)

    @contextmanager
    def step(self, caller: Caller, operation: str) -> Iterator[None]:
        """Time one step of a user action (an upload, a status poll) for the observers only.

        A user action (a fit, a prediction) is one usage record, admitted once by the policy;
        its wire-level steps are seen by the metrics, never billed or counted on their own.
        """
        started = time.perf_counter()
        status = 200
        try:
            yield
        except GatewayError as exc:
            status = http_status(exc)
            raise
        except BaseException:
            status = 500
            raise
        finally:
            self._observe(caller, operation, status, time.perf_counter() - started)

    def _record(
        self,
        caller: Caller,
        operation: str,
        status: int,
        seconds: float,
        meter: Meter,
        error_code: str | None = None,
    ) -> None:
        self.usage.record(
            UsageEvent(
                id=new_id(),
                key_id=caller.key_id,
                owner_id=caller.owner_id,
                credential_id=caller.credential_id,
                operation=operation,
                status=status,
                latency_ms=seconds * 1000.0,
                # Figures the upstream reported are not checked at the boundary: keep only
                # ones a usage row can hold (the request's own are bounded by the proxy).
                rows=_storable(meter.rows),
                columns=_storable(meter.columns),
                bytes=_storable(meter.nbytes),
                upstream_trace_id=meter.trace_id,
                credits=_storable(meter.credits),
                error_code=error_code,
            )
        )
        self._observe(caller, operation, status, seconds)

    def _observe(self, caller: Caller, operation: str, status: int, seconds: float) -> None:
        call = UpstreamCall(
            operation=operation, key_id=caller.key_id, status=status, seconds=seconds
        )
        for observer in self._observers:
            try:
                observer(call)
            except Exception:  # metrics must never fail a call
                logger.exception("usage observer failed")


_MAX_STORABLE = 2**63 - 1


def _storable(value: int | None) -> int | None:
    if value is None or not isinstance(value, int) or not 0 <= value <= _MAX_STORABLE:
        return None
    return value
