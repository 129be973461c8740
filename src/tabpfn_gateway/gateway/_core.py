"""The gateway's wiring: one place that builds and holds the parts and closes them.

The parts (each in its own module, each changing for its own reasons): the authoriser
(key -> caller -> token, one cache), the spend policy seam, fit ownership, the meter, setup,
invalidation and readiness. ``Gateway`` offers them to the two faces: ``session(api_key)``
(in-process, sync) and ``proxy`` (async, wire level, for the server's routes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
from pydantic import SecretStr

from tabpfn_gateway.config import Settings, get_settings
from tabpfn_gateway.errors import ConfigurationError, GatewayError, StoreUnavailable
from tabpfn_gateway.gateway._authoriser import Authoriser, Caller
from tabpfn_gateway.gateway._changes import ChangeWatcher
from tabpfn_gateway.gateway._datasets import DatasetSizes
from tabpfn_gateway.gateway._fits import FitOwnership
from tabpfn_gateway.gateway._health import Readiness
from tabpfn_gateway.gateway._invalidation import (
    ALL,
    POLICY,
    InvalidationBus,
    LocalBus,
    LocalFirstBus,
    bus_from_settings,
)
from tabpfn_gateway.gateway._metering import Meter, Metering, UpstreamCall
from tabpfn_gateway.gateway._policy import SpendPolicy
from tabpfn_gateway.gateway._setup import (
    SetupResult,
    check_setup_input,
    create_setup,
    self_service_setup,
)
from tabpfn_gateway.gateway._upload_owners import UploadOwnership
from tabpfn_gateway.gateway._uploads import UploadSigner
from tabpfn_gateway.gateway._usage import UsageRecorder
from tabpfn_gateway.netpolicy import EgressPolicy
from tabpfn_gateway.store import Store, open_store

if TYPE_CHECKING:
    from tabpfn_gateway.admin import Admin
    from tabpfn_gateway.gateway._forward import Forwarder
    from tabpfn_gateway.gateway._hosted import HostedGateway
    from tabpfn_gateway.gateway._proxy import AsyncGatewayProxy
    from tabpfn_gateway.gateway._session import SyncGatewaySession
    from tabpfn_gateway.governance import GovernancePolicy, PolicyEngine
    from tabpfn_gateway.keys import KeyManager
    from tabpfn_gateway.protocol import AsyncProtocolClient, ProtocolClient, TokenStatus
    from tabpfn_gateway.vault import TokenVault

__all__ = ["Caller", "Gateway", "Meter", "SetupResult", "UpstreamCall"]

logger = logging.getLogger(__name__)

_UPSTREAM_POOL_SIZE = 100
_VERIFIER_POOL_SIZE = 20
_VERIFY_TIMEOUT_SECONDS = 30.0


class Gateway:
    """The gateway service, framework-free: what the server and in-process sessions call.

    Every call is authorised by ``authoriser`` (key -> caller -> the TabPFN token of the
    credential the key is bound to, cached for ``key_cache_ttl_seconds``), admitted by the
    spend ``policy``, forwarded through one pooled protocol client (``with_token`` per call,
    so the gateway key never goes upstream) and metered (``UsageRecorder``: batched, no
    store write per call). A fit belongs to the principal whose key made it (``fits``); any
    other principal is told it does not exist. ``admin`` manages everything, and announces
    changes to this process first and then, through ``bus``, to every replica.

    Build one with ``Gateway.from_settings``; ``session(api_key)`` gives an in-process
    client with the high-level shape of ``ProtocolClient``; ``proxy`` is the async,
    wire-level face the server routes call.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        keys: KeyManager,
        vault: TokenVault,
        upstream: ProtocolClient,
        uploads: UploadSigner,
        admin: Admin | None = None,
        async_upstream: AsyncProtocolClient | None = None,
        async_upstream_factory: Callable[[], AsyncProtocolClient] | None = None,
        forwarder_factory: Callable[[], Forwarder] | None = None,
        async_verifier_factory: Callable[[], AsyncProtocolClient] | None = None,
        usage: UsageRecorder | None = None,
        bus: InvalidationBus | None = None,
        policy: SpendPolicy | None = None,
        upstream_transport: httpx.BaseTransport | None = None,
        owns_store: bool = False,
    ) -> None:
        from tabpfn_gateway.admin import Admin

        self.settings = settings
        self.store = store
        self.keys = keys
        self.vault = vault
        self.upstream = upstream
        # Made on first use: in-process sessions never need the async client.
        self._async_upstream = async_upstream
        self._async_upstream_factory = async_upstream_factory
        self._forwarder: Forwarder | None = None
        self._forwarder_factory = forwarder_factory
        self._async_verifier: AsyncProtocolClient | None = None
        self._async_verifier_factory = async_verifier_factory
        self._async_lock = threading.Lock()
        self.uploads = uploads
        self.usage = usage or UsageRecorder(store, flush_interval=settings.usage_flush_seconds)
        # Keys answered from the authoriser's cache only note their use in memory; the
        # flusher's thread writes it when due, not only at the next key lookup or at close.
        self.usage.add_background_task(keys.flush_last_used_if_due)
        self.bus: InvalidationBus = bus or LocalBus()
        self.upstream_transport = upstream_transport
        self._owns_store = owns_store
        # Where signed URLs may point (tabpfn_gateway.netpolicy): one policy for every HTTP stack.
        self.egress = EgressPolicy.build(
            upstream_urls=[settings.upstream_url],
            allowed_hosts=settings.egress_allowed_hosts,
            allowed_networks=settings.egress_allowed_networks,
        )
        self.authoriser = Authoriser(keys, store, vault, ttl=settings.key_cache_ttl_seconds)
        self.fits = FitOwnership(store)
        self.datasets = DatasetSizes()
        self.upload_owners = UploadOwnership(store)
        if policy is None:
            from tabpfn_gateway.governance import GovernancePolicy, PolicyEngine

            policy = GovernancePolicy(
                PolicyEngine(store, cache_ttl=settings.key_cache_ttl_seconds),
                meter_credits=settings.meter_credits,
            )
        self.meter = Metering(self.usage, policy=policy)
        self.readiness = Readiness(store, settings)
        self.admin = admin or Admin(
            store,
            vault,
            keys,
            # Changes made here reach this process's caches before any network hop.
            bus=LocalFirstBus(self.bus, self._invalidate),
            usage=self.usage,
            verifier=self.verify_upstream_token,
            url_verifier=self.verify_upstream_token,
        )
        self._closed = False
        # Caches outside the core (the hosted gateway's credentials) hear every invalidation.
        self._invalidation_listeners: list[Callable[[str], None]] = []
        self.bus.start(self._invalidate)
        # The bus is fast where it exists; the counter holds the bound on every store.
        self.changes: ChangeWatcher | None = None
        if settings.change_poll_seconds > 0 and not settings.database_url.startswith("memory://"):
            self.changes = ChangeWatcher(store, self._invalidate, settings.change_poll_seconds)
            self.changes.start()
        self._proxy: AsyncGatewayProxy | None = None
        self._hosted: HostedGateway | None = None

    def __repr__(self) -> str:
        return f"Gateway(upstream_url={self.settings.upstream_url!r})"

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        upstream_transport: httpx.BaseTransport | None = None,
        async_upstream_transport: httpx.AsyncBaseTransport | None = None,
        generate_secret: bool = False,
        bus: InvalidationBus | None = None,
        policy: SpendPolicy | None = None,
    ) -> Gateway:
        """A gateway wired from settings.

        ``store``: use this store (not closed by ``close()``) instead of opening
        ``settings.database_url``. ``upstream_transport`` / ``async_upstream_transport``:
        httpx transports for the sync and async upstream clients (tests pass FakeTabPFN's);
        the async one defaults to ``AiohttpTransport`` when aiohttp is installed.
        ``generate_secret``: with no ``TABPFN_GATEWAY_SECRET_KEY``, generate and persist one
        in the data dir (what the server does on first start) instead of failing.
        ``bus``: the cross-replica invalidation bus; default from settings (Redis if
        ``redis_url``, PostgreSQL NOTIFY on PostgreSQL, else in-process).
        ``policy``: the spend policy every operation is admitted by (default: the governance
        policy with the backends the settings choose, see docs/governance.md).
        """
        from tabpfn_gateway.keys import KeyManager
        from tabpfn_gateway.protocol import AsyncProtocolClient, ProtocolClient
        from tabpfn_gateway.vault import TokenVault, configured_secrets, derive_key

        settings = settings if settings is not None else get_settings()
        # The vault first: with generate_secret it persists the secret the key pepper and the
        # upload signer derive from.
        vault = TokenVault.from_settings(settings, generate=generate_secret)
        owns_store = store is None
        store = store if store is not None else open_store(settings)
        try:
            from tabpfn_gateway.secret_fingerprint import check_shared_secrets

            # A replica with another secret than the database's refuses to start (or, when
            # the database cannot be asked now, to be ready until it has checked).
            try:
                check_shared_secrets(settings, store)
                deferred_secret_check = False
            except StoreUnavailable:
                deferred_secret_check = True
            # The authoriser is the one cache on the auth path: the key manager keeps none.
            keys = KeyManager.from_settings(settings, store=store, cache_ttl=0)
            signer = UploadSigner(
                [derive_key(s, "gateway upload urls") for s in configured_secrets(settings)],
                ttl_seconds=settings.upload_url_ttl_seconds,
            )
            timeouts: dict[str, Any] = {
                "timeout": settings.upstream_timeout_seconds,
                "connect_timeout": settings.upstream_connect_timeout_seconds,
                # One pool serves every caller of this replica: size it for many at once.
                "max_connections": _UPSTREAM_POOL_SIZE,
            }
            upstream = ProtocolClient(
                settings.upstream_url, transport=upstream_transport, **timeouts
            )

            def make_async_upstream() -> AsyncProtocolClient:
                transport = async_upstream_transport
                if transport is None:
                    transport = default_async_transport(_UPSTREAM_POOL_SIZE)
                return AsyncProtocolClient(settings.upstream_url, transport=transport, **timeouts)

            def make_async_verifier() -> AsyncProtocolClient:
                # Setup's token checks: no retries (a person waits, and each retry would be
                # one more guess upstream), a short timeout, a small pool of their own.
                transport = async_upstream_transport
                if transport is None:
                    transport = default_async_transport(_VERIFIER_POOL_SIZE)
                return AsyncProtocolClient(
                    settings.upstream_url,
                    transport=transport,
                    timeout=min(settings.upstream_timeout_seconds, _VERIFY_TIMEOUT_SECONDS),
                    connect_timeout=min(
                        settings.upstream_connect_timeout_seconds, _VERIFY_TIMEOUT_SECONDS
                    ),
                    max_connections=_VERIFIER_POOL_SIZE,
                    max_retries=0,
                )

            def make_forwarder() -> Forwarder:
                from tabpfn_gateway.gateway._forward import Forwarder

                # Pools of its own: API calls in one, uploads to signed URLs in the other
                # (a long upload must not hold a connection small calls wait for).
                transport = storage = async_upstream_transport
                if transport is None:
                    transport = default_async_transport(_UPSTREAM_POOL_SIZE)
                    storage = default_async_transport(_UPSTREAM_POOL_SIZE)
                return Forwarder(
                    settings.upstream_url,
                    transport=transport,
                    storage_transport=storage,
                    **timeouts,
                )

            gateway = cls(
                settings=settings,
                store=store,
                keys=keys,
                vault=vault,
                upstream=upstream,
                async_upstream_factory=make_async_upstream,
                forwarder_factory=make_forwarder,
                async_verifier_factory=make_async_verifier,
                uploads=signer,
                bus=bus if bus is not None else bus_from_settings(settings),
                policy=policy if policy is not None else _governance(settings, store),
                upstream_transport=upstream_transport,
                owns_store=owns_store,
            )
        except BaseException:
            if owns_store:
                store.close()
            raise
        if deferred_secret_check:
            checked_store = store
            gateway.readiness.require(lambda: check_shared_secrets(settings, checked_store))
        return gateway

    # -- faces -------------------------------------------------------------------------------

    @property
    def async_upstream(self) -> AsyncProtocolClient:
        """The pooled async upstream client (made on first use)."""
        if self._async_upstream is None:
            with self._async_lock:
                if self._async_upstream is None:
                    if self._async_upstream_factory is None:
                        raise ConfigurationError("This gateway has no async upstream client.")
                    self._async_upstream = self._async_upstream_factory()
        return self._async_upstream

    @property
    def forwarder(self) -> Forwarder:
        """The proxy's upstream API calls, answers kept as bytes (made on first use)."""
        if self._forwarder is None:
            with self._async_lock:
                if self._forwarder is None:
                    if self._forwarder_factory is None:
                        raise ConfigurationError("This gateway has no upstream forwarder.")
                    self._forwarder = self._forwarder_factory()
        return self._forwarder

    def session(self, api_key: str | SecretStr) -> SyncGatewaySession:
        """An in-process client acting as the holder of ``api_key`` (no server involved)."""
        from tabpfn_gateway.gateway._session import SyncGatewaySession

        return SyncGatewaySession(self, api_key)

    @property
    def hosted(self) -> HostedGateway:
        """The self-hosted container face (``POST /predict``), one per gateway."""
        with self._async_lock:
            if self._hosted is None:
                from tabpfn_gateway.gateway._hosted import HostedGateway

                self._hosted = HostedGateway(self)
            return self._hosted

    @property
    def proxy(self) -> AsyncGatewayProxy:
        """The async, wire-level face (one per gateway)."""
        if self._proxy is None:
            from tabpfn_gateway.gateway._proxy import AsyncGatewayProxy

            self._proxy = AsyncGatewayProxy(self)
        return self._proxy

    @property
    def governance(self) -> GovernancePolicy | None:
        """The governance policy operations are admitted by (None with a custom policy)."""
        from tabpfn_gateway.governance import GovernancePolicy

        policy = self.meter.policy
        return policy if isinstance(policy, GovernancePolicy) else None

    @property
    def policy_engine(self) -> PolicyEngine | None:
        """The policy engine behind ``governance`` (budgets, limits, alerts), if any."""
        governance = self.governance
        return governance.engine if governance is not None else None

    def _invalidate(self, message: str) -> None:
        # Keys and credentials are the authoriser's; policies and memberships the engine's.
        self.authoriser.invalidate(message)
        engine = self.policy_engine
        if engine is not None and (message == ALL or message.startswith(POLICY)):
            target = message[len(POLICY) :] if message.startswith(POLICY) else ALL
            engine.invalidate(None if target == ALL else target)
        for listener in list(self._invalidation_listeners):
            try:
                listener(message)
            except GatewayError:  # one failed cache must not keep the others stale
                logger.exception("An invalidation listener failed")

    def add_invalidation_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(message)`` for every invalidation this process hears (the bus, the
        change counter, its own admin changes): ``ALL``, ``key:<id>``, ``credential:<id>``..."""
        self._invalidation_listeners.append(listener)

    def add_observer(self, observer: Callable[[UpstreamCall], None]) -> None:
        """Call ``observer`` after every metered operation (the server's metrics hook)."""
        self.meter.add_observer(observer)

    def add_usage_flush_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(count)`` after each batch of usage events is written."""
        self.usage.add_flush_listener(listener)

    # -- the parts, by name ------------------------------------------------------------------

    def authenticate(self, api_key: str | SecretStr, *, scope: str | None = None) -> Caller:
        """The caller holding ``api_key``, if it may be used for ``scope`` (see ``Authoriser``)."""
        return self.authoriser.authenticate(api_key, scope=scope)

    def check_fit_owner(self, caller: Caller, fitted_train_set_id: str | UUID) -> str:
        """The normalised fit id if ``caller``'s principal owns it; else ``FittedModelNotFound``."""
        return self.fits.check(caller, fitted_train_set_id)

    def claim_fit(
        self,
        caller: Caller,
        fitted_train_set_id: str | UUID,
        *,
        task: str,
        rows: int | None = None,
        columns: int | None = None,
    ) -> None:
        """Record that a fit just made upstream belongs to ``caller``'s principal."""
        fit_id = self.fits.claim(caller, fitted_train_set_id, task=task, rows=rows, columns=columns)
        governance = self.governance
        if fit_id is not None and governance is not None:
            # Its predictions are priced by its training rows: known here, so the first
            # prediction does not read them back from the store.
            governance.prices.remember_fit_rows(fit_id, rows if rows is not None else 0)

    def metered(
        self, caller: Caller, operation: str, meter: Meter | None = None
    ) -> AbstractContextManager[Meter]:
        """Admit, time and record one operation (see ``Metering.metered``)."""
        return self.meter.metered(caller, operation, meter)

    def step(self, caller: Caller, operation: str) -> AbstractContextManager[None]:
        """Time one wire-level step of a user action, for metrics only (see ``Metering.step``)."""
        return self.meter.step(caller, operation)

    @asynccontextmanager
    async def ametered(
        self, caller: Caller, operation: str, meter: Meter | None = None
    ) -> AsyncIterator[Meter]:
        """``metered`` for async code, with no store I/O on the event loop: the policy decision
        is made in memory when it can be (cached policies, in-process counters or a rate
        lease), else first in a worker thread; a settlement or refund that writes (a budget,
        a shared fit slot) runs in a worker thread when the call has ended."""
        meter = meter if meter is not None else Meter()
        governance = self.governance
        if governance is None:
            with self.meter.metered(caller, operation, meter) as inner:
                yield inner
            return
        import anyio
        import anyio.to_thread

        try:
            ahead = governance.decide_in_memory(caller, operation, meter.credits)
            if ahead is None:
                ahead = await anyio.to_thread.run_sync(
                    lambda: governance.decide_for(caller, operation, meter)
                )
            meter.admission = ahead
        except GatewayError as exc:  # recorded by metered, like a refusal made inline
            meter.admission = exc
        deferred: list[Callable[[], None]] = []
        meter.deferred = deferred
        try:
            with self.meter.metered(caller, operation, meter) as inner:
                yield inner
        finally:
            meter.deferred = None
            if deferred:
                # Shielded: a cancelled request still settles or refunds what it reserved.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_run_all, deferred)

    def setup(
        self, tabpfn_token: str | SecretStr, *, name: str | None = None, actor: str = "setup"
    ) -> SetupResult:
        """Self-service setup (the seed's flow): verify the token upstream, then create the
        principal, its encrypted credential and an inference key in one transaction.

        ``UpstreamAuthenticationFailed`` when the upstream rejects the token;
        ``UpstreamUnavailable`` (retryable) when it cannot be asked. The principal is named
        ``setup:<name>-<random>`` (see ``Admin.add_setup_principal``), so ``name`` is never
        taken. Nothing is written unless everything is.
        """
        return self_service_setup(
            tabpfn_token,
            name=name,
            actor=actor,
            settings=self.settings,
            store=self.store,
            vault=self.vault,
            verify=self.verify_upstream_token,
        )

    async def asetup(
        self, tabpfn_token: str | SecretStr, *, name: str | None = None, actor: str = "setup"
    ) -> SetupResult:
        """``setup`` for async code: the token is verified with the async upstream client (no
        worker thread waits on a slow upstream), the writes run in a worker thread."""
        import anyio.to_thread

        token = check_setup_input(tabpfn_token, name)
        status = await self.averify_upstream_token(token)
        return await anyio.to_thread.run_sync(
            lambda: create_setup(
                token,
                name,
                status,
                actor=actor,
                settings=self.settings,
                store=self.store,
                vault=self.vault,
            )
        )

    def verify_upstream_token(self, token: SecretStr, base_url: str | None = None) -> TokenStatus:
        """Ask the upstream (``base_url``, default the configured one) whether ``token``
        works (``UpstreamUnavailable`` if it cannot)."""
        from tabpfn_gateway.protocol import verify_tabpfn_token

        return verify_tabpfn_token(
            token,
            base_url=base_url or self.settings.upstream_url,
            transport=self.upstream_transport,
            timeout=min(self.settings.upstream_timeout_seconds, _VERIFY_TIMEOUT_SECONDS),
        )

    async def averify_upstream_token(self, token: SecretStr) -> TokenStatus:
        """``verify_upstream_token`` on the event loop, through the async verifier client."""
        from tabpfn_gateway.protocol.verify import averify_tabpfn_token

        if self._async_verifier_factory is None:  # a gateway built by hand, without one
            import anyio.to_thread

            return await anyio.to_thread.run_sync(self.verify_upstream_token, token)
        if self._async_verifier is None:
            with self._async_lock:
                if self._async_verifier is None:
                    self._async_verifier = self._async_verifier_factory()
        async with self._async_verifier.with_token(token) as client:
            return await averify_tabpfn_token(client)

    def remove_credential(self, credential_id: str, *, actor: str) -> None:
        """Remove a credential; keys bound to it stop working on every replica."""
        self.admin.remove_credential(credential_id, actor=actor)

    def check_ready(self) -> None:
        """Return if the database answers and its schema is current; else raise
        ``StoreUnavailable`` or ``SchemaNotCurrent``."""
        self.readiness.check()

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Flush usage and key last-use, stop the bus, close clients (and an owned store)."""
        if self._closed:
            return
        self._closed = True
        if self._hosted is not None:
            self._hosted.close()
        if self.changes is not None:
            self.changes.close()
        self.bus.close()
        self.usage.close()
        engine = self.policy_engine
        if engine is not None:
            engine.close()
        self.keys.close()
        self.upstream.close()
        if self._owns_store:
            self.store.close()

    async def close_async_upstream(self) -> None:
        """Close the async upstream client's pool, in the event loop that used it.

        Its connections belong to that loop (aiohttp's do), so a server closes them when
        its loop ends, also when the gateway is not the server's to close; a client made
        by the factory is made again on next use (e.g. by another server's loop).
        """
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            await forwarder.aclose()
        verifier, self._async_verifier = self._async_verifier, None
        if verifier is not None:
            await verifier.aclose()
        client = self._async_upstream
        if client is None:
            return
        if self._async_upstream_factory is not None:
            self._async_upstream = None
        await client.aclose()

    async def aclose(self) -> None:
        """``close()`` plus the async upstream client's pool."""
        await self.close_async_upstream()
        self.close()


def _governance(settings: Settings, store: Store) -> SpendPolicy:
    from tabpfn_gateway.governance import GovernancePolicy

    return GovernancePolicy.from_settings(settings, store)


def default_async_transport(max_connections: int) -> httpx.AsyncBaseTransport | None:
    """The server's upstream transport: aiohttp's pool when installed (the ``server`` extra),
    several times faster than httpx's own under concurrency (encode/httpx#3215); else None
    (httpx's pool)."""
    try:
        from tabpfn_gateway.protocol.aiohttp_transport import AiohttpTransport

        return AiohttpTransport(max_connections=max_connections)
    except ImportError:
        return None


def _run_all(work: list[Callable[[], None]]) -> None:
    for item in work:
        item()
