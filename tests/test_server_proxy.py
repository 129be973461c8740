"""The TabPFN-compatible routes in process: our protocol client -> gateway app -> FakeTabPFN."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

from gateway_support import Tenant, add_tenant, asgi_client, build_gateway, make_settings
from tabpfn_gateway import migrate
from tabpfn_gateway.errors import (
    FittedModelNotFound,
    KeyRevoked,
    StoreUnavailable,
    UpstreamUnavailable,
)
from tabpfn_gateway.gateway import UPLOAD_PATH_PREFIX, Gateway
from tabpfn_gateway.protocol import FitOptions, ProtocolClient
from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    ClassifierFitTaskConfig,
    ClassifierPredictParams,
    EstimateCostRequest,
    FileInfo,
    PrepareTrainSetUploadRequest,
    RegressorConfig,
    RegressorFitTaskConfig,
    RegressorPredictParams,
)
from tabpfn_gateway.store import open_store
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway.testing.transport import ASGIBridgeTransport
from tabpfn_gateway_server import create_app

TOKENS = ("tok-proxy-alpha-1", "tok-proxy-bravo-2")
GATEWAY_URL = "http://gateway.test"
PROBAS = ClassifierConfig(predict_params=ClassifierPredictParams(output_type="probas"))


@dataclass
class Setup:
    gateway: Gateway
    fake: FakeTabPFN
    app: Any
    http: httpx.Client
    alice: Tenant
    bob: Tenant

    def client(self, key: str) -> ProtocolClient:
        return ProtocolClient(GATEWAY_URL, key, transport=ASGIBridgeTransport(self.app))


def build(tmp_path: Path, fake: FakeTabPFN, **overrides: Any) -> Iterator[Setup]:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/gateway.db", **overrides)
    migrate.upgrade(settings)
    gateway = build_gateway(settings, fake.app, store=open_store(settings))
    app = create_app(settings, gateway=gateway)
    try:
        with asgi_client(app, GATEWAY_URL) as http:
            yield Setup(
                gateway,
                fake,
                app,
                http,
                add_tenant(gateway, "alice", TOKENS[0]),
                add_tenant(gateway, "bob", TOKENS[1]),
            )
    finally:
        gateway.close()
        gateway.store.close()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    yield from build(tmp_path, FakeTabPFN(tokens=TOKENS))


def data() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=240, n_features=5, n_informative=3, random_state=2)


def assert_only_upstream_tokens(
    fake: FakeTabPFN, allowed: set[str | None], keys: list[str]
) -> None:
    for request in fake.requests:
        assert request.token in allowed, request
        assert request.token not in keys


def test_classifier_fit_and_predict_through_the_gateway(setup: Setup) -> None:
    X, y = data()
    with setup.client(setup.alice.key) as client:
        fit = client.fit(X[:200], y[:200], ClassifierFitTaskConfig())
        result = client.predict(fit.fitted_train_set_id, X[200:], PROBAS)
    probas = np.asarray(result.y_pred)
    assert probas.shape == (40, 2)
    assert (probas.argmax(axis=1) == y[200:]).mean() > 0.7
    assert result.metadata["classes"] == [0, 1]
    # Signed storage PUTs carry no bearer credential at all; API calls carry alice's token.
    assert_only_upstream_tokens(setup.fake, {TOKENS[0], None}, [setup.alice.key])
    assert any(r.token == TOKENS[0] for r in setup.fake.requests_to("/tabpfn/fit"))
    owned = setup.gateway.store.get_fitted_model(str(fit.fitted_train_set_id))
    assert owned is not None
    assert owned.owner_id == setup.alice.principal_id


def test_regressor_outputs_through_the_gateway(setup: Setup) -> None:
    X, y = make_regression(n_samples=150, n_features=4, random_state=3)
    with setup.client(setup.alice.key) as client:
        fit = client.fit(X[:120], y[:120], RegressorFitTaskConfig())
        mean = client.predict(
            fit.fitted_train_set_id,
            X[120:],
            RegressorConfig(predict_params=RegressorPredictParams(output_type="mean")),
        )
        full = client.predict(
            fit.fitted_train_set_id,
            X[120:],
            RegressorConfig(predict_params=RegressorPredictParams(output_type="full")),
        )
    assert np.asarray(mean.y_pred).shape == (30,)
    assert isinstance(full.y_pred, dict)
    assert "logits" in full.y_pred


def test_upload_urls_point_at_the_gateway_and_hide_the_upstream(setup: Setup) -> None:
    request = PrepareTrainSetUploadRequest(
        x_train_info=FileInfo(format="parquet", size_bytes=10),
        y_train_info=FileInfo(format="parquet", size_bytes=10),
    )
    answer = setup.http.post(
        "/tabpfn/prepare_train_set_upload",
        json=request.model_dump(mode="json", exclude_none=True),
        headers={"Authorization": f"Bearer {setup.alice.key}"},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    for name in ("x_train_info", "y_train_info"):
        (url,) = body[name]["signed_urls"]
        assert url.startswith(GATEWAY_URL + UPLOAD_PATH_PREFIX)
        assert set(body[name]["required_headers"]) <= {"Content-Type"}
    assert "upstream.test" not in answer.text
    assert TOKENS[0] not in answer.text


def test_public_url_setting_decides_upload_urls(tmp_path: Path) -> None:
    for setup in build(
        tmp_path, FakeTabPFN(tokens=TOKENS), public_url="https://tabpfn.corp.example"
    ):
        body = _prepared(setup, setup.alice.key)
        assert body["x_train_info"]["signed_urls"][0].startswith(
            "https://tabpfn.corp.example" + UPLOAD_PATH_PREFIX
        )


def test_async_fit_polls_through_the_gateway(tmp_path: Path) -> None:
    fake = FakeTabPFN(tokens=TOKENS, pending_polls=2, retry_in_secs=0.0)
    for setup in build(tmp_path, fake):
        X, y = data()
        with setup.client(setup.alice.key) as client:
            fit = client.fit(X, y, ClassifierFitTaskConfig(), FitOptions(api_mode="async"))
            client.predict(fit.fitted_train_set_id, X[:10], PROBAS)
        assert len(fake.requests_to("/tabpfn/get_fit_status")) >= 3
        assert fake.requests_to("/tabpfn/submit_fit_job")


def test_dedup_409_passes_through_without_a_second_upload(setup: Setup) -> None:
    X, y = data()
    with setup.client(setup.alice.key) as client:
        client.fit(X, y, ClassifierFitTaskConfig())
        puts_before = len([r for r in setup.fake.requests if r.method == "PUT"])
        client.fit(X, y, ClassifierFitTaskConfig())
    puts_after = len([r for r in setup.fake.requests if r.method == "PUT"])
    assert puts_after == puts_before
    statuses = [r.status for r in setup.fake.requests_to("/tabpfn/prepare_train_set_upload")]
    assert statuses == [200, 409]


def test_prediction_download_uris_are_answered_inline(tmp_path: Path) -> None:
    fake = FakeTabPFN(tokens=TOKENS, prediction_uri_mode=True)
    for setup in build(tmp_path, fake):
        X, y = data()
        with setup.client(setup.alice.key) as client:
            fit = client.fit(X, y, ClassifierFitTaskConfig())
            result = client.predict(fit.fitted_train_set_id, X[:7], PROBAS)
        assert np.asarray(result.y_pred).shape == (7, 2)
        # Only the gateway talks to the fake: it fetched the prediction for the client.
        downloads = [r for r in fake.requests if r.method == "GET" and "download" in r.path]
        assert len(downloads) == 1


def test_other_principals_fits_are_not_found_everywhere(setup: Setup) -> None:
    X, y = data()
    with setup.client(setup.alice.key) as alice:
        fit = alice.fit(X, y, ClassifierFitTaskConfig())
    fit_id = str(fit.fitted_train_set_id)
    bob = {"Authorization": f"Bearer {setup.bob.key}"}
    status = setup.http.post(
        "/tabpfn/get_fit_status", json={"fitted_train_set_id": fit_id}, headers=bob
    )
    assert status.status_code == 404
    assert status.json()["error_code"] == "FITTED_MODEL_NOT_FOUND"
    prepare = setup.http.post(
        "/tabpfn/prepare_test_set_upload",
        json={"fitted_train_set_id": fit_id, "x_test_info": {"format": "parquet"}},
        headers=bob,
    )
    assert prepare.status_code == 404
    # The body validates as the vendor's NotFoundErrorResponse (trace_id a UUID).
    from tabpfn_gateway.protocol.messages import NotFoundErrorResponse

    NotFoundErrorResponse.model_validate(prepare.json())
    with setup.client(setup.bob.key) as client, pytest.raises(FittedModelNotFound):
        client.predict(fit_id, X[:3], PROBAS)
    # Alice still can.
    with setup.client(setup.alice.key) as client:
        client.predict(fit_id, X[:3], PROBAS)


def test_upstream_outage_is_a_retryable_503(setup: Setup) -> None:
    setup.fake.fail_next(100, status=503, path="/tabpfn/get_settings")
    response = setup.http.get(
        "/tabpfn/get_settings", headers={"Authorization": f"Bearer {setup.alice.key}"}
    )
    assert response.status_code == 503
    assert response.json()["error_code"] == "UPSTREAM_UNAVAILABLE"
    assert int(response.headers["Retry-After"]) >= 1
    with setup.client(setup.alice.key) as client, pytest.raises(UpstreamUnavailable):
        client.get_settings()


def test_upstream_rate_limit_keeps_its_retry_after(setup: Setup) -> None:
    setup.fake.fail_next(100, status=429, retry_after=7, path="/tabpfn/get_settings")
    response = setup.http.get(
        "/tabpfn/get_settings", headers={"Authorization": f"Bearer {setup.alice.key}"}
    )
    assert response.status_code == 429
    assert response.json()["error_code"] == "UPSTREAM_RATE_LIMITED"
    assert response.headers["Retry-After"] == "7"


def test_unreachable_upstream_is_503_with_a_retry_hint(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, "memory://", upstream_url="http://127.0.0.1:1", upstream_timeout_seconds=5
    )
    gateway = Gateway.from_settings(settings)
    try:
        tenant = add_tenant(gateway, "zed", "tok-zed-000001")
        with asgi_client(create_app(settings, gateway=gateway)) as http:
            response = http.get(
                "/tabpfn/get_settings", headers={"Authorization": f"Bearer {tenant.key}"}
            )
        assert response.status_code in (502, 503, 504)
        assert response.json()["error_code"] in {"UPSTREAM_UNAVAILABLE", "UPSTREAM_TIMEOUT"}
        assert "Retry-After" in response.headers
    finally:
        gateway.close()


# -- uploads ------------------------------------------------------------------------------------


def _prepared(setup: Setup, key: str) -> dict[str, Any]:
    request = PrepareTrainSetUploadRequest(
        x_train_info=FileInfo(format="parquet"), y_train_info=FileInfo(format="parquet")
    )
    answer = setup.http.post(
        "/tabpfn/prepare_train_set_upload",
        json=request.model_dump(mode="json", exclude_none=True),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 200, answer.text
    prepared: dict[str, Any] = answer.json()
    return prepared


def prepare_upload(setup: Setup, key: str) -> str:
    return str(_prepared(setup, key)["x_train_info"]["signed_urls"][0])


def test_broken_and_tampered_upload_urls_are_400(setup: Setup) -> None:
    url = prepare_upload(setup, setup.alice.key)
    tampered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    response = setup.http.put(tampered, content=b"data")
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_UPLOAD"
    assert setup.http.put(GATEWAY_URL + UPLOAD_PATH_PREFIX + "x", content=b"d").status_code == 400


def test_upload_streams_to_the_upstream_and_is_metered(setup: Setup) -> None:
    url = prepare_upload(setup, setup.alice.key)

    def body() -> Iterator[bytes]:
        for _ in range(4):
            yield b"z" * 1000

    response = setup.http.put(url, content=body())
    assert response.status_code == 200, response.text
    puts = [r for r in setup.fake.requests if r.method == "PUT"]
    assert len(puts) == 1
    assert puts[0].token is None  # no bearer credential on a signed URL
    setup.gateway.usage.flush()
    # An upload is a step of a fit, not a user action: metrics see it, usage does not.
    events = setup.gateway.store.list_usage(key_id=setup.alice.key_id).items
    assert [e.operation for e in events if e.operation == "upload"] == []


def test_an_upload_url_dies_with_its_key(setup: Setup) -> None:
    url = prepare_upload(setup, setup.alice.key)
    setup.gateway.keys.revoke(setup.alice.key_id, actor="test")
    response = setup.http.put(url, content=b"data")
    assert response.status_code == 401
    assert response.json()["error_code"] == KeyRevoked.error_code


def test_oversized_uploads_are_413_while_streaming(tmp_path: Path) -> None:
    for setup in build(tmp_path, FakeTabPFN(tokens=TOKENS), max_upload_bytes=4096):
        url = prepare_upload(setup, setup.alice.key)
        declared = setup.http.put(url, content=b"x" * 5000)
        assert declared.status_code == 413
        assert declared.json()["error_code"] == "PAYLOAD_TOO_LARGE"

        def chunks() -> Iterator[bytes]:
            for _ in range(10):
                yield b"y" * 1000

        streamed = setup.http.put(url, content=chunks())
        assert streamed.status_code == 413
        assert streamed.json()["error_code"] == "PAYLOAD_TOO_LARGE"
        # A body within the limit still goes through.
        assert setup.http.put(url, content=b"ok" * 100).status_code == 200


def test_no_key_or_token_in_logs_or_answers(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    X, y = data()
    answers: list[str] = []
    with setup.client(setup.alice.key) as client:
        fit = client.fit(X, y, ClassifierFitTaskConfig())
        client.predict(fit.fitted_train_set_id, X[:5], PROBAS)
    headers = {"Authorization": f"Bearer {setup.alice.key}"}
    setup.fake.fail_next(100, status=503, path="/tabpfn/get_settings")
    answers.append(setup.http.get("/tabpfn/get_settings", headers=headers).text)
    answers.append(setup.http.get("/protected/", headers={"Authorization": "Bearer tpg_x"}).text)
    setup.gateway.keys.revoke(setup.alice.key_id, actor="test")
    answers.append(setup.http.get("/protected/", headers=headers).text)
    answers.append(setup.http.post("/api/v1/auth/setup", json={"tabpfn_token": "tok-nope-99"}).text)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records, "the flows above log something"
    for secret in (setup.alice.key, TOKENS[0], "tok-nope-99"):
        assert secret not in logged
        for answer in answers:
            assert secret not in answer


def test_one_user_action_is_one_usage_record_on_both_paths(setup: Setup) -> None:
    X, y = data()

    def actions(tenant: Tenant) -> list[tuple[str, int, int | None, int | None, int | None]]:
        setup.gateway.usage.flush()
        events = setup.gateway.store.list_usage(key_id=tenant.key_id, limit=100).items
        return sorted(
            (e.operation, e.status, e.rows, e.columns, e.bytes)
            for e in events
            if e.operation != "get_settings"  # the HTTP client asks once; the session need not
        )

    with setup.client(setup.alice.key) as client:  # over HTTP, step by step
        fit = client.fit(X[:200], y[:200], ClassifierFitTaskConfig())
        client.predict(fit.fitted_train_set_id, X[200:], PROBAS)
    session = setup.gateway.session(setup.bob.key)  # in process, one call each
    own = session.fit(X[:200], y[:200], ClassifierFitTaskConfig())
    session.predict(own.fitted_train_set_id, X[200:], PROBAS)

    over_http, in_process = actions(setup.alice), actions(setup.bob)
    assert over_http == in_process
    (fit_record, predict_record) = over_http
    assert fit_record[:4] == ("fit", 200, 200, 5)
    assert predict_record[:4] == ("predict", 200, 40, 5)
    assert fit_record[4] == own.train_set_bytes
    assert fit_record[4] is not None
    assert fit_record[4] > 0
    # No step of the action is a record of its own (uploads, prepares, status polls).
    assert {e.operation for e in setup.gateway.store.list_usage(limit=100).items} == {
        "get_settings",
        "fit",
        "predict",
    }
    owned = setup.gateway.store.get_fitted_model(str(fit.fitted_train_set_id))
    assert owned is not None
    assert (owned.n_rows, owned.n_cols) == (200, 5)


def test_a_deduplicated_or_async_fit_is_still_one_fit_with_its_size(tmp_path: Path) -> None:
    fake = FakeTabPFN(tokens=TOKENS, pending_polls=1)
    for setup in build(tmp_path, fake):
        X, y = data()
        with setup.client(setup.alice.key) as client:
            client.fit(X, y, ClassifierFitTaskConfig())
            client.fit(X, y, ClassifierFitTaskConfig(), FitOptions(api_mode="async"))  # a 409
        setup.gateway.usage.flush()
        events = setup.gateway.store.list_usage(key_id=setup.alice.key_id, limit=100).items
        fits = [(e.rows, e.columns, e.bytes) for e in events if e.operation == "fit"]
        assert len(fits) == 2
        assert fits[0] == fits[1]
        assert fits[0][:2] == (240, 5)
        assert not [e for e in events if e.operation in ("submit_fit_job", "get_fit_status")]


def test_a_prediction_is_priced_by_its_fits_rows_without_reading_the_fit_back(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y = data()
    reads: list[str] = []
    store = setup.gateway.store
    read_fit = store.get_fitted_model

    def counted(model_id: str) -> Any:
        reads.append(model_id)
        return read_fit(model_id)

    monkeypatch.setattr(store, "get_fitted_model", counted)
    with setup.client(setup.alice.key) as client:
        fit = client.fit(X[:200], y[:200], ClassifierFitTaskConfig())
        client.predict(fit.fitted_train_set_id, X[200:], PROBAS)
    # The fit's claim told the pricing its 200 training rows: no store read for them.
    assert reads == []
    setup.gateway.usage.flush()
    predict = next(
        e for e in store.list_usage(key_id=setup.alice.key_id).items if e.operation == "predict"
    )
    quote = EstimateCostRequest(train_rows=200, test_rows=40, raw_columns=X.shape[1])
    upstream = ProtocolClient(
        "http://fake.test", TOKENS[0], transport=ASGIBridgeTransport(setup.fake.app)
    )
    with upstream:
        assert predict.credits == upstream.estimate_cost(quote).estimated_cost


def test_the_upload_records_its_ownership_before_it_answers(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, alice = setup.gateway.store, setup.alice
    writes: list[str] = []
    record = store.add_upload_owner

    def counted(upload_id: str, owner_id: str, kind: str) -> None:
        writes.append(upload_id)
        record(upload_id, owner_id, kind)

    monkeypatch.setattr(store, "add_upload_owner", counted)
    prepared = _prepared(setup, alice.key)
    upload_id = prepared["train_set_upload_id"]
    # Prepared but not uploaded: nothing of the caller's is recorded yet.
    assert not store.is_upload_owner(upload_id, alice.principal_id)
    (x_url,) = prepared["x_train_info"]["signed_urls"]
    (y_url,) = prepared["y_train_info"]["signed_urls"]
    # y alone records nothing (no fit works without X, whose upload records it).
    assert setup.http.put(y_url, content=b"y-file").status_code == 200
    assert writes == []
    assert setup.http.put(x_url, content=b"x-file").status_code == 200
    # Written while X streamed, and in the store before the PUT's answer.
    assert store.is_upload_owner(upload_id, alice.principal_id)
    assert not store.is_upload_owner(upload_id, setup.bob.principal_id)
    assert setup.http.put(x_url, content=b"x-file").status_code == 200
    assert writes == [upload_id]  # known since: not written twice


def test_a_store_outage_during_an_upload_is_its_503(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = setup.gateway.store
    prepared = _prepared(setup, setup.alice.key)
    (x_url,) = prepared["x_train_info"]["signed_urls"]

    def down(upload_id: str, owner_id: str, kind: str) -> None:
        raise StoreUnavailable()

    with monkeypatch.context() as patched:
        patched.setattr(store, "add_upload_owner", down)
        refused = setup.http.put(x_url, content=b"x-file")
    # Not a 200 whose upload the next fit would call unknown: the client uploads again.
    assert refused.status_code == 503, refused.text
    assert refused.json()["error_code"] == "STORE_UNAVAILABLE"
    assert setup.http.put(x_url, content=b"x-file").status_code == 200
    assert store.is_upload_owner(prepared["train_set_upload_id"], setup.alice.principal_id)


def test_an_upload_url_sealed_without_its_upload_id_still_works(setup: Setup) -> None:
    # URLs handed out before upload ids were sealed in (their ownership was recorded when
    # they were prepared) keep working through an upgrade.
    prepared = _prepared(setup, setup.alice.key)
    (x_url,) = prepared["x_train_info"]["signed_urls"]
    grant = setup.gateway.uploads.open(x_url.rsplit("/", 1)[1])
    assert grant.upload_id == prepared["train_set_upload_id"]
    token, _ = setup.gateway.uploads.seal(
        upstream_url=grant.upstream_url,
        upstream_headers=grant.upstream_headers,
        key_id=grant.key_id,
        owner_id=grant.owner_id,
        credential_id=grant.credential_id,
        dataset=grant.dataset,
    )
    assert setup.gateway.uploads.open(token).upload_id is None
    answer = setup.http.put(GATEWAY_URL + UPLOAD_PATH_PREFIX + token, content=b"x-file")
    assert answer.status_code == 200, answer.text
    assert not setup.gateway.store.is_upload_owner(
        prepared["train_set_upload_id"], setup.alice.principal_id
    )


class _RoundRobin(httpx.BaseTransport):
    """Each request to the next replica, as a load balancer without affinity sends them."""

    def __init__(self, apps: list[Any]) -> None:
        self.transports = [ASGIBridgeTransport(app) for app in apps]
        self.sent = [0] * len(apps)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        turn = sum(self.sent) % len(self.transports)
        self.sent[turn] += 1
        return self.transports[turn].handle_request(request)


def test_one_fit_and_prediction_across_two_replicas_call_by_call(tmp_path: Path) -> None:
    fake = FakeTabPFN(tokens=TOKENS)
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/gateway.db")
    migrate.upgrade(settings)
    replicas = [build_gateway(settings, fake.app, store=open_store(settings)) for _ in range(2)]
    try:
        alice = add_tenant(replicas[0], "alice", TOKENS[0])
        balancer = _RoundRobin([create_app(settings, gateway=g) for g in replicas])
        X, y = data()
        with ProtocolClient(GATEWAY_URL, alice.key, transport=balancer) as client:
            fit = client.fit(X[:200], y[:200], ClassifierFitTaskConfig())
            result = client.predict(fit.fitted_train_set_id, X[200:], PROBAS)
        assert np.asarray(result.y_pred).shape == (40, 2)
        assert min(balancer.sent) >= 3  # both replicas answered steps of it
    finally:
        for gateway in replicas:
            gateway.close()
            gateway.store.close()
