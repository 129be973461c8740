"""The gateway core: authenticate a key, resolve its TabPFN token, check ownership, meter usage."""

from __future__ import annotations

import hashlib
import logging
import secrets as _secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
from pydantic import SecretStr

from tabpfn_gateway.config import Settings, get_settings
from tabpfn_gateway.errors import (
    ConfigurationError,
    Conflict,
    CredentialNotFound,
    FittedModelNotFound,
    GatewayError,
    InvalidRequest,
    KeyDisabled,
    KeyExpired,
    KeyRevoked,
    SchemaNotCurrent,
    StoreError,
    UpstreamAuthenticationFailed,
)
from tabpfn_gateway.gateway._invalidation import ALL, InvalidationBus, LocalBus, bus_from_settings
from tabpfn_gateway.gateway._status import http_status
from tabpfn_gateway.gateway._uploads import UploadSigner
from tabpfn_gateway.gateway._usage import UsageRecorder
from tabpfn_gateway.netpolicy import EgressPolicy
from tabpfn_gateway.store import (
    ApiKey,
    FittedModel,
    Principal,
    Store,
    UpstreamCredential,
    UsageEvent,
    new_id,
    open_store,
    utcnow,
)

if TYPE_CHECKING:
    from tabpfn_gateway.admin import Admin
    from tabpfn_gateway.gateway._proxy import GatewayProxy
    from tabpfn_gateway.gateway._session import GatewaySession
    from tabpfn_gateway.keys import CreatedKey, KeyManager
    from tabpfn_gateway.protocol import AsyncProtocolClient, ProtocolClient, TokenStatus
    from tabpfn_gateway.vault import TokenVault

__all__ = ["Caller", "Gateway", "SetupResult", "UpstreamCall"]

logger = logging.getLogger(__name__)

_MAX_NAME_LENGTH = 200
_FIT_OWNER_CACHE_SIZE = 50_000
_SCHEMA_CHECK_SECONDS = 30.0
_UPSTREAM_POOL_SIZE = 100
# Repeated from tabpfn_gateway.keys (imported lazily there): admin implies every scope.
_SCOPE_ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    """Who is calling: the verified key record (its secret never leaves ``KeyManager``)."""

    key: ApiKey

    @property
    def key_id(self) -> str:
        return self.key.key_id

    @property
    def owner_id(self) -> str:
        return self.key.owner_id

    @property
    def credential_id(self) -> str | None:
        return self.key.credential_id

    @property
    def actor(self) -> str:
        """How audit events name this caller."""
        return f"key:{self.key.key_id}"


@dataclass(frozen=True)
class UpstreamCall:
    """One metered operation, as observers (the server's metrics) see it. No secrets."""

    operation: str
    key_id: str
    status: int
    seconds: float


@dataclass(frozen=True)
class SetupResult:
    """What self-service setup made: a principal, its encrypted credential, and a key."""

    principal: Principal
    credential: UpstreamCredential
    key: CreatedKey = field(repr=False)


@dataclass
class Meter:
    """Dimensions of one metered call, filled in while it runs."""

    rows: int | None = None
    columns: int | None = None
    nbytes: int | None = None
    trace_id: str | None = None


class _TtlCache:
    """A tiny thread-safe TTL map (credential id -> decrypted token)."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._items: dict[str, tuple[SecretStr, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> SecretStr | None:
        if self._ttl <= 0:
            return None
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if time.monotonic() >= item[1]:
                del self._items[key]
                return None
            return item[0]

    def put(self, key: str, value: SecretStr) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            self._items[key] = (value, time.monotonic() + self._ttl)

    def drop(self, key: str | None = None) -> None:
        with self._lock:
            if key is None:
                self._items.clear()
            else:
                self._items.pop(key, None)


@dataclass(frozen=True)
class _Resolved:
    caller: Caller
    token: SecretStr = field(repr=False)
    until: float


class _ResolvedCache:
    """Authorisation decisions (key record + decrypted token) by key fingerprint, so a hot
    path can be answered from memory without a worker thread. Dropped per key id and
    credential id by the same signals that clear ``KeyManager``'s cache."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._items: dict[bytes, _Resolved] = {}
        self._lock = threading.Lock()

    def get(self, fingerprint: bytes) -> _Resolved | None:
        with self._lock:
            entry = self._items.get(fingerprint)
        if entry is None or time.monotonic() >= entry.until:
            return None
        return entry

    def put(self, fingerprint: bytes, caller: Caller, token: SecretStr) -> None:
        if self._ttl <= 0:
            return
        ttl = self._ttl
        now = utcnow()
        # Never trusted past the key's expiry or the end of a rotation's grace window
        # (whether this secret is the old or the new one is KeyManager's to decide).
        for limit in (caller.key.expires_at, caller.key.previous_valid_until):
            if limit is not None:
                ttl = min(ttl, (limit - now).total_seconds())
        if ttl <= 0:
            return
        with self._lock:
            if len(self._items) >= self._max:
                self._items.pop(next(iter(self._items)))
            self._items[fingerprint] = _Resolved(caller, token, time.monotonic() + ttl)

    def caller_for_key(self, key_id: str) -> Caller | None:
        """A current decision for ``key_id`` (any of its secrets), if one is cached."""
        now = time.monotonic()
        with self._lock:
            for entry in self._items.values():
                if entry.caller.key_id == key_id and now < entry.until:
                    return entry.caller
        return None

    def drop(self, *, key_id: str | None = None, credential_id: str | None = None) -> None:
        with self._lock:
            if key_id is None and credential_id is None:
                self._items.clear()
                return
            stale = [
                fingerprint
                for fingerprint, entry in self._items.items()
                if (key_id is not None and entry.caller.key_id == key_id)
                or (credential_id is not None and entry.caller.credential_id == credential_id)
            ]
            for fingerprint in stale:
                del self._items[fingerprint]


