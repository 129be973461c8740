"""Both protocol clients, one suite: these async tests are the source of the sync ones.

FakeTabPFN in process: every step, dedup, polling, retries, uploads, errors.
``tools/unasync.py`` generates ``test_protocol_client.py`` from this file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression

from protocol_support import AsyncRecordingTransport
from tabpfn_gateway.errors import (
    ConfigurationError,
    FittedModelNotFound,
    InvalidRequest,
    PayloadTooLarge,
    UpstreamAuthenticationFailed,
    UpstreamError,
    UpstreamFittedModelNotFound,
    UpstreamForbidden,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    UsageLimitReached,
)
from tabpfn_gateway.protocol import AsyncProtocolClient, FitOptions, FitResult
from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    ClassifierFitTaskConfig,
    ClassifierPredictParams,
    EstimateCostRequest,
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

pytestmark = pytest.mark.anyio  # unasync: remove

BASE = "http://tabpfn.test"
TOKENS = {"tok-a": None, "tok-b": None, "tok-poor": 10}


@pytest.fixture
def fake() -> FakeTabPFN:
    return FakeTabPFN(TOKENS, unverified_tokens=["tok-unverified"], max_classes=5)


@pytest.fixture
async def transport(fake: FakeTabPFN) -> AsyncIterator[AsyncRecordingTransport]:
    async with AsyncRecordingTransport(fake.app) as recording:
        yield recording


@pytest.fixture
async def client(transport: AsyncRecordingTransport) -> AsyncIterator[AsyncProtocolClient]:
    async with AsyncProtocolClient(BASE, "tok-a", transport=transport, retry_wait=0) as c:
        yield c


def classification_data(rows: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(rows, 8, n_informative=5, random_state=seed)
    return X, y


def probas(output: str = "probas") -> ClassifierConfig:
    return ClassifierConfig(predict_params=ClassifierPredictParams(output_type=output))


def regression(output: str, quantiles: list[float] | None = None) -> RegressorConfig:
    return RegressorConfig(
        predict_params=RegressorPredictParams(output_type=output, quantiles=quantiles)
    )


def paths(fake: FakeTabPFN) -> list[str]:
    return [
        "PUT storage" if r.path.startswith(STORAGE_PREFIX) else f"{r.method} {r.path}"
        for r in fake.requests
    ]


# -- fit and predict ---------------------------------------------------------------------


async def test_classifier_fit_predict_with_string_labels_in_sorted_class_order(
    client: AsyncProtocolClient,
) -> None:
    X, y = classification_data()
    labels = np.where(y == 1, "yes", "no")  # sorted: "no" < "yes"
    fitted = await client.fit(X, labels, ClassifierFitTaskConfig())
    assert isinstance(fitted, FitResult)
    assert fitted.timings is not None
    assert fitted.timings["fit_s"] >= 0
    result = await client.predict(fitted.fitted_train_set_id, X, probas())
    assert result.metadata["classes"] == ["no", "yes"]
    assert isinstance(result.y_pred, np.ndarray)
    assert result.y_pred.shape == (300, 2)
    np.testing.assert_allclose(result.y_pred.sum(axis=1), 1.0)
    preds = (await client.predict(fitted.fitted_train_set_id, X, probas("preds"))).y_pred
    assert isinstance(preds, np.ndarray)
    # Column j of probas is class j in sorted order: argmax agrees with the labels predicted.
    assert list(np.array(["no", "yes"])[result.y_pred.argmax(axis=1)]) == list(preds)
    assert (preds == labels).mean() > 0.85


async def test_regressor_outputs_have_tabpfns_shapes(client: AsyncProtocolClient) -> None:
    X, y = make_regression(200, 5, noise=3.0, random_state=0)
    fitted = (await client.fit(X, y, RegressorFitTaskConfig())).fitted_train_set_id
    rows = X[:7]
    mean = (await client.predict(fitted, rows, regression("mean"))).y_pred
    assert isinstance(mean, np.ndarray)
    assert mean.shape == (7,)
    for output in ("median", "mode"):
        single = (await client.predict(fitted, rows, regression(output))).y_pred
        assert isinstance(single, np.ndarray)
        assert single.shape == (7,)
    quantiles = (
        await client.predict(fitted, rows, regression("quantiles", [0.1, 0.5, 0.9]))
    ).y_pred
    assert isinstance(quantiles, np.ndarray)
    assert quantiles.shape == (3, 7)
    assert np.all(quantiles[0] <= quantiles[1])
    assert np.all(quantiles[1] <= quantiles[2])
    main = (await client.predict(fitted, rows, regression("main"))).y_pred
    assert isinstance(main, dict)
    assert sorted(main) == ["mean", "median", "mode", "quantiles"]
    full = (await client.predict(fitted, rows, regression("full"))).y_pred
    assert isinstance(full, dict)
    assert sorted(full) == ["borders", "logits", "mean", "median", "mode", "quantiles"]
    assert full["logits"].shape == (7, len(full["borders"]) - 1)
    assert np.all(np.diff(full["borders"]) > 0)
    np.testing.assert_allclose(full["mean"], mean)


async def test_frames_with_missing_values_and_strings_fit_and_predict(
    client: AsyncProtocolClient,
) -> None:
    X, y = classification_data(400)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    frame["colour"] = np.where(X[:, 0] > 0, "red", "blue")
    frame.loc[::9, "colour"] = None
    frame.iloc[::7, 1] = np.nan
    fitted = await client.fit(frame, pd.Series(y, name="target"), ClassifierFitTaskConfig())
    result = await client.predict(fitted.fitted_train_set_id, frame.iloc[:50], probas("preds"))
    assert isinstance(result.y_pred, np.ndarray)
    assert (result.y_pred == y[:50]).mean() > 0.8


async def test_second_fit_of_the_same_data_reuses_the_upload(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    X, y = classification_data()
    first = await client.fit(X, y, ClassifierFitTaskConfig())
    fake.clear_log()
    second = await client.fit(X, y, ClassifierFitTaskConfig())
    assert paths(fake) == ["POST /tabpfn/prepare_train_set_upload", "POST /tabpfn/fit"]
    assert [r.status for r in fake.requests] == [409, 200]
    assert second.fitted_train_set_id != first.fitted_train_set_id


async def test_second_prediction_of_the_same_rows_reuses_the_test_upload(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    X, y = classification_data()
    fitted = (await client.fit(X, y, ClassifierFitTaskConfig())).fitted_train_set_id
    first = await client.predict(fitted, X[:20], probas())
    fake.clear_log()
    second = await client.predict(fitted, X[:20], probas())
    assert paths(fake) == ["POST /tabpfn/prepare_test_set_upload", "POST /tabpfn/predict"]
    assert isinstance(first.y_pred, np.ndarray)
    assert isinstance(second.y_pred, np.ndarray)
    np.testing.assert_allclose(first.y_pred, second.y_pred)


async def test_async_fit_polls_until_completed(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    fake.pending_polls = 2
    seen: list[GetFitStatusResponse] = []
    X, y = classification_data()
    fitted = await client.fit(
        X, y, ClassifierFitTaskConfig(), FitOptions(api_mode="async"), on_poll=seen.append
    )
    assert [s.status for s in seen] == [FitStatus.PENDING, FitStatus.PENDING, FitStatus.COMPLETED]
    assert "POST /tabpfn/submit_fit_job" in paths(fake)
    assert "POST /tabpfn/fit" not in paths(fake)
    assert fitted.timings is not None
    assert fitted.timings["fit_s"] is not None
    assert (await client.predict(fitted.fitted_train_set_id, X[:3], probas())).metadata["classes"]


async def test_auto_mode_goes_async_above_the_upstreams_threshold(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    X, y = classification_data()
    await client.fit(X, y, ClassifierFitTaskConfig())
    assert "POST /tabpfn/fit" in paths(fake)
    fake.async_threshold_bytes = 1000  # read by get_settings: a fresh client sees it
    async with client.with_token("tok-b") as sibling:
        await sibling.fit(X, y, ClassifierFitTaskConfig())  # settings are cached: still sync
    fake.clear_log()
    async with (
        AsyncRecordingTransport(fake.app) as fresh_transport,
        AsyncProtocolClient(BASE, "tok-a", transport=fresh_transport) as fresh,
    ):
        await fresh.fit(X, y, ClassifierFitTaskConfig())
    assert "POST /tabpfn/submit_fit_job" in paths(fake)


async def test_a_sync_fit_answered_pending_is_waited_for(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    fake.sync_fit_pending_polls = 1
    X, y = classification_data()
    fitted = await client.fit(X, y, ClassifierFitTaskConfig(), FitOptions(api_mode="sync"))
    assert paths(fake).count("POST /tabpfn/get_fit_status") == 2
    assert (await client.predict(fitted.fitted_train_set_id, X[:3], probas())).y_pred is not None


async def test_polling_gives_up_at_the_deadline(
    transport: AsyncRecordingTransport, fake: FakeTabPFN
) -> None:
    fake.pending_polls = 1000
    fake.retry_in_secs = 0.2  # floored to 0.3 s by the client
    X, y = classification_data(50)
    async with AsyncProtocolClient(BASE, "tok-a", transport=transport, poll_timeout=1.0) as client:
        with pytest.raises(UpstreamTimeout, match="did not finish"):
            await client.fit(X, y, ClassifierFitTaskConfig(), FitOptions(api_mode="async"))
    polls = paths(fake).count("POST /tabpfn/get_fit_status")
    # A hard bound: at most one poll per floored interval within the deadline.
    assert 1 <= polls <= 4


async def test_a_failed_fit_raises_with_the_upstreams_reason(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    X, _ = classification_data(60)
    too_many_classes = np.arange(60) % 6  # the fake allows 5
    with pytest.raises(UpstreamError, match="6 classes") as async_failure:
        await client.fit(
            X, too_many_classes, ClassifierFitTaskConfig(), FitOptions(api_mode="async")
        )
    assert async_failure.value.details["upstream_error_code"] == "FIT_FAILED"
    with pytest.raises(UpstreamError, match="6 classes") as sync_failure:
        await client.fit(
            X, too_many_classes, ClassifierFitTaskConfig(), FitOptions(api_mode="sync")
        )
    assert sync_failure.value.status_code == 400


# -- uploads and signed URLs -------------------------------------------------------------


async def test_chunked_uploads_carry_required_headers_and_never_the_credential(
    fake: FakeTabPFN, transport: AsyncRecordingTransport
) -> None:
    fake.upload_chunks = 4
    async with AsyncProtocolClient(
        BASE, "tok-a", transport=transport, headers={"X-Team": "research"}, upload_concurrency=3
    ) as client:
        X, y = classification_data()
        fitted = await client.fit(X, y, ClassifierFitTaskConfig())
        await client.predict(fitted.fitted_train_set_id, X[:30], probas())
    storage = [r for r in transport.seen if r.url.path.startswith(STORAGE_PREFIX)]
    api = [r for r in transport.seen if not r.url.path.startswith(STORAGE_PREFIX)]
    assert len(storage) == 4 + 4 + 4  # x_train, y_train, x_test in four chunks each
    for request in storage:
        assert "authorization" not in request.headers
        assert "x-team" not in request.headers  # caller's extra headers are for the API only
        assert request.headers["content-type"] == "application/octet-stream"
        assert request.headers["x-goog-meta-fake-upload-id"]
    for request in api:
        assert request.headers["authorization"] == "Bearer tok-a"
        assert request.headers["x-team"] == "research"
    assert all(r.token is None for r in fake.requests_to(STORAGE_PREFIX))


async def test_signed_urls_on_another_origin_get_no_credential(fake: FakeTabPFN) -> None:
    fake.storage_url = "http://storage.elsewhere.test"
    async with (
        AsyncRecordingTransport(fake.app) as recording,
        AsyncProtocolClient(BASE, "tok-a", transport=recording) as client,
    ):
        X, y = classification_data()
        await client.fit(X, y, ClassifierFitTaskConfig())
    storage = [r for r in recording.seen if r.url.host == "storage.elsewhere.test"]
    assert len(storage) == 2
    assert all("authorization" not in r.headers for r in storage)


async def test_prediction_uri_mode_downloads_without_credential(
    client: AsyncProtocolClient, fake: FakeTabPFN, transport: AsyncRecordingTransport
) -> None:
    X, y = classification_data()
    fitted = (await client.fit(X, y, ClassifierFitTaskConfig())).fitted_train_set_id
    inline = await client.predict(fitted, X[:10], probas())
    fake.prediction_uri_mode = True
    via_uri = await client.predict(fitted, X[:10], probas())
    assert isinstance(inline.y_pred, np.ndarray)
    assert isinstance(via_uri.y_pred, np.ndarray)
    np.testing.assert_allclose(inline.y_pred, via_uri.y_pred)
    downloads = [r for r in transport.seen if r.url.path.startswith("/_fake/download/")]
    assert len(downloads) == 1
    assert "authorization" not in downloads[0].headers


async def pieces(data: bytes) -> AsyncIterator[bytes]:
    """A body that can be read once, in two chunks."""
    yield data[:100]
    yield data[100:]


async def test_put_signed_url_streams_an_iterable_once(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    X, y = classification_data(40)
    frame_bytes = [pd.DataFrame(X).to_parquet(), pd.DataFrame(y).to_parquet()]
    prepared = await client.prepare_train_set_upload(
        PrepareTrainSetUploadRequest(
            x_train_info=FileInfo(format="parquet", size_bytes=len(frame_bytes[0])),
            y_train_info=FileInfo(format="parquet", size_bytes=len(frame_bytes[1])),
        )
    )
    assert not isinstance(prepared, UpstreamError)
    for data, info in zip(
        frame_bytes,
        [prepared.x_train_info, prepared.y_train_info],
        strict=True,  # type: ignore[union-attr]
    ):
        await client.put_signed_url(info.signed_urls[0], pieces(data), info.required_headers)
    assert [r.status for r in fake.requests_to(STORAGE_PREFIX)] == [200, 200]


# -- settings, siblings, secrets ---------------------------------------------------------


async def test_settings_are_fetched_once_per_client_and_shared_with_siblings(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    X, y = classification_data()
    await client.fit(X, y, ClassifierFitTaskConfig())
    sibling = client.with_token("tok-b")
    await sibling.fit(X, y, ClassifierFitTaskConfig())
    assert await client.get_settings() is await sibling.get_settings()
    assert paths(fake).count("GET /tabpfn/get_settings") == 1
    tokens = {r.token for r in fake.requests if r.path == "/tabpfn/fit"}
    assert tokens == {"tok-a", "tok-b"}


async def test_closing_a_sibling_keeps_the_shared_pool_open(client: AsyncProtocolClient) -> None:
    sibling = client.with_token("tok-b")
    await sibling.aclose()
    assert await client.check_token() is True
    await client.aclose()
    with pytest.raises(ConfigurationError, match="closed"):
        await sibling.check_token()


async def test_reprs_and_errors_never_show_the_token(transport: AsyncRecordingTransport) -> None:
    secret = "tok-very-secret-value"
    async with AsyncProtocolClient(BASE, secret, transport=transport) as client:
        assert secret not in repr(client)
        with pytest.raises(UpstreamAuthenticationFailed) as caught:
            await client.check_token()
    error = caught.value
    assert error.status_code == 401
    assert secret not in str(error)
    assert secret not in repr(error)
    assert secret not in repr(error.details)


# -- errors from the fake ----------------------------------------------------------------


async def test_a_fitted_model_of_another_token_is_not_found(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    X, y = classification_data()
    fitted = (await client.fit(X, y, ClassifierFitTaskConfig())).fitted_train_set_id
    other = client.with_token("tok-b")
    with pytest.raises(UpstreamFittedModelNotFound) as caught:
        await other.predict(fitted, X[:5], probas())
    assert isinstance(caught.value, FittedModelNotFound)
    assert isinstance(caught.value, UpstreamNotFound)
    assert caught.value.status_code == 404
    with pytest.raises(FittedModelNotFound):
        await other.get_fit_status(fitted)


async def test_credits_are_counted_and_a_limit_refuses_with_usage_details(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    X, y = classification_data()
    fitted = (await client.fit(X, y, ClassifierFitTaskConfig())).fitted_train_set_id
    await client.predict(fitted, X[:4], probas())
    assert (await client.get_api_usage())["current_usage"] == 4 * X.shape[1]
    poor = client.with_token("tok-poor")  # 10 credits
    poor_fit = (await poor.fit(X, y, ClassifierFitTaskConfig())).fitted_train_set_id
    with pytest.raises(UsageLimitReached) as caught:
        await poor.predict(poor_fit, X[:4], probas())
    assert caught.value.status_code == 429
    assert caught.value.details["usage_limit"] == 10
    assert fake.usage("tok-poor") == 0  # a refused call costs nothing


async def test_unverified_and_unknown_tokens(client: AsyncProtocolClient) -> None:
    with pytest.raises(UpstreamForbidden) as forbidden:
        await client.with_token("tok-unverified").check_token()
    assert forbidden.value.status_code == 403
    X, y = classification_data(30)
    with pytest.raises(UpstreamAuthenticationFailed):
        await client.with_token("tok-nobody").fit(X, y, ClassifierFitTaskConfig())
    assert await client.check_token() is True


async def test_usage_and_cost_estimate(client: AsyncProtocolClient) -> None:
    usage = await client.get_api_usage()
    assert usage["usage_limit"] == -1
    quote = await client.estimate_cost(
        EstimateCostRequest(train_rows=100, raw_columns=4, test_rows=10)
    )
    assert quote.estimated_cost == 40
    assert quote.inputs.n_estimators == 8


# -- retries -----------------------------------------------------------------------------


async def test_idempotent_steps_retry_transient_failures(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    X, y = classification_data()
    fake.drop_next(1, path="/tabpfn/get_settings")
    fake.fail_next(1, status=503, path=STORAGE_PREFIX)
    fitted = (await client.fit(X, y, ClassifierFitTaskConfig())).fitted_train_set_id
    fake.fail_next(2, status=502, path="/tabpfn/predict")
    result = await client.predict(fitted, X[:5], probas())
    assert result.y_pred is not None
    statuses = [r.status for r in fake.requests if r.path == "/tabpfn/predict"]
    assert statuses == [502, 502, 200]
    assert [r.status for r in fake.requests if r.path == "/tabpfn/get_settings"] == [0, 200]


async def test_a_fit_is_not_retried_after_the_request_was_sent(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    X, y = classification_data()
    fake.fail_next(1, status=503, path="/tabpfn/fit")
    with pytest.raises(UpstreamUnavailable) as caught:
        await client.fit(X, y, ClassifierFitTaskConfig())
    assert caught.value.retryable
    assert caught.value.status_code == 503
    assert paths(fake).count("POST /tabpfn/fit") == 1


async def test_a_fit_is_retried_when_the_connection_never_opened(fake: FakeTabPFN) -> None:
    class RefuseFirstFit(AsyncRecordingTransport):
        refused = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/tabpfn/fit" and not self.refused:
                self.refused += 1
                raise httpx.ConnectError("connection refused", request=request)
            return await super().handle_async_request(request)

    async with (
        RefuseFirstFit(fake.app) as refusing,
        AsyncProtocolClient(BASE, "tok-a", transport=refusing, retry_wait=0) as client,
    ):
        X, y = classification_data()
        await client.fit(X, y, ClassifierFitTaskConfig())
    assert refusing.refused == 1
    assert paths(fake).count("POST /tabpfn/fit") == 1


async def test_rate_limits_are_not_retried_and_carry_retry_after(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    fake.fail_next(1, status=429, retry_after=7, path="/get_api_usage/")
    with pytest.raises(UpstreamRateLimited) as caught:
        await client.get_api_usage()
    assert caught.value.retry_after == 7
    assert caught.value.retryable
    assert paths(fake).count("POST /get_api_usage/") == 1


async def test_status_polls_ride_out_transient_failures(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    fake.pending_polls = 1
    fake.fail_next(1, status=503, path="/tabpfn/get_fit_status")
    X, y = classification_data()
    await client.fit(X, y, ClassifierFitTaskConfig(), FitOptions(api_mode="async"))
    statuses = [r.status for r in fake.requests if r.path == "/tabpfn/get_fit_status"]
    assert statuses == [503, 200, 200]


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"api_mode": "fast"}, "api_mode"),
        ({"text_handling": "fancy"}, "text_handling"),
    ],
)
async def test_bad_options_are_refused_before_anything_is_sent(
    client: AsyncProtocolClient, fake: FakeTabPFN, kwargs: dict[str, Any], match: str
) -> None:
    X, y = classification_data(20)
    with pytest.raises(InvalidRequest, match=match):
        await client.fit(X, y, ClassifierFitTaskConfig(), FitOptions(**kwargs))
    assert fake.requests == []


async def test_bad_data_is_refused_before_upload(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    X, y = classification_data(20)
    with pytest.raises(InvalidRequest, match="same number of rows"):
        await client.fit(X, y[:10], ClassifierFitTaskConfig())
    with pytest.raises(InvalidRequest, match="non-empty"):
        await client.fit(np.empty((0, 3)), np.empty(0), ClassifierFitTaskConfig())
    with pytest.raises(InvalidRequest, match="UUID"):
        await client.predict("not-a-uuid", X, probas())
    assert fake.requests_to(STORAGE_PREFIX) == []
    assert fake.requests_to("/tabpfn/prepare") == []


async def test_a_dataset_over_the_upstreams_limit_is_refused(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    fake.dataset_max_size_bytes = 1000
    X, y = classification_data(500)
    with pytest.raises(PayloadTooLarge, match="x_train"):
        await client.fit(X, y, ClassifierFitTaskConfig())
    assert fake.requests_to("/tabpfn/prepare") == []


@pytest.mark.parametrize(
    "url", ["ftp://tabpfn.test", "tabpfn.test", "http://user:pw@tabpfn.test", "http://h/?a=1"]
)
async def test_bad_base_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        AsyncProtocolClient(url, "tok")


@pytest.mark.parametrize("token", ["", "   ", "tok\nInjected: header"])
async def test_bad_tokens_are_configuration_errors(token: str) -> None:
    with pytest.raises(ConfigurationError):
        AsyncProtocolClient(BASE, token)


async def test_bad_numbers_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        AsyncProtocolClient(BASE, timeout=0)
    with pytest.raises(ConfigurationError, match="upload_concurrency"):
        AsyncProtocolClient(BASE, upload_concurrency=0)


# -- streaming, fan-out, lifecycle -------------------------------------------------------


async def test_a_body_streamed_in_many_pieces_is_fitted_whole(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    X, y = classification_data(120)
    x_bytes, _ = to_parquet(pd.DataFrame(X))
    y_bytes, _ = to_parquet(pd.DataFrame(y))
    sent: list[int] = []

    async def in_pieces(payload: bytes, size: int) -> AsyncIterator[bytes]:
        for start in range(0, len(payload), size):
            sent.append(start)
            yield payload[start : start + size]

    prepared = await client.prepare_train_set_upload(
        PrepareTrainSetUploadRequest(
            x_train_info=FileInfo(format="parquet", size_bytes=len(x_bytes)),
            y_train_info=FileInfo(format="parquet", size_bytes=len(y_bytes)),
        )
    )
    assert isinstance(prepared, PrepareTrainSetUploadResponse)
    for payload, info in ((x_bytes, prepared.x_train_info), (y_bytes, prepared.y_train_info)):
        await client.put_signed_url(
            info.signed_urls[0], in_pieces(payload, 512), info.required_headers
        )
    fitted = await client.fit_step(
        FitRequest(
            train_set_upload_id=prepared.train_set_upload_id,
            task_config=ClassifierFitTaskConfig(),
        )
    )
    result = await client.predict(fitted.fitted_train_set_id, X[:5], probas())
    assert isinstance(result.y_pred, np.ndarray)
    assert result.y_pred.shape == (5, 2)  # the fake fitted on the streamed bytes, reassembled
    assert len(sent) > 2


async def test_parallel_chunks_respect_the_limit_and_fail_as_one_error(
    fake: FakeTabPFN, transport: AsyncRecordingTransport
) -> None:
    fake.upload_chunks = 5
    X, y = classification_data()
    async with AsyncProtocolClient(
        BASE, "tok-a", transport=transport, retry_wait=0, upload_concurrency=2
    ) as client:
        await client.fit(X, y, ClassifierFitTaskConfig())
        assert len(fake.requests_to(STORAGE_PREFIX)) == 10
        fake.fail_next(20, status=400, path=STORAGE_PREFIX)
        with pytest.raises(UpstreamError) as caught:
            await client.fit(X + 1, y, ClassifierFitTaskConfig())
    assert type(caught.value) is UpstreamError  # the first failure, not an exception group
    assert caught.value.status_code == 400


async def test_a_closed_client_says_so(transport: AsyncRecordingTransport) -> None:
    client = AsyncProtocolClient(BASE, "tok-a", transport=transport)
    await client.aclose()
    with pytest.raises(ConfigurationError, match="closed"):
        await client.get_api_usage()


async def test_connection_refused_maps_to_upstream_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    transport = httpx.MockTransport(refuse)
    async with AsyncProtocolClient(BASE, "t", transport=transport, retry_wait=0) as client:
        with pytest.raises(UpstreamUnavailable) as caught:
            await client.get_settings()
    assert caught.value.details["connect_failed"] is True


async def test_the_old_keyword_form_of_fit_still_works_with_a_warning(
    client: AsyncProtocolClient, fake: FakeTabPFN
) -> None:
    X, y = classification_data(60)
    with pytest.warns(DeprecationWarning, match="FitOptions"):
        await client.fit(X, y, ClassifierFitTaskConfig(), api_mode="async")
    assert "POST /tabpfn/submit_fit_job" in paths(fake)


async def test_settings_are_trusted_for_settings_ttl_only(
    fake: FakeTabPFN, transport: AsyncRecordingTransport
) -> None:
    async with AsyncProtocolClient(BASE, "tok-a", transport=transport) as cached:
        await cached.get_settings()
        await cached.get_settings()
    assert paths(fake).count("GET /tabpfn/get_settings") == 1
    fake.clear_log()
    async with AsyncProtocolClient(BASE, "tok-a", transport=transport, settings_ttl=0) as fresh:
        first = await fresh.get_settings()
        fake.async_threshold_bytes = 1234  # a changed limit is seen once the TTL has passed
        second = await fresh.get_settings()
    assert paths(fake).count("GET /tabpfn/get_settings") == 2
    assert first.async_settings.use_above_trainset_size_bytes != 1234
    assert second.async_settings.use_above_trainset_size_bytes == 1234
