"""The container protocol through the gateway: ``POST /predict`` for keys on hosted credentials.

A request is authorised like every other call (the gateway key, its scope and state), admitted
and metered by the same meter, and forwarded to the container of the key's ``hosted``
credential with that credential's bearer token and headers, never the gateway key. The body
streams through unchanged while ``tabpfn_gateway.hosted._scan`` reads what the gateway needs
from it (the request JSON, rows, columns, bytes), so memory stays flat in the payload size.

``model_id``s are owned like fits: one the container returns is recorded for the caller's
principal (and credential); a request naming a ``model_id`` its principal does not own is
answered 404, the same as an unknown one, before its body reaches the container.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import httpx
from pydantic import SecretStr

from tabpfn_gateway.errors import (
    Conflict,
    CredentialNotFound,
    FittedModelNotFound,
    GatewayError,
    InvalidRequest,
    PayloadTooLarge,
    UpstreamKindMismatch,
)
from tabpfn_gateway.gateway._authoriser import Caller
from tabpfn_gateway.gateway._invalidation import ALL, CREDENTIAL
from tabpfn_gateway.gateway._metering import Meter
from tabpfn_gateway.hosted import HostedEndpoint, open_secrets
from tabpfn_gateway.hosted._scan import BodyScan, JsonBodyScan, scanner_for
from tabpfn_gateway.protocol._errors import error_from_response, error_from_transport
from tabpfn_gateway.store import FittedModel, UpstreamCredential

if TYPE_CHECKING:
    from tabpfn_gateway.gateway._core import Gateway

__all__ = [
    "HOSTED_OPERATION",
    "HostedAnswer",
    "HostedGateway",
    "InProcessHostedTransport",
    "hosted_model_record_id",
]

HOSTED_OPERATION = "hosted_predict"
_INFERENCE = "inference"
_MAX_MODEL_ID = 512
_MAX_ANSWER_BYTES = 1 << 30
_OWNED_CACHE_SIZE = 50_000
_POOL_SIZE = 100


@dataclass(frozen=True)
class HostedAnswer:
    """The container's answer, passed back as it came (a JSON body)."""

    status: int
    content: bytes
    content_type: str
    model_id: str | None = None


def hosted_model_record_id(credential_id: str, owner_id: str, model_id: str) -> str:
    """The fitted-model record id of a container's ``model_id`` for one principal.

    Scoped by credential and principal: two principals given the same id by a
    content-addressed container each own their own record, and neither can use the other's.
    """
    digest = hashlib.sha256(f"{credential_id}\0{owner_id}\0{model_id}".encode()).hexdigest()
    return f"hm_{digest[:40]}"


