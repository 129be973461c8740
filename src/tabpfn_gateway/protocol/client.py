"""The synchronous TabPFN protocol client: one base URL, one credential, one connection pool.

Generated from ``aclient.py`` by ``tools/unasync.py``: edit that file, then run
``nox -s generate`` (``nox -s check_generated`` fails when this is stale). What differs
between the two lives in ``_synchronization``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Unpack
from uuid import UUID

import httpx
import tenacity
from pydantic import SecretStr

from tabpfn_gateway.errors import (
    ConfigurationError,
    InvalidRequest,
    MalformedResponse,
    UpstreamError,
)
from tabpfn_gateway.protocol import _base
from tabpfn_gateway.protocol._base import ClientOptions, Endpoint
from tabpfn_gateway.protocol._errors import error_from_storage, error_from_transport
from tabpfn_gateway.protocol._synchronization import (
    Content,
    Lock,
    fan_out,
    run_blocking,
    sleep,
)
from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    DuplicateTestSetErrorResponse,
    DuplicateTrainSetErrorResponse,
    EstimateCostRequest,
    EstimateCostResponse,
    FileUploadInfo,
    FitRequest,
    FitResponse,
    FitStatus,
    FitTaskConfig,
    GetFitStatusRequest,
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
)
from tabpfn_gateway.protocol.options import FitKeywords, FitOptions
from tabpfn_gateway.protocol.results import FitResult, PredictionResult
from tabpfn_gateway.protocol.serialization import split_chunks

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["ProtocolClient"]

# Upstream roots one pool remembers (one per cloud URL credentials name).
_MAX_ROOTS = 1_000


class _Shared:
    """The pool, options and settings cache one client shares with its ``with_token`` siblings."""

    def __init__(
        self,
        options: ClientOptions,
        transport: httpx.BaseTransport | None,
        *,
        pool: _Shared | None = None,
    ) -> None:
        self.options = options
        if pool is None:
            self.http = httpx.Client(transport=transport, **options.httpx_kwargs())
            # Other upstream roots over this pool, by base URL (each its own settings).
            self.roots: dict[str, _Shared] = {options.base_url: self}
        else:
            self.http = pool.http
            self.roots = pool.roots
        self.settings: GetSettingsResponse | None = None
        self.settings_until = 0.0  # time.monotonic() past which the settings are asked again
        self.settings_lock = Lock()

    def at(self, base_url: str) -> _Shared:
        """The shared state for another upstream root over the same pool (made once)."""
        options = self.options.at(base_url)
        found = self.roots.get(options.base_url)
        if found is not None:
            return found
        if len(self.roots) >= _MAX_ROOTS:  # credentials come and go: forget the oldest
            self.roots.pop(next(iter(self.roots)), None)
        return self.roots.setdefault(options.base_url, _Shared(options, None, pool=self))


class ProtocolClient:
    """Speaks the TabPFN wire protocol to one upstream (TabPFN cloud, a gateway, FakeTabPFN).

    Each instance has its own base URL, bearer credential, timeouts and connection pool: no
    process-global state, so many clients with many tokens run side by side.
    ``with_token`` makes a sibling that shares the pool and the settings cache. The bearer
    credential goes only to ``base_url``: uploads to signed URLs carry the URL's own required
    headers and nothing else. Errors are ``tabpfn_gateway.errors.UpstreamError`` subclasses
    (bad arguments: ``InvalidRequest`` / ``ConfigurationError``); httpx exceptions never escape.
    ``put_signed_url`` streams an iterable of chunks once: the gateway passes a client's
    upload through it without holding the dataset in memory.

    Parameters
    ----------
    base_url:
        Root of the upstream, e.g. ``https://api.priorlabs.ai``.
    token:
        The bearer credential (a TabPFN token or a gateway key). ``None`` for anonymous calls.
    timeout, connect_timeout:
        Seconds for one request (fits can be long) and for connecting.
    transport:
        An httpx transport to send everything through (``httpx.MockTransport``, FakeTabPFN's
        app through ``tabpfn_gateway.testing.transport``...). Signed-URL uploads and prediction
        downloads use it too.
    max_connections:
        Size of the connection pool.
    upload_concurrency:
        Chunks of one upload PUT at once.
    poll_timeout:
        Overall deadline, in seconds, for waiting on an async fit; ``None`` takes the
        upstream's ``async_settings.poll_timeout_secs``.
    headers:
        Extra headers on every call to ``base_url`` (never on signed URLs).
    max_retries, retry_wait:
        Retries of an idempotent step after a transient failure, and the first back-off in
        seconds (doubling, jittered).
    settings_ttl:
        Seconds the upstream's settings are trusted before ``get_settings`` asks again (the
        one cache of them: backends and estimators keep none of their own).
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
        max_retries: int = 2,
        retry_wait: float = 0.25,
        settings_ttl: float = _base.SETTINGS_TTL_SECONDS,
    ) -> None:
        options = ClientOptions.build(
            base_url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            upload_concurrency=upload_concurrency,
            poll_timeout=poll_timeout,
            headers=headers,
            max_retries=max_retries,
            retry_wait=retry_wait,
            settings_ttl=settings_ttl,
        )
        self._token = _base.coerce_token(token)
        self._shared = _Shared(options, transport)
        self._owns_pool = True

    def with_token(self, token: str | SecretStr, *, base_url: str | None = None) -> ProtocolClient:
        """A client for another credential sharing this one's pool, settings and options.

        ``base_url``: the credential's own upstream root (a per-credential cloud URL) instead
        of this client's; same pool and options, settings cached per root. Closing the
        sibling does not close the shared pool; closing the original does.
        """
        sibling = object.__new__(type(self))
        sibling._token = _base.coerce_token(token)
        sibling._shared = self._shared if base_url is None else self._shared.at(base_url)
        sibling._owns_pool = False
        return sibling

    @property
    def base_url(self) -> str:
        """The URL of the service this client speaks to (TabPFN cloud or a gateway)."""
        return self._shared.options.base_url

    def __repr__(self) -> str:
        # Never the token: only whether there is one.
        auth = "token set" if self._token is not None else "anonymous"
        return f"{type(self).__name__}({self.base_url!r}, {auth})"

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
        if self._owns_pool:
            self._shared.http.close()

    # -- plumbing ------------------------------------------------------------------------

    def _retrying(self, predicate: Callable[[BaseException], bool]) -> tenacity.Retrying:
        kwargs = _base.retry_kwargs(self._shared.options, predicate)
        return tenacity.Retrying(sleep=sleep, **kwargs)

    def _send(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        json: Any = None,
        content: Content | None = None,
        timeout: float | None = None,
        follow_redirects: bool = True,
    ) -> httpx.Response:
        # Signed URLs (uploads, prediction downloads) are never redirected: a redirect is how
        # an upstream would point the gateway at a host its egress policy never saw.
        kwargs: dict[str, Any] = {"headers": headers, "follow_redirects": follow_redirects}
        if json is not None:
            kwargs["json"] = json
        if content is not None:
            kwargs["content"] = content
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=self._shared.options.connect_timeout)
        if self._shared.http.is_closed:
            # httpx would raise a bare RuntimeError; say what happened in our own terms.
            raise ConfigurationError("This protocol client is closed; create a new one.")
        try:
            return self._shared.http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise error_from_transport(exc, operation) from exc
        except httpx.InvalidURL as exc:
            raise InvalidRequest(f"TabPFN {operation}: invalid URL ({exc}).") from None

    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        retry: Callable[[BaseException], bool] = _base.retry_idempotent,
        allowed: Sequence[int] = (),
        fitted_model: bool = False,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One API call with the credential, retried by ``retry``, errors mapped."""
        options = self._shared.options
        headers = _base.api_headers(options, self._token)
        for attempt in self._retrying(retry):
            with attempt:
                response = self._send(
                    operation,
                    method,
                    options.url(path),
                    headers=headers,
                    json=json,
                    timeout=timeout,
                )
                _base.raise_for_error(
                    response,
                    operation,
                    secret=self._token,
                    allowed=allowed,
                    fitted_model=fitted_model,
                )
        return response

    # -- low-level steps -----------------------------------------------------------------

    def get_settings(self) -> GetSettingsResponse:
        """``GET /tabpfn/get_settings`` (limits, async settings), cached for ``settings_ttl``
        seconds and shared with ``with_token`` siblings."""
        shared = self._shared
        with shared.settings_lock:
            if shared.settings is None or time.monotonic() >= shared.settings_until:
                response = self._call("get_settings", "GET", Endpoint.SETTINGS)
                shared.settings = _base.parse_model(
                    response, GetSettingsResponse, "get_settings", secret=self._token
                )
                shared.settings_until = time.monotonic() + shared.options.settings_ttl
            return shared.settings

    def prepare_train_set_upload(
        self, req: PrepareTrainSetUploadRequest
    ) -> PrepareTrainSetUploadResponse | DuplicateTrainSetErrorResponse:
        """``POST /tabpfn/prepare_train_set_upload``: signed upload URLs, or the 409 duplicate.

        Retried on connect errors only: the upstream registers an upload per call.
        """
        response = self._call(
            "prepare_train_set_upload",
            "POST",
            Endpoint.PREPARE_TRAIN,
            json=_base.dump(req),
            retry=_base.retry_connect_only,
            allowed=(409,),
        )
        if response.status_code == 409:
            return _base.parse_model(
                response,
                DuplicateTrainSetErrorResponse,
                "prepare_train_set_upload",
                secret=self._token,
            )
        return _base.parse_model(
            response,
            PrepareTrainSetUploadResponse,
            "prepare_train_set_upload",
            secret=self._token,
        )

    def upload(self, data: bytes, info: FileUploadInfo) -> None:
        """PUT ``data`` to ``info.signed_urls`` in chunks (``upload_concurrency`` at once)."""
        self._upload_all([(data, info)])

    def _upload_all(self, files: Sequence[tuple[bytes, FileUploadInfo]]) -> None:
        # All chunks of all files share one limit, so x and y of a train set upload together
        # without exceeding `upload_concurrency` connections.
        jobs: list[tuple[str, bytes | memoryview, Mapping[str, str]]] = []
        for data, info in files:
            if not info.signed_urls:
                raise MalformedResponse("The upstream handed out no upload URL for a file.")
            chunks = split_chunks(data, len(info.signed_urls))
            jobs.extend(
                (url, chunk, info.required_headers)
                for url, chunk in zip(info.signed_urls, chunks, strict=True)
            )
        fan_out(self._put_chunk, jobs, limit=self._shared.options.upload_concurrency)

    def _put_chunk(self, job: tuple[str, bytes | memoryview, Mapping[str, str]]) -> None:
        url, chunk, headers = job
        self.put_signed_url(url, chunk if isinstance(chunk, bytes) else bytes(chunk), headers)

    def put_signed_url(
        self,
        url: str,
        content: Content,
        headers: Mapping[str, str],
    ) -> None:
        """PUT one chunk to a signed URL with exactly ``headers`` (never the bearer credential).

        ``bytes`` are retried on transient failures; an iterable of chunks is streamed once
        and not retried (it cannot be replayed).
        """
        _base.check_signed_url(url)
        replayable = isinstance(content, bytes)
        retry = _base.retry_idempotent if replayable else _base.retry_never
        for attempt in self._retrying(retry):
            with attempt:
                response = self._send(
                    "upload",
                    "PUT",
                    url,
                    headers=dict(headers),
                    content=content,
                    follow_redirects=False,
                )
                if response.status_code >= 300:
                    raise error_from_storage(response, "upload")

    def fit_step(self, req: FitRequest) -> FitResponse:
        """``POST /tabpfn/fit`` (retried on connect errors only: every call is a new job)."""
        response = self._call(
            "fit", "POST", Endpoint.FIT, json=_base.dump(req), retry=_base.retry_connect_only
        )
        return _base.parse_model(response, FitResponse, "fit", secret=self._token)

    def submit_fit_job(self, req: SubmitFitJobRequest) -> SubmitFitJobResponse:
        """``POST /tabpfn/submit_fit_job`` (retried on connect errors only)."""
        response = self._call(
            "submit_fit_job",
            "POST",
            Endpoint.SUBMIT_FIT,
            json=_base.dump(req),
            retry=_base.retry_connect_only,
        )
        return _base.parse_model(
            response, SubmitFitJobResponse, "submit_fit_job", secret=self._token
        )

    def get_fit_status(self, fitted_train_set_id: UUID | str) -> GetFitStatusResponse:
        """``POST /tabpfn/get_fit_status`` for one fit (one attempt: ``wait_for_fit`` retries)."""
        req = GetFitStatusRequest(fitted_train_set_id=_base.as_uuid(fitted_train_set_id))
        response = self._call(
            "get_fit_status",
            "POST",
            Endpoint.FIT_STATUS,
            json=_base.dump(req),
            retry=_base.retry_never,
            fitted_model=True,
            timeout=min(_base.POLL_REQUEST_TIMEOUT, self._shared.options.timeout),
        )
        return _base.parse_model(
            response, GetFitStatusResponse, "get_fit_status", secret=self._token
        )

    def wait_for_fit(
        self,
        fitted_train_set_id: UUID | str,
        *,
        on_poll: Callable[[GetFitStatusResponse], None] | None = None,
    ) -> GetFitStatusResponse:
        """Poll until the fit completes; honours ``retry_in_secs`` (with a floor) and a deadline.

        Raises ``UpstreamError`` if the fit failed, ``UpstreamTimeout`` past the deadline
        (``poll_timeout``, else the upstream's ``async_settings.poll_timeout_secs``).
        """
        options = self._shared.options
        settings = self.get_settings() if options.poll_timeout is None else None
        poller = _base.FitPoller(str(fitted_train_set_id), _base.poll_timeout(options, settings))
        while True:
            try:
                status = self.get_fit_status(fitted_train_set_id)
            except UpstreamError as exc:
                poller.on_error(exc)
            else:
                if on_poll is not None:
                    on_poll(status)
                if poller.on_status(status):
                    return status
            sleep(poller.next_sleep())

    def prepare_test_set_upload(
        self, req: PrepareTestSetUploadRequest
    ) -> PrepareTestSetUploadResponse | DuplicateTestSetErrorResponse:
        """``POST /tabpfn/prepare_test_set_upload``; a 404 raises ``FittedModelNotFound``."""
        response = self._call(
            "prepare_test_set_upload",
            "POST",
            Endpoint.PREPARE_TEST,
            json=_base.dump(req),
            retry=_base.retry_connect_only,
            allowed=(409,),
            fitted_model=True,
        )
        if response.status_code == 409:
            return _base.parse_model(
                response,
                DuplicateTestSetErrorResponse,
                "prepare_test_set_upload",
                secret=self._token,
            )
        return _base.parse_model(
            response,
            PrepareTestSetUploadResponse,
            "prepare_test_set_upload",
            secret=self._token,
        )

    def predict_step(self, req: PredictRequest) -> PredictResponse | PredictResponseWithDownloadURI:
        """``POST /tabpfn/predict``: the prediction inline, or a signed download URI."""
        response = self._call(
            "predict", "POST", Endpoint.PREDICT, json=_base.dump(req), fitted_model=True
        )
        return _base.parse_predict_response(response, secret=self._token)

    def download_prediction(self, uri: str) -> Prediction:
        """GET a prediction from a signed URI (no bearer credential), retried."""
        _base.check_signed_url(uri)
        for attempt in self._retrying(_base.retry_idempotent):
            with attempt:
                response = self._send(
                    "download_prediction", "GET", uri, headers={}, follow_redirects=False
                )
                if response.status_code >= 300:
                    raise error_from_storage(response, "download_prediction")
        return _base.parse_prediction(response)

    # -- high level ----------------------------------------------------------------------

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
        """Upload a train set (skipped when the upstream has it: 409) and fit it.

        ``options`` says how (``FitOptions``: systems, text handling, sync or async fit...);
        ``on_poll`` sees each status of an async fit. Serialization runs off the event loop.
        """
        opts = FitOptions.resolve(options, deprecated)
        _base.check_fit_options(opts.api_mode, opts.text_handling)
        settings = self.get_settings()
        prepared = run_blocking(_base.prepare_train_set, X, y, settings, opts.description)
        use_async = _base.use_async_fit(opts.api_mode, prepared.in_memory_bytes, settings)
        upload = self.prepare_train_set_upload(prepared.request)
        if isinstance(upload, PrepareTrainSetUploadResponse):
            self._upload_all(
                [(prepared.x_bytes, upload.x_train_info), (prepared.y_bytes, upload.y_train_info)]
            )
        train_set_bytes = len(prepared.x_bytes) + len(prepared.y_bytes)
        del prepared  # the bytes are uploaded; do not hold them through a long fit
        args = (upload.train_set_upload_id, task_config, opts)
        if use_async:
            submitted = self.submit_fit_job(_base.fit_request(SubmitFitJobRequest, *args))
            done = self.wait_for_fit(submitted.fitted_train_set_id, on_poll=on_poll)
            return FitResult(
                str(submitted.fitted_train_set_id),
                _base.timings_dict(done.timings),
                train_set_bytes,
            )
        fitted = self.fit_step(_base.fit_request(FitRequest, *args))
        timings = fitted.timings
        # Anything but COMPLETED (PENDING, or a status a newer upstream added) is waited on.
        if fitted.status != FitStatus.COMPLETED:
            status = self.wait_for_fit(fitted.fitted_train_set_id, on_poll=on_poll)
            timings = status.timings
        return FitResult(
            str(fitted.fitted_train_set_id), _base.timings_dict(timings), train_set_bytes
        )

    def predict(
        self,
        fitted_train_set_id: UUID | str,
        X: pd.DataFrame | np.ndarray,  # noqa: N803 (scikit-learn's name)
        task_config: ClassifierConfig | RegressorConfig,
    ) -> PredictionResult:
        """Upload a test set (skipped on 409) and predict with a fitted train set.

        A fitted model the upstream does not know (or that another token made) raises
        ``UpstreamFittedModelNotFound`` (a ``FittedModelNotFound``).
        """
        settings = self.get_settings()
        prepared = run_blocking(_base.prepare_test_set, fitted_train_set_id, X, settings)
        upload = self.prepare_test_set_upload(prepared.request)
        if isinstance(upload, PrepareTestSetUploadResponse):
            self.upload(prepared.x_bytes, upload.x_test_info)
        test_set_bytes = len(prepared.x_bytes)
        del prepared
        answer = self.predict_step(
            PredictRequest(
                test_set_upload_id=upload.test_set_upload_id,
                fitted_train_set_id=_base.as_uuid(fitted_train_set_id),
                task_config=task_config,
            )
        )
        if isinstance(answer, PredictResponseWithDownloadURI):
            prediction = self.download_prediction(answer.prediction_uri)
        else:
            prediction = answer.prediction
        return _base.prediction_result(answer, prediction, test_set_bytes)

    def get_api_usage(self) -> dict[str, Any]:
        """``POST /get_api_usage/``: the account's usage and limit."""
        response = self._call("get_api_usage", "POST", Endpoint.USAGE)
        return _base.parse_json_object(response, "get_api_usage", secret=self._token)

    def estimate_cost(self, req: EstimateCostRequest) -> EstimateCostResponse:
        """``POST /tabpfn/estimate_cost``: a quote from dimensions only."""
        response = self._call("estimate_cost", "POST", Endpoint.ESTIMATE_COST, json=_base.dump(req))
        return _base.parse_model(
            response, EstimateCostResponse, "estimate_cost", secret=self._token
        )

    def check_token(self) -> bool:
        """``GET /protected/``: True if the credential is accepted.

        Raises ``UpstreamForbidden`` on 403 (e-mail not verified) and
        ``UpstreamAuthenticationFailed`` on 401.
        """
        self._call("check_token", "GET", Endpoint.PROTECTED)
        return True
