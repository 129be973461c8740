"""FakeTabPFN's fits: training real scikit-learn models, and the pending -> completed/failed
state machine that status polls walk through."""

from __future__ import annotations

import io
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import pandas as pd

from tabpfn_gateway.protocol.messages import (
    FitRequest,
    FitStatus,
    FitTimings,
    GetFitStatusResponse,
    SubmitFitJobRequest,
)
from tabpfn_gateway.testing import fake_models
from tabpfn_gateway.testing._fake.common import Refusal
from tabpfn_gateway.testing._fake.storage import Upload
from tabpfn_gateway.testing.fake_models import FakeModel, FitFailed

__all__ = ["Fit", "FitJobs"]


@dataclass
class Fit:
    """One fit: its model (or why it failed) and how many polls it still stays pending."""

    id: str
    token: str
    task: str
    model: FakeModel | None
    error: str | None
    pending_polls: int
    retry_in_secs: float
    submitted: float
    transform_s: float
    fit_s: float

    def timings(self, *, done: bool) -> FitTimings:
        elapsed = time.monotonic() - self.submitted + self.transform_s + self.fit_s
        if not done:
            return FitTimings(elapsed_s=elapsed)
        return FitTimings(
            elapsed_s=elapsed,
            queue_wait_s=0.0,
            train_set_transform_s=self.transform_s,
            fit_s=self.fit_s,
        )


class FitJobs:
    """Every fit by id; each is visible only to the token that made it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fits: dict[str, Fit] = {}

    async def train(
        self,
        upload: Upload,
        task: str,
        req: FitRequest | SubmitFitJobRequest,
        *,
        max_classes: int,
        max_iter: int,
        retry_in_secs: float,
    ) -> Fit:
        """Train on a complete upload (in a worker thread) and register the fit."""
        started = time.perf_counter()

        def work() -> tuple[FakeModel | None, str | None, float]:
            x = pd.read_parquet(io.BytesIO(upload.data("x_train")))
            y = pd.read_parquet(io.BytesIO(upload.data("y_train")))
            transformed = time.perf_counter()
            random_state = (
                req.task_config.tabpfn_config.random_state
                if (req.task_config.tabpfn_config is not None)
                else None
            )
            try:
                model = fake_models.train(
                    x,
                    y,
                    "classification" if task == "classification" else "regression",
                    max_classes=max_classes,
                    max_iter=max_iter,
                    random_state=random_state or 0,
                )
            except FitFailed as exc:
                return None, str(exc), transformed
            return model, None, transformed

        model, error, transformed = await anyio.to_thread.run_sync(work)
        fit = Fit(
            id=str(uuid.uuid4()),
            token=upload.token,
            task=task,
            model=model,
            error=error,
            pending_polls=0,
            retry_in_secs=retry_in_secs,
            submitted=time.monotonic(),
            transform_s=transformed - started,
            fit_s=time.perf_counter() - transformed,
        )
        with self._lock:
            self._fits[fit.id] = fit
        return fit

    def of(self, fitted_id: Any, token: str) -> Fit:
        """The fit, if ``token`` made it; anyone else's is as invisible as a missing one."""
        with self._lock:
            fit = self._fits.get(str(fitted_id))
        if fit is None or fit.token != token:
            raise Refusal(404, f"Fitted model {fitted_id} not found.", error_code="NOT_FOUND")
        return fit

    def poll(self, fit: Fit) -> GetFitStatusResponse:
        """One status poll: pending while polls remain, then completed or failed."""
        with self._lock:
            pending = fit.pending_polls > 0
            if pending:
                fit.pending_polls -= 1
        fitted_id = uuid.UUID(fit.id)
        if pending:
            return GetFitStatusResponse(
                fitted_train_set_id=fitted_id,
                status=FitStatus.PENDING,
                retry_in_secs=fit.retry_in_secs,
                timings=fit.timings(done=False),
            )
        if fit.error is not None:
            return GetFitStatusResponse(
                fitted_train_set_id=fitted_id,
                status=FitStatus.FAILED,
                error=fit.error,
                error_code="FIT_FAILED",
            )
        return GetFitStatusResponse(
            fitted_train_set_id=fitted_id,
            status=FitStatus.COMPLETED,
            timings=fit.timings(done=True),
        )
