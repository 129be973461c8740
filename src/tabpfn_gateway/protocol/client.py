"""The synchronous TabPFN protocol client: one base URL, one credential, one connection pool."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any
from uuid import UUID

import httpx
import numpy as np
import pandas as pd
from pydantic import SecretStr

from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    DuplicateTestSetErrorResponse,
    DuplicateTrainSetErrorResponse,
    EstimateCostRequest,
    EstimateCostResponse,
    FileUploadInfo,
    FitRequest,
    FitResponse,
    FitTaskConfig,
    GetFitStatusResponse,
    GetSettingsResponse,
    Prediction,
    PredictRequest,
    PredictResponse,
    PredictResponseWithDownloadURI,
    PrepareTestSetUploadRequest,
    PrepareTestSetUploadResponse,
    PrepareTrainSetUploadRequest,
    PrepareTrainSetUploadResponse,
    RegressorConfig,
    SubmitFitJobRequest,
    SubmitFitJobResponse,
    ThinkingConfig,
)
from tabpfn_gateway.protocol.results import FitResult, PredictionResult

__all__ = ["ProtocolClient"]


class ProtocolClient:
    """Speaks the TabPFN wire protocol to one upstream (TabPFN cloud, a gateway, FakeTabPFN).

    Each instance has its own base URL, bearer credential, timeouts and connection pool: no
    process-global state, so many clients with many tokens run side by side in threads.
    ``with_token`` makes a sibling that shares the pool and the settings cache. The bearer
    credential goes only to ``base_url``: uploads to signed URLs carry the URL's own required
    headers and nothing else. Errors are ``tabpfn_gateway.errors.UpstreamError`` subclasses;
    httpx exceptions never escape.

    Parameters
    ----------
    base_url:
        Root of the upstream, e.g. ``https://api.priorlabs.ai``.
    token:
        The bearer credential (a TabPFN token or a gateway key). ``None`` for anonymous calls.
    timeout, connect_timeout:
        Seconds for one request (fits can be long) and for connecting.
    transport:
        An httpx transport to send everything through (``httpx.MockTransport``,
        ``tabpfn_gateway.testing.transport.ASGIBridgeTransport``...). Signed-URL uploads and
        prediction downloads use it too.
    max_connections:
        Size of the connection pool.
    upload_concurrency:
        Chunks of one upload PUT in parallel.
    poll_timeout:
        Overall deadline, in seconds, for waiting on an async fit; ``None`` takes the
        upstream's ``async_settings.poll_timeout_secs``.
    headers:
        Extra headers on every call to ``base_url`` (never on signed URLs).
    """

    def __init__(
        self,
        base_url: str,
        token: str | SecretStr | None = None,
        *,
        timeout: float = 900.0,
        connect_timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 20,
        upload_concurrency: int = 8,
        poll_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        raise NotImplementedError

    def with_token(self, token: str | SecretStr) -> ProtocolClient:
        """A client for another credential sharing this one's pool, settings and options.

        Closing the sibling does not close the shared pool; closing the original does.
        """
        raise NotImplementedError

    # -- context manager -----------------------------------------------------------------

    def __enter__(self) -> ProtocolClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (if this client owns it)."""
        raise NotImplementedError

    # -- low-level steps -----------------------------------------------------------------

    def get_settings(self) -> GetSettingsResponse:
        """``GET /tabpfn/get_settings`` (limits, async settings); cached per instance."""
        raise NotImplementedError

    def prepare_train_set_upload(
        self, req: PrepareTrainSetUploadRequest
    ) -> PrepareTrainSetUploadResponse | DuplicateTrainSetErrorResponse:
        """``POST /tabpfn/prepare_train_set_upload``: signed upload URLs, or the 409 duplicate."""
        raise NotImplementedError

    def upload(self, data: bytes, info: FileUploadInfo) -> None:
        """PUT ``data`` to ``info.signed_urls`` in chunks, in parallel, retried."""
        raise NotImplementedError

    def put_signed_url(
        self, url: str, content: bytes | Iterable[bytes], headers: Mapping[str, str]
    ) -> None:
        """PUT one chunk to a signed URL with exactly ``headers`` (never the bearer credential)."""
        raise NotImplementedError

    def fit_step(self, req: FitRequest) -> FitResponse:
        """``POST /tabpfn/fit`` (retried on connect errors only: every call is a new job)."""
        raise NotImplementedError

    def submit_fit_job(self, req: SubmitFitJobRequest) -> SubmitFitJobResponse:
        """``POST /tabpfn/submit_fit_job`` (retried on connect errors only)."""
        raise NotImplementedError

    def get_fit_status(self, fitted_train_set_id: UUID | str) -> GetFitStatusResponse:
        """``POST /tabpfn/get_fit_status`` for one fit."""
        raise NotImplementedError

    def wait_for_fit(
        self,
        fitted_train_set_id: UUID | str,
        *,
        on_poll: Callable[[GetFitStatusResponse], None] | None = None,
    ) -> GetFitStatusResponse:
        """Poll until the fit completes; honours ``retry_in_secs`` (with a floor) and a deadline.

        Raises ``UpstreamError`` if the fit failed, ``UpstreamTimeout`` past the deadline.
        """
        raise NotImplementedError

    def prepare_test_set_upload(
        self, req: PrepareTestSetUploadRequest
    ) -> PrepareTestSetUploadResponse | DuplicateTestSetErrorResponse:
        """``POST /tabpfn/prepare_test_set_upload``; a 404 raises ``FittedModelNotFound``."""
        raise NotImplementedError

    def predict_step(self, req: PredictRequest) -> PredictResponse | PredictResponseWithDownloadURI:
        """``POST /tabpfn/predict``: the prediction inline, or a signed download URI."""
        raise NotImplementedError

    def download_prediction(self, uri: str) -> Prediction:
        """GET a prediction from a signed URI (no bearer credential)."""
        raise NotImplementedError

    # -- high level ----------------------------------------------------------------------

    def fit(
        self,
        X: pd.DataFrame | np.ndarray,  # noqa: N803 (scikit-learn's name)
        y: Any,
        task_config: FitTaskConfig,
        *,
        tabpfn_systems: Sequence[str] = ("preprocessing", "text"),
        text_handling: str = "advanced",
        thinking_config: ThinkingConfig | None = None,
        api_mode: str = "auto",
        description: str | None = None,
        on_poll: Callable[[GetFitStatusResponse], None] | None = None,
    ) -> FitResult:
        """Upload a train set (skipped when the upstream has it: 409) and fit it.

        ``api_mode``: ``"sync"`` (``/fit``), ``"async"`` (``submit_fit_job`` then polls) or
        ``"auto"`` (async above the upstream's ``use_above_trainset_size_bytes``).
        """
        raise NotImplementedError

    def predict(
        self,
        fitted_train_set_id: UUID | str,
        X: pd.DataFrame | np.ndarray,  # noqa: N803 (scikit-learn's name)
        task_config: ClassifierConfig | RegressorConfig,
    ) -> PredictionResult:
        """Upload a test set (skipped on 409) and predict with a fitted train set."""
        raise NotImplementedError

    def get_api_usage(self) -> dict[str, Any]:
        """``POST /get_api_usage/``: the account's usage and limit."""
        raise NotImplementedError

    def estimate_cost(self, req: EstimateCostRequest) -> EstimateCostResponse:
        """``POST /tabpfn/estimate_cost``: a quote from dimensions only."""
        raise NotImplementedError

    def check_token(self) -> bool:
        """``GET /protected/``: True if the credential is accepted.

        Raises ``UpstreamForbidden`` on 403 (e-mail not verified) and
        ``UpstreamAuthenticationFailed`` on 401.
        """
        raise NotImplementedError