class HostedGateway:
    """``POST /predict`` on behalf of gateway keys bound to hosted credentials.

    ``transport`` / ``sync_transport``: httpx transports for the async (server) and sync
    (in-process) hops to containers; default the network.
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sync_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._gateway = gateway
        self._transport = transport
        self._sync_transport = sync_transport
        self._client: httpx.AsyncClient | None = None
        self._sync_client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._ttl = gateway.settings.key_cache_ttl_seconds
        # Bumped by every invalidation: a lookup that began before one is not cached.
        self._generation = 0
        self._credentials: OrderedDict[str, tuple[float, UpstreamCredential]] = OrderedDict()
        self._endpoints: OrderedDict[str, tuple[UpstreamCredential, HostedEndpoint]] = OrderedDict()
        self._owned: OrderedDict[str, None] = OrderedDict()
        # A removed credential is refused here as soon as the core hears of it (its bus, or
        # the change counter every process polls), not only when the cache entry expires.
        gateway.add_invalidation_listener(self.invalidate)

    def __repr__(self) -> str:
        return "HostedGateway()"

    def invalidate(self, message: str) -> None:
        """Forget the cached credential an invalidation message names (``ALL``: every one)."""
        with self._lock:
            self._generation += 1
            if message == ALL:
                self._credentials.clear()
                self._endpoints.clear()
            elif message.startswith(CREDENTIAL):
                credential_id = message[len(CREDENTIAL) :]
                self._credentials.pop(credential_id, None)
                self._endpoints.pop(credential_id, None)

    # -- authorisation ---------------------------------------------------------------------

    def authorise(self, api_key: str | SecretStr) -> tuple[Caller, HostedEndpoint]:
        """The caller and the container its key's credential names; blocking (may do I/O).

        ``UpstreamKindMismatch`` when the key's credential is a cloud TabPFN token.
        """
        caller = self._gateway.authenticate(api_key, scope=_INFERENCE)
        if caller.credential_id is None:
            raise CredentialNotFound(
                "This key is not bound to a credential (an admin key); use an inference key."
            )
        return caller, self._endpoint(caller.credential_id)

    def upstream_kind(self, api_key: str | SecretStr) -> str:
        """``cloud`` or ``hosted``: what the key's credential reaches (blocking)."""
        caller = self._gateway.authenticate(api_key, scope=_INFERENCE)
        if caller.credential_id is None:
            raise CredentialNotFound(
                "This key is not bound to a credential (an admin key); use an inference key."
            )
        return self._credential(caller.credential_id).kind

    def _credential(self, credential_id: str) -> UpstreamCredential:
        # Trusted for the key cache's TTL, like decrypted cloud tokens: a removed credential
        # stops working everywhere within it.
        now = time.monotonic()
        with self._lock:
            cached = self._credentials.get(credential_id)
        if cached is not None and now < cached[0]:
            return cached[1]
        with self._lock:
            generation = self._generation
        found = self._gateway.store.get_credential(credential_id)
        if found is None:
            raise CredentialNotFound(
                "The credential this key was bound to has been removed; "
                "ask an administrator for a new key."
            )
        with self._lock:
            if generation != self._generation:
                return found  # invalidated meanwhile: answer, but do not remember it
            self._credentials[credential_id] = (now + self._ttl, found)
            while len(self._credentials) > 10_000:
                self._credentials.popitem(last=False)
        return found

    def _endpoint(self, credential_id: str) -> HostedEndpoint:
        credential = self._credential(credential_id)
        if credential.kind != "hosted" or credential.endpoint_url is None:
            raise UpstreamKindMismatch(
                "This key's credential is a TabPFN cloud token: use the TabPFN protocol "
                "(GatewayClassifier, or tabpfn-client with TABPFN_CLIENT_API_URL), not POST "
                "/predict."
            )
        with self._lock:
            cached = self._endpoints.get(credential_id)
        if cached is not None and cached[0] is credential:
            return cached[1]
        secrets = self._gateway.vault.decrypt(
            credential.encrypted_token, credential_id=credential.id
        )
        token, headers = open_secrets(secrets, credential_id=credential.id)
        settings = self._gateway.settings
        endpoint = HostedEndpoint(
            url=credential.endpoint_url,
            token=token,
            headers=headers,
            timeout=credential.timeout_seconds or settings.upstream_timeout_seconds,
            connect_timeout=(
                credential.connect_timeout_seconds or settings.upstream_connect_timeout_seconds
            ),
        )
        with self._lock:
            self._endpoints[credential_id] = (credential, endpoint)
            while len(self._endpoints) > 10_000:
                self._endpoints.popitem(last=False)
        return endpoint

    # -- model ids -------------------------------------------------------------------------

    def check_model_id(self, caller: Caller, model_id: object) -> None:
        """Return if ``caller``'s principal owns ``model_id`` on its credential; else
        ``FittedModelNotFound`` (unknown and foreign ids alike). Blocking on a cache miss."""
        record_id = self._record_id(caller, model_id)
        with self._lock:
            if record_id in self._owned:
                self._owned.move_to_end(record_id)
                return
        if self._gateway.store.get_fitted_model(record_id) is None:
            raise FittedModelNotFound(
                "No cached model with this model_id belongs to you (unknown, or another's)."
            )
        self._remember(record_id)

    def model_id_owned_from_memory(self, caller: Caller, model_id: object) -> bool:
        try:
            record_id = self._record_id(caller, model_id)
        except FittedModelNotFound:
            return False
        with self._lock:
            return record_id in self._owned

    def claim_model_id(
        self, caller: Caller, model_id: str, *, task: str, rows: int | None, columns: int | None
    ) -> None:
        """Record that the container's ``model_id`` belongs to ``caller``'s principal."""
        record_id = self._record_id(caller, model_id)
        assert caller.credential_id is not None
        record = FittedModel(
            id=record_id,
            owner_id=caller.owner_id,
            credential_id=caller.credential_id,
            key_id=caller.key_id,
            task=f"hosted:{task}",
            n_rows=rows,
            n_cols=columns,
        )
        # Conflict: the container handed this principal the same id again; still theirs.
        with contextlib.suppress(Conflict):
            self._gateway.store.add_fitted_model(record)
        self._remember(record_id)

    def _record_id(self, caller: Caller, model_id: object) -> str:
        if not isinstance(model_id, str) or not model_id or len(model_id) > _MAX_MODEL_ID:
            raise FittedModelNotFound("No cached model with this model_id belongs to you.")
        assert caller.credential_id is not None
        return hosted_model_record_id(caller.credential_id, caller.owner_id, model_id)

    def _remember(self, record_id: str) -> None:
        with self._lock:
            self._owned[record_id] = None
            self._owned.move_to_end(record_id)
            while len(self._owned) > _OWNED_CACHE_SIZE:
                self._owned.popitem(last=False)

    # -- the async hop (the server's POST /predict) ----------------------------------------

    async def predict(
        self,
        api_key: str | SecretStr,
        body: AsyncIterable[bytes],
        *,
        content_type: str | None,
        content_length: int | None = None,
    ) -> HostedAnswer:
        """Forward one prediction request, streaming ``body`` through; the container's answer.

        Bad bodies are ``InvalidRequest``; a ``model_id`` not owned is ``FittedModelNotFound``
        (nothing of the body is forwarded past the chunk that named it); container errors
        are the ``UpstreamError`` their status maps to.
        """
        gateway = self._gateway
        caller, endpoint = await anyio.to_thread.run_sync(lambda: self.authorise(api_key))
        limit = gateway.settings.max_upload_bytes
        if content_length is not None and content_length > limit:
            raise PayloadTooLarge(f"Prediction bodies are limited to {limit} bytes.")
        scan = scanner_for(content_type)
        # The announced size is what the spend policy can see when it admits the call; the
        # meter holds the counted rows, columns and bytes when it settles.
        # Rows and columns are known only once the body has streamed: a cell budget is
        # reserved then, before the body's last chunk leaves (see _ScannedBody).
        meter = Meter(nbytes=content_length, cells_later=True)
        async with gateway.ametered(caller, HOSTED_OPERATION, meter):
            streamed = _ScannedBody(self, caller, scan, body, limit, meter.reserve_cells)
            headers = endpoint.request_headers()
            headers["Content-Type"] = content_type or "application/json"
            headers["Accept"] = "application/json"
            if content_length is not None:
                headers["Content-Length"] = str(content_length)
            try:
                answer = await self._send(endpoint, streamed.iterate(), headers)
            except GatewayError:
                if streamed.failure is not None:
                    raise streamed.failure from None
                raise
            finally:
                _fill_meter(meter, scan, streamed.count)
            if streamed.failure is not None:
                raise streamed.failure
            if answer.status >= 400:
                raise error_from_response(
                    answer.response, HOSTED_OPERATION, secret=_secret(endpoint)
                )
            model_id = await self._claim_answer(caller, scan, answer.response.content, meter)
            return HostedAnswer(
                status=answer.status,
                content=answer.response.content,
                content_type=answer.response.headers.get("content-type", "application/json"),
                model_id=model_id,
            )

    async def _send(
        self, endpoint: HostedEndpoint, content: AsyncIterator[bytes], headers: dict[str, str]
    ) -> _Sent:
        client = self._async_client()
        timeout = httpx.Timeout(endpoint.timeout, connect=endpoint.connect_timeout)
        request = client.build_request(
            "POST", endpoint.url, content=content, headers=headers, timeout=timeout
        )
        try:
            response = await client.send(request, stream=True)
            try:
                declared = response.headers.get("content-length")
                if (
                    declared is not None
                    and declared.isdigit()
                    and int(declared) > _MAX_ANSWER_BYTES
                ):
                    raise InvalidRequest("The container's answer is too large to relay.")
                await response.aread()
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise error_from_transport(exc, HOSTED_OPERATION) from None
        return _Sent(response.status_code, response)

    async def _claim_answer(
        self, caller: Caller, scan: BodyScan, content: bytes, meter: Meter
    ) -> str | None:
        answer = JsonBodyScan(captured=frozenset({"model_id"}))
        try:
            answer.feed(content)
            answer.close()
        except InvalidRequest:
            return None  # not ours to judge: the client gets the container's answer as is
        model_id = answer.request.get("model_id")
        if not isinstance(model_id, str) or not model_id or len(model_id) > _MAX_MODEL_ID:
            return None
        task = _task_of(scan.request)
        await anyio.to_thread.run_sync(
            lambda: self.claim_model_id(
                caller, model_id, task=task, rows=meter.rows, columns=meter.columns
            )
        )
        return model_id

    def _async_client(self) -> httpx.AsyncClient:
        from tabpfn_gateway.gateway._core import default_async_transport

        with self._lock:
            if self._client is None:
                limits = httpx.Limits(
                    max_connections=_POOL_SIZE, max_keepalive_connections=_POOL_SIZE
                )
                # aiohttp's pool when installed (the server's upstream hop: a large body
                # passes through it faster than through httpx's own).
                transport = self._transport or default_async_transport(_POOL_SIZE)
                # No redirects: a redirect would carry the credential's token elsewhere.
                self._client = httpx.AsyncClient(
                    transport=transport, limits=limits, follow_redirects=False
                )
            return self._client

    # -- the sync hop (in-process sessions) --------------------------------------------------

    def predict_sync(
        self, api_key: str | SecretStr, content: bytes, *, content_type: str
    ) -> HostedAnswer:
        """``predict`` for a body already in memory (the SDK's in-process backend)."""
        caller, endpoint = self.authorise(api_key)
        scan = scanner_for(content_type)
        scan.feed(content)
        scan.close()
        model_id_in = _model_id_of(scan.request)
        if model_id_in is not None:
            self.check_model_id(caller, model_id_in)
        meter = Meter(nbytes=len(content))
        _fill_meter(meter, scan, len(content))
        with self._gateway.metered(caller, HOSTED_OPERATION, meter):
            headers = endpoint.request_headers()
            headers["Content-Type"] = content_type
            headers["Accept"] = "application/json"
            timeout = httpx.Timeout(endpoint.timeout, connect=endpoint.connect_timeout)
            try:
                response = self._client_sync().post(
                    endpoint.url, content=content, headers=headers, timeout=timeout
                )
            except httpx.HTTPError as exc:
                raise error_from_transport(exc, HOSTED_OPERATION) from None
            if response.status_code >= 400:
                raise error_from_response(response, HOSTED_OPERATION, secret=_secret(endpoint))
            answer = JsonBodyScan(captured=frozenset({"model_id"}))
            model_id: str | None = None
            try:
                answer.feed(response.content)
                answer.close()
                found = answer.request.get("model_id")
                model_id = found if isinstance(found, str) and found else None
            except InvalidRequest:
                pass
            if model_id is not None:
                self.claim_model_id(
                    caller,
                    model_id,
                    task=_task_of(scan.request),
                    rows=meter.rows,
                    columns=meter.columns,
                )
            return HostedAnswer(
                response.status_code,
                response.content,
                response.headers.get("content-type", "application/json"),
                model_id,
            )

    def _client_sync(self) -> httpx.Client:
        with self._lock:
            if self._sync_client is None:
                self._sync_client = httpx.Client(
                    transport=self._sync_transport, follow_redirects=False
                )
            return self._sync_client

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            client, self._sync_client = self._sync_client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        self.close()


