"""The wire-level, async face of the gateway: each TabPFN protocol step, checked and metered.

The server's TabPFN-compatible routes call these with the bearer key they received; the
answers are the upstream's own message models, so the routes send them back unchanged
(except upload URLs, which are rewritten to point at the gateway).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import anyio.to_thread
from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from tabpfn_gateway.errors import GatewayError, InvalidRequest, InvalidUpload, PayloadTooLarge
from tabpfn_gateway.gateway._authoriser import Caller, Decision
from tabpfn_gateway.gateway._core import Gateway
from tabpfn_gateway.gateway._forward import Answer, Upstream
from tabpfn_gateway.gateway._metering import Meter
from tabpfn_gateway.gateway._uploads import UPLOAD_PATH_PREFIX, UploadGrant
from tabpfn_gateway.netpolicy import EgressPolicy, filter_upload_headers
from tabpfn_gateway.protocol import _base
from tabpfn_gateway.protocol._base import Endpoint
from tabpfn_gateway.protocol._errors import malformed
from tabpfn_gateway.protocol.messages import (
    DuplicateTestSetErrorResponse,
    DuplicateTrainSetErrorResponse,
    EstimateCostRequest,
    EstimateCostResponse,
    FileUploadInfo,
    FitRequest,
    FitResponse,
    GetFitStatusRequest,
    GetFitStatusResponse,
    GetSettingsResponse,
    PredictRequest,
    PredictResponse,
    PredictResponseWithDownloadURI,
    PrepareTestSetUploadRequest,
    PrepareTestSetUploadResponse,
    PrepareTrainSetUploadRequest,
    PrepareTrainSetUploadResponse,
    SubmitFitJobRequest,
    SubmitFitJobResponse,
)
from tabpfn_gateway.protocol.serialization import parquet_shape

if TYPE_CHECKING:
    from tabpfn_gateway.governance import GovernancePolicy
    from tabpfn_gateway.protocol import AsyncProtocolClient

__all__ = ["AsyncGatewayProxy"]

logger = logging.getLogger(__name__)

_INFERENCE = "inference"
# Enough for the footer of a Parquet file with thousands of columns.
_TAIL_BYTES = 1 << 20
_USAGE = "usage"


class AsyncGatewayProxy:
    """Async protocol steps on behalf of a gateway key (see ``Gateway.proxy``).

    Blocking work (key verification, token decryption, ownership lookups: all cached, so
    usually no I/O) runs in a worker thread; upstream calls go through the shared async
    client with the caller's TabPFN token.
    """

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    # -- authentication ----------------------------------------------------------------------

    async def authenticate(self, api_key: str | SecretStr, *, scope: str | None) -> Caller:
        """The caller holding ``api_key`` (see ``Authoriser.authenticate``)."""
        return await anyio.to_thread.run_sync(
            lambda: self._gateway.authoriser.authenticate(api_key, scope=scope)
        )

    async def _client(
        self, api_key: str | SecretStr, scope: str, *, fit_id: str | UUID | None = None
    ) -> tuple[Caller, AsyncProtocolClient, str | None]:
        gateway = self._gateway
        authoriser, fits = gateway.authoriser, gateway.fits
        fast = authoriser.authorise_from_memory(api_key, scope=scope)
        if fast is not None and (fit_id is None or fits.owner_from_memory(fit_id)):
            # Everything known in memory: no worker thread (a quarter of a small call's cost).
            decision = fast
            owned = None if fit_id is None else fits.check(decision.caller, fit_id)
        else:

            def resolve() -> tuple[Decision, str | None]:
                decision = authoriser.authorise(api_key, scope=scope)
                owned = None if fit_id is None else fits.check(decision.caller, fit_id)
                return decision, owned

            decision, owned = await anyio.to_thread.run_sync(resolve)
        client = gateway.async_upstream.with_token(decision.token, base_url=decision.base_url)
        return decision.caller, client, owned

    async def _resolve(
        self, api_key: str | SecretStr, scope: str, *, fit_id: str | UUID | None = None
    ) -> tuple[Caller, Upstream, str | None]:
        """The caller, its upstream (TabPFN token and cloud URL) and the owned fit id: from
        memory when all of it is known there (no worker thread: the common case), else from
        the store."""
        authoriser, fits = self._gateway.authoriser, self._gateway.fits
        fast = authoriser.authorise_from_memory(api_key, scope=scope)
        if fast is not None and (fit_id is None or fits.owner_from_memory(fit_id)):
            owned = None if fit_id is None else fits.check(fast.caller, fit_id)
            return fast.caller, Upstream(fast.token, fast.base_url), owned

        def resolve() -> tuple[Caller, Upstream, str | None]:
            decision = authoriser.authorise(api_key, scope=scope)
            owned = None if fit_id is None else fits.check(decision.caller, fit_id)
            return decision.caller, Upstream(decision.token, decision.base_url), owned

        return await anyio.to_thread.run_sync(resolve)

    # -- steps -------------------------------------------------------------------------------
    #
    # Each step answers with the upstream's own bytes (checked against its message model,
    # never re-encoded), except where the gateway changes the answer (upload URLs, a
    # prediction fetched from a download URI).

    async def check_token(self, api_key: str | SecretStr) -> bool:
        """``/protected/``: the key is accepted here and its token upstream."""
        caller, upstream, _ = await self._resolve(api_key, _INFERENCE)
        async with self._gateway.ametered(caller, "protected"):
            await self._gateway.forwarder.call("check_token", "GET", Endpoint.PROTECTED, upstream)
            return True

    async def get_settings(self, api_key: str | SecretStr) -> GetSettingsResponse:
        """The upstream's limits (cached by the protocol client per upstream, for every token)."""
        caller, client, _ = await self._client(api_key, _INFERENCE)
        async with self._gateway.ametered(caller, "get_settings"):
            return await client.get_settings()

    async def prepare_train_set_upload(
        self, api_key: str | SecretStr, req: PrepareTrainSetUploadRequest, *, base_url: str
    ) -> Answer:
        """Upload URLs for a train set, rewritten to the gateway; or the upstream's 409."""
        meter = Meter(
            nbytes=_sum_sizes(
                metered_count(req.x_train_info.size_bytes, "x_train_info.size_bytes"),
                metered_count(req.y_train_info.size_bytes, "y_train_info.size_bytes"),
            )
        )
        operation = "prepare_train_set_upload"
        caller, upstream, _ = await self._resolve(api_key, _INFERENCE)
        datasets, x_hash = self._gateway.datasets, req.x_train_info.hash
        # A step of the fit: metrics see it; the fit's one usage record carries its size.
        with self._gateway.step(caller, operation):
            answer = await self._gateway.forwarder.call(
                operation,
                "POST",
                Endpoint.PREPARE_TRAIN,
                upstream,
                body=_encode(req),
                retry=_base.retry_connect_only,
                allowed=(409,),
            )
            if answer.status == 409:
                duplicate = _parse(
                    answer, DuplicateTrainSetErrorResponse.model_validate_json, operation, upstream
                )
                upload_id = duplicate.train_set_upload_id
                datasets.announce(caller.owner_id, str(upload_id), meter.nbytes, x_hash)
                await self._claim_upload(caller, upload_id, "train")
                return answer
            upload = _parse(
                answer, PrepareTrainSetUploadResponse.model_validate_json, operation, upstream
            )
            upload_id = upload.train_set_upload_id
            datasets.announce(caller.owner_id, str(upload_id), meter.nbytes, x_hash)
            # The caller's ownership of the new id is recorded by the upload of its X
            # (``upload``), whose URL below carries the id.
            return _encoded(
                PrepareTrainSetUploadResponse(
                    train_set_upload_id=upload_id,
                    x_train_info=self._rewrite(
                        caller,
                        upstream,
                        upload.x_train_info,
                        "x_train",
                        base_url,
                        upload_id,
                        x_hash=x_hash,
                    ),
                    y_train_info=self._rewrite(
                        caller, upstream, upload.y_train_info, "y_train", base_url, upload_id
                    ),
                )
            )

    async def fit(self, api_key: str | SecretStr, req: FitRequest) -> Answer:
        """``/tabpfn/fit``; the new fit is recorded as the caller's principal's, and metered
        as the one ``fit`` of this user action (with the train set's size)."""
        caller, upstream, _ = await self._resolve(api_key, _INFERENCE)
        await self._check_upload(caller, req.train_set_upload_id)
        meter = self._train_set_meter(req.train_set_upload_id)
        async with self._gateway.ametered(caller, "fit", meter):
            # Retried on connect errors only: every call starts a new (paid) job upstream.
            answer = await self._gateway.forwarder.call(
                "fit",
                "POST",
                Endpoint.FIT,
                upstream,
                body=_encode(req),
                retry=_base.retry_connect_only,
            )
            fitted = _parse(answer, FitResponse.model_validate_json, "fit", upstream)
            await self._claim(caller, fitted.fitted_train_set_id, req.task_config, meter)
            return answer

    async def submit_fit_job(self, api_key: str | SecretStr, req: SubmitFitJobRequest) -> Answer:
        """``/tabpfn/submit_fit_job``; the pending fit is the caller's principal's. Metered as
        ``fit``, like a sync fit: which endpoint a client chose is not a different action."""
        caller, upstream, _ = await self._resolve(api_key, _INFERENCE)
        await self._check_upload(caller, req.train_set_upload_id)
        meter = self._train_set_meter(req.train_set_upload_id)
        async with self._gateway.ametered(caller, "fit", meter):
            answer = await self._gateway.forwarder.call(
                "submit_fit_job",
                "POST",
                Endpoint.SUBMIT_FIT,
                upstream,
                body=_encode(req),
                retry=_base.retry_connect_only,
            )
            submitted = _parse(
                answer, SubmitFitJobResponse.model_validate_json, "submit_fit_job", upstream
            )
            await self._claim(caller, submitted.fitted_train_set_id, req.task_config, meter)
            return answer

    def _train_set_meter(self, upload_id: UUID) -> Meter:
        size = self._gateway.datasets.of(str(upload_id))
        return Meter(rows=size.rows, columns=size.columns, nbytes=size.nbytes)

    async def get_fit_status(
        self, api_key: str | SecretStr, fitted_train_set_id: str | UUID
    ) -> Answer:
        """Status of a fit the caller's principal owns (else ``FittedModelNotFound``)."""
        caller, upstream, fit_id = await self._resolve(
            api_key, _INFERENCE, fit_id=fitted_train_set_id
        )
        forwarder = self._gateway.forwarder
        req = GetFitStatusRequest(
            fitted_train_set_id=_base.as_uuid(fit_id or str(fitted_train_set_id))
        )
        with self._gateway.step(caller, "get_fit_status"):
            # One attempt: the caller polls again (the protocol client's rule).
            answer = await forwarder.call(
                "get_fit_status",
                "POST",
                Endpoint.FIT_STATUS,
                upstream,
                body=_encode(req),
                retry=_base.retry_never,
                fitted_model=True,
                timeout=min(_base.POLL_REQUEST_TIMEOUT, forwarder.options.timeout),
            )
            _parse(answer, GetFitStatusResponse.model_validate_json, "get_fit_status", upstream)
            return answer

    async def prepare_test_set_upload(
        self, api_key: str | SecretStr, req: PrepareTestSetUploadRequest, *, base_url: str
    ) -> Answer:
        """Upload URL for a test set of an owned fit, rewritten; or the upstream's 409."""
        operation = "prepare_test_set_upload"
        caller, upstream, _ = await self._resolve(
            api_key, _INFERENCE, fit_id=req.fitted_train_set_id
        )
        nbytes = metered_count(req.x_test_info.size_bytes, "x_test_info.size_bytes")
        # Its Parquet footer, read as it streams through, prices the prediction before it is
        # forwarded (a duplicate test set reuses the shape seen with its hash).
        x_hash = req.x_test_info.hash
        with self._gateway.step(caller, operation):
            answer = await self._gateway.forwarder.call(
                operation,
                "POST",
                Endpoint.PREPARE_TEST,
                upstream,
                body=_encode(req),
                retry=_base.retry_connect_only,
                allowed=(409,),
                fitted_model=True,
            )
            if answer.status == 409:
                duplicate = _parse(
                    answer, DuplicateTestSetErrorResponse.model_validate_json, operation, upstream
                )
                test_id = duplicate.test_set_upload_id
                self._gateway.datasets.announce(caller.owner_id, str(test_id), nbytes, x_hash)
                await self._claim_upload(caller, test_id, "test")
                return answer
            upload = _parse(
                answer, PrepareTestSetUploadResponse.model_validate_json, operation, upstream
            )
            test_id = upload.test_set_upload_id
            self._gateway.datasets.announce(caller.owner_id, str(test_id), nbytes, x_hash)
            # Ownership is recorded by the upload, as for a train set.
            return _encoded(
                PrepareTestSetUploadResponse(
                    test_set_upload_id=upload.test_set_upload_id,
                    x_test_info=self._rewrite(
                        caller,
                        upstream,
                        upload.x_test_info,
                        "x_test",
                        base_url,
                        test_id,
                        x_hash=x_hash,
                    ),
                )
            )

    async def predict(self, api_key: str | SecretStr, req: PredictRequest) -> Answer:
        """``/tabpfn/predict`` with an owned fit; a download-URI answer is fetched here and
        answered inline, so clients never need to reach the upstream's storage."""
        caller, upstream, fit_id = await self._resolve(
            api_key, _INFERENCE, fit_id=req.fitted_train_set_id
        )
        await self._check_upload(caller, req.test_set_upload_id)
        test_set = self._gateway.datasets.of(str(req.test_set_upload_id))
        # The test set's shape, when it streamed through: what a cell budget reserves.
        meter = Meter(rows=test_set.rows, columns=test_set.columns, nbytes=test_set.nbytes)
        governance = self._gateway.governance
        budgeted = governance is not None and await _wants_price(governance, caller)
        if (
            governance is not None
            and budgeted
            and test_set.rows is not None
            and test_set.columns is not None
        ):
            # Reserved at the upstream's quote for the test set that streamed through.
            quoter = self._gateway.async_upstream.with_token(
                upstream.token, base_url=upstream.base_url
            )
            meter.credits = await governance.aprice(quoter, fit_id, test_set.rows, test_set.columns)
        async with self._gateway.ametered(caller, "predict", meter):
            answer = await self._gateway.forwarder.call(
                "predict", "POST", Endpoint.PREDICT, upstream, body=_encode(req), fitted_model=True
            )
            parsed = _parse(answer, _PREDICT_ANSWER.validate_json, "predict", upstream)
            meter.rows = parsed.metadata.test_set_num_rows
            meter.columns = parsed.metadata.test_set_num_cols
            if governance is not None and (
                budgeted or meter.credits is not None or governance.meter_credits == "always"
            ):
                # The final figure: the quote for what the upstream says it predicted.
                quoter = self._gateway.async_upstream.with_token(
                    upstream.token, base_url=upstream.base_url
                )
                meter.credits = await governance.aprice(quoter, fit_id, meter.rows, meter.columns)
            if isinstance(parsed, PredictResponse):
                return answer
            await self._egress(upstream.base_url).acheck(parsed.prediction_uri)
            client = self._gateway.async_upstream
            prediction = await client.download_prediction(parsed.prediction_uri)
            return _encoded(
                PredictResponse(
                    prediction=prediction, metadata=parsed.metadata, timings=parsed.timings
                )
            )

    async def get_api_usage(self, api_key: str | SecretStr) -> Answer:
        """The upstream account's usage, for the credential the key is bound to."""
        caller, upstream, _ = await self._resolve(api_key, _USAGE)
        async with self._gateway.ametered(caller, "get_api_usage"):
            answer = await self._gateway.forwarder.call(
                "get_api_usage", "POST", Endpoint.USAGE, upstream
            )
            _parse(answer, _JSON_OBJECT.validate_json, "get_api_usage", upstream)
            return answer

    async def estimate_cost(self, api_key: str | SecretStr, req: EstimateCostRequest) -> Answer:
        """A quote from dimensions only (the counts are bounded before they are metered)."""
        rows = metered_count(req.train_rows, "train_rows")
        metered_count(req.raw_columns, "raw_columns")
        metered_count(req.test_rows, "test_rows")
        caller, upstream, _ = await self._resolve(api_key, _INFERENCE)
        async with self._gateway.ametered(caller, "estimate_cost", Meter(rows=rows)):
            answer = await self._gateway.forwarder.call(
                "estimate_cost", "POST", Endpoint.ESTIMATE_COST, upstream, body=_encode(req)
            )
            _parse(answer, EstimateCostResponse.model_validate_json, "estimate_cost", upstream)
            return answer

    # -- uploads -----------------------------------------------------------------------------

    async def upload(
        self,
        token: str,
        body: AsyncIterable[bytes],
        *,
        content_length: int | None = None,
    ) -> int:
        """Stream one upload through to the upstream's signed URL; return the bytes sent.

        ``token`` is the last path segment of an upload URL this gateway handed out. The body
        is forwarded chunk by chunk (never held whole); past ``max_upload_bytes`` it is cut
        off with ``PayloadTooLarge``. The key the URL was issued to must still be usable.
        """
        gateway = self._gateway
        grant = gateway.uploads.open(token)
        caller = gateway.authoriser.key_alive_from_memory(grant.key_id)
        if caller is None:
            caller = await anyio.to_thread.run_sync(
                lambda: gateway.authoriser.check_key_alive(grant.key_id)
            )
        if caller.owner_id != grant.owner_id or caller.credential_id != grant.credential_id:
            raise InvalidUpload()
        # A URL issued before its credential was removed stops working with the credential.
        upstream = gateway.authoriser.upstream_from_memory(caller)
        if upstream is None:
            upstream = await anyio.to_thread.run_sync(
                lambda: gateway.authoriser.upload_upstream(caller)
            )
        limit = gateway.settings.max_upload_bytes
        if content_length is not None and content_length > limit:
            raise PayloadTooLarge(f"Uploads are limited to {limit} bytes.")
        await self._egress(upstream[1]).acheck(grant.upstream_url)
        counted = _CountingBody(body, limit)
        headers = filter_upload_headers(grant.upstream_headers)
        if content_length is not None:
            headers["Content-Length"] = str(content_length)
        counted.keep_tail = gateway.datasets.wants_shape(token)
        claiming = self._claim_while_uploading(caller, grant)
        with gateway.step(caller, "upload"):
            try:
                await gateway.forwarder.put_signed(grant.upstream_url, counted.iterate(), headers)
            except GatewayError:
                # The body's own failure (too large, client gone) is the real cause.
                if counted.failure is not None:
                    raise counted.failure from None
                raise
            if counted.failure is not None:
                raise counted.failure
            if claiming is not None:
                # Recorded before the answer: the fit or prediction that follows may reach
                # any replica, and a store outage is this upload's 503, not a later 404.
                await claiming
        if counted.keep_tail:
            # The last chunk of X ends with its Parquet footer: rows and columns for the fit's
            # one usage record.
            gateway.datasets.learn_shape(token, *counted.read_shape())
        return counted.count

    def _rewrite(
        self,
        caller: Caller,
        upstream: Upstream,
        info: FileUploadInfo,
        dataset: str,
        base_url: str,
        upload_id: UUID,
        *,
        x_hash: str | None = None,
    ) -> FileUploadInfo:
        """Upload URLs pointing at this gateway, for a file of ``upload_id``. A train or test
        set's X (``dataset`` ``x_*``) has its shape read as it streams (with ``x_hash``, its
        content hash): the usage record wants it."""
        base = (self._gateway.settings.public_url or base_url).rstrip("/")
        urls: list[str] = []
        expires_at = info.expires_at
        upstream_headers = filter_upload_headers(info.required_headers)
        egress = self._egress(upstream.base_url)
        for signed_url in info.signed_urls:
            # Refused now rather than when the caller's data is already streaming.
            egress.check_url(signed_url)
            token, token_expiry = self._gateway.uploads.seal(
                upstream_url=signed_url,
                upstream_headers=upstream_headers,
                key_id=caller.key_id,
                owner_id=caller.owner_id,
                credential_id=caller.credential_id,
                dataset=dataset,
                upload_id=str(upload_id),
                upstream_expires_at=info.expires_at,
            )
            urls.append(f"{base}{UPLOAD_PATH_PREFIX}{token}")
            if dataset.startswith("x_"):
                self._gateway.datasets.expect_x(token, caller.owner_id, str(upload_id), x_hash)
            expires_at = min(expires_at, token_expiry)
        # Only the content type is the client's business; the upstream's other required
        # headers are added again on the way out.
        client_headers = {
            name: value
            for name, value in info.required_headers.items()
            if name.lower() == "content-type"
        }
        return FileUploadInfo(
            signed_urls=urls, expires_at=expires_at, required_headers=client_headers
        )

    def _egress(self, base_url: str | None) -> EgressPolicy:
        """The egress policy for a credential's signed URLs: the gateway's, plus the origin
        of the credential's own cloud URL (never another credential's)."""
        egress = self._gateway.egress
        return egress if base_url is None else egress.with_upstream(base_url)

    async def _claim_upload(self, caller: Caller, upload_id: UUID | str, kind: str) -> None:
        owners = self._gateway.upload_owners
        await anyio.to_thread.run_sync(lambda: owners.claim(caller, upload_id, kind))

    def _claim_while_uploading(
        self, caller: Caller, grant: UploadGrant
    ) -> asyncio.Future[None] | None:
        """The caller's ownership of the upload ``grant`` is a file of, written to the store
        while X streams (a worker thread's write beside the upload, instead of one more wait
        before ``prepare_*_upload`` answers); None for y, or if it is known already."""
        upload_id = grant.upload_id
        # X's upload records it: no fit or prediction works without X, and y's upload
        # (often at the same time as X's) need not write it again.
        if (
            upload_id is None
            or not grant.dataset.startswith("x_")
            or self._gateway.upload_owners.from_memory(caller, upload_id)
        ):
            return None
        kind = "test" if grant.dataset == "x_test" else "train"
        claiming = asyncio.ensure_future(self._claim_upload(caller, upload_id, kind))
        # An upload that fails does not wait for it; its outcome is still collected.
        claiming.add_done_callback(_collect)
        return claiming

    async def _check_upload(self, caller: Caller, upload_id: UUID) -> None:
        owners = self._gateway.upload_owners
        if not owners.from_memory(caller, upload_id):
            await anyio.to_thread.run_sync(lambda: owners.check(caller, upload_id))

    async def _claim(self, caller: Caller, fit_id: UUID, task_config: Any, meter: Meter) -> None:
        task = getattr(getattr(task_config, "task", None), "value", "unknown")
        await anyio.to_thread.run_sync(
            lambda: self._gateway.claim_fit(
                caller, fit_id, task=str(task), rows=meter.rows, columns=meter.columns
            )
        )


