"""FakeTabPFN: an offline TabPFN upstream (Starlette app) backed by real scikit-learn models.

This module routes requests; the parts live in ``tabpfn_gateway.testing._fake``: the account
ledger, injected faults, signed-URL storage, the fit state machine and prediction.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import anyio
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tabpfn_gateway.protocol.messages import (
    AsyncSettings,
    EstimateCostRequest,
    EstimateCostResponse,
    FitRequest,
    FitResponse,
    FitStatus,
    GetFitStatusRequest,
    GetSettingsResponse,
    ModelLimit,
    ModelVersion,
    PredictionTask,
    PredictRequest,
    PredictResponseWithDownloadURI,
    PrepareTestSetUploadRequest,
    PrepareTestSetUploadResponse,
    PrepareTrainSetUploadRequest,
    PrepareTrainSetUploadResponse,
    QuotaOperation,
    SubmitFitJobRequest,
    SubmitFitJobResponse,
)
from tabpfn_gateway.testing._fake.common import (
    DroppedConnection,
    LoggedRequest,
    Refusal,
    bearer,
    json_response,
    parse_body,
    parse_json,
)
from tabpfn_gateway.testing._fake.faults import Faults
from tabpfn_gateway.testing._fake.fits import Fit, FitJobs
from tabpfn_gateway.testing._fake.ledger import Ledger
from tabpfn_gateway.testing._fake.prediction import PACKAGE_VERSION, predict
from tabpfn_gateway.testing._fake.storage import DOWNLOAD_PREFIX, STORAGE_PREFIX, SignedStorage

__all__ = ["DOWNLOAD_PREFIX", "PACKAGE_VERSION", "STORAGE_PREFIX", "FakeTabPFN", "LoggedRequest"]


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
    keep_requests:
        How many answered requests ``requests`` keeps, the most recent (None: all of them,
        for tests to read; 0: none, for a long-running server nobody reads, whose every
        kept request the garbage collector would walk again and again).
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
        keep_requests: int | None = None,
    ) -> None:
        if keep_requests is not None and keep_requests < 0:
            raise ValueError("keep_requests must be None or at least 0.")
        self._lock = threading.Lock()
        self._ledger = Ledger()
        if isinstance(tokens, Mapping):
            for token, limit in tokens.items():
                self.add_token(token, limit=limit)
        else:
            for token in tokens:
                self.add_token(token, limit=credit_limit)
        for token in unverified_tokens:
            self.add_token(token, verified=False)
        self._faults = Faults(error_rate=error_rate, seed=seed)
        self._storage = SignedStorage()
        self._fits = FitJobs()
        self._log: deque[LoggedRequest] = deque(maxlen=keep_requests)
        self.keeps_requests = keep_requests != 0
        # Knobs tests turn between calls: read when a request needs them.
        self.pending_polls = pending_polls
        self.sync_fit_pending_polls = sync_fit_pending_polls
        self.retry_in_secs = retry_in_secs
        self.upload_chunks = max(1, upload_chunks)
        self.upload_url_ttl = upload_url_ttl
        self.storage_url = storage_url.rstrip("/") if storage_url else None
        self.prediction_uri_mode = prediction_uri_mode
        self.latency = latency
        self.async_threshold_bytes = async_threshold_bytes
        self.poll_timeout_secs = poll_timeout_secs
        self.dataset_max_size_bytes = dataset_max_size_bytes
        self.max_classes = max_classes
        self.full_output_max_rows = full_output_max_rows
        self.max_iter = max_iter
        self._app = _RequestLog(self, self._build_app())

    def __repr__(self) -> str:
        return f"FakeTabPFN({len(self._ledger)} tokens)"

    @property
    def app(self) -> ASGIApp:
        """The Starlette ASGI application (wrapped in the request log)."""
        return self._app

    # -- tokens and credits (the ledger) -------------------------------------------------

    def add_token(self, token: str, *, limit: int | None = None, verified: bool = True) -> None:
        """Register a token: valid (``verified``) or answered 403; ``limit`` in credits."""
        self._ledger.add_token(token, limit=limit, verified=verified)

    def usage(self, token: str) -> int:
        """Credits ``token`` has used."""
        return self._ledger.usage(token)

    def set_usage(self, token: str, used: int) -> None:
        """Set the credits ``token`` has used (e.g. to its limit: an exhausted account)."""
        self._ledger.set_usage(token, used)

    # -- faults --------------------------------------------------------------------------

    @property
    def error_rate(self) -> float:
        """Fraction of requests answered 503 (seeded: reproducible)."""
        return self._faults.error_rate

    @error_rate.setter
    def error_rate(self, value: float) -> None:
        self._faults.error_rate = value

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
        self._faults.fail_next(count, status=status, retry_after=retry_after, path=path)

    def drop_next(self, count: int = 1, *, path: str | None = None) -> None:
        """Drop the connection of the next ``count`` requests mid-answer."""
        self._faults.drop_next(count, path=path)

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
        """Forget the requests recorded so far."""
        with self._lock:
            self._log.clear()

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    # -- routing -------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        def route(path: str, handler: Callable[[Request], Awaitable[Any]], method: str) -> Route:
            async def endpoint(request: Request) -> Response:
                try:
                    result = await handler(request)
                except Refusal as refusal:
                    return JSONResponse(refusal.body, status_code=refusal.status)
                if isinstance(result, Response):
                    return result
                if isinstance(result, BaseModel):
                    return json_response(result.model_dump(mode="json", exclude_none=True))
                return json_response(result)

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

    def _account(self, request: Request, *, allow_over_limit: bool = True) -> str:
        return self._ledger.check(
            request.headers.get("authorization"), allow_over_limit=allow_over_limit
        )

    def _origin(self, request: Request) -> str:
        return self.storage_url or str(request.base_url).rstrip("/")

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
        req = await parse_body(request, PrepareTrainSetUploadRequest)
        dedup_key = None
        if req.x_train_info.hash and req.y_train_info.hash:
            dedup_key = ("train", token, req.x_train_info.hash, req.y_train_info.hash)
            existing = self._storage.duplicate_of(dedup_key)
            if existing is not None and not req.force_reupload:
                return JSONResponse(
                    {
                        "message": "This train set was uploaded before.",
                        "error_code": "DUPLICATE_TRAIN_SET_UPLOAD",
                        "train_set_upload_id": existing,
                    },
                    status_code=409,
                )
        upload, infos = self._storage.new_upload(
            self._origin(request),
            token,
            {"x_train": req.x_train_info, "y_train": req.y_train_info},
            dedup_key,
            chunks=self.upload_chunks,
            ttl=self.upload_url_ttl,
        )
        return PrepareTrainSetUploadResponse(
            train_set_upload_id=uuid.UUID(upload.id),
            x_train_info=infos["x_train"],
            y_train_info=infos["y_train"],
        )

    async def _store_chunk(self, request: Request) -> Any:
        self._storage.check_signature(request.method, request.url.path, request.query_params)
        upload_id = request.path_params["upload_id"]
        if request.headers.get("x-goog-meta-fake-upload-id") != upload_id:
            raise Refusal(400, "A required header of the signed URL is missing or wrong.")
        if request.headers.get("content-type") != "application/octet-stream":
            raise Refusal(400, "A required header of the signed URL is missing or wrong.")
        data = await request.body()
        self._storage.store_chunk(
            upload_id, request.path_params["name"], request.path_params["index"], data
        )
        return Response(status_code=200)

    async def _start_fit(
        self, request: Request, model: type[FitRequest] | type[SubmitFitJobRequest]
    ) -> Fit:
        token = self._account(request, allow_over_limit=False)
        req = await parse_body(request, model)
        upload = self._storage.complete_upload(str(req.train_set_upload_id), token)
        task = str(PredictionTask(req.task_config.task).value)
        return await self._fits.train(
            upload,
            task,
            req,
            max_classes=self.max_classes,
            max_iter=self.max_iter,
            retry_in_secs=self.retry_in_secs,
        )

    async def _fit(self, request: Request) -> Any:
        fit = await self._start_fit(request, FitRequest)
        if fit.error is not None and self.sync_fit_pending_polls == 0:
            raise Refusal(400, f"The fit failed: {fit.error}", error_code="FIT_FAILED")
        fit.pending_polls = self.sync_fit_pending_polls
        done = fit.pending_polls == 0
        return FitResponse(
            fitted_train_set_id=uuid.UUID(fit.id),
            status=FitStatus.COMPLETED if done else FitStatus.PENDING,
            timings=fit.timings(done=done),
        )

    async def _submit_fit_job(self, request: Request) -> Any:
        fit = await self._start_fit(request, SubmitFitJobRequest)
        fit.pending_polls = self.pending_polls
        return SubmitFitJobResponse(fitted_train_set_id=uuid.UUID(fit.id))

    async def _get_fit_status(self, request: Request) -> Any:
        token = self._account(request)
        req = await parse_body(request, GetFitStatusRequest)
        return self._fits.poll(self._fits.of(req.fitted_train_set_id, token))

    async def _prepare_test(self, request: Request) -> Any:
        token = self._account(request)
        req = await parse_body(request, PrepareTestSetUploadRequest)
        fitted_id = str(req.fitted_train_set_id)
        self._fits.of(fitted_id, token)
        dedup_key = None
        if req.x_test_info.hash:
            dedup_key = ("test", token, fitted_id, req.x_test_info.hash)
            existing = self._storage.duplicate_of(dedup_key)
            if existing is not None and not req.force_reupload:
                return JSONResponse(
                    {
                        "message": "This test set was uploaded before.",
                        "error_code": "DUPLICATE_TEST_SET_UPLOAD",
                        "test_set_upload_id": existing,
                    },
                    status_code=409,
                )
        upload, infos = self._storage.new_upload(
            self._origin(request),
            token,
            {"x_test": req.x_test_info},
            dedup_key,
            chunks=self.upload_chunks,
            ttl=self.upload_url_ttl,
            fitted_train_set_id=fitted_id,
        )
        return PrepareTestSetUploadResponse(
            test_set_upload_id=uuid.UUID(upload.id), x_test_info=infos["x_test"]
        )

    async def _predict(self, request: Request) -> Any:
        token = self._account(request, allow_over_limit=False)
        req = await parse_body(request, PredictRequest)
        fit = self._fits.of(req.fitted_train_set_id, token)
        upload = self._storage.complete_upload(str(req.test_set_upload_id), token)
        if upload.fitted_train_set_id != fit.id:
            raise Refusal(400, "The test set was uploaded for another fitted model.")
        if fit.pending_polls > 0 or fit.model is None:
            raise Refusal(400, "The fit has not completed.", error_code="FIT_NOT_COMPLETED")
        task_config = req.task_config
        if str(PredictionTask(task_config.task).value) != fit.task:
            raise Refusal(400, f"This fitted model is for {fit.task}, not {task_config.task}.")
        answer = await predict(
            fit.model,
            upload.data("x_test"),
            task_config,
            full_output_max_rows=self.full_output_max_rows,
        )
        self._ledger.charge(token, answer.rows * answer.columns)
        if self.prediction_uri_mode:
            download_id = self._storage.put_download(json.dumps(answer.values).encode())
            uri = self._storage.signed_url(
                self._origin(request),
                "GET",
                f"{DOWNLOAD_PREFIX}/{download_id}",
                self.upload_url_ttl,
            )
            return PredictResponseWithDownloadURI(
                prediction_uri=uri,
                prediction_uri_expires_in_secs=int(self.upload_url_ttl),
                metadata=answer.metadata,
                timings=answer.timings,
            )
        # Built by hand: validating a 50,000-row prediction through pydantic is slow.
        body = {
            "prediction": answer.values,
            "metadata": answer.metadata.model_dump(mode="json", exclude_none=True),
            "timings": answer.timings.model_dump(mode="json", exclude_none=True),
        }
        return json_response(body)

    async def _download(self, request: Request) -> Any:
        self._storage.check_signature(request.method, request.url.path, request.query_params)
        data = self._storage.download(request.path_params["download_id"])
        return Response(data, media_type="application/json")

    async def _get_api_usage(self, request: Request) -> Any:
        return self._ledger.usage_report(self._account(request))

    async def _estimate_cost(self, request: Request) -> Any:
        self._account(request)
        req = await parse_body(request, EstimateCostRequest)
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
        token = bearer(headers.get(b"authorization", b"").decode("latin-1") or None)
        method, path = scope["method"], scope["path"]
        status = 0
        logging = fake.keeps_requests
        is_json = logging and headers.get(b"content-type", b"").startswith(b"application/json")
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
            fault = fake._faults.take(path)
            if fault is not None and fault.kind == "drop":
                # Promise a body, then die: the client sees the connection close mid-answer.
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-length", b"1000")],
                    }
                )
                raise DroppedConnection("FakeTabPFN dropped this connection on purpose.")
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
            if logging:
                fake._record(
                    LoggedRequest(
                        method,
                        path,
                        token,
                        status,
                        json=parse_json(b"".join(body_parts)) if is_json else None,
                        headers={
                            k.decode("latin-1"): v.decode("latin-1")
                            for k, v in headers.items()
                            if k != b"authorization"
                        },
                    )
                )
