"""The container protocol with ``ProtocolClient``'s high-level shape, for the SDK's estimators.

When a gateway says a key's credential is a self-hosted container (``GET /api/v1/whoami``),
``GatewayClassifier``/``GatewayRegressor`` reach it through this client instead of the cloud
protocol, so the user's code does not change. ``fit`` asks the container (through the
gateway's ``POST /predict``) to fit and cache the model, with one test row, and the
container's ``model_id`` becomes the fit's id: later predictions send only the test rows,
and the id works from any process, like a cloud fit. If the container keeps no cache (or
evicted the model), the training data kept in this process is sent again.
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pandas as pd
from pydantic import SecretStr

from tabpfn_gateway.errors import (
    FittedModelNotFound,
    MalformedResponse,
    UpstreamKindMismatch,
    UpstreamNotFound,
)
from tabpfn_gateway.protocol._errors import error_from_response, error_from_transport
from tabpfn_gateway.protocol.results import FitResult, PredictionResult

if TYPE_CHECKING:
    from tabpfn_gateway.protocol.messages import GetSettingsResponse

__all__ = ["HostedProtocolClient"]

_OPERATION = "hosted predict"
_PARQUET = "application/vnd.apache.parquet"
# tabpfn_client.hosted's tabpfn_config fields: only these go to the container.
_TABPFN_CONFIG_FIELDS = frozenset(
    {
        "n_estimators",
        "softmax_temperature",
        "average_before_softmax",
        "inference_precision",
        "random_state",
        "inference_config",
        "n_preprocessing_jobs",
        "memory_saving_mode",
        "categorical_features_indices",
        "model_path",
        "balance_probabilities",
    }
)
_KEPT_FITS = 32
_LOCAL_PREFIX = "local-"


@dataclass
class _LocalFit:
    task: str
    tabpfn_config: dict[str, Any]
    X: pd.DataFrame
    y: pd.DataFrame


class HostedProtocolClient:
    """POST /predict requests for a fit-then-predict estimator (see the module docstring).

    ``predict_url`` is the gateway's (or a container's) ``/predict`` URL; ``api_key`` the
    gateway key (or the container's bearer token; None: no ``Authorization``).
    """

    def __init__(
        self,
        predict_url: str,
        api_key: SecretStr | None,
        *,
        timeout: float = 900.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = predict_url
        self._api_key = api_key
        self._client = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)
        self._lock = threading.Lock()
        self._fits: OrderedDict[str, _LocalFit] = OrderedDict()

    def __repr__(self) -> str:
        return f"HostedProtocolClient({self.base_url!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HostedProtocolClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the ProtocolClient surface the estimators use -----------------------------------------

    def get_settings(self) -> GetSettingsResponse:
        """Limits for batching: a container declares none, so generous ones (it refuses what
        it cannot take with its own error)."""
        from tabpfn_gateway.protocol.messages import (
            AsyncSettings,
            GetSettingsResponse,
            ModelLimit,
            ModelVersion,
        )

        limit = ModelLimit(
            train_set_max_rows=10_000_000,
            train_set_max_cells=10**10,
            train_set_max_upload_cells=10**10,
            test_set_max_rows=10_000_000,
            max_classes=1_000,
            max_cols=100_000,
            test_set_max_rows_w_full_regression_output=10_000_000,
            predict_row_pairs_budget=10**15,
            test_set_max_cells=10**10,
        )
        return GetSettingsResponse(
            default_model_version=ModelVersion.V2_5,
            max_model_limit=limit,
            model_limits={version: limit for version in ModelVersion},
            dataset_max_size_bytes=10**12,
            async_settings=AsyncSettings(use_above_trainset_size_bytes=10**12, poll_timeout_secs=1),
        )

    def fit(
        self,
        X: pd.DataFrame | np.ndarray,  # noqa: N803 (scikit-learn's name)
        y: Any,
        task_config: Any,
        options: Any = None,
        *,
        on_poll: Callable[[Any], None] | None = None,
    ) -> FitResult:
        """Fit on the container and cache the model there; its ``model_id`` is the fit id.

        ``options`` (the cloud's upload and fit-mode choices) do not apply to a container."""
        task = str(getattr(task_config.task, "value", task_config.task))
        config = _tabpfn_config(task_config)
        local = _LocalFit(task, config, _frame(X), _frame(y))
        request = _request(task, {**config, "fit_mode": "fit_with_cache"}, _first_output(task))
        answer = self._post(request, x_train=local.X, y_train=local.y, x_test=local.X.iloc[:1])
        model_id = answer.get("model_id")
        fit_id = model_id if isinstance(model_id, str) and model_id else None
        if fit_id is None:  # a container without a model cache: predictions resend the data
            fit_id = f"{_LOCAL_PREFIX}{uuid.uuid4().hex}"
        with self._lock:
            self._fits[fit_id] = local
            while len(self._fits) > _KEPT_FITS:
                self._fits.popitem(last=False)
        return FitResult(fitted_train_set_id=fit_id, timings=None)

    def predict(
        self,
        fitted_train_set_id: str,
        X: pd.DataFrame | np.ndarray,  # noqa: N803
        task_config: Any,
    ) -> PredictionResult:
        """Predict ``X`` with the cached model (or, if it is gone, the data kept here)."""
        task = str(getattr(task_config.task, "value", task_config.task))
        params = task_config.predict_params
        output_type = str(getattr(params.output_type, "value", params.output_type))
        predict_params: dict[str, Any] = {}
        quantiles = getattr(params, "quantiles", None)
        if quantiles is not None:
            predict_params["quantiles"] = list(quantiles)
        with self._lock:
            local = self._fits.get(fitted_train_set_id)
        x_test = _frame(X)
        config = local.tabpfn_config if local is not None else _tabpfn_config(task_config)
        request = _request(task, config, output_type, predict_params)
        answer: dict[str, Any] | None = None
        if not fitted_train_set_id.startswith(_LOCAL_PREFIX):
            request["context"] = {"model_id": fitted_train_set_id}
            try:
                answer = self._post(request, x_test=x_test)
            except (UpstreamNotFound, FittedModelNotFound):
                if local is None:
                    raise FittedModelNotFound(
                        "The container no longer holds this fit's model (its cache is bounded) "
                        "and its training data is not in this process: fit the estimator again."
                    ) from None
            del request["context"]
        if answer is None:
            assert local is not None  # a local id is only ever made with its data kept
            answer = self._post(request, x_train=local.X, y_train=local.y, x_test=x_test)
        return PredictionResult(y_pred=_prediction(answer), metadata={}, timings=None)

    def get_api_usage(self) -> dict[str, Any]:
        raise UpstreamKindMismatch(
            "This key's credential is a self-hosted container: it has no TabPFN account "
            "usage; see the gateway's usage reports instead."
        )

    # -- the wire ------------------------------------------------------------------------------

    def _post(self, request: dict[str, Any], **datasets: pd.DataFrame) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        files = {name: _parquet(frame, name) for name, frame in datasets.items()}
        try:
            response = self._client.post(
                self.base_url,
                data={"request": json.dumps(request, allow_nan=False)},
                files=files,
                headers=headers,
            )
        except httpx.HTTPError as exc:
            raise error_from_transport(exc, _OPERATION) from None
        if response.status_code >= 400:
            secret = None if self._api_key is None else self._api_key.get_secret_value()
            raise error_from_response(response, _OPERATION, secret=secret, fitted_model=True)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "prediction" not in body:
            raise MalformedResponse(
                "The container answered without a 'prediction'.", status_code=response.status_code
            )
        return body


def _tabpfn_config(task_config: Any) -> dict[str, Any]:
    config = getattr(task_config, "tabpfn_config", None)
    if config is None:
        return {}
    values = config.model_dump(mode="json", exclude_none=True)
    return {k: v for k, v in values.items() if k in _TABPFN_CONFIG_FIELDS}


def _first_output(task: str) -> str:
    return "preds" if task == "classification" else "mean"


def _request(
    task: str,
    tabpfn_config: dict[str, Any],
    output_type: str,
    predict_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "task_config": {
            "task": task,
            "tabpfn_config": tabpfn_config,
            "predict_params": {"output_type": output_type, **(predict_params or {})},
        }
    }


def _frame(data: Any) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        frame = data.copy()
    else:
        array = np.asarray(data)
        frame = pd.DataFrame(array.reshape(-1, 1) if array.ndim == 1 else array)
    # Parquet wants string column names; the container reads columns by position.
    frame.columns = [str(c) for c in frame.columns]
    return frame.reset_index(drop=True)


def _parquet(frame: pd.DataFrame, name: str) -> tuple[str, bytes, str]:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd")
    return (f"{name}.parquet", buffer.getvalue(), _PARQUET)


def _prediction(answer: dict[str, Any]) -> np.ndarray | dict[str, np.ndarray]:
    prediction = answer["prediction"]
    if isinstance(prediction, dict):
        return {
            k: np.asarray([np.nan if v is None else v for v in _flat(value)], dtype=float).reshape(
                np.shape(value)
            )
            if _has_none(value)
            else np.asarray(value)
            for k, value in prediction.items()
        }
    return np.asarray(prediction)


def _flat(value: Any) -> list[Any]:
    return list(np.asarray(value, dtype=object).ravel())


def _has_none(value: Any) -> bool:
    return any(v is None for v in _flat(value))
