"""The gateway's spend policy (``tabpfn_gateway.gateway.SpendPolicy``) over the policy
engine, and the pricing of predictions that budgets reserve."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tabpfn_gateway.errors import GatewayError
from tabpfn_gateway.governance._context import client_address, publish_headers
from tabpfn_gateway.governance._engine import Admission, PolicyEngine
from tabpfn_gateway.governance._pricing import PriceBook

if TYPE_CHECKING:
    from tabpfn_gateway.config import Settings
    from tabpfn_gateway.gateway._authoriser import Caller
    from tabpfn_gateway.gateway._metering import Meter
    from tabpfn_gateway.protocol import AsyncProtocolClient, ProtocolClient
    from tabpfn_gateway.store.base import Store

__all__ = ["GovernancePolicy"]

logger = logging.getLogger(__name__)


class _Granted:
    """The seam's admission over an engine ``Admission``: settled with the meter's credits
    and cells. Cell budgets left for later are offered to the caller as
    ``meter.reserve_cells``.

    When the meter carries a ``deferred`` list (the async face), a settlement or refund that
    writes somewhere is put there, to be run off the event loop; else it runs at once.
    """

    def __init__(self, admission: Admission, meter: Meter) -> None:
        self._admission = admission
        self._meter = meter
        if admission.wants_cells:
            meter.reserve_cells = admission.reserve_cells

    def _settle(self, credits: int | None, cells: int | None) -> None:
        try:
            self._admission.settle(credits, cells)
        except Exception:  # the seam's settle never raises; the reservation stays held
            logger.exception("Could not settle a budget reservation")

    def _refund(self) -> None:
        try:
            self._admission.refund()
        except Exception:
            logger.exception("Could not refund a budget reservation")

    def settle(self, meter: Meter) -> None:
        credits, cells = meter.credits, meter.cells
        if meter.deferred is not None and self._admission.needs_io:
            meter.deferred.append(lambda: self._settle(credits, cells))
        else:
            self._settle(credits, cells)

    def refund(self) -> None:
        deferred = self._meter.deferred
        if deferred is not None and self._admission.needs_io:
            deferred.append(self._refund)
        else:
            self._refund()


class GovernancePolicy:
    """Admits each operation through ``engine`` (allowlist, rate limits, fit slots, budgets)
    with the client address of the request, and publishes the RateLimit headers.

    ``meter.credits`` is the price the call is reserved at (set before the call) and settled
    with (the final figure, set by the call). An async face may decide ahead, off its event
    loop, with ``decide`` and put the result in ``meter.admission``.
    """

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        meter_credits: str = "always",
        prices: PriceBook | None = None,
    ) -> None:
        self.engine = engine
        self.meter_credits = meter_credits
        self.prices = prices if prices is not None else PriceBook()

    def __repr__(self) -> str:
        return f"GovernancePolicy({self.engine!r})"

    @classmethod
    def from_settings(cls, settings: Settings, store: Store) -> GovernancePolicy:
        return cls(
            PolicyEngine.from_settings(settings, store), meter_credits=settings.meter_credits
        )

    # -- the seam ------------------------------------------------------------------------

    def decide(
        self,
        caller: Caller,
        operation: str,
        credits: int | None,
        *,
        cells: int | None = None,
        defer_cells: bool = False,
    ) -> Admission:
        """The engine's decision for this call (may do I/O; raises a refusal). ``cells``:
        its rows x columns; ``defer_cells``: they are known only later (``reserve_cells``)."""
        admission = self.engine.admit(
            caller.key,
            operation,
            client_address=client_address.get(),
            credits=credits,
            cells=cells,
            defer_cells=defer_cells,
        )
        publish_headers(admission.headers)
        return admission

    def decide_for(self, caller: Caller, operation: str, meter: Meter) -> Admission:
        """``decide`` with what ``meter`` knows before the call."""
        return self.decide(
            caller, operation, meter.credits, cells=meter.cells, defer_cells=meter.cells_later
        )

    def admit(self, caller: Caller, operation: str, meter: Meter) -> _Granted:
        ahead: Any = meter.admission
        if ahead is not None:
            meter.admission = None
            if isinstance(ahead, BaseException):
                raise ahead
            return _Granted(ahead, meter)
        return _Granted(self.decide_for(caller, operation, meter), meter)

    def decides_in_memory(self, caller: Caller, operation: str) -> bool:
        """Whether ``admit`` would do no I/O for this call (cached, no shared counters)."""
        effective = self.engine.cached(caller.key_id)
        return effective is not None and self.engine.decides_in_memory(effective, operation)

    def decide_in_memory(
        self, caller: Caller, operation: str, credits: int | None
    ) -> Admission | None:
        """``decide`` if it needs no I/O (see ``PolicyEngine.admit_in_memory``), else None."""
        admission = self.engine.admit_in_memory(
            caller.key, operation, client_address=client_address.get(), credits=credits
        )
        if admission is not None:
            publish_headers(admission.headers)
        return admission

    # -- pricing -------------------------------------------------------------------------

    def wants_price(self, caller: Caller) -> bool:
        """Whether a prediction by ``caller`` should be priced before it is forwarded."""
        return self.engine.wants_price(self.engine.applicable(caller.key), "predict")

    def wants_price_cached(self, caller: Caller) -> bool | None:
        """``wants_price`` from the policy cache (no I/O); None when it is not cached."""
        effective = self.engine.cached(caller.key_id)
        return None if effective is None else self.engine.wants_price(effective, "predict")

    def _fit_rows(self, fit_id: str | None) -> int:
        if fit_id is None:
            return 0
        rows = self.prices.fit_rows(fit_id)
        if rows is None:
            model = self.engine.store.get_fitted_model(fit_id)
            rows = model.n_rows if model is not None and model.n_rows is not None else 0
            self.prices.remember_fit_rows(fit_id, rows)
        return rows

    def price(
        self, client: ProtocolClient, fit_id: str | None, rows: int, columns: int
    ) -> int | None:
        """The upstream's quote (``estimate_cost``, remembered per shape) for predicting
        ``rows`` x ``columns`` with a fit; None if it cannot be had (never fails a call)."""
        train_rows = self._fit_rows(fit_id)
        price = self.prices.get(train_rows, rows, columns)
        if price is None:
            try:
                price = client.estimate_cost(_quote(train_rows, rows, columns)).estimated_cost
            except GatewayError as exc:
                logger.warning("Could not price a prediction upstream: %s", exc.error_code)
                return None
            self.prices.put(train_rows, rows, columns, price)
        return price

    async def aprice(
        self, client: AsyncProtocolClient, fit_id: str | None, rows: int, columns: int
    ) -> int | None:
        """``price`` for the async face (a database read, if any, off the event loop)."""
        import anyio.to_thread

        train_rows = self.prices.fit_rows(fit_id) if fit_id is not None else 0
        if train_rows is None:
            train_rows = await anyio.to_thread.run_sync(self._fit_rows, fit_id)
        price = self.prices.get(train_rows, rows, columns)
        if price is None:
            try:
                answer = await client.estimate_cost(_quote(train_rows, rows, columns))
            except GatewayError as exc:
                logger.warning("Could not price a prediction upstream: %s", exc.error_code)
                return None
            price = answer.estimated_cost
            self.prices.put(train_rows, rows, columns, price)
        return price


def _quote(train_rows: int, rows: int, columns: int) -> Any:
    from tabpfn_gateway.protocol.messages import EstimateCostRequest

    return EstimateCostRequest(train_rows=train_rows, test_rows=rows, raw_columns=columns)
