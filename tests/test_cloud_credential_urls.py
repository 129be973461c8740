"""Per-credential cloud URLs: a ``cloud`` credential may name its own TabPFN upstream, and every
call of a key on it (HTTP proxy, uploads, in-process sessions, verification) goes there with its
own token; signed URLs are allowed on that credential's own origin only."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import make_classification

from gateway_support import add_admin_key, make_settings, serve_in_thread
from tabpfn_gateway import migrate
from tabpfn_gateway.errors import InvalidRequest, UpstreamAuthenticationFailed
from tabpfn_gateway.gateway import Gateway
from tabpfn_gateway.gateway._invalidation import LocalBus
from tabpfn_gateway.protocol import ProtocolClient
from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    ClassifierFitTaskConfig,
    ClassifierPredictParams,
    FileInfo,
    PrepareTrainSetUploadRequest,
)
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway.testing import serve_in_thread as serve_fake
from tabpfn_gateway_server import create_app

pytestmark = pytest.mark.slow

TOKEN_A = "tok-cloud-url-a-0001"
TOKEN_B = "tok-cloud-url-b-0002"
# Nothing listens here: a call that ignored the credential's own URL would fail loudly.
NOWHERE = "http://127.0.0.1:9"
PROBAS = ClassifierConfig(predict_params=ClassifierPredictParams(output_type="probas"))


@dataclass
class Stack:
    url: str
    gateway: Gateway
    fakes: dict[str, FakeTabPFN]
    fake_urls: dict[str, str]
    keys: dict[str, str]
    admin_key: str


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    fake_a, fake_b = FakeTabPFN(tokens=[TOKEN_A]), FakeTabPFN(tokens=[TOKEN_B])
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/gateway.db", upstream_url=NOWHERE)
    migrate.upgrade(settings)
    with serve_fake(fake_a.app) as url_a, serve_fake(fake_b.app) as url_b:
        # The network for every hop (aiohttp for the server, httpx in process).
        gateway = Gateway.from_settings(settings, bus=LocalBus())
        try:
            keys = {}
            for name, token, url in (("a", TOKEN_A, url_a), ("b", TOKEN_B, url_b)):
                principal = gateway.admin.add_principal(f"team-{name}", "team", actor="test")
                # Verified against the credential's own URL (the configured one is dead).
                credential = gateway.admin.add_credential(
                    principal.id, token, name, endpoint_url=url + "/", verify=True, actor="test"
                )
                assert credential.endpoint_url == url
                assert credential.verified_at is not None
                keys[name] = gateway.keys.create(principal.id, credential.id, "k").plaintext
            admin_key = add_admin_key(gateway)
            with serve_in_thread(create_app(settings, gateway=gateway)) as gateway_url:
                yield Stack(
                    gateway_url,
                    gateway,
                    {"a": fake_a, "b": fake_b},
                    {"a": url_a, "b": url_b},
                    keys,
                    admin_key,
                )
        finally:
            gateway.close()


def test_every_call_reaches_its_credentials_own_cloud(stack: Stack) -> None:
    def data(seed: int) -> tuple[np.ndarray, np.ndarray]:
        # Each caller its own data: identical content may reuse an upload id (the upstream
        # deduplicates), which would make the number of PUTs depend on timing.
        X, y = make_classification(n_samples=120, n_features=5, n_informative=3, random_state=seed)
        return np.asarray(X, dtype=float), y

    def over_http(name: str, seed: int) -> None:
        Xn, y = data(seed)
        with ProtocolClient(stack.url, stack.keys[name], timeout=120) as client:
            assert client.check_token()
            fit = client.fit(Xn[:90], y[:90], ClassifierFitTaskConfig())
            probas = np.asarray(client.predict(fit.fitted_train_set_id, Xn[90:], PROBAS).y_pred)
            assert probas.shape == (30, 2)

    def in_process(name: str, seed: int) -> None:
        Xn, y = data(seed)
        session = stack.gateway.session(stack.keys[name])
        fit = session.fit(Xn[:90], y[:90], ClassifierFitTaskConfig())
        assert np.asarray(session.predict(fit.fitted_train_set_id, Xn[90:], PROBAS).y_pred).shape
        assert session.get_settings().dataset_max_size_bytes > 0

    jobs = [(over_http if i % 4 else in_process, "ab"[i % 2], i) for i in range(16)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        for future in [pool.submit(job, name, seed) for job, name, seed in jobs]:
            future.result()

    for name, token in (("a", TOKEN_A), ("b", TOKEN_B)):
        logged = stack.fakes[name].requests
        # Only this credential's token ever reached this fake, and no gateway key.
        assert {r.token for r in logged if r.token is not None} == {token}
        assert not any(key in repr(logged) for key in stack.keys.values())
        posts = Counter(r.path for r in logged if r.method == "POST" and r.status == 200)
        # 8 callers each: one fit and one prediction apiece, whichever path they took.
        assert posts["/tabpfn/fit"] == 8
        assert posts["/tabpfn/predict"] == 8
        # The data itself went to this fake's signed URLs (through the gateway or not).
        assert sum(1 for r in logged if r.method == "PUT") >= 16


def test_signed_urls_on_another_credentials_origin_are_refused(stack: Stack) -> None:
    # Credential b's upstream hands out upload URLs on a's origin: a loopback address its
    # credential never named, so the gateway refuses it before any data moves.
    stack.fakes["b"].storage_url = stack.fake_urls["a"]
    request = PrepareTrainSetUploadRequest(
        x_train_info=FileInfo(format="parquet"), y_train_info=FileInfo(format="parquet")
    )
    response = httpx.post(
        stack.url + "/tabpfn/prepare_train_set_upload",
        json=request.model_dump(mode="json", exclude_none=True),
        headers={"Authorization": f"Bearer {stack.keys['b']}"},
        timeout=30,
    )
    assert response.status_code == 502
    assert response.json()["error_code"] == "EGRESS_REFUSED"
    # Its own origin stays allowed.
    stack.fakes["b"].storage_url = stack.fake_urls["b"]
    retried = httpx.post(
        stack.url + "/tabpfn/prepare_train_set_upload",
        json=request.model_dump(mode="json", exclude_none=True),
        headers={"Authorization": f"Bearer {stack.keys['b']}"},
        timeout=30,
    )
    assert retried.status_code == 200
    assert not [r for r in stack.fakes["a"].requests if r.method == "PUT"]


def test_admin_api_and_admin_check_the_cloud_url(stack: Stack) -> None:
    auth = {"Authorization": f"Bearer {stack.admin_key}"}
    url_b = stack.fake_urls["b"]
    body = {"owner": "team-a", "label": "second", "tabpfn_token": TOKEN_B}
    added = httpx.post(
        stack.url + "/api/v1/admin/credentials",
        headers=auth,
        json={**body, "endpoint_url": url_b},
        timeout=30,
    )
    assert added.status_code == 201, added.text
    assert (added.json()["kind"], added.json()["endpoint_url"]) == ("cloud", url_b)
    assert TOKEN_B not in added.text
    # Verified against its own URL: fake b does not know token a.
    refused = httpx.post(
        stack.url + "/api/v1/admin/credentials",
        headers=auth,
        json={**body, "tabpfn_token": TOKEN_A, "endpoint_url": url_b},
        timeout=30,
    )
    assert refused.status_code == 401
    assert refused.json()["error_code"] == "UPSTREAM_AUTHENTICATION_FAILED"
    for bad in ("ftp://x.example", f"{url_b}?a=1", "http://user:pw@x.example", "not a url"):
        answer = httpx.post(
            stack.url + "/api/v1/admin/credentials",
            headers=auth,
            json={**body, "endpoint_url": bad, "verify": False},
            timeout=30,
        )
        assert answer.status_code == 400, bad
        assert answer.json()["error_code"] == "INVALID_REQUEST"
        assert "pw" not in answer.text
    admin = stack.gateway.admin
    with pytest.raises(UpstreamAuthenticationFailed):
        admin.add_credential("team-b", TOKEN_A, "x", endpoint_url=url_b, verify=True)
    with pytest.raises(InvalidRequest):
        admin.add_credential("team-b", TOKEN_B, "x", endpoint_url="https://x.example/#f")