@dataclass(frozen=True)
class _Sent:
    status: int
    response: httpx.Response


class _ScannedBody:
    """The request body on its way upstream: counted, scanned, cut off past the limit, and
    stopped before any more of it leaves when it names a ``model_id`` the caller does not own.

    With ``reserve_cells`` (a cell budget applies), the last chunk is held back until the
    whole body has been scanned and its rows x columns reserved: a refused reservation ends
    the request before the container has a complete body to predict on.
    """

    def __init__(
        self,
        hosted: HostedGateway,
        caller: Caller,
        scan: BodyScan,
        body: AsyncIterable[bytes],
        limit: int,
        reserve_cells: Callable[[int | None], None] | None = None,
    ) -> None:
        self._hosted = hosted
        self._caller = caller
        self._scan = scan
        self._body = body
        self._limit = limit
        self._reserve_cells = reserve_cells
        self._checked = False
        self.count = 0
        self.failure: GatewayError | None = None

    async def iterate(self) -> AsyncIterator[bytes]:
        held: bytes | None = None
        try:
            async for chunk in self._body:
                if not chunk:
                    continue
                self.count += len(chunk)
                if self.count > self._limit:
                    raise PayloadTooLarge(f"Prediction bodies are limited to {self._limit} bytes.")
                self._scan.feed(chunk)
                await self._check_model_id()
                if self._reserve_cells is None:
                    yield chunk
                    continue
                if held is not None:
                    yield held
                held = chunk
            self._scan.close()
            await self._check_model_id()
            reserve = self._reserve_cells
            if reserve is not None:
                sized = Meter()
                _fill_meter(sized, self._scan, self.count)
                await anyio.to_thread.run_sync(reserve, sized.cells)
                if held is not None:
                    yield held
        except GatewayError as exc:
            self.failure = exc
            raise

    async def _check_model_id(self) -> None:
        if self._checked:
            return
        model_id = _model_id_of(self._scan.request)
        if model_id is None:
            return
        self._checked = True
        hosted, caller = self._hosted, self._caller
        if hosted.model_id_owned_from_memory(caller, model_id):
            return
        await anyio.to_thread.run_sync(lambda: hosted.check_model_id(caller, model_id))


