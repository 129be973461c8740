"""Acceptance: the real server on loopback (uvicorn), FakeTabPFN upstream, on SQLite and PostgreSQL.

FakeTabPFN is served on a port too, and the gateway reaches it the way it reaches TabPFN in
production: its default upstream stack (aiohttp's pool), not an in-process transport.

The unmodified ``tabpfn-client`` runs against it in a subprocess; our protocol client runs 32
concurrent fits and predictions for two principals bound to two TabPFN tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import make_classification

from gateway_support import (
    Tenant,
    add_admin_key,
    add_tenant,
    make_settings,
    serve_in_thread,
)
from tabpfn_gateway import migrate
from tabpfn_gateway.errors import FittedModelNotFound
from tabpfn_gateway.gateway import Gateway, LocalBus
from tabpfn_gateway.protocol import ProtocolClient
from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    ClassifierFitTaskConfig,
    ClassifierPredictParams,
    FileInfo,
    PrepareTrainSetUploadRequest,
)
from tabpfn_gateway.store import open_store
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway_server import create_app

pytestmark = pytest.mark.slow

TOKENS = ("tok-accept-alpha-1", "tok-accept-bravo-2", "tok-accept-setup-3")
PROBAS = ClassifierConfig(predict_params=ClassifierPredictParams(output_type="probas"))


@dataclass
class Stack:
    url: str
    gateway: Gateway
    fake: FakeTabPFN
    admin_key: str
    alice: Tenant
    bob: Tenant

    def client(self, key: str) -> ProtocolClient:
        return ProtocolClient(self.url, key, timeout=120)

    def bearer(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path}/gateway.db"


def start(tmp_path: Path, database_url: str, **overrides: Any) -> Iterator[Stack]:
    fake = FakeTabPFN(tokens=TOKENS)
    with serve_in_thread(fake.app) as upstream_url:
        settings = make_settings(tmp_path, database_url, upstream_url=upstream_url, **overrides)
        migrate.upgrade(settings)
        gateway = Gateway.from_settings(settings, store=open_store(settings), bus=LocalBus())
        try:
            admin_key = add_admin_key(gateway)
            alice = add_tenant(gateway, "alice", TOKENS[0])
            bob = add_tenant(gateway, "bob", TOKENS[1])
            with serve_in_thread(create_app(settings, gateway=gateway)) as url:
                yield Stack(url, gateway, fake, admin_key, alice, bob)
        finally:
            gateway.close()
            gateway.store.close()


@pytest.fixture
def stack(tmp_path: Path, database_url: str) -> Iterator[Stack]:
    yield from start(tmp_path, database_url)


# -- the official tabpfn-client, unmodified ----------------------------------------------------

CLIENT_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    from sklearn.datasets import make_classification, make_regression
    from tabpfn_client import TabPFNClassifier, TabPFNRegressor

    X, y = make_classification(n_samples=300, n_features=6, n_informative=4, random_state=0)
    clf = TabPFNClassifier(n_estimators=1).fit(X[:240], y[:240])
    proba = clf.predict_proba(X[240:])
    accuracy = float((clf.predict(X[240:]) == y[240:]).mean())

    Xr, yr = make_regression(n_samples=200, n_features=5, noise=1.0, random_state=1)
    reg = TabPFNRegressor(n_estimators=1).fit(Xr[:160], yr[:160])
    mean = reg.predict(Xr[160:])
    r2 = 1 - ((mean - yr[160:]) ** 2).sum() / ((yr[160:] - yr[160:].mean()) ** 2).sum()
    print(json.dumps({
        "proba_shape": list(proba.shape),
        "proba_rows_sum_to_one": bool(np.allclose(proba.sum(axis=1), 1.0)),
        "accuracy": accuracy,
        "mean_shape": list(mean.shape),
        "r2": float(r2),
    }))
    """
)


