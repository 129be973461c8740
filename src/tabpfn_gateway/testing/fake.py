"""FakeTabPFN: an offline TabPFN upstream (Starlette app) backed by real scikit-learn models."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import random
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import pandas as pd
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tabpfn_gateway.protocol.messages import (
    AsyncSettings,
    ClassifierConfig,
    ClassifierMetadata,
    ClassifierTabPFNConfig,
    EstimateCostRequest,
    EstimateCostResponse,
    FileInfo,
    FileUploadInfo,
    FitRequest,
    FitResponse,
    FitStatus,
    FitTimings,
    GetFitStatusRequest,
    GetFitStatusResponse,
    GetSettingsResponse,
    ModelLimit,
    ModelVersion,
    PredictionTask,
    PredictRequest,
    PredictResponseWithDownloadURI,
    PredictTimings,
    PrepareTestSetUploadRequest,
    PrepareTestSetUploadResponse,
    PrepareTrainSetUploadRequest,
    PrepareTrainSetUploadResponse,
    QuotaOperation,
    RegressorConfig,
    RegressorMetadata,
    RegressorTabPFNConfig,
    SubmitFitJobRequest,
    SubmitFitJobResponse,
)
from tabpfn_gateway.testing import fake_models
from tabpfn_gateway.testing.fake_models import FakeModel, FitFailed

__all__ = ["FakeTabPFN", "LoggedRequest"]

ModelT = TypeVar("ModelT", bound=BaseModel)
STORAGE_PREFIX = "/_fake/storage"
DOWNLOAD_PREFIX = "/_fake/download"
PACKAGE_VERSION = "fake-tabpfn-1"


@dataclass(frozen=True)
class LoggedRequest:
    """One request FakeTabPFN answered: what tests assert on.

    ``token`` is the bearer credential the request carried (``None`` if none): the fake's own
    test tokens, recorded so isolation tests can prove whose request was whose. ``status`` is
    ``0`` for a connection the fake dropped on purpose. ``json`` is the parsed body of a JSON
    request (``None`` otherwise): fidelity tests compare what two clients sent.
    ``headers`` are the request's headers, lower-cased, without ``authorization``.
    """

    method: str
    path: str
    token: str | None
    status: int
    json: Any = field(default=None, compare=False)
    headers: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class _Account:
    limit: int | None
    verified: bool = True
    used: int = 0


@dataclass
class _UploadFile:
    chunks: int
    parts: dict[int, bytes] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.parts) == self.chunks

    def data(self) -> bytes:
        return b"".join(self.parts[i] for i in range(self.chunks))


@dataclass
class _Upload:
    id: str
    token: str
    files: dict[str, _UploadFile]
    dedup_key: tuple[Any, ...] | None
    fitted_train_set_id: str | None = None

    @property
    def complete(self) -> bool:
        return all(f.complete for f in self.files.values())


@dataclass
class _Fit:
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


@dataclass
class _Fault:
    kind: str  # "status" | "drop"
    remaining: int
    status: int = 503
    retry_after: float | None = None
    path: str | None = None


class _Refusal(Exception):
    """An error answer, raised from deep in a handler and rendered by the dispatcher."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"message": message, **extra}


class _DroppedConnection(Exception):
    """Raised after the response started: the server closes the connection mid-answer."""