def _model_id_of(request: dict[str, Any]) -> object | None:
    context = request.get("context")
    if not isinstance(context, dict):
        return None
    return context.get("model_id")


def _task_of(request: dict[str, Any]) -> str:
    task_config = request.get("task_config")
    task = task_config.get("task") if isinstance(task_config, dict) else None
    return task if task in ("classification", "regression") else "unknown"


def _fill_meter(meter: Meter, scan: BodyScan, nbytes: int) -> None:
    """Rows the container works on (train + test), the feature columns, and the body's bytes."""
    shapes = scan.datasets
    rows = sum(shapes[name].rows for name in ("x_train", "x_test") if name in shapes)
    columns = next(
        (shapes[n].columns for n in ("x_test", "x_train") if n in shapes and shapes[n].columns),
        None,
    )
    meter.rows = rows or None
    meter.columns = columns
    meter.nbytes = nbytes


def _secret(endpoint: HostedEndpoint) -> str | None:
    return None if endpoint.token is None else endpoint.token.get_secret_value()


class InProcessHostedTransport(httpx.BaseTransport):
    """An httpx transport that answers ``POST /predict`` with ``HostedGateway.predict_sync``:
    the SDK's container-protocol client reaches an in-process gateway (no server), with the
    same checks, ownership and metering as behind one. Errors become the server's answers
    (status and ``error_code`` body), so the client maps them back to the same classes."""

    def __init__(self, hosted: HostedGateway) -> None:
        self._hosted = hosted

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        import json

        from tabpfn_gateway.gateway._status import http_status

        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        try:
            if scheme.lower() != "bearer" or not key.strip():
                from tabpfn_gateway.errors import MissingCredentials

                raise MissingCredentials("Send a gateway key as 'Authorization: Bearer <key>'.")
            answer = self._hosted.predict_sync(
                SecretStr(key.strip()),
                request.read(),
                content_type=request.headers.get("content-type", "application/json"),
            )
        except GatewayError as exc:
            return httpx.Response(
                http_status(exc),
                content=json.dumps(exc.to_dict()).encode(),
                headers={"content-type": "application/json"},
                request=request,
            )
        return httpx.Response(
            answer.status,
            content=answer.content,
            headers={"content-type": answer.content_type},
            request=request,
        )
