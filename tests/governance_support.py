"""Helpers for the governance tests: a served gateway stack and the concurrent-spend driver."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sklearn.datasets import make_classification

from gateway_support import Tenant, add_admin_key, add_tenant, build_gateway, make_settings
from tabpfn_gateway import migrate
from tabpfn_gateway.errors import GatewayError
from tabpfn_gateway.gateway import Gateway
from tabpfn_gateway.protocol import ProtocolClient
from tabpfn_gateway.protocol.messages import ClassifierConfig, ClassifierFitTaskConfig
from tabpfn_gateway.store import open_store
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway.testing.transport import ASGIBridgeTransport
from tabpfn_gateway_server import create_app

TOKEN = "tok-governance-1"
BASE_URL = "http://gateway.test"


@dataclass
class Replica:
    """One gateway app (its own engine and caches) over a shared database. Its clients share
    one in-process transport (one event loop, as one server process has)."""

    gateway: Gateway
    app: Any
    transports: dict[str, ASGIBridgeTransport] = field(default_factory=dict)

    def client(self, key: str, *, address: str = "127.0.0.1") -> ProtocolClient:
        transport = self.transports.get(address)
        if transport is None:
            transport = ASGIBridgeTransport(self.app, client=(address, 4321))
            self.transports[address] = transport
        return ProtocolClient(BASE_URL, token=key, transport=_Shared(transport), max_retries=0)

    def transport(self, address: str = "127.0.0.1") -> httpx.BaseTransport:
        """A transport to this replica that its owner closes (for plain httpx clients)."""
        self.client("unused", address=address).close()
        return _Shared(self.transports[address])

    def close(self) -> None:
        for transport in self.transports.values():
            transport.close()


class _Shared(httpx.BaseTransport):
    """A transport several clients use; closing one client leaves it open."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._inner.handle_request(request)

    def close(self) -> None:
        """The owner (the replica) closes the inner transport."""


@contextmanager
def replicas(
    tmp_path: Path,
    database_url: str,
    count: int = 1,
    fake: FakeTabPFN | None = None,
    **overrides: Any,
) -> Iterator[tuple[FakeTabPFN, list[Replica]]]:
    """``count`` gateway apps on one database (migrated once), one FakeTabPFN upstream."""
    fake = fake or FakeTabPFN(tokens=[TOKEN])
    settings = make_settings(tmp_path, database_url, **overrides)
    if not database_url.startswith("memory://"):
        migrate.upgrade(settings)
    built: list[Replica] = []
    shared_store = open_store(settings) if database_url.startswith("memory://") else None
    try:
        for _ in range(count):
            store = shared_store or open_store(settings)
            gateway = build_gateway(settings, fake.app, store=store)
            built.append(Replica(gateway, create_app(settings, gateway=gateway)))
        yield fake, built
    finally:
        for replica in built:
            replica.close()
            replica.gateway.close()
            replica.gateway.store.close()


def tenant(replica: Replica, name: str = "ann") -> Tenant:
    return add_tenant(replica.gateway, name, TOKEN)


def admin_key(replica: Replica) -> str:
    return add_admin_key(replica.gateway)


def training_set() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_samples=60, n_features=4, n_informative=2, n_redundant=0, random_state=0
    )
    return X, y


def fit_once(client: ProtocolClient) -> str:
    """Fit once with ``client`` (then closed: its in-process transport holds a portal)."""
    X, y = training_set()
    try:
        return str(client.fit(X, y, ClassifierFitTaskConfig()).fitted_train_set_id)
    finally:
        client.close()


def concurrent_predictions(
    clients: Sequence[ProtocolClient], fit_id: str, *, rows: int = 5
) -> tuple[int, list[str]]:
    """Every client predicts once, all at the same moment, on its own test set (``rows`` x 4:
    ``rows * 4`` credits at FakeTabPFN's price). Returns (successes, refusal error codes)."""
    barrier = threading.Barrier(len(clients))
    successes = 0
    codes: list[str] = []
    lock = threading.Lock()
    unexpected: list[BaseException] = []

    def run(index: int, client: ProtocolClient) -> None:
        rng = np.random.default_rng(index)
        X_test = rng.normal(size=(rows, 4)) + index  # distinct data: no dedup between callers
        barrier.wait()
        try:
            client.predict(fit_id, X_test, ClassifierConfig())
        except GatewayError as exc:
            with lock:
                codes.append(exc.error_code)
        except BaseException as exc:
            unexpected.append(exc)
        else:
            nonlocal successes
            with lock:
                successes += 1

    threads = [threading.Thread(target=run, args=(i, client)) for i, client in enumerate(clients)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for client in clients:
            client.close()
    assert unexpected == []
    return successes, codes