class FakeTabPFN:
    """The TabPFN cloud API, offline: same endpoints and bodies, scikit-learn models behind.

    ``FakeTabPFN(tokens={"tok-a", "tok-b"}).app`` is an ASGI app; reach it in-process with
    ``httpx.ASGITransport`` or ``tabpfn_gateway.testing.transport.ASGIBridgeTransport``, or on
    loopback with ``tabpfn-gateway fake-upstream --port N --token T``. It serves what
    ``tabpfn-client`` 0.6 calls (``/``, ``/protected/``, ``/retrieve_greeting_messages/``,
    ``/tabpfn/*``, ``/get_api_usage/``) and the signed upload/download URLs it hands out.

    Parameters
    ----------
    tokens:
        Valid tokens: an iterable of tokens, or a mapping token -> credit limit (``None`` for
        unlimited).
    unverified_tokens:
        Tokens answered with 403 (an account whose e-mail is not verified).
    credit_limit:
        Default credit limit of each token given as an iterable (``None``: unlimited). A
        prediction costs ``test rows x columns`` credits; a call that would pass the limit
        answers 429 with a usage body.
    pending_polls:
        How many ``get_fit_status`` polls an async fit stays ``pending`` before ``completed``.
    sync_fit_pending_polls:
        The same for ``/tabpfn/fit``: above 0 it answers ``pending`` and the client polls.
    retry_in_secs:
        The polling hint ``get_fit_status`` sends while pending.
    upload_chunks:
        Signed URLs per uploaded file (each at least one byte).
    upload_url_ttl:
        Seconds a signed upload or download URL stays valid.
    storage_url:
        Origin of the signed URLs (default: the origin the request came to). Set another
        origin (e.g. ``http://storage.invalid``) to test what crosses origins.
    prediction_uri_mode:
        Answer ``predict`` with a signed ``prediction_uri`` instead of the prediction inline.
    latency:
        Seconds each request is delayed.
    error_rate:
        Fraction of requests answered 503 (seeded by ``seed``: reproducible).
    async_threshold_bytes, poll_timeout_secs, dataset_max_size_bytes, max_classes:
        What ``get_settings`` reports (and the fake enforces).
    full_output_max_rows:
        ``test_set_max_rows_w_full_regression_output`` (``tabpfn-client`` splits above it).
    max_iter:
        Boosting rounds of the scikit-learn models: more is slower and more accurate.
    """

    def __init__(
        self,
        tokens: Iterable[str] | Mapping[str, int | None] = (),
        *,
        unverified_tokens: Iterable[str] = (),
        credit_limit: int | None = None,
        pending_polls: int = 0,
        sync_fit_pending_polls: int = 0,
        retry_in_secs: float = 0.0,
        upload_chunks: int = 1,
        upload_url_ttl: float = 3600.0,
        storage_url: str | None = None,
        prediction_uri_mode: bool = False,
        latency: float = 0.0,
        error_rate: float = 0.0,
        seed: int = 0,
        async_threshold_bytes: int = 50 * 1024 * 1024,
        poll_timeout_secs: float = 600.0,
        dataset_max_size_bytes: int = 2 * 1024**3,
        max_classes: int = 10,
        full_output_max_rows: int = 5_000,
        max_iter: int = 30,
    ) -> None:
        self._lock = threading.RLock()
        self._accounts: dict[str, _Account] = {}
        if isinstance(tokens, Mapping):
            for token, limit in tokens.items():
                self.add_token(token, limit=limit)
        else:
            for token in tokens:
                self.add_token(token, limit=credit_limit)
        for token in unverified_tokens:
            self.add_token(token, verified=False)
        self.pending_polls = pending_polls
        self.sync_fit_pending_polls = sync_fit_pending_polls
        self.retry_in_secs = retry_in_secs
        self.upload_chunks = max(1, upload_chunks)
        self.upload_url_ttl = upload_url_ttl
        self.storage_url = storage_url.rstrip("/") if storage_url else None
        self.prediction_uri_mode = prediction_uri_mode
        self.latency = latency
        self.error_rate = error_rate
        self.async_threshold_bytes = async_threshold_bytes
        self.poll_timeout_secs = poll_timeout_secs
        self.dataset_max_size_bytes = dataset_max_size_bytes
        self.max_classes = max_classes
        self.full_output_max_rows = full_output_max_rows
        self.max_iter = max_iter
        self._random = random.Random(seed)
        self._signing_key = secrets.token_bytes(32)
        self._uploads: dict[str, _Upload] = {}
        self._dedup: dict[tuple[Any, ...], str] = {}
        self._fits: dict[str, _Fit] = {}
        self._downloads: dict[str, bytes] = {}
        self._faults: list[_Fault] = []
        self._log: list[LoggedRequest] = []
        self._app = _RequestLog(self, self._build_app())

    def __repr__(self) -> str:
        return f"FakeTabPFN({len(self._accounts)} tokens)"

    @property
    def app(self) -> ASGIApp:
        """The Starlette ASGI application (wrapped in the request log)."""
        return self._app

    # -- tokens and credits --------------------------------------------------------------

    def add_token(self, token: str, *, limit: int | None = None, verified: bool = True) -> None:
        """Register a token: valid (``verified``) or answered 403; ``limit`` in credits."""
        with self._lock:
            self._accounts[token] = _Account(limit=limit, verified=verified)

    def usage(self, token: str) -> int:
        """Credits ``token`` has used."""
        with self._lock:
            return self._accounts[token].used

    def set_usage(self, token: str, used: int) -> None:
        """Set the credits ``token`` has used (e.g. to its limit: an exhausted account)."""
        with self._lock:
            self._accounts[token].used = used

    # -- faults --------------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 503,
        retry_after: float | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests (to paths starting with ``path``) with ``status``.

        ``status=429`` with ``retry_after`` is a rate limit with a ``Retry-After`` header.
        """
        with self._lock:
            self._faults.append(_Fault("status", count, status, retry_after, path))

    def drop_next(self, count: int = 1, *, path: str | None = None) -> None:
        """Drop the connection of the next ``count`` requests mid-answer."""
        with self._lock:
            self._faults.append(_Fault("drop", count, path=path))

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and (fault.path is None or path.startswith(fault.path)):
                    fault.remaining -= 1
                    return fault
            self._faults = [f for f in self._faults if f.remaining > 0]
            if self.error_rate and self._random.random() < self.error_rate:
                return _Fault("status", 1, 503)
        return None

    # -- request log ---------------------------------------------------------------------

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every request answered so far, in order (a copy)."""
        with self._lock:
            return list(self._log)

    def requests_to(self, path: str) -> list[LoggedRequest]:
        """The logged requests whose path starts with ``path``."""
        return [r for r in self.requests if r.path.startswith(path)]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    # -- app -----------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        def route(path: str, handler: Callable[[Request], Awaitable[Any]], method: str) -> Route:
            async def endpoint(request: Request) -> Response:
                try:
                    result = await handler(request)
                except _Refusal as refusal:
                    return JSONResponse(refusal.body, status_code=refusal.status)
                if isinstance(result, Response):
                    return result
                if isinstance(result, BaseModel):
                    return _json(result.model_dump(mode="json", exclude_none=True))
                return _json(result)

            return Route(path, endpoint, methods=[method])

        routes = [
            route("/", self._root, "GET"),
            route("/protected/", self._protected, "GET"),
            route("/retrieve_greeting_messages/", self._greetings, "GET"),
            route("/tabpfn/get_settings", self._get_settings, "GET"),
            route("/tabpfn/prepare_train_set_upload", self._prepare_train, "POST"),
            route("/tabpfn/fit", self._fit, "POST"),
            route("/tabpfn/submit_fit_job", self._submit_fit_job, "POST"),
            route("/tabpfn/get_fit_status", self._get_fit_status, "POST"),
            route("/tabpfn/prepare_test_set_upload", self._prepare_test, "POST"),
            route("/tabpfn/predict", self._predict, "POST"),
            route("/get_api_usage/", self._get_api_usage, "POST"),
            route("/tabpfn/estimate_cost", self._estimate_cost, "POST"),
            route(STORAGE_PREFIX + "/{upload_id}/{name}/{index:int}", self._store_chunk, "PUT"),
            route(DOWNLOAD_PREFIX + "/{download_id}", self._download, "GET"),
        ]
        return Starlette(routes=routes)

    # -- helpers -------------------------------------------------------------------------

    def _account(self, request: Request, *, allow_over_limit: bool = True) -> str:
        token = _bearer(request.headers.get("authorization"))
        with self._lock:
            account = self._accounts.get(token) if token is not None else None
            if token is None or account is None:
                raise _Refusal(401, "Invalid or missing access token.")
            if not account.verified:
                raise _Refusal(403, "Please verify your e-mail address before using the API.")
            if not allow_over_limit and account.limit is not None and account.used >= account.limit:
                raise _Refusal(429, "Usage limit reached.", **self._usage_body(account))
        return token

    def _usage_body(self, account: _Account) -> dict[str, Any]:
        reset = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
        return {
            "error_code": "USAGE_LIMIT_REACHED",
            "current_usage": account.used,
            "usage_limit": -1 if account.limit is None else account.limit,
            "reset_time": reset.isoformat(),
        }

    def _charge(self, token: str, credits: int) -> None:
        with self._lock:
            account = self._accounts[token]
            if account.limit is not None and account.used + credits > account.limit:
                raise _Refusal(
                    429,
                    f"Usage limit reached: this call needs {credits} credits.",
                    **self._usage_body(account),
                )
            account.used += credits

    def _sign(self, method: str, path: str, expires: int) -> str:
        message = f"{method}\n{path}\n{expires}".encode()
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    def _signed_url(self, request: Request, method: str, path: str) -> str:
        expires = int(time.time() + self.upload_url_ttl)
        origin = self.storage_url or str(request.base_url).rstrip("/")
        return f"{origin}{path}?expires={expires}&sig={self._sign(method, path, expires)}"

    def _check_signature(self, request: Request) -> None:
        try:
            expires = int(request.query_params.get("expires", ""))
        except ValueError:
            raise _Refusal(403, "Missing or malformed signature.") from None
        expected = self._sign(request.method, request.url.path, expires)
        if not hmac.compare_digest(expected, request.query_params.get("sig", "")):
            raise _Refusal(403, "Invalid signature.")
        if expires < time.time():
            raise _Refusal(403, "The signed URL has expired.")

    def _new_upload(
        self,
        request: Request,
        token: str,
        files: Mapping[str, FileInfo],
        dedup_key: tuple[Any, ...] | None,
        fitted_train_set_id: str | None = None,
    ) -> tuple[_Upload, dict[str, FileUploadInfo]]:
        upload_id = str(uuid.uuid4())
        upload = _Upload(upload_id, token, {}, dedup_key, fitted_train_set_id)
        infos: dict[str, FileUploadInfo] = {}
        for name, info in files.items():
            chunks = self.upload_chunks
            if info.size_bytes is not None:
                chunks = max(1, min(chunks, info.size_bytes))
            upload.files[name] = _UploadFile(chunks)
            urls = [
                self._signed_url(request, "PUT", f"{STORAGE_PREFIX}/{upload_id}/{name}/{i}")
                for i in range(chunks)
            ]
            infos[name] = FileUploadInfo(
                signed_urls=urls,
                expires_at=time.time() + self.upload_url_ttl,
                required_headers={
                    "Content-Type": "application/octet-stream",
                    "X-Goog-Meta-Fake-Upload-Id": upload_id,
                },
            )
        with self._lock:
            self._uploads[upload_id] = upload
        return upload, infos

    def _complete_upload(self, upload_id: str, token: str) -> _Upload:
        with self._lock:
            upload = self._uploads.get(upload_id)
        if upload is None or upload.token != token:
            raise _Refusal(404, "No such upload.", error_code="NOT_FOUND")
        if not upload.complete:
            raise _Refusal(400, "The upload is not complete: PUT every chunk first.")
        return upload

    def _fit_of(self, fitted_id: Any, token: str) -> _Fit:
        with self._lock:
            fit = self._fits.get(str(fitted_id))
        if fit is None or fit.token != token:
            # Someone else's model is as invisible as a missing one.
            raise _Refusal(404, f"Fitted model {fitted_id} not found.", error_code="NOT_FOUND")
        return fit

    # -- endpoints -----------------------------------------------------------------------

    async def _root(self, request: Request) -> Any:
        return {"message": "FakeTabPFN: an offline stand-in for the TabPFN API."}

    async def _protected(self, request: Request) -> Any:
        self._account(request)
        return {"message": "Welcome to the protected area."}

    async def _greetings(self, request: Request) -> Any:
        self._account(request)
        return {"messages": []}

    async def _get_settings(self, request: Request) -> Any:
        limit = ModelLimit(
            train_set_max_rows=100_000,
            train_set_max_cells=50_000_000,
            train_set_max_upload_cells=100_000_000,
            test_set_max_rows=100_000,
            max_classes=self.max_classes,
            max_cols=2_000,
            test_set_max_rows_w_full_regression_output=self.full_output_max_rows,
            predict_row_pairs_budget=250_000 * 1_000_000,
            test_set_max_cells=100_000_000,
        )
        return GetSettingsResponse(
            default_model_version=ModelVersion.V2_5,
            max_model_limit=limit,
            model_limits={version: limit for version in ModelVersion},
            dataset_max_size_bytes=self.dataset_max_size_bytes,
            async_settings=AsyncSettings(
                use_above_trainset_size_bytes=self.async_threshold_bytes,
                poll_timeout_secs=self.poll_timeout_secs,
            ),
        )

    async def _prepare_train(self, request: Request) -> Any:
        token = self._account(request)
        req = await _body(request, PrepareTrainSetUploadRequest)
        dedup_key = None
        if req.x_train_info.hash and req.y_train_info.hash:
            dedup_key = ("train", token, req.x_train_info.hash, req.y_train_info.hash)
            with self._lock:
                existing = self._dedup.get(dedup_key)
            if existing is not None and not req.force_reupload:
                return JSONResponse(
                    {
                        "message": "This train set was uploaded before.",
                        "error_code": "DUPLICATE_TRAIN_SET_UPLOAD",
                        "train_set_upload_id": existing,
                    },
                    status_code=409,
                )
        upload, infos = self._new_upload(
            request, token, {"x_train": req.x_train_info, "y_train": req.y_train_info}, dedup_key
        )
        return PrepareTrainSetUploadResponse(
            train_set_upload_id=uuid.UUID(upload.id),
            x_train_info=infos["x_train"],
            y_train_info=infos["y_train"],
        )

    async def _store_chunk(self, request: Request) -> Any:
        self._check_signature(request)
        upload_id = request.path_params["upload_id"]
        if request.headers.get("x-goog-meta-fake-upload-id") != upload_id:
            raise _Refusal(400, "A required header of the signed URL is missing or wrong.")
        if request.headers.get("content-type") != "application/octet-stream":
            raise _Refusal(400, "A required header of the signed URL is missing or wrong.")
        data = await request.body()
        with self._lock:
            upload = self._uploads.get(upload_id)
            file = upload.files.get(request.path_params["name"]) if upload else None
            index = request.path_params["index"]
            if upload is None or file is None or not 0 <= index < file.chunks:
                raise _Refusal(404, "No such upload URL.")
            file.parts[index] = data
            if upload.complete and upload.dedup_key is not None:
                self._dedup.setdefault(upload.dedup_key, upload.id)
        return Response(status_code=200)

    async def _train(
        self, upload: _Upload, task: str, req: FitRequest | SubmitFitJobRequest
    ) -> _Fit:
        started = time.perf_counter()

        def work() -> tuple[FakeModel | None, str | None, float]:
            x = pd.read_parquet(io.BytesIO(upload.files["x_train"].data()))
            y = pd.read_parquet(io.BytesIO(upload.files["y_train"].data()))
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
                    max_classes=self.max_classes,
                    max_iter=self.max_iter,
                    random_state=random_state or 0,
                )
            except FitFailed as exc:
                return None, str(exc), transformed
            return model, None, transformed

        model, error, transformed = await anyio.to_thread.run_sync(work)
        now = time.perf_counter()
        return _Fit(
            id=str(uuid.uuid4()),
            token=upload.token,
            task=task,
            model=model,
            error=error,
            pending_polls=0,
            retry_in_secs=self.retry_in_secs,
            submitted=time.monotonic(),
            transform_s=transformed - started,
            fit_s=now - transformed,
        )

    def _timings(self, fit: _Fit, *, done: bool) -> FitTimings:
        elapsed = time.monotonic() - fit.submitted + fit.transform_s + fit.fit_s
        if not done:
            return FitTimings(elapsed_s=elapsed)
        return FitTimings(
            elapsed_s=elapsed,
            queue_wait_s=0.0,
            train_set_transform_s=fit.transform_s,
            fit_s=fit.fit_s,
        )

    async def _start_fit(
        self, request: Request, model: type[FitRequest] | type[SubmitFitJobRequest]
    ) -> _Fit:
        token = self._account(request, allow_over_limit=False)
        req = await _body(request, model)
        upload = self._complete_upload(str(req.train_set_upload_id), token)
        task = str(PredictionTask(req.task_config.task).value)
        fit = await self._train(upload, task, req)
        with self._lock:
            self._fits[fit.id] = fit
        return fit

    async def _fit(self, request: Request) -> Any:
        fit = await self._start_fit(request, FitRequest)
        if fit.error is not None and self.sync_fit_pending_polls == 0:
            raise _Refusal(400, f"The fit failed: {fit.error}", error_code="FIT_FAILED")
        fit.pending_polls = self.sync_fit_pending_polls
        done = fit.pending_polls == 0
        return FitResponse(
            fitted_train_set_id=uuid.UUID(fit.id),
            status=FitStatus.COMPLETED if done else FitStatus.PENDING,
            timings=self._timings(fit, done=done),
        )

    async def _submit_fit_job(self, request: Request) -> Any:
        fit = await self._start_fit(request, SubmitFitJobRequest)
        fit.pending_polls = self.pending_polls
        return SubmitFitJobResponse(fitted_train_set_id=uuid.UUID(fit.id))

    async def _get_fit_status(self, request: Request) -> Any:
        token = self._account(request)
        req = await _body(request, GetFitStatusRequest)
        fit = self._fit_of(req.fitted_train_set_id, token)
        with self._lock:
            pending = fit.pending_polls > 0
            if pending:
                fit.pending_polls -= 1
        if pending:
            return GetFitStatusResponse(
                fitted_train_set_id=uuid.UUID(fit.id),
                status=FitStatus.PENDING,
                retry_in_secs=fit.retry_in_secs,
                timings=self._timings(fit, done=False),
            )
        if fit.error is not None:
            return GetFitStatusResponse(
                fitted_train_set_id=uuid.UUID(fit.id),
                status=FitStatus.FAILED,
                error=fit.error,
                error_code="FIT_FAILED",
            )
        return GetFitStatusResponse(
            fitted_train_set_id=uuid.UUID(fit.id),
            status=FitStatus.COMPLETED,
            timings=self._timings(fit, done=True),
        )

    async def _prepare_test(self, request: Request) -> Any:
        token = self._account(request)
        req = await _body(request, PrepareTestSetUploadRequest)
        fitted_id = str(req.fitted_train_set_id)
        self._fit_of(fitted_id, token)
        dedup_key = None
        if req.x_test_info.hash:
            dedup_key = ("test", token, fitted_id, req.x_test_info.hash)
            with self._lock:
                existing = self._dedup.get(dedup_key)
            if existing is not None and not req.force_reupload:
                return JSONResponse(
                    {
                        "message": "This test set was uploaded before.",
                        "error_code": "DUPLICATE_TEST_SET_UPLOAD",
                        "test_set_upload_id": existing,
                    },
                    status_code=409,
                )
        upload, infos = self._new_upload(
            request, token, {"x_test": req.x_test_info}, dedup_key, fitted_id
        )
        return PrepareTestSetUploadResponse(
            test_set_upload_id=uuid.UUID(upload.id), x_test_info=infos["x_test"]
        )

    async def _predict(self, request: Request) -> Any:
        token = self._account(request, allow_over_limit=False)
        req = await _body(request, PredictRequest)
        fit = self._fit_of(req.fitted_train_set_id, token)
        upload = self._complete_upload(str(req.test_set_upload_id), token)
        if upload.fitted_train_set_id != fit.id:
            raise _Refusal(400, "The test set was uploaded for another fitted model.")
        if fit.pending_polls > 0 or fit.model is None:
            raise _Refusal(400, "The fit has not completed.", error_code="FIT_NOT_COMPLETED")
        task_config = req.task_config
        if str(PredictionTask(task_config.task).value) != fit.task:
            raise _Refusal(400, f"This fitted model is for {fit.task}, not {task_config.task}.")
        model = fit.model
        started = time.perf_counter()

        def work() -> tuple[Any, int, int, float]:
            x = pd.read_parquet(io.BytesIO(upload.files["x_test"].data()))
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
                if output == "full" and x.shape[0] > self.full_output_max_rows:
                    raise FitFailed(
                        f"At most {self.full_output_max_rows} rows for the full output."
                    )
                quantiles = params_r.quantiles if params_r else None
                prediction = fake_models.predict_regression(model, x, output, quantiles)
            return prediction, x.shape[0], x.shape[1], transformed

        try:
            prediction, rows, cols, transformed = await anyio.to_thread.run_sync(work)
        except FitFailed as exc:
            raise _Refusal(400, str(exc)) from None
        self._charge(token, rows * cols)
        timings = PredictTimings(
            test_set_transform_queue_wait_s=0.0,
            test_set_transform_s=transformed - started,
            predict_queue_wait_s=0.0,
            predict_s=time.perf_counter() - transformed,
        )
        metadata = self._metadata(task_config, model, rows, cols)
        if self.prediction_uri_mode:
            download_id = str(uuid.uuid4())
            with self._lock:
                self._downloads[download_id] = json.dumps(prediction).encode()
            return PredictResponseWithDownloadURI(
                prediction_uri=self._signed_url(request, "GET", f"{DOWNLOAD_PREFIX}/{download_id}"),
                prediction_uri_expires_in_secs=int(self.upload_url_ttl),
                metadata=metadata,
                timings=timings,
            )
        # Built by hand: validating a 50,000-row prediction through pydantic is slow.
        body = {
            "prediction": prediction,
            "metadata": metadata.model_dump(mode="json", exclude_none=True),
            "timings": timings.model_dump(mode="json", exclude_none=True),
        }
        return _json(body)

    def _metadata(
        self,
        task_config: ClassifierConfig | RegressorConfig,
        model: FakeModel,
        rows: int,
        cols: int,
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
                classes=[_json_scalar(c) for c in model.classes],
            )
        reg_config = task_config.tabpfn_config or RegressorTabPFNConfig()
        return RegressorMetadata(
            **common, n_estimators=reg_config.n_estimators or 8, tabpfn_config=reg_config
        )

    async def _download(self, request: Request) -> Any:
        self._check_signature(request)
        with self._lock:
            data = self._downloads.get(request.path_params["download_id"])
        if data is None:
            raise _Refusal(404, "No such download.")
        return Response(data, media_type="application/json")

    async def _get_api_usage(self, request: Request) -> Any:
        token = self._account(request)
        with self._lock:
            body = self._usage_body(self._accounts[token])
        body.pop("error_code")
        return body

    async def _estimate_cost(self, request: Request) -> Any:
        self._account(request)
        req = await _body(request, EstimateCostRequest)
        rows = req.test_rows if req.test_rows else req.train_rows
        inputs = req.model_copy(
            update={
                "model_version": req.model_version or ModelVersion.V2_5,
                "operation": req.operation or QuotaOperation.PREDICT,
                "n_estimators": req.n_estimators or 8,
                "test_rows": req.test_rows or 0,
            }
        )
        return EstimateCostResponse(
            estimated_cost=rows * req.raw_columns,
            pricing_version="fake-legacy-v2",
            inputs=inputs,
        )