class _CountingBody:
    """Passes chunks through, counting them; stops past ``limit``. Remembers why it stopped,
    because the upstream client may report the interruption as an upstream failure. With
    ``keep_tail``, keeps the last ``_TAIL_BYTES`` (where a Parquet file keeps its footer) and
    reads the file's ``shape`` from them once the body has ended."""

    def __init__(self, body: AsyncIterable[bytes], limit: int) -> None:
        self._body = body
        self._limit = limit
        self.count = 0
        self.failure: GatewayError | None = None
        self.keep_tail = False
        self.tail = bytearray()
        self.shape: tuple[int, int | None] | None = None

    async def iterate(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._body:
                self.count += len(chunk)
                if self.count > self._limit:
                    raise PayloadTooLarge(f"Uploads are limited to {self._limit} bytes.")
                if chunk and self.keep_tail:
                    self.tail += chunk
                    if len(self.tail) > 2 * _TAIL_BYTES:
                        del self.tail[: len(self.tail) - _TAIL_BYTES]
                if chunk:
                    yield chunk
        except GatewayError as exc:
            self.failure = exc
            raise
        if self.keep_tail:
            # The last chunk is on its way to storage already: the footer is read while the
            # storage takes it in, not after it has answered (0.1 to 0.35 ms of pyarrow).
            self.shape = parquet_shape(bytes(self.tail))

    def read_shape(self) -> tuple[int, int | None]:
        """Rows and columns from the kept tail's Parquet footer, once the body has ended."""
        # The storage may answer before the iteration has resumed past the last chunk.
        if self.shape is None:
            self.shape = parquet_shape(bytes(self.tail))
        return self.shape


# Any count a caller states that ends up in a usage row: far above any real dataset, far below
# what a BIGINT column (or a float) cannot hold.
MAX_METERED_COUNT = 2**53


def _collect(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and done.exception() is not None:
        logger.debug("an upload's ownership was not recorded: %s", done.exception())


def metered_count(value: int | None, name: str) -> int | None:
    """``value`` if it is a count the meter can record; ``InvalidRequest`` (400) if not."""
    if value is None:
        return None
    if not 0 <= value <= MAX_METERED_COUNT:
        raise InvalidRequest(f"{name} must be an integer from 0 to {MAX_METERED_COUNT}.")
    return value


_PREDICT_ANSWER: TypeAdapter[PredictResponse | PredictResponseWithDownloadURI] = TypeAdapter(
    PredictResponse | PredictResponseWithDownloadURI
)
_JSON_OBJECT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])
M = TypeVar("M")