def run_tabpfn_client(url: str, key: str, home: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "TABPFN_CLIENT_API_URL": url,
        "TABPFN_TOKEN": key,
        "HOME": str(home),
    }
    done = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_unmodified_tabpfn_client_fits_and_predicts_through_the_gateway(
    stack: Stack, tmp_path: Path
) -> None:
    # The key comes from the self-service setup flow, as a new user would get it.
    setup = httpx.post(
        f"{stack.url}/api/v1/auth/setup", json={"tabpfn_token": TOKENS[2], "name": "carol"}
    )
    assert setup.status_code == 201, setup.text
    key = setup.json()["api_key"]
    result = run_tabpfn_client(stack.url, key, tmp_path)
    assert result["proba_shape"] == [60, 2]
    assert result["proba_rows_sum_to_one"]
    assert result["accuracy"] > 0.7
    assert result["mean_shape"] == [40]
    assert result["r2"] > 0.5
    # Upstream saw carol's TabPFN token on every API call, never the gateway key.
    api_calls = [r for r in stack.fake.requests if r.method != "PUT"]
    assert api_calls
    assert {r.token for r in api_calls} == {TOKENS[2]}
    assert all(r.token != key for r in stack.fake.requests)
    stack.gateway.usage.flush()
    events = stack.gateway.store.list_usage(key_id=setup.json()["key_id"], limit=1000).items
    operations = Counter(e.operation for e in events)
    assert operations["fit"] == 2
    # tabpfn-client's fits carry their train sets' shapes and bytes, as in-process fits do.
    fits = sorted((e.rows, e.columns) for e in events if e.operation == "fit")
    assert fits == [(160, 5), (240, 6)]
    assert all((e.bytes or 0) > 0 for e in events if e.operation == "fit")
    assert operations["predict"] >= 2
    # One record per user action: the uploads and prepares of a fit are steps, not records.
    assert operations["upload"] == 0
    assert operations["prepare_train_set_upload"] == 0


# -- two principals, two tokens, 32 concurrent calls ----------------------------------------------


def test_concurrent_calls_carry_each_principals_own_token(stack: Stack) -> None:
    X, y = make_classification(n_samples=160, n_features=5, random_state=4)
    tenants = {"alice": stack.alice, "bob": stack.bob}

    def work(n: int) -> tuple[str, str]:
        tenant = tenants["alice" if n % 2 else "bob"]
        # Different data per call: no dedup shortcut hides a wrong token.
        Xn = X + n
        with stack.client(tenant.key) as client:
            fit = client.fit(Xn[:120], y[:120], ClassifierFitTaskConfig())
            probas = np.asarray(client.predict(fit.fitted_train_set_id, Xn[120:], PROBAS).y_pred)
        assert probas.shape == (40, 2)
        return tenant.principal_id, str(fit.fitted_train_set_id)

    with ThreadPoolExecutor(max_workers=32) as pool:
        fits = list(pool.map(work, range(32)))

    # Upstream: 16 fits and 16 predictions under each token, nothing else.
    by_token = Counter((r.path, r.token) for r in stack.fake.requests if r.method == "POST")
    for token in TOKENS[:2]:
        assert by_token[("/tabpfn/fit", token)] == 16
        assert by_token[("/tabpfn/predict", token)] == 16
    assert {r.token for r in stack.fake.requests if r.method == "POST"} == set(TOKENS[:2])
    # The gateway recorded each fit for the principal whose key made it...
    for owner, fit_id in fits:
        model = stack.gateway.store.get_fitted_model(fit_id)
        assert model is not None
        assert model.owner_id == owner
    # ...and neither principal can use the other's fits.
    X_test = X[:5]
    for owner, fit_id in fits[:8]:
        other = stack.bob if owner == stack.alice.principal_id else stack.alice
        with stack.client(other.key) as client, pytest.raises(FittedModelNotFound):
            client.predict(fit_id, X_test, PROBAS)


# -- revocation, ownership, failures --------------------------------------------------------------