class _RequestLog:
    """ASGI middleware: latency, injected faults, and the request log of its FakeTabPFN."""

    def __init__(self, fake: FakeTabPFN, app: ASGIApp) -> None:
        self._fake = fake
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        fake = self._fake
        headers = dict(scope.get("headers") or [])
        token = _bearer(headers.get(b"authorization", b"").decode("latin-1") or None)
        method, path = scope["method"], scope["path"]
        status = 0
        is_json = headers.get(b"content-type", b"").startswith(b"application/json")
        body_parts: list[bytes] = []

        async def logging_receive() -> Message:
            message = await receive()
            if is_json and message["type"] == "http.request":
                body_parts.append(message.get("body", b""))
            return message

        async def logging_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if fake.latency:
                await anyio.sleep(fake.latency)
            fault = fake._take_fault(path)
            if fault is not None and fault.kind == "drop":
                # Promise a body, then die: the client sees the connection close mid-answer.
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-length", b"1000")],
                    }
                )
                raise _DroppedConnection("FakeTabPFN dropped this connection on purpose.")
            if fault is not None:
                fault_headers = {}
                if fault.retry_after is not None:
                    fault_headers["Retry-After"] = f"{fault.retry_after:g}"
                body = {"message": f"Injected fault: HTTP {fault.status}."}
                response = JSONResponse(body, fault.status, headers=fault_headers)
                await response(scope, logging_receive, logging_send)
                return
            await self._app(scope, logging_receive, logging_send)
        finally:
            fake._record(
                LoggedRequest(
                    method,
                    path,
                    token,
                    status,
                    json=_parse_json(b"".join(body_parts)) if is_json else None,
                    headers={
                        k.decode("latin-1"): v.decode("latin-1")
                        for k, v in headers.items()
                        if k != b"authorization"
                    },
                )
            )


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


async def _body(request: Request, model: type[ModelT]) -> ModelT:
    raw = await request.body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        detail = [
            {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
            for err in exc.errors()
        ]
        raise _Refusal(422, "The request body does not fit the schema.", detail=detail) from None


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), allow_nan=False),
        status_code=status,
        media_type="application/json",
    )


def _json_scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
