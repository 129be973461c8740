"""The AsyncProtocolClient against FakeTabPFN over httpx.ASGITransport (no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import anyio
import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression

from tabpfn_gateway.errors import (
    ConfigurationError,
    UpstreamError,
    UpstreamFittedModelNotFound,
    UpstreamUnavailable,
)
from tabpfn_gateway.protocol import AsyncProtocolClient
from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    ClassifierFitTaskConfig,
    ClassifierPredictParams,
    FileInfo,
    FitRequest,
    FitStatus,
    GetFitStatusResponse,
    PrepareTrainSetUploadRequest,
    PrepareTrainSetUploadResponse,
    RegressorConfig,
    RegressorFitTaskConfig,
    RegressorPredictParams,
)
from tabpfn_gateway.protocol.serialization import to_parquet
from tabpfn_gateway.testing.fake import STORAGE_PREFIX, FakeTabPFN

BASE = "http://tabpfn.test"
T = TypeVar("T")


class RecordingTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.seen: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return await self.inner.handle_async_request(request)


def run(
    fake: FakeTabPFN,
    scenario: Callable[[AsyncProtocolClient], Awaitable[T]],
    **options: object,
) -> tuple[T, RecordingTransport]:
    transport = RecordingTransport(httpx.ASGITransport(fake.app))

    async def main() -> T:
        async with AsyncProtocolClient(
            BASE,
            "tok-a",
            transport=transport,
            retry_wait=0,
            **options,  # type: ignore[arg-type]
        ) as client:
            return await scenario(client)

    return anyio.run(main), transport


def data(rows: int = 200) -> tuple[np.ndarray, np.ndarray]:
    return make_classification(rows, 6, random_state=1)


PROBAS = ClassifierConfig(predict_params=ClassifierPredictParams(output_type="probas"))


def test_classifier_and_regressor_round_trip() -> None:
    fake = FakeTabPFN(["tok-a"])
    X, y = data()
    Xr, yr = make_regression(150, 4, random_state=0)

    async def scenario(client: AsyncProtocolClient) -> tuple[object, object]:
        fitted = await client.fit(X, y, ClassifierFitTaskConfig())
        proba = await client.predict(fitted.fitted_train_set_id, X[:10], PROBAS)
        reg = await client.fit(Xr, yr, RegressorFitTaskConfig())
        full = await client.predict(
            reg.fitted_train_set_id,
            Xr[:4],
            RegressorConfig(predict_params=RegressorPredictParams(output_type="full")),
        )
        return proba.y_pred, full.y_pred

    (proba, full), transport = run(fake, scenario)
    assert isinstance(proba, np.ndarray)
    assert proba.shape == (10, 2)
    assert isinstance(full, dict)
    assert full["logits"].shape == (4, 100)
    storage = [r for r in transport.seen if r.url.path.startswith(STORAGE_PREFIX)]
    assert storage
    assert all("authorization" not in r.headers for r in storage)


def test_async_fit_with_polling_and_dedup() -> None:
    fake = FakeTabPFN(["tok-a"], pending_polls=1)
    X, y = data()
    seen: list[GetFitStatusResponse] = []

    async def scenario(client: AsyncProtocolClient) -> None:
        await client.fit(X, y, ClassifierFitTaskConfig(), api_mode="async", on_poll=seen.append)
        await client.fit(X, y, ClassifierFitTaskConfig(), api_mode="async")

    run(fake, scenario)
    assert [s.status for s in seen] == [FitStatus.PENDING, FitStatus.COMPLETED]
    prepares = [r.status for r in fake.requests if r.path.endswith("prepare_train_set_upload")]
    assert prepares == [200, 409]
    assert len(fake.requests_to(STORAGE_PREFIX)) == 2  # the second fit uploaded nothing


def test_put_signed_url_streams_an_async_iterable_chunk_by_chunk() -> None:
    fake = FakeTabPFN(["tok-a"])
    X, y = data(120)
    x_bytes, _ = to_parquet(pd.DataFrame(X))
    y_bytes, _ = to_parquet(pd.DataFrame(y))
    sent_pieces: list[int] = []

    async def pieces(payload: bytes, size: int) -> AsyncIterator[bytes]:
        for start in range(0, len(payload), size):
            sent_pieces.append(start)
            yield payload[start : start + size]

    async def scenario(client: AsyncProtocolClient) -> object:
        prepared = await client.prepare_train_set_upload(
            PrepareTrainSetUploadRequest(
                x_train_info=FileInfo(format="parquet", size_bytes=len(x_bytes)),
                y_train_info=FileInfo(format="parquet", size_bytes=len(y_bytes)),
            )
        )
        assert isinstance(prepared, PrepareTrainSetUploadResponse)
        for payload, info in ((x_bytes, prepared.x_train_info), (y_bytes, prepared.y_train_info)):
            await client.put_signed_url(
                info.signed_urls[0], pieces(payload, 512), info.required_headers
            )
        fitted = await client.fit_step(
            FitRequest(
                train_set_upload_id=prepared.train_set_upload_id,
                task_config=ClassifierFitTaskConfig(),
            )
        )
        result = await client.predict(fitted.fitted_train_set_id, X[:5], PROBAS)
        return result.y_pred

    proba, _ = run(fake, scenario)
    assert isinstance(proba, np.ndarray)
    assert proba.shape == (5, 2)  # the fake fitted on the streamed bytes, reassembled
    assert len(sent_pieces) > 2


def test_parallel_chunks_respect_the_concurrency_limit_and_fail_as_one_error() -> None:
    fake = FakeTabPFN(["tok-a"], upload_chunks=5)
    X, y = data()

    async def ok(client: AsyncProtocolClient) -> None:
        await client.fit(X, y, ClassifierFitTaskConfig())

    run(fake, ok, upload_concurrency=2)
    assert len(fake.requests_to(STORAGE_PREFIX)) == 10

    fake.fail_next(20, status=400, path=STORAGE_PREFIX)

    async def failing(client: AsyncProtocolClient) -> None:
        await client.fit(X + 1, y, ClassifierFitTaskConfig())

    with pytest.raises(UpstreamError) as caught:
        run(fake, failing, upload_concurrency=2)
    assert type(caught.value) is UpstreamError  # not an ExceptionGroup
    assert caught.value.status_code == 400


def test_predict_retries_transient_failures() -> None:
    fake = FakeTabPFN(["tok-a"])
    X, y = data()

    async def scenario(client: AsyncProtocolClient) -> object:
        fitted = await client.fit(X, y, ClassifierFitTaskConfig())
        fake.fail_next(1, status=503, path="/tabpfn/predict")
        return (await client.predict(fitted.fitted_train_set_id, X[:3], PROBAS)).y_pred

    proba, _ = run(fake, scenario)
    assert isinstance(proba, np.ndarray)
    assert [r.status for r in fake.requests if r.path == "/tabpfn/predict"] == [503, 200]


def test_siblings_share_the_pool_and_see_only_their_models() -> None:
    fake = FakeTabPFN(["tok-a", "tok-b"])
    X, y = data()

    async def scenario(client: AsyncProtocolClient) -> None:
        fitted = await client.fit(X, y, ClassifierFitTaskConfig())
        sibling = client.with_token("tok-b")
        with pytest.raises(UpstreamFittedModelNotFound):
            await sibling.predict(fitted.fitted_train_set_id, X[:3], PROBAS)
        await sibling.aclose()  # a sibling does not own the pool
        assert await client.check_token()

    run(fake, scenario)
    assert [r.token for r in fake.requests if r.path == "/tabpfn/prepare_test_set_upload"] == [
        "tok-b"
    ]
    assert fake.requests_to("/tabpfn/get_settings")[0].token == "tok-a"
    assert len(fake.requests_to("/tabpfn/get_settings")) == 1


def test_a_closed_client_says_so() -> None:
    async def main() -> None:
        client = AsyncProtocolClient(BASE, "tok-a", transport=httpx.ASGITransport(FakeTabPFN().app))
        await client.aclose()
        await client.get_api_usage()

    with pytest.raises(ConfigurationError, match="closed"):
        anyio.run(main)


def test_connection_refused_maps_to_upstream_unavailable() -> None:
    async def main() -> None:
        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        transport = httpx.MockTransport(refuse)
        async with AsyncProtocolClient(BASE, "t", transport=transport, retry_wait=0) as client:
            await client.get_settings()

    with pytest.raises(UpstreamUnavailable) as caught:
        anyio.run(main)
    assert caught.value.details["connect_failed"] is True