def _encode(request: BaseModel) -> bytes:
    # The vendor's field conventions (no nulls), straight to bytes in pydantic-core.
    try:
        return request.model_dump_json(exclude_none=True).encode()
    except PydanticSerializationError:  # e.g. a lone surrogate: not valid text on the wire
        raise InvalidRequest("A value in the request is not valid text.") from None


def _encoded(answer: BaseModel) -> Answer:
    return Answer(200, {}, answer.model_dump_json(exclude_unset=True).encode())


def _parse(answer: Answer, validate: Callable[[bytes], M], operation: str, upstream: Upstream) -> M:
    """``answer``'s body checked against the protocol (``validate``: a message model's
    ``model_validate_json``); a misfit is ``MalformedResponse``."""
    try:
        return validate(answer.content)
    except ValidationError as exc:
        raise malformed(
            answer.as_httpx(),
            operation,
            _describe(exc),
            secret=upstream.token.get_secret_value(),
        ) from None


def _describe(exc: ValidationError) -> str:
    # Field locations and messages only: input values could be large or sensitive.
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<body>'}: {err['msg']}"
        for err in exc.errors()[:5]
    )


def _sum_sizes(*sizes: int | None) -> int | None:
    known = [s for s in sizes if s is not None]
    return sum(known) if known else None


async def _wants_price(governance: GovernancePolicy, caller: Caller) -> bool:
    """Whether a prediction should be priced: from the policy cache, else off the loop."""
    cached = governance.wants_price_cached(caller)
    if cached is not None:
        return cached
    return await anyio.to_thread.run_sync(governance.wants_price, caller)
