"""``local_gateway()``: an offline, in-process gateway over FakeTabPFN, for testing your own code.

    >>> from tabpfn_gateway import GatewayClassifier
    >>> from tabpfn_gateway.testing import local_gateway
    >>> clf = GatewayClassifier(backend=local_gateway())

Everything runs in this process and in memory: an in-memory store, a generated secret and
pepper (nothing written to disk), a principal, a TabPFN credential for FakeTabPFN's token,
and a gateway key bound to it. The key, scopes, fit ownership and usage metering work as
they do behind a real server; the models are scikit-learn's, so results are deterministic.
"""

from __future__ import annotations

import secrets
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from tabpfn_gateway.estimators.backends import InProcessBackend

if TYPE_CHECKING:
    from tabpfn_gateway.gateway import Gateway
    from tabpfn_gateway.store import Store, UsageSummary
    from tabpfn_gateway.testing.fake import FakeTabPFN
    from tabpfn_gateway.testing.transport import ASGIBridgeTransport

__all__ = ["LOCAL_TABPFN_TOKEN", "LocalGateway", "local_gateway"]

# FakeTabPFN's token in a local gateway: not a secret, it opens nothing but the fake.
LOCAL_TABPFN_TOKEN = "local-fake-tabpfn-token"  # noqa: S105


class LocalGateway(InProcessBackend):
    """An :class:`~tabpfn_gateway.estimators.backends.InProcessBackend` that owns its parts.

    Attributes
    ----------
    gateway : Gateway
        The core gateway (in-memory store, LocalBus).
    store : Store
        Its in-memory store: principals, the credential, the key, fits and usage.
    fake : FakeTabPFN
        The upstream; ``fake.requests`` (if the fake records them) shows what reached it.
    key_id : str
        The public id of the gateway key this backend uses.
    principal_id : str
        The principal that owns the key and the fits.

    ``api_key`` is the gateway key (a ``SecretStr``). ``close()`` flushes usage and stops
    the gateway and the in-process transport; it is also what ``with local_gateway() as
    backend:`` does on exit.
    """

    def __init__(
        self,
        gateway: Gateway,
        api_key: str | SecretStr,
        *,
        fake: FakeTabPFN,
        transport: ASGIBridgeTransport,
        key_id: str,
        principal_id: str,
    ) -> None:
        super().__init__(gateway, api_key)
        self.store: Store = gateway.store
        self.fake = fake
        self.transport = transport
        self.key_id = key_id
        self.principal_id = principal_id
        self._closed = False

    @property
    def api_key(self) -> SecretStr:
        """The gateway key this backend uses (to reach the same gateway over HTTP too)."""
        return self._api_key

    def __enter__(self) -> LocalGateway:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def usage(self) -> list[UsageSummary]:
        """Usage recorded for this backend's key, per operation (pending events flushed)."""
        self.gateway.usage.flush()
        return list(self.store.summarize_usage(key_id=self.key_id))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        super().close()
        try:
            self.gateway.close()
        finally:
            self.transport.close()


def local_gateway(
    *,
    fake: FakeTabPFN | None = None,
    principal: str = "local-user",
    key_name: str = "local",
    scopes: tuple[str, ...] | None = None,
) -> LocalGateway:
    """An in-process gateway wired to an in-process FakeTabPFN, as an estimator backend.

    Parameters
    ----------
    fake : FakeTabPFN or None, default=None
        The upstream to use (e.g. one with small limits or async fits); it must accept
        :data:`LOCAL_TABPFN_TOKEN`. None: ``FakeTabPFN(tokens=[LOCAL_TABPFN_TOKEN])``.
    principal : str, default="local-user"
        Name of the principal that owns the key.
    key_name : str, default="local"
        Name of the gateway key.
    scopes : tuple of str or None, default=None
        Scopes of the key; None: the default ones (inference, usage).

    Returns
    -------
    LocalGateway
        A backend: ``GatewayClassifier(backend=local_gateway())``. Close it (or use it as a
        context manager) to stop its threads; they are daemons, so a script may also exit.
    """
    from tabpfn_gateway.config import Settings
    from tabpfn_gateway.gateway import Gateway, LocalBus
    from tabpfn_gateway.store.memory import MemoryStore
    from tabpfn_gateway.testing.fake import FakeTabPFN
    from tabpfn_gateway.testing.transport import ASGIBridgeTransport

    if fake is None:
        fake = FakeTabPFN(tokens=[LOCAL_TABPFN_TOKEN])
    # Explicit values for everything that could otherwise come from the environment or a
    # .env file: a local gateway must not pick up a real database, Redis or secret. The data
    # dir does not exist and is never created: secret and pepper are given, nothing persists.
    settings = Settings(
        database_url="memory://",
        data_dir=Path(tempfile.gettempdir()) / f"tabpfn-gateway-local-{uuid.uuid4().hex}",
        secret_key=SecretStr(secrets.token_urlsafe(32)),
        previous_secret_keys=[],
        key_pepper=SecretStr(secrets.token_urlsafe(32)),
        key_hash_scheme="hmac-sha256",
        upstream_url="http://fake-tabpfn.local",
        redis_url=None,
    )
    import httpx

    transport = ASGIBridgeTransport(fake.app)
    store = MemoryStore()
    # The async transport lets the same gateway be served over HTTP as well
    # (tabpfn_gateway_server.create_app(gateway=backend.gateway)): the server proxies async.
    gateway = Gateway.from_settings(
        settings,
        store=store,
        upstream_transport=transport,
        async_upstream_transport=httpx.ASGITransport(app=fake.app),
        bus=LocalBus(),
    )
    try:
        owner = gateway.admin.add_principal(principal)
        credential = gateway.admin.add_credential(owner.id, LOCAL_TABPFN_TOKEN, "fake-tabpfn")
        extra: dict[str, Any] = {} if scopes is None else {"scopes": scopes}
        created = gateway.keys.create(owner.id, credential.id, key_name, **extra)
    except BaseException:
        gateway.close()
        transport.close()
        raise
    return LocalGateway(
        gateway,
        SecretStr(created.plaintext),
        fake=fake,
        transport=transport,
        key_id=created.record.key_id,
        principal_id=owner.id,
    )
