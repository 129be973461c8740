"""Where estimators send calls: over HTTP to a gateway (or TabPFN), or to an in-process gateway.

A backend is anything with the :class:`Backend` methods. Two ship here:

- :class:`HTTPBackend`: the protocol client over HTTP. Pointed at a gateway with a gateway
  key (the usual case), or at TabPFN cloud with a TabPFN token. Its client is made on first
  use and dropped from pickles, so a pickled estimator carries the URL and, only if it was
  given explicitly, the key; in a new process the key is looked up again (environment,
  keyring).
- :class:`InProcessBackend`: a core :class:`~tabpfn_gateway.gateway.Gateway` in this
  process and a gateway key: no server needed. It cannot leave its process: a pickle of it
  restores the same backend in the same process, and in any other process a backend that
  refuses every call with a message saying so (use an HTTP backend there).

Backends are shared handles, like a connection: ``copy.deepcopy`` (which ``sklearn.clone``
uses) returns the same backend.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from pydantic import SecretStr

from tabpfn_gateway.errors import ConfigurationError
from tabpfn_gateway.estimators._peer import GatewayFacing, is_tabpfn_cloud

if TYPE_CHECKING:
    import httpx
    import numpy as np
    import pandas as pd

    from tabpfn_gateway.gateway import Gateway, SyncGatewaySession
    from tabpfn_gateway.hosted.client import HostedProtocolClient
    from tabpfn_gateway.protocol import FitOptions, FitResult, PredictionResult, ProtocolClient
    from tabpfn_gateway.protocol.messages import (
        ClassifierConfig,
        FitTaskConfig,
        GetFitStatusResponse,
        GetSettingsResponse,
        RegressorConfig,
    )

__all__ = [
    "Backend",
    "DetachedInProcessBackend",
    "HTTPBackend",
    "InProcessBackend",
    "shared_http_backend",
]


@runtime_checkable
class Backend(Protocol):
    """What an estimator needs from the thing that reaches TabPFN.

    The signatures are those of :class:`tabpfn_gateway.protocol.ProtocolClient`; errors are
    :class:`~tabpfn_gateway.errors.GatewayError` subclasses, never a dependency's.
    """

    def get_settings(self) -> GetSettingsResponse:
        """The upstream's limits and async settings (may be cached)."""
        ...

    def fit(
        self,
        X: pd.DataFrame | np.ndarray,  # noqa: N803 (scikit-learn's name)
        y: Any,
        task_config: FitTaskConfig,
        options: FitOptions | None = None,
        *,
        on_poll: Callable[[GetFitStatusResponse], None] | None = None,
    ) -> FitResult:
        """Upload a train set and fit it (``FitOptions`` say how); ``on_poll`` sees each
        status of an async fit."""
        ...

    def predict(
        self,
        fitted_train_set_id: str,
        X: pd.DataFrame | np.ndarray,  # noqa: N803 (scikit-learn's name)
        task_config: ClassifierConfig | RegressorConfig,
    ) -> PredictionResult:
        """Predict ``X`` with a fitted train set."""
        ...

    def get_api_usage(self) -> dict[str, Any]:
        """Usage of the credential behind this backend."""
        ...

    def close(self) -> None:
        """Release connections; the backend may be used again (it reconnects)."""
        ...


class _DelegatingBackend:
    """The Backend calls forwarded to a target with ProtocolClient's high-level shape (a
    protocol client, or an in-process gateway session); subclasses say what the target is."""

    def _target(self) -> ProtocolClient | SyncGatewaySession:
        raise NotImplementedError

    def get_settings(self) -> GetSettingsResponse:
        # Cached (for settings_ttl) by the target itself: the protocol client, or the session.
        return self._target().get_settings()

    def fit(
        self,
        X: pd.DataFrame | np.ndarray,  # noqa: N803
        y: Any,
        task_config: FitTaskConfig,
        options: FitOptions | None = None,
        *,
        on_poll: Callable[[GetFitStatusResponse], None] | None = None,
    ) -> FitResult:
        return self._target().fit(X, y, task_config, options, on_poll=on_poll)

    def predict(
        self,
        fitted_train_set_id: str,
        X: pd.DataFrame | np.ndarray,  # noqa: N803
        task_config: ClassifierConfig | RegressorConfig,
    ) -> PredictionResult:
        return self._target().predict(fitted_train_set_id, X, task_config)

    def get_api_usage(self) -> dict[str, Any]:
        return self._target().get_api_usage()


