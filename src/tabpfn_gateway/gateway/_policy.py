"""The seam where spend governance plugs in: "may this caller spend this, now?".

The authoriser answers *who* is calling and *with which TabPFN token*; a ``SpendPolicy``
answers whether that caller may make this call now (rate limits, concurrency caps, budgets).
The gateway asks it once per metered operation, before anything is forwarded upstream::

    admission = policy.admit(caller, operation, meter)   # refuse by raising a GatewayError
    ... forward the call; the meter is filled in (rows, columns, bytes) ...
    admission.settle(meter)        # the call ended: charge what it really cost
    # or, when the call failed:
    admission.refund()             # give back what admit() reserved

``admit`` is the place to *reserve* (one atomic write: a budget reservation, a rate-limit
hit); ``settle``/``refund`` are always called exactly once after a successful ``admit``. The
default, ``AllowAll``, admits everything and reserves nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tabpfn_gateway.gateway._authoriser import Caller
    from tabpfn_gateway.gateway._metering import Meter

__all__ = ["Admission", "AllowAll", "SpendPolicy"]


class Admission(Protocol):
    """What ``SpendPolicy.admit`` granted for one call; closed by exactly one of its methods."""

    def settle(self, meter: Meter) -> None:
        """The call succeeded; ``meter`` holds its final dimensions. Never raises."""
        ...

    def refund(self) -> None:
        """The call failed (or was never made); undo the reservation. Never raises."""
        ...


class SpendPolicy(Protocol):
    """Decides whether a caller may spend on an operation now (see the module docstring)."""

    def admit(self, caller: Caller, operation: str, meter: Meter) -> Admission:
        """Admit one call or raise the ``GatewayError`` that refuses it (429 and a code).

        ``meter`` holds what is known before the call (e.g. ``rows`` of an estimate, the
        ``nbytes`` an upload announces). Runs on the request path: keep it fast, and do any
        network round trip at most once.
        """
        ...


class _NothingReserved:
    def settle(self, meter: Meter) -> None:
        return None

    def refund(self) -> None:
        return None


_NOTHING_RESERVED = _NothingReserved()


class AllowAll:
    """The default policy: every authorised caller may spend; nothing is reserved."""

    def admit(self, caller: Caller, operation: str, meter: Meter) -> Admission:
        """Admit every call, reserving nothing."""
        return _NOTHING_RESERVED

    def __repr__(self) -> str:
        return "AllowAll()"
