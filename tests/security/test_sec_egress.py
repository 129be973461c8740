"""Item 4: signed URLs cannot turn the gateway against its own network (SSRF)."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest
from sklearn.datasets import make_classification

from security_support import GATEWAY_URL, TOKENS, Stack, build_stack
from tabpfn_gateway.errors import EgressRefused, GatewayError
from tabpfn_gateway.netpolicy import EgressPolicy, filter_upload_headers
from tabpfn_gateway.protocol import ProtocolClient
from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    ClassifierFitTaskConfig,
    ClassifierPredictParams,
    FileInfo,
    PrepareTrainSetUploadRequest,
)
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway.testing.transport import ASGIBridgeTransport

PROBAS = ClassifierConfig(predict_params=ClassifierPredictParams(output_type="probas"))


def client(stack: Stack, key: str) -> ProtocolClient:
    return ProtocolClient(GATEWAY_URL, key, transport=ASGIBridgeTransport(stack.app))


def test_prediction_uri_on_loopback_is_refused(tmp_path: Path, db_url: str) -> None:
    # The upstream (or whoever answers as it) points the download at an internal address.
    fake = FakeTabPFN(tokens=TOKENS, prediction_uri_mode=True)
    for stack in build_stack(tmp_path, db_url, fake):
        X, y = make_classification(n_samples=120, n_features=4, random_state=0)
        with client(stack, stack.alice.key) as sdk:
            fit = sdk.fit(X, y, ClassifierFitTaskConfig())
            sdk.predict(fit.fitted_train_set_id, X[:5], PROBAS)  # the upstream's own origin
            fake.storage_url = "http://127.0.0.1:5432"
            # The same test set again: deduplicated upstream, so only the download URI moves.
            with pytest.raises(GatewayError) as info:
                sdk.predict(fit.fitted_train_set_id, X[:5], PROBAS)
        assert "may not reach" in str(info.value)
        downloads = [r for r in fake.requests if r.method == "GET" and "download" in r.path]
        assert len(downloads) == 1  # the first, allowed one only


def test_upload_urls_on_foreign_hosts_are_refused_before_any_data_moves(
    tmp_path: Path, db_url: str
) -> None:
    fake = FakeTabPFN(tokens=TOKENS)
    fake.storage_url = "http://169.254.169.254"  # a cloud metadata service
    for stack in build_stack(tmp_path, db_url, fake):
        request = PrepareTrainSetUploadRequest(
            x_train_info=FileInfo(format="parquet"), y_train_info=FileInfo(format="parquet")
        )
        response = stack.http.post(
            "/tabpfn/prepare_train_set_upload",
            json=request.model_dump(mode="json", exclude_none=True),
            headers=stack.bearer(stack.alice.key),
        )
        assert response.status_code == 502
        assert response.json()["error_code"] == "EGRESS_REFUSED"


def test_allowed_hosts_still_refuse_private_addresses_unless_configured() -> None:
    policy = EgressPolicy.build(
        upstream_urls=["https://api.priorlabs.ai"], allowed_hosts=["storage.test", "*.s3.test"]
    )
    policy.check_url("https://api.priorlabs.ai/x")  # the upstream's own origin
    policy.check_url("https://storage.test/x")
    policy.check_url("https://bucket.s3.test/x")
    for url in (
        "http://api.priorlabs.ai/x",  # another scheme is another origin
        "https://api.priorlabs.ai:8443/x",
        "https://evil.test/x",
        "https://s3.test.evil.test/x",
        "file:///etc/passwd",
        "gopher://storage.test/x",
    ):
        with pytest.raises(EgressRefused):
            policy.check_url(url)
    for address in (
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "::1",
        "::ffff:127.0.0.1",
        "fd00::1",
    ):
        with pytest.raises(EgressRefused):
            policy.check_addresses([address])
    policy.check_addresses(["8.8.8.8", "2001:4860:4860::8888"])
    allowing = EgressPolicy.build(
        upstream_urls=[], allowed_hosts=["localhost"], allowed_networks=["127.0.0.0/8"]
    )
    allowing.check("http://localhost:9/x")
    with pytest.raises(EgressRefused):
        EgressPolicy.build(upstream_urls=[], allowed_hosts=["localhost"]).check("http://localhost/")


def test_signed_url_calls_never_follow_redirects() -> None:
    seen: list[str] = []

    def storage(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.host == "storage.test":
            return httpx.Response(307, headers={"Location": "http://127.0.0.1:6379/"})
        return httpx.Response(200, json=[1, 2])

    sdk = ProtocolClient("http://upstream.test", "tok", transport=httpx.MockTransport(storage))
    with sdk:
        with pytest.raises(GatewayError):
            sdk.put_signed_url("http://storage.test/put", b"data", {})
        with pytest.raises(GatewayError):
            sdk.download_prediction("http://storage.test/get")
    assert all("127.0.0.1" not in url for url in seen)


def test_only_allowlisted_headers_ride_along_on_uploads() -> None:
    kept = filter_upload_headers(
        {
            "Content-Type": "application/octet-stream",
            "x-goog-meta-id": "1",
            "X-Amz-Meta-Id": "2",
            "Authorization": "Bearer stolen",
            "Host": "internal.example",
            "Cookie": "a=b",
            "Transfer-Encoding": "chunked",
            "X-Forwarded-For": "1.2.3.4",
        }
    )
    assert set(kept) == {"Content-Type", "x-goog-meta-id", "X-Amz-Meta-Id"}


def test_uploads_through_the_gateway_still_reach_the_upstream(stack: Stack) -> None:
    X, y = make_classification(n_samples=120, n_features=4, random_state=1)
    with client(stack, stack.alice.key) as sdk:
        fit = sdk.fit(X, y, ClassifierFitTaskConfig())
        result = sdk.predict(fit.fitted_train_set_id, X[:3], PROBAS)
    assert np.asarray(result.y_pred).shape == (3, 2)
    puts = [r for r in stack.fake.requests if r.method == "PUT"]
    assert puts
    assert all("authorization" not in r.headers for r in puts)


def test_a_storage_hosts_lookup_is_reused_briefly_and_its_addresses_checked_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every upload looked its storage host up again (a DNS query per call); aiohttp then
    # connected from its own 10-second cache anyway. The lookup is reused as long; the
    # addresses are still checked on every call.
    from tabpfn_gateway import netpolicy

    answers = {"storage.example": "34.1.2.3", "rebound.example": "127.0.0.1"}
    lookups: list[str] = []

    def getaddrinfo(host: str, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], 0))]

    async def agetaddrinfo(host: str, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        return getaddrinfo(host)

    now = [1000.0]
    resolved = netpolicy._Resolutions(ttl=10.0, clock=lambda: now[0])
    monkeypatch.setattr(netpolicy, "_RESOLVED", resolved)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(anyio, "getaddrinfo", agetaddrinfo)
    policy = EgressPolicy.build(
        upstream_urls=[], allowed_hosts=["storage.example", "rebound.example"]
    )
    for _ in range(3):
        policy.check("https://storage.example/put?sig=1")
        anyio.run(policy.acheck, "https://storage.example/put?sig=2")
    assert lookups == ["storage.example"]
    for _ in range(2):
        with pytest.raises(EgressRefused):
            policy.check("https://rebound.example/put")
        with pytest.raises(EgressRefused):
            anyio.run(policy.acheck, "https://rebound.example/put")
    assert lookups == ["storage.example", "rebound.example"]
    now[0] += 10.5  # past the pool's own reuse: asked again
    answers["storage.example"] = "10.0.0.7"  # and a private answer is refused at once
    with pytest.raises(EgressRefused):
        anyio.run(policy.acheck, "https://storage.example/put")
    assert lookups[-1] == "storage.example"