class HTTPBackend(_DelegatingBackend):
    """Reach a gateway (or TabPFN cloud) over HTTP with the protocol client.

    Parameters
    ----------
    base_url : str or None, default=None
        The gateway's URL. None: the ``TABPFN_GATEWAY_URL`` environment variable.
        ``https://api.priorlabs.ai`` with a TabPFN token reaches TabPFN cloud directly.
    api_key : str, SecretStr or None, default=None
        The gateway key (or TabPFN token). None: looked up on first use, in this process,
        from ``TABPFN_GATEWAY_API_KEY`` and then the OS keyring (see
        :func:`tabpfn_gateway.login`). Only a key given here travels in pickles.
    timeout : float, default=900.0
        Seconds one call may take (fits can be long).
    transport : httpx.BaseTransport or None, default=None
        An httpx transport for every request (tests use in-process ones).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | SecretStr | None = None,
        *,
        timeout: float = 900.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self._api_key = SecretStr(api_key) if isinstance(api_key, str) else api_key
        self.timeout = timeout
        self.transport = transport
        self._lock = threading.Lock()
        self._client: ProtocolClient | None = None
        self._resolved_key: SecretStr | None = None
        # What the key's credential speaks (None: not asked yet) and its client if hosted.
        self._kind: str | None = None
        self._hosted: HostedProtocolClient | None = None

    def __repr__(self) -> str:
        key = "given" if self._api_key is not None else "looked up"
        return f"HTTPBackend(base_url={self.base_url!r}, api_key=<{key}>, timeout={self.timeout})"

    # A backend is a handle to a service: copies share it (and its connection pool).
    def __deepcopy__(self, memo: dict[int, Any]) -> HTTPBackend:
        return self

    def __getstate__(self) -> dict[str, Any]:
        # The client (sockets, a pool) and the lock cannot cross processes; rebuilt on use.
        return {
            "base_url": self.base_url,
            "api_key": self._api_key,
            "timeout": self.timeout,
            "transport": self.transport,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["base_url"],
            state["api_key"],
            timeout=state["timeout"],
            transport=state["transport"],
        )

    def client(self) -> ProtocolClient:
        """The protocol client, made on first use (URL and key resolved then)."""
        with self._lock:
            if self._client is None:
                from tabpfn_gateway.api_key import resolve_api_key, resolve_base_url
                from tabpfn_gateway.protocol import ProtocolClient

                url = resolve_base_url(self.base_url)
                key = resolve_api_key(url, self._api_key)
                self._resolved_key = key
                self._client = ProtocolClient(
                    url, key, timeout=self.timeout, transport=self.transport
                )
                # Estimators make backends implicitly and never close them: release the
                # sockets when the backend goes away instead of leaking them until exit.
                weakref.finalize(self, self._client.close)
            return self._client

    def _target(self) -> ProtocolClient:
        client = self.client()
        if is_tabpfn_cloud(client.base_url):
            return client
        # A gateway: the protocol its key's credential speaks (a self-hosted container's, or
        # TabPFN cloud's), with its errors in its own words (its codes, "the gateway at URL").
        hosted = self._hosted_client(client)
        target: Any = hosted if hosted is not None else client
        return cast("ProtocolClient", GatewayFacing(target, client.base_url))

    def _hosted_client(self, client: ProtocolClient) -> HostedProtocolClient | None:
        """The container-protocol client when the gateway says this key's credential is a
        self-hosted container (asked once: ``GET /api/v1/whoami``), else None."""
        with self._lock:
            if self._kind is not None:
                return self._hosted
            key = self._resolved_key
        kind = _upstream_kind(client.base_url, key, self.transport)
        if kind is None:
            return None  # no answer now: the cloud call says why (and we ask again later)
        hosted: HostedProtocolClient | None = None
        if kind == "hosted":
            from tabpfn_gateway.hosted.client import HostedProtocolClient

            hosted = HostedProtocolClient(
                client.base_url.rstrip("/") + "/predict",
                key,
                timeout=self.timeout,
                transport=self.transport,
            )
            weakref.finalize(self, hosted.close)
        with self._lock:
            self._kind, self._hosted = kind, hosted
        return hosted

    def close(self) -> None:
        """Close the HTTP connection pools this backend opened (it reopens them on next use)."""
        with self._lock:
            client, self._client = self._client, None
            hosted, self._hosted, self._kind = self._hosted, None, None
        if client is not None:
            client.close()
        if hosted is not None:
            hosted.close()


def _upstream_kind(
    base_url: str, key: SecretStr | None, transport: httpx.BaseTransport | None
) -> str | None:
    """``cloud`` or ``hosted`` as the gateway at ``base_url`` says for ``key``; ``cloud``
    for a peer without the question (an older gateway); None when it cannot say now."""
    import httpx

    headers = {} if key is None else {"Authorization": f"Bearer {key.get_secret_value()}"}
    http = httpx.Client(transport=transport, timeout=30.0)
    try:
        answer = http.get(base_url.rstrip("/") + "/api/v1/whoami", headers=headers)
    except httpx.HTTPError:
        return None
    finally:
        if transport is None:  # closing a given transport would close it for its owner too
            http.close()
    if answer.status_code in (404, 405):
        return "cloud"
    if answer.status_code != 200:
        return None
    try:
        kind = answer.json().get("upstream_kind")
    except (ValueError, AttributeError):
        return None
    return kind if kind in ("cloud", "hosted") else "cloud"


# HTTP backends shared by the estimators of this process, by (URL, key digest, timeout):
# estimators made afresh (a new one per fit, GridSearchCV's clones) reuse one connection
# pool and one cache of the upstream's limits, as tabpfn-client's global client does, but
# per credential, so two keys never share state. A few only: least recently used goes first
# (its client closes when the last estimator holding it goes).
_SHARED_HTTP: OrderedDict[tuple[str, str, float], HTTPBackend] = OrderedDict()
_SHARED_HTTP_LOCK = threading.Lock()
_SHARED_HTTP_MAX = 16


def shared_http_backend(
    base_url: str | None, api_key: str | SecretStr | None, *, timeout: float
) -> HTTPBackend:
    """The process's HTTP backend for this gateway URL, key and timeout (made on first use).

    The URL and key are resolved now, by the documented lookup order (argument, environment,
    keyring), so a key looked up from the environment or keyring is never part of a pickle
    of the estimator (estimators drop their backend when pickled).
    """
    from tabpfn_gateway.api_key import resolve_api_key, resolve_base_url

    url = resolve_base_url(base_url)
    key = resolve_api_key(url, api_key)
    digest = hashlib.sha256(key.get_secret_value().encode("utf-8")).hexdigest()
    ident = (url, digest, float(timeout))
    with _SHARED_HTTP_LOCK:
        backend = _SHARED_HTTP.get(ident)
        if backend is None:
            backend = HTTPBackend(url, key, timeout=timeout)
            _SHARED_HTTP[ident] = backend
            while len(_SHARED_HTTP) > _SHARED_HTTP_MAX:
                _SHARED_HTTP.popitem(last=False)
        else:
            _SHARED_HTTP.move_to_end(ident)
        return backend


# In-process backends by id, so a pickle made in this process restores the very same backend.
# Weak values: a registry entry must not keep a whole gateway alive.
_IN_PROCESS: weakref.WeakValueDictionary[str, InProcessBackend] = weakref.WeakValueDictionary()


class InProcessBackend(_DelegatingBackend):
    """Reach TabPFN through a core gateway in this process, with a gateway key.

    The same checks run as behind a server (key, scopes, limits, usage recorded), without
    HTTP. Use :func:`tabpfn_gateway.testing.local_gateway` for a ready one wired to an
    offline FakeTabPFN.

    Pickling: a pickle restores this same backend when loaded in the same process (so
    ``pickle``, ``copy`` and thread-based joblib work). Loaded in another process (loky
    workers of ``GridSearchCV(n_jobs=2)``, a file read later) it becomes a backend whose
    every call raises :class:`~tabpfn_gateway.errors.ConfigurationError` explaining that an
    in-process gateway does not cross processes: use :class:`HTTPBackend` there.

    Parameters
    ----------
    gateway : Gateway
        The core gateway (``Gateway.from_settings(...)``).
    api_key : str or SecretStr
        A gateway key this gateway accepts.
    """

    def __init__(self, gateway: Gateway, api_key: str | SecretStr) -> None:
        self.gateway = gateway
        self._api_key = SecretStr(api_key) if isinstance(api_key, str) else api_key
        self._lock = threading.Lock()
        self._session: SyncGatewaySession | None = None
        self._kind: str | None = None
        self._hosted: HostedProtocolClient | None = None
        self._registry_id = uuid.uuid4().hex
        _IN_PROCESS[self._registry_id] = self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gateway=<in process>, api_key=<given>)"

    def __deepcopy__(self, memo: dict[int, Any]) -> InProcessBackend:
        return self

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_restore_in_process_backend, (self._registry_id,))

    def session(self) -> SyncGatewaySession:
        """The gateway session for this key, made on first use."""
        with self._lock:
            if self._session is None:
                self._session = self.gateway.session(self._api_key)
            return self._session

    def _target(self) -> SyncGatewaySession:
        hosted = self._hosted_client()
        if hosted is not None:
            return cast("SyncGatewaySession", hosted)
        return self.session()

    def _hosted_client(self) -> HostedProtocolClient | None:
        """The container-protocol client (through the in-process gateway) when this key's
        credential is a self-hosted container, else None (asked once)."""
        with self._lock:
            if self._kind is not None:
                return self._hosted
        kind = self.gateway.hosted.upstream_kind(self._api_key)
        hosted: HostedProtocolClient | None = None
        if kind == "hosted":
            from tabpfn_gateway.gateway._hosted import InProcessHostedTransport
            from tabpfn_gateway.hosted.client import HostedProtocolClient

            hosted = HostedProtocolClient(
                "http://in-process.gateway/predict",
                self._api_key,
                transport=InProcessHostedTransport(self.gateway.hosted),
            )
        with self._lock:
            self._kind, self._hosted = kind, hosted
        return hosted

    def close(self) -> None:
        """Forget the session; the gateway itself stays open (it belongs to its builder)."""
        # The gateway belongs to whoever built it; a session holds nothing to release.
        with self._lock:
            self._session = None
            hosted, self._hosted, self._kind = self._hosted, None, None
        if hosted is not None:
            hosted.close()


_DETACHED_MESSAGE = (
    "This estimator's backend was an in-process gateway (InProcessBackend / local_gateway()), "
    "which exists only in the process that created it, and this is another process. To use "
    "fitted estimators across processes (GridSearchCV(n_jobs=2), joblib/loky, pickles loaded "
    "later), run a gateway server and use the HTTP backend: "
    "GatewayClassifier(base_url=..., api_key=...)."
)


class DetachedInProcessBackend:
    """What an :class:`InProcessBackend` becomes in another process: refuses every call."""

    def __init__(self, registry_id: str) -> None:
        self._registry_id = registry_id

    def __repr__(self) -> str:
        return "DetachedInProcessBackend()"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_restore_in_process_backend, (self._registry_id,))

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        """Refused: an in-process gateway cannot be reached from another process.

        Raises
        ------
        ConfigurationError
            Always, saying to run a gateway server and use the HTTP backend instead.
        """
        raise ConfigurationError(_DETACHED_MESSAGE)

    get_settings = fit = predict = get_api_usage = _refuse

    def close(self) -> None:
        """Nothing to release."""
        return None


def _restore_in_process_backend(registry_id: str) -> InProcessBackend | DetachedInProcessBackend:
    backend = _IN_PROCESS.get(registry_id)
    if backend is None:
        return DetachedInProcessBackend(registry_id)
    return backend
