"""The SDK's errors name the right party: the gateway when it talks to one, in its own codes."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.datasets import load_iris

from tabpfn_gateway import GatewayClassifier
from tabpfn_gateway.errors import (
    CredentialNotFound,
    KeyRevoked,
    UpstreamFittedModelNotFound,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from tabpfn_gateway.estimators import HTTPBackend
from tabpfn_gateway.estimators._peer import as_gateway_error, is_tabpfn_cloud
from tabpfn_gateway.testing import FakeTabPFN, local_gateway
from tabpfn_gateway.testing.fake_server import serve_in_thread
from tabpfn_gateway.testing.local import LOCAL_TABPFN_TOKEN, LocalGateway


@dataclass
class Served:
    url: str
    local: LocalGateway


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    from tabpfn_gateway_server.app import create_app

    with local_gateway(fake=FakeTabPFN(tokens=[LOCAL_TABPFN_TOKEN])) as local:
        app = create_app(local.gateway.settings, gateway=local.gateway)
        with serve_in_thread(app) as url:
            yield Served(url, local)


IRIS = load_iris(return_X_y=True)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_gateway_is_called_the_gateway() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    clf = GatewayClassifier(base_url=url, api_key="tpg_unused", progress=False)
    with pytest.raises(UpstreamUnavailable) as raised:
        clf.fit(*IRIS)
    message = str(raised.value)
    assert message.startswith(f"The gateway at {url} cannot be reached")
    assert "upstream" not in message
    assert "TABPFN_GATEWAY_URL" in message


def test_an_admin_key_used_for_inference_raises_the_gateways_class(served: Served) -> None:
    gateway = served.local.gateway
    owner = gateway.admin.add_principal("ops-team", "team", actor="test")
    admin_key = gateway.keys.create(owner.id, None, "ops-admin", admin=True).plaintext
    clf = GatewayClassifier(base_url=served.url, api_key=admin_key, progress=False)
    with pytest.raises(CredentialNotFound) as raised:
        clf.fit(*IRIS)
    assert raised.value.error_code == "CREDENTIAL_NOT_FOUND"
    assert not isinstance(raised.value, UpstreamNotFound)
    assert str(raised.value).startswith("This key is not bound to a TabPFN credential")


def test_a_revoked_key_raises_key_revoked(served: Served) -> None:
    gateway = served.local.gateway
    record = gateway.keys.verify(served.local.api_key.get_secret_value())
    created = gateway.keys.create(record.owner_id, record.credential_id, "to-revoke", actor="t")
    gateway.keys.revoke(created.record.key_id, actor="test")
    backend = HTTPBackend(served.url, created.plaintext)
    try:
        with pytest.raises(KeyRevoked):
            GatewayClassifier(backend=backend, progress=False).fit(*IRIS)
    finally:
        backend.close()


def test_a_fitted_model_404_keeps_its_precise_class() -> None:
    exc = UpstreamFittedModelNotFound(
        "gone", status_code=404, details={"upstream_error_code": "NOT_FOUND"}
    )
    assert as_gateway_error(exc, "http://gw.test") is None


def test_tabpfn_cloud_itself_is_not_a_gateway() -> None:
    assert is_tabpfn_cloud("https://api.priorlabs.ai")
    assert not is_tabpfn_cloud("https://tabpfn-gateway.example.com")
    assert not is_tabpfn_cloud("https://priorlabs.ai.evil.example")


def test_a_direct_fit_still_works(served: Served) -> None:
    clf = GatewayClassifier(base_url=served.url, api_key=served.local.api_key, progress=False).fit(
        *IRIS
    )
    assert np.mean(clf.predict(IRIS[0]) == IRIS[1]) > 0.9