def test_a_revoked_key_is_refused_on_its_next_request(stack: Stack) -> None:
    ok = httpx.get(f"{stack.url}/protected/", headers=stack.bearer(stack.alice.key))
    assert ok.status_code == 200
    revoked = httpx.post(
        f"{stack.url}/api/v1/admin/keys/{stack.alice.key_id}/revoke",
        headers=stack.bearer(stack.admin_key),
    )
    assert revoked.json()["state"] == "revoked"
    refused = httpx.get(f"{stack.url}/tabpfn/get_settings", headers=stack.bearer(stack.alice.key))
    assert refused.status_code == 401
    assert refused.json()["error_code"] == "KEY_REVOKED"


def test_another_teams_fit_is_not_found(stack: Stack) -> None:
    X, y = make_classification(n_samples=100, n_features=4, random_state=5)
    with stack.client(stack.alice.key) as client:
        fit = client.fit(X, y, ClassifierFitTaskConfig())
    answer = httpx.post(
        f"{stack.url}/tabpfn/prepare_test_set_upload",
        json={
            "fitted_train_set_id": str(fit.fitted_train_set_id),
            "x_test_info": {"format": "parquet"},
        },
        headers=stack.bearer(stack.bob.key),
    )
    assert answer.status_code == 404
    assert answer.json()["error_code"] == "FITTED_MODEL_NOT_FOUND"


def test_oversized_bodies_are_413(tmp_path: Path, database_url: str) -> None:
    for stack in start(tmp_path, database_url, max_json_body_bytes=4096, max_upload_bytes=8192):
        big_json = httpx.post(
            f"{stack.url}/tabpfn/estimate_cost",
            content=b'{"train_rows": 1, "raw_columns": 1, "pad": "' + b"x" * 10_000 + b'"}',
            headers={**stack.bearer(stack.alice.key), "Content-Type": "application/json"},
        )
        assert big_json.status_code == 413
        assert big_json.json()["error_code"] == "PAYLOAD_TOO_LARGE"
        url = prepare_upload_url(stack)
        big_upload = httpx.put(url, content=b"z" * 20_000)
        assert big_upload.status_code == 413
        assert big_upload.json()["error_code"] == "PAYLOAD_TOO_LARGE"


def prepare_upload_url(stack: Stack) -> str:
    request = PrepareTrainSetUploadRequest(
        x_train_info=FileInfo(format="parquet"), y_train_info=FileInfo(format="parquet")
    )
    body = httpx.post(
        f"{stack.url}/tabpfn/prepare_train_set_upload",
        json=request.model_dump(mode="json", exclude_none=True),
        headers=stack.bearer(stack.alice.key),
    ).json()
    url = str(body["x_train_info"]["signed_urls"][0])
    assert url.startswith(stack.url)
    return url


def test_broken_uploads_are_4xx(stack: Stack) -> None:
    url = prepare_upload_url(stack)
    tampered = httpx.put(
        url[:-4] + "AAAA" if not url.endswith("AAAA") else url[:-4] + "BBBB", content=b"data"
    )
    assert tampered.status_code == 400
    assert tampered.json()["error_code"] == "INVALID_UPLOAD"
    not_a_token = httpx.put(f"{stack.url}/gateway/upload/%%%", content=b"data")
    assert 400 <= not_a_token.status_code < 500
    assert httpx.put(url, content=b"fine").status_code == 200


def test_unreachable_upstream_is_a_retryable_5xx(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(
        tmp_path, database_url, upstream_url="http://127.0.0.1:1", upstream_timeout_seconds=5
    )
    migrate.upgrade(settings)
    gateway = Gateway.from_settings(settings)
    try:
        tenant = add_tenant(gateway, "erin", "tok-erin-00001")
        with serve_in_thread(create_app(settings, gateway=gateway)) as url:
            answer = httpx.get(
                f"{url}/tabpfn/get_settings", headers={"Authorization": f"Bearer {tenant.key}"}
            )
            setup = httpx.post(f"{url}/api/v1/auth/setup", json={"tabpfn_token": "tok-x-1"})
    finally:
        gateway.close()
    for response in (answer, setup):
        assert response.status_code in (502, 503, 504)
        assert response.json()["error_code"] in {"UPSTREAM_UNAVAILABLE", "UPSTREAM_TIMEOUT"}
        assert int(response.headers["Retry-After"]) >= 1
