"""FakeTabPFN's predictions: a fitted model applied to an uploaded test set, and the metadata
the cloud answers with."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import pandas as pd

from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    ClassifierMetadata,
    ClassifierTabPFNConfig,
    ModelVersion,
    PredictTimings,
    RegressorConfig,
    RegressorMetadata,
    RegressorTabPFNConfig,
)
from tabpfn_gateway.testing import fake_models
from tabpfn_gateway.testing._fake.common import Refusal, json_scalar
from tabpfn_gateway.testing.fake_models import FakeModel, FitFailed

__all__ = ["PACKAGE_VERSION", "Prediction", "predict"]

PACKAGE_VERSION = "fake-tabpfn-1"


@dataclass(frozen=True)
class Prediction:
    """A prediction as the cloud answers it, and the test set's size (what it costs)."""

    values: list[Any] | dict[str, list[Any]]
    rows: int
    columns: int
    metadata: ClassifierMetadata | RegressorMetadata
    timings: PredictTimings


async def predict(
    model: FakeModel,
    x_test: bytes,
    task_config: ClassifierConfig | RegressorConfig,
    *,
    full_output_max_rows: int,
) -> Prediction:
    """Predict the Parquet test set ``x_test`` (in a worker thread); ``Refusal`` (400) for an
    output the cloud would refuse."""
    started = time.perf_counter()

    def work() -> tuple[Any, int, int, float]:
        x = pd.read_parquet(io.BytesIO(x_test))
        transformed = time.perf_counter()
        prediction: list[Any] | dict[str, list[Any]]
        if isinstance(task_config, ClassifierConfig):
            params = task_config.predict_params
            output = str(params.output_type.value) if params and params.output_type else "preds"
            prediction = fake_models.predict_classification(model, x, output)
        else:
            params_r = task_config.predict_params
            output = (
                str(params_r.output_type.value) if params_r and params_r.output_type else "mean"
            )
            if output == "full" and x.shape[0] > full_output_max_rows:
                raise FitFailed(f"At most {full_output_max_rows} rows for the full output.")
            quantiles = params_r.quantiles if params_r else None
            prediction = fake_models.predict_regression(model, x, output, quantiles)
        return prediction, x.shape[0], x.shape[1], transformed

    try:
        values, rows, columns, transformed = await anyio.to_thread.run_sync(work)
    except FitFailed as exc:
        raise Refusal(400, str(exc)) from None
    timings = PredictTimings(
        test_set_transform_queue_wait_s=0.0,
        test_set_transform_s=transformed - started,
        predict_queue_wait_s=0.0,
        predict_s=time.perf_counter() - transformed,
    )
    metadata = _metadata(task_config, model, rows, columns)
    return Prediction(values, rows, columns, metadata, timings)


def _metadata(
    task_config: ClassifierConfig | RegressorConfig, model: FakeModel, rows: int, cols: int
) -> ClassifierMetadata | RegressorMetadata:
    common: dict[str, Any] = {
        "test_set_num_rows": rows,
        "test_set_num_cols": cols,
        "billing_model_version": ModelVersion.V2_5.value,
        "execution_mode": "standard",
        "package_version": PACKAGE_VERSION,
    }
    if isinstance(task_config, ClassifierConfig):
        tabpfn_config = task_config.tabpfn_config or ClassifierTabPFNConfig()
        return ClassifierMetadata(
            **common,
            n_estimators=tabpfn_config.n_estimators or 8,
            tabpfn_config=tabpfn_config,
            classes=[json_scalar(c) for c in model.classes],
        )
    reg_config = task_config.tabpfn_config or RegressorTabPFNConfig()
    return RegressorMetadata(
        **common, n_estimators=reg_config.n_estimators or 8, tabpfn_config=reg_config
    )
