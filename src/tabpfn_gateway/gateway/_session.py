"""In-process gateway sessions: the high-level ``ProtocolClient`` shape, no server needed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Unpack
from uuid import UUID

from pydantic import SecretStr

from tabpfn_gateway.gateway._authoriser import Caller
from tabpfn_gateway.gateway._core import Gateway
from tabpfn_gateway.gateway._metering import Meter
from tabpfn_gateway.protocol._base import SETTINGS_TTL_SECONDS
from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    EstimateCostRequest,
    EstimateCostResponse,
    FitTaskConfig,
    GetFitStatusResponse,
    GetSettingsResponse,
    RegressorConfig,
)
from tabpfn_gateway.protocol.options import FitKeywords, FitOptions

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from tabpfn_gateway.protocol import FitResult, PredictionResult, ProtocolClient

__all__ = ["SyncGatewaySession"]

# Scope names, repeated here so importing a session does not import the key machinery.
_INFERENCE = "inference"
_USAGE = "usage"


class SyncGatewaySession:
    """Acts as the holder of one gateway key, in this process, against the gateway's upstream.

    Offers ``fit``, ``predict``, ``get_settings``, ``get_api_usage``, ``estimate_cost`` and
    ``check_token`` with exactly the signatures of ``tabpfn_gateway.protocol.ProtocolClient``,
    so code (the estimators) can use either. Each call verifies the key again (cheap: the
    key cache), so a revoked key stops working here as it does behind the server; usage is
    metered and fits are owned the same way.

    Get one from ``Gateway.session(api_key)``. The key is kept as a ``SecretStr``.
    """

    def __init__(self, gateway: Gateway, api_key: str | SecretStr) -> None:
        self._gateway = gateway
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self._settings: GetSettingsResponse | None = None
        self._settings_until = 0.0
        self._settings_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SyncGatewaySession(gateway={self._gateway!r})"

    def __enter__(self) -> SyncGatewaySession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: the pool belongs to the gateway."""

    def _client(self, scope: str) -> tuple[Caller, ProtocolClient]:
        decision = self._gateway.authoriser.authorise(self._api_key, scope=scope)
        client = self._gateway.upstream.with_token(decision.token, base_url=decision.base_url)
        return decision.caller, client

    # -- high level, as ProtocolClient ---------------------------------------------------------

    def fit(
        self,
        X: pd.DataFrame | np.ndarray,  # noqa: N803 (scikit-learn's name)
        y: Any,
        task_config: FitTaskConfig,
        options: FitOptions | None = None,
        *,
        on_poll: Callable[[GetFitStatusResponse], None] | None = None,
        **deprecated: Unpack[FitKeywords],
    ) -> FitResult:
        """Upload ``X``/``y`` and fit upstream; the fit is recorded as the caller's."""
        options = FitOptions.resolve(options, deprecated)
        caller, client = self._client(_INFERENCE)
        rows, columns = _shape(X)
        # The same figures the HTTP path records for one fit: X's shape, the Parquet bytes.
        with self._gateway.metered(caller, "fit", Meter(rows=rows, columns=columns)) as meter:
            result = client.fit(X, y, task_config, options, on_poll=on_poll)
            meter.nbytes = result.train_set_bytes
            self._gateway.claim_fit(
                caller,
                result.fitted_train_set_id,
                task=_task_name(task_config),
                rows=rows,
                columns=columns,
            )
        return result

    def predict(
        self,
        fitted_train_set_id: UUID | str,
        X: pd.DataFrame | np.ndarray,  # noqa: N803 (scikit-learn's name)
        task_config: ClassifierConfig | RegressorConfig,
    ) -> PredictionResult:
        """Predict with a fit the caller's principal owns (else ``FittedModelNotFound``)."""
        caller, client = self._client(_INFERENCE)
        fit_id = self._gateway.check_fit_owner(caller, fitted_train_set_id)
        rows, columns = _shape(X)
        meter = Meter(rows=rows, columns=columns)
        governance = self._gateway.governance
        if (
            governance is not None
            and rows is not None
            and columns is not None
            and (governance.meter_credits == "always" or governance.wants_price(caller))
        ):
            # The shape is known before the call: the quote is also the final figure.
            meter.credits = governance.price(client, fit_id, rows, columns)
        with self._gateway.metered(caller, "predict", meter):
            result = client.predict(fit_id, X, task_config)
            meter.nbytes = result.test_set_bytes
            return result

    def get_settings(self) -> GetSettingsResponse:
        """The upstream's limits and async settings, kept for ``SETTINGS_TTL_SECONDS`` as a
        protocol client keeps them (so a session asks, and is metered, as often as one)."""
        caller, client = self._client(_INFERENCE)
        with self._settings_lock:
            if self._settings is not None and time.monotonic() < self._settings_until:
                return self._settings
        with self._gateway.metered(caller, "get_settings"):
            settings = client.get_settings()
        with self._settings_lock:
            self._settings = settings
            self._settings_until = time.monotonic() + SETTINGS_TTL_SECONDS
        return settings

    def get_api_usage(self) -> dict[str, Any]:
        """The upstream account's usage (of the credential the key is bound to)."""
        caller, client = self._client(_USAGE)
        with self._gateway.metered(caller, "get_api_usage"):
            return client.get_api_usage()

    def estimate_cost(self, req: EstimateCostRequest) -> EstimateCostResponse:
        """A quote from the upstream, from dimensions only."""
        caller, client = self._client(_INFERENCE)
        with self._gateway.metered(caller, "estimate_cost"):
            return client.estimate_cost(req)

    def check_token(self) -> bool:
        """True if the key is accepted here and its TabPFN token upstream."""
        caller, client = self._client(_INFERENCE)
        with self._gateway.metered(caller, "protected"):
            return client.check_token()


def _shape(X: Any) -> tuple[int | None, int | None]:  # noqa: N803
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) == 0:
        return None, None
    rows = int(shape[0])
    columns = int(shape[1]) if len(shape) > 1 else 1
    return rows, columns


def _task_name(task_config: Any) -> str:
    task = getattr(task_config, "task", None)
    value = getattr(task, "value", task)
    return str(value) if value is not None else "unknown"