class Gateway:
    """The gateway service, framework-free: what the server and in-process sessions call.

    Every call authenticates a gateway key (``KeyManager.verify``: scope, expiry, state),
    resolves the TabPFN token of the credential the key is bound to (decrypted by the vault,
    cached for ``key_cache_ttl_seconds``), forwards through one pooled protocol client
    (``with_token`` per call, so the gateway key never goes upstream), and meters the call
    (``UsageRecorder``: batched, no store write per call). A fit belongs to the principal
    whose key made it; any other principal is told it does not exist.

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
        admin: Admin,
        vault: TokenVault,
        upstream: ProtocolClient,
        uploads: UploadSigner,
        async_upstream: AsyncProtocolClient | None = None,
        async_upstream_factory: Callable[[], AsyncProtocolClient] | None = None,
        usage: UsageRecorder | None = None,
        bus: InvalidationBus | None = None,
        upstream_transport: httpx.BaseTransport | None = None,
        owns_store: bool = False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keys = keys
        self.admin = admin
        self.vault = vault
        self.upstream = upstream
        # Made on first use: in-process sessions never need the async client.
        self._async_upstream = async_upstream
        self._async_upstream_factory = async_upstream_factory
        self._async_lock = threading.Lock()
        self.uploads = uploads
        self.usage = usage or UsageRecorder(store, flush_interval=settings.usage_flush_seconds)
        self.bus: InvalidationBus = bus or LocalBus()
        self.upstream_transport = upstream_transport
        self._owns_store = owns_store
        # Where signed URLs may point (tabpfn_gateway.netpolicy): one policy for every HTTP stack.
        self.egress = EgressPolicy.build(
            upstream_urls=[settings.upstream_url],
            allowed_hosts=settings.egress_allowed_hosts,
            allowed_networks=settings.egress_allowed_networks,
        )
        self._tokens = _TtlCache(settings.key_cache_ttl_seconds)
        self._resolved = _ResolvedCache(settings.key_cache_ttl_seconds)
        # Fit ownership never changes once recorded, so it is cached without expiry.
        self._fit_owners: OrderedDict[str, str] = OrderedDict()
        self._fit_owners_lock = threading.Lock()
        self._observers: list[Callable[[UpstreamCall], None]] = []
        self._closed = False
        self._schema_current_until = 0.0
        self.keys.add_change_listener(self._key_changed)
        self.bus.start(self._on_invalidation)
        self._proxy: GatewayProxy | None = None

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
    ) -> Gateway:
        """A gateway wired from settings.

        ``store``: use this store (not closed by ``close()``) instead of opening
        ``settings.database_url``. ``upstream_transport`` / ``async_upstream_transport``:
        httpx transports for the sync and async upstream clients (tests pass FakeTabPFN's).
        ``generate_secret``: with no ``TABPFN_GATEWAY_SECRET_KEY``, generate and persist one
        in the data dir (what the server does on first start) instead of failing.
        ``bus``: the cross-replica invalidation bus; default from settings (Redis if
        ``redis_url``, PostgreSQL NOTIFY on PostgreSQL, else in-process).
        """
        from tabpfn_gateway.admin import Admin
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
            keys = KeyManager.from_settings(settings, store=store)
            admin = Admin(store, vault, keys)
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
                return AsyncProtocolClient(
                    settings.upstream_url, transport=async_upstream_transport, **timeouts
                )

            return cls(
                settings=settings,
                store=store,
                keys=keys,
                admin=admin,
                vault=vault,
                upstream=upstream,
                async_upstream_factory=make_async_upstream,
                uploads=signer,
                bus=bus if bus is not None else bus_from_settings(settings),
                upstream_transport=upstream_transport,
                owns_store=owns_store,
            )
        except BaseException:
            if owns_store:
                store.close()
            raise

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

    def session(self, api_key: str | SecretStr) -> GatewaySession:
        """An in-process client acting as the holder of ``api_key`` (no server involved)."""
        from tabpfn_gateway.gateway._session import GatewaySession

        return GatewaySession(self, api_key)

    @property
    def proxy(self) -> GatewayProxy:
        """The async, wire-compatible operations the server's TabPFN routes call."""
        if self._proxy is None:
            from tabpfn_gateway.gateway._proxy import GatewayProxy

            self._proxy = GatewayProxy(self)
        return self._proxy

    def add_observer(self, observer: Callable[[UpstreamCall], None]) -> None:
        """Call ``observer`` after every metered operation (the server's metrics hook)."""
        self._observers.append(observer)

    # -- policy ------------------------------------------------------------------------------

    def authenticate(self, api_key: str | SecretStr, *, scope: str | None = None) -> Caller:
        """The caller holding ``api_key``, if it may be used for ``scope``.

        ``InvalidKey``/``KeyRevoked``/``KeyExpired``/``KeyDisabled``/``InsufficientScope``;
        a database outage is ``StoreUnavailable``, never an authentication error.
        """
        raw = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        return Caller(self.keys.verify(raw, scope=scope))

    def upstream_token(self, caller: Caller) -> SecretStr:
        """The TabPFN token of the credential ``caller``'s key is bound to (cached briefly)."""
        credential_id = caller.credential_id
        if credential_id is None:
            raise CredentialNotFound(
                "This key is not bound to a TabPFN credential (an admin key); use an inference key."
            )
        token = self._tokens.get(credential_id)
        if token is None:
            try:
                token = self.admin.upstream_token(credential_id)
            except CredentialNotFound:
                raise CredentialNotFound(
                    "The TabPFN credential this key was bound to has been removed; "
                    "ask an administrator for a new key."
                ) from None
            self._tokens.put(credential_id, token)
        return token

    def resolve(self, api_key: str | SecretStr, *, scope: str) -> tuple[Caller, SecretStr]:
        """``authenticate`` plus ``upstream_token``, remembered for ``resolve_from_memory``."""
        caller = self.authenticate(api_key, scope=scope)
        token = self.upstream_token(caller)
        self._resolved.put(_fingerprint(api_key), caller, token)
        return caller, token

    def resolve_from_memory(
        self, api_key: str | SecretStr, *, scope: str
    ) -> tuple[Caller, SecretStr] | None:
        """What ``resolve`` answered for this key within the cache TTL, if it still holds;
        None means "ask ``resolve``" (which does I/O and raises the precise error)."""
        entry = self._resolved.get(_fingerprint(api_key))
        if entry is None:
            return None
        record = entry.caller.key
        if record.expires_at is not None and utcnow() >= record.expires_at:
            return None
        if scope not in record.scopes and _SCOPE_ADMIN not in record.scopes:
            return None
        return entry.caller, entry.token

    def fit_owner_from_memory(self, fitted_train_set_id: str | UUID) -> str | None:
        """The owner of a fit if it is cached (ownership never changes), else None."""
        try:
            fit_id = normalise_fit_id(fitted_train_set_id)
        except FittedModelNotFound:
            return None
        return self._cached_fit_owner(fit_id)

    def key_alive_from_memory(self, key_id: str) -> Caller | None:
        """The caller for ``key_id`` if a current authorisation of it is cached (revocations
        drop it at once), else None: ask ``check_key_alive``."""
        caller = self._resolved.caller_for_key(key_id)
        if caller is None:
            return None
        expires_at = caller.key.expires_at
        if expires_at is not None and utcnow() >= expires_at:
            return None
        return caller

    def check_key_alive(self, key_id: str) -> Caller:
        """The caller for ``key_id`` if its key is neither revoked, disabled nor expired.

        For requests authenticated by something the key was issued (an upload URL) rather
        than the key itself: they stop working when the key does.
        """
        record = self.keys.get(key_id)
        if record.revoked_at is not None:
            raise KeyRevoked()
        if record.disabled_at is not None:
            raise KeyDisabled()
        if record.expires_at is not None and utcnow() >= record.expires_at:
            raise KeyExpired()
        return Caller(record)

    def check_fit_owner(self, caller: Caller, fitted_train_set_id: str | UUID) -> str:
        """The normalised fit id if ``caller``'s principal owns it; else ``FittedModelNotFound``.

        Unknown fits and other principals' fits get the same answer: no oracle.
        """
        fit_id = normalise_fit_id(fitted_train_set_id)
        owner = self._cached_fit_owner(fit_id)
        if owner is None:
            model = self.store.get_fitted_model(fit_id)
            if model is None:
                raise FittedModelNotFound()
            owner = model.owner_id
            self._remember_fit_owner(fit_id, owner)
        if owner != caller.owner_id:
            raise FittedModelNotFound()
        return fit_id

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
        fit_id = normalise_fit_id(fitted_train_set_id)
        if caller.credential_id is None:  # unreachable: no upstream call without a credential
            raise CredentialNotFound()
        model = FittedModel(
            id=fit_id,
            owner_id=caller.owner_id,
            credential_id=caller.credential_id,
            key_id=caller.key_id,
            task=task,
            n_rows=rows,
            n_cols=columns,
        )
        try:
            self.store.add_fitted_model(model)
        except Conflict:
            existing = self.store.get_fitted_model(fit_id)
            if existing is not None and existing.owner_id != caller.owner_id:
                # The upstream reused an id across principals (a shared token): keep the
                # first owner; the second is told "not found", never the other's model.
                logger.warning("fit %s is already owned by another principal", fit_id)
                return
        self._remember_fit_owner(fit_id, caller.owner_id)

    def _cached_fit_owner(self, fit_id: str) -> str | None:
        with self._fit_owners_lock:
            owner = self._fit_owners.get(fit_id)
            if owner is not None:
                self._fit_owners.move_to_end(fit_id)
            return owner

    def _remember_fit_owner(self, fit_id: str, owner: str) -> None:
        with self._fit_owners_lock:
            self._fit_owners[fit_id] = owner
            self._fit_owners.move_to_end(fit_id)
            while len(self._fit_owners) > _FIT_OWNER_CACHE_SIZE:
                self._fit_owners.popitem(last=False)

    # -- metering ----------------------------------------------------------------------------

    @contextmanager
    def metered(
        self, caller: Caller, operation: str, meter: Meter | None = None
    ) -> Iterator[Meter]:
        """Time the block and record one usage event for it, failed or not.

        The status is 200, or the HTTP status of the ``GatewayError`` that ended the block
        (500 for anything else); the block fills ``rows``/``columns``/``nbytes``/``trace_id``.
        """
        meter = meter if meter is not None else Meter()
        started = time.perf_counter()
        status = 200
        try:
            yield meter
        except GatewayError as exc:
            status = http_status(exc)
            meter.trace_id = meter.trace_id or exc.trace_id
            raise
        except BaseException:
            status = 500
            raise
        finally:
            self._record(caller, operation, status, time.perf_counter() - started, meter)

    def _record(
        self, caller: Caller, operation: str, status: int, seconds: float, meter: Meter
    ) -> None:
        self.usage.record(
            UsageEvent(
                id=new_id(),
                key_id=caller.key_id,
                owner_id=caller.owner_id,
                credential_id=caller.credential_id,
                operation=operation,
                status=status,
                latency_ms=seconds * 1000.0,
                rows=meter.rows,
                columns=meter.columns,
                bytes=meter.nbytes,
                upstream_trace_id=meter.trace_id,
            )
        )
        call = UpstreamCall(
            operation=operation, key_id=caller.key_id, status=status, seconds=seconds
        )
        for observer in self._observers:
            try:
                observer(call)
            except Exception:  # metrics must never fail a call
                logger.exception("usage observer failed")

    # -- setup and administration -------------------------------------------------------------

    def setup(
        self, tabpfn_token: str | SecretStr, *, name: str | None = None, actor: str = "setup"
    ) -> SetupResult:
        """Self-service setup (the seed's flow): verify the token upstream, then create the
        principal, its encrypted credential and an inference key in one transaction.

        ``UpstreamAuthenticationFailed`` when the upstream rejects the token;
        ``UpstreamUnavailable`` (retryable) when it cannot be asked; ``Conflict`` when
        ``name`` is taken. Nothing is written unless everything is.
        """
        from tabpfn_gateway.admin import Admin
        from tabpfn_gateway.keys import DEFAULT_SCOPES, KeyManager
        from tabpfn_gateway.protocol import TokenStatus

        token = tabpfn_token if isinstance(tabpfn_token, SecretStr) else SecretStr(tabpfn_token)
        if not token.get_secret_value().strip():
            raise InvalidRequest("tabpfn_token must not be empty.")
        principal_name = _check_principal_name(name) if name is not None else None
        status = self.verify_upstream_token(token)
        if status is TokenStatus.INVALID:
            raise UpstreamAuthenticationFailed("The upstream rejected this TabPFN token.")
        with self.store.atomic() as tx:
            tx_keys = KeyManager.from_settings(self.settings, store=tx)
            tx_admin = Admin(tx, self.vault, tx_keys)
            principal = tx_admin.add_principal(
                principal_name or f"user-{_secrets.token_hex(4)}", "user", actor=actor
            )
            credential = tx_admin.add_credential(
                principal.id, token, "setup", verify=None, actor=actor
            )
            created = tx_keys.create(
                principal.id, credential.id, "setup", DEFAULT_SCOPES, actor=actor
            )
        return SetupResult(principal=principal, credential=credential, key=created)

    def verify_upstream_token(self, token: SecretStr) -> TokenStatus:
        """Ask the upstream whether ``token`` works (``UpstreamUnavailable`` if it cannot)."""
        from tabpfn_gateway.protocol import verify_tabpfn_token

        return verify_tabpfn_token(
            token,
            base_url=self.settings.upstream_url,
            transport=self.upstream_transport,
            timeout=min(self.settings.upstream_timeout_seconds, 30.0),
        )

    def remove_credential(self, credential_id: str, *, actor: str) -> None:
        """Remove a credential; keys bound to it stop working on every replica."""
        self.admin.remove_credential(credential_id, actor=actor)
        self._tokens.drop(credential_id)
        self._resolved.drop(credential_id=credential_id)
        self.bus.publish(f"credential:{credential_id}")

    def _key_changed(self, key_id: str) -> None:
        # Here first (before any network hop), then every other replica.
        self._resolved.drop(key_id=key_id)
        self.bus.publish(f"key:{key_id}")

    def _on_invalidation(self, message: str) -> None:
        if message == ALL:
            self.keys.invalidate()
            self._tokens.drop()
            self._resolved.drop()
        elif message.startswith("key:"):
            key_id = message[len("key:") :]
            self._resolved.drop(key_id=key_id)
            self.keys.invalidate(key_id)
        elif message.startswith("credential:"):
            credential_id = message[len("credential:") :]
            self._tokens.drop(credential_id)
            self._resolved.drop(credential_id=credential_id)

    # -- health ------------------------------------------------------------------------------

    def check_ready(self) -> None:
        """Return if the database answers and its schema is current; else raise
        ``StoreUnavailable`` or ``SchemaNotCurrent``."""
        self.store.ping()
        if self.settings.database_url.startswith("memory://"):
            return
        # Reading the revision opens a connection of its own; a current schema stays current
        # until a newer release migrates it, so a positive answer is trusted for a while.
        if time.monotonic() < self._schema_current_until:
            return
        from tabpfn_gateway.migrate import is_current

        try:
            current = is_current(self.settings)
        except GatewayError:
            raise
        except Exception as exc:  # migrate is a boundary to Alembic and SQLAlchemy
            raise StoreError("Could not read the schema revision.") from exc
        if not current:
            raise SchemaNotCurrent()
        self._schema_current_until = time.monotonic() + _SCHEMA_CHECK_SECONDS

    def close(self) -> None:
        """Flush usage and key last-use, stop the bus, close clients (and an owned store)."""
        if self._closed:
            return
        self._closed = True
        self.bus.close()
        self.usage.close()
        self.keys.close()
        self.upstream.close()
        if self._owns_store:
            self.store.close()

    async def aclose(self) -> None:
        """``close()`` plus the async upstream client's pool."""
        if self._async_upstream is not None:
            await self._async_upstream.aclose()
        self.close()


def _fingerprint(api_key: str | SecretStr) -> bytes:
    raw = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).digest()


def normalise_fit_id(value: str | UUID) -> str:
    """Fit ids are UUIDs; one spelling (lowercase, dashed) keeps lookups exact."""
    try:
        return str(value if isinstance(value, UUID) else UUID(str(value)))
    except ValueError:
        raise FittedModelNotFound() from None


def _check_principal_name(name: str) -> str:
    cleaned = name.strip() if isinstance(name, str) else ""
    if not cleaned or len(cleaned) > _MAX_NAME_LENGTH:
        raise InvalidRequest(f"name must be 1 to {_MAX_NAME_LENGTH} characters.")
    return cleaned
