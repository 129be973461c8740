"""FakeHostedTabPFN: an offline self-hosted TabPFN inference container (one ``POST /predict``).

It speaks what ``tabpfn_client.hosted`` sends: inline JSON (``task_config``, optional
``model_version``, optional ``context.model_id``, ``X_train``/``y_train``/``X_test``) or
multipart (a ``request`` form field with that JSON, and ``x_train``/``y_train``/``x_test`` as
zstd Parquet files). The answer is ``{"prediction": ...}`` plus ``"model_id"`` when the request
asked for ``fit_mode: "fit_with_cache"``. Real scikit-learn models answer (the same ones as
FakeTabPFN's); cached models live in a bounded LRU, so eviction is testable. Optional bearer
tokens and required headers, and fault knobs (latency, error rate, the next N answers failing or
dropped), make the failure paths testable offline.
"""

from __future__ import annotations

import io
import json
import random
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import pandas as pd
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tabpfn_gateway.testing import fake_models
from tabpfn_gateway.testing.fake_models import FakeModel, FitFailed

__all__ = ["FakeHostedTabPFN", "HostedLoggedRequest"]

PREDICT_PATH = "/predict"
_JSON_DATASETS = {"X_train": "x_train", "y_train": "y_train", "X_test": "x_test"}
_CLASSIFIER_OUTPUTS = {"preds", "probas"}
_REGRESSOR_OUTPUTS = {"mean", "median", "mode", "quantiles", "main", "full"}


@dataclass(frozen=True)
class HostedLoggedRequest:
    """One request the fake container answered: what tests assert on.

    ``token`` is the bearer token it carried (None if none); ``encoding`` is ``"json"`` or
    ``"parquet"`` (None when the body could not be read); ``model_id_in`` the cached model it
    asked for, ``model_id_out`` the one it was given; ``train_rows``/``test_rows`` what it
    carried; ``status`` 0 for a connection dropped on purpose. ``headers`` are lower-cased,
    without ``authorization``.
    """

    method: str
    path: str
    token: str | None
    status: int
    encoding: str | None = None
    task: str | None = None
    model_id_in: str | None = None
    model_id_out: str | None = None
    train_rows: int | None = None
    test_rows: int | None = None
    body_bytes: int = 0
    headers: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class _Fault:
    status: int
    retry_after: float | None = None


class _Refusal(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class _Parsed:
    request: dict[str, Any]
    datasets: dict[str, pd.DataFrame]
    encoding: str


class FakeHostedTabPFN:
    """An offline TabPFN inference container (see the module docstring).

    ``tokens``: bearer tokens it accepts; None (the default) means no authentication, as in a
    container on a private network. ``required_headers``: headers every request must carry
    (an API management layer in front of the container); missing or wrong is 403.
    ``max_cached_models`` bounds the ``model_id`` cache (least recently used evicted first).
    ``latency`` seconds are added to every answer; ``error_rate`` answers that fraction with 503.
    ``keep_requests``: how many answered requests ``requests`` keeps, the most recent (None:
    all, for tests; 0: none, for a served fake nobody reads).
    """

    def __init__(
        self,
        *,
        tokens: Iterable[str] | None = None,
        required_headers: Mapping[str, str] | None = None,
        max_cached_models: int = 16,
        latency: float = 0.0,
        error_rate: float = 0.0,
        seed: int = 0,
        keep_requests: int | None = None,
    ) -> None:
        self.tokens: set[str] | None = None if tokens is None else set(tokens)
        self.required_headers = {k.lower(): v for k, v in (required_headers or {}).items()}
        self.max_cached_models = max(1, int(max_cached_models))
        self.latency = latency
        self.error_rate = error_rate
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._models: OrderedDict[str, tuple[str | None, FakeModel]] = OrderedDict()
        self._log: deque[HostedLoggedRequest] = deque(maxlen=keep_requests)
        self._faults: list[_Fault | None] = []  # None = drop the connection
        self._app: ASGIApp | None = None

    def __repr__(self) -> str:
        auth = "none" if self.tokens is None else f"{len(self.tokens)} token(s)"
        return f"FakeHostedTabPFN(auth={auth}, cached_models={len(self._models)})"

    @property
    def app(self) -> ASGIApp:
        """The ASGI app (serve it with uvicorn, or reach it through ``httpx.ASGITransport``)."""
        if self._app is None:
            routes = Starlette(
                routes=[
                    Route(PREDICT_PATH, self._predict, methods=["POST"]),
                    Route("/health", self._health, methods=["GET"]),
                ]
            )
            self._app = _Dropper(self, routes)
        return self._app

    # -- knobs and inspection ------------------------------------------------------------

    def fail_next(
        self, status: int = 503, count: int = 1, *, retry_after: float | None = None
    ) -> None:
        """Answer the next ``count`` predict requests with ``status`` (a JSON ``detail``)."""
        with self._lock:
            self._faults.extend(_Fault(status, retry_after) for _ in range(count))

    def drop_next(self, count: int = 1) -> None:
        """Drop the connection of the next ``count`` predict requests mid-answer."""
        with self._lock:
            self._faults.extend(None for _ in range(count))

    def evict(self, model_id: str | None = None) -> None:
        """Forget one cached model (or all): the next request naming it gets a 404."""
        with self._lock:
            if model_id is None:
                self._models.clear()
            else:
                self._models.pop(model_id, None)

    @property
    def cached_model_ids(self) -> list[str]:
        """Cached model ids, least recently used first."""
        with self._lock:
            return list(self._models)

    @property
    def requests(self) -> list[HostedLoggedRequest]:
        """Every request answered so far, oldest first."""
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        """Forget the requests recorded so far."""
        with self._lock:
            self._log.clear()

    # -- the endpoint --------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def _predict(self, request: Request) -> Response:
        token = _bearer(request.headers.get("authorization"))
        headers = {k: v for k, v in request.headers.items() if k != "authorization"}
        entry: dict[str, Any] = {"token": token, "headers": headers}
        status = 500
        try:
            if self.latency:
                await anyio.sleep(self.latency)
            with self._lock:
                fault = self._faults.pop(0) if self._faults else _Fault(0)
            if fault is not None and fault.status:
                status = fault.status
                extra = (
                    {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
                )
                return _json({"detail": f"Injected fault: HTTP {fault.status}."}, status, extra)
            if self.error_rate and self._random.random() < self.error_rate:
                status = 503
                return _json({"detail": "Injected fault: HTTP 503."}, 503)
            self._authorise(token, request)
            body = await request.body()
            entry["body_bytes"] = len(body)
            parsed = await _parse(request, body)
            entry["encoding"] = parsed.encoding
            answer, model_id_out = await anyio.to_thread.run_sync(
                lambda: self._answer(parsed, entry)
            )
            entry["model_id_out"] = model_id_out
            status = 200
            return _json(answer)
        except _Refusal as refusal:
            status = refusal.status
            return _json({"detail": refusal.detail}, refusal.status)
        finally:
            self._record(request, status, entry)

    def _authorise(self, token: str | None, request: Request) -> None:
        if self.tokens is not None and (token is None or token not in self.tokens):
            raise _Refusal(401, "Missing or invalid bearer token.")
        for name, value in self.required_headers.items():
            if request.headers.get(name) != value:
                raise _Refusal(403, f"Header {name!r} is missing or wrong.")

    def _answer(self, parsed: _Parsed, entry: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        request = parsed.request
        task_config = request.get("task_config")
        if not isinstance(task_config, dict):
            raise _Refusal(422, "task_config is required.")
        task = task_config.get("task")
        if task not in ("classification", "regression"):
            raise _Refusal(422, "task_config.task must be 'classification' or 'regression'.")
        entry["task"] = task
        tabpfn_config = task_config.get("tabpfn_config") or {}
        predict_params = task_config.get("predict_params") or {}
        if not isinstance(tabpfn_config, dict) or not isinstance(predict_params, dict):
            raise _Refusal(422, "tabpfn_config and predict_params must be objects.")
        context = request.get("context") or {}
        model_id_in = context.get("model_id") if isinstance(context, dict) else None
        entry["model_id_in"] = model_id_in
        x_test = parsed.datasets.get("x_test")
        if x_test is None:
            raise _Refusal(422, "X_test is required.")
        entry["test_rows"] = int(x_test.shape[0])
        model_id_out: str | None = None
        try:
            if model_id_in is not None:
                model = self._cached(str(model_id_in), task)
            else:
                x_train, y_train = parsed.datasets.get("x_train"), parsed.datasets.get("y_train")
                if x_train is None or y_train is None:
                    raise _Refusal(422, "X_train and y_train are required without a model_id.")
                entry["train_rows"] = int(x_train.shape[0])
                model = fake_models.train(x_train, y_train, task, random_state=_seed(tabpfn_config))
                if tabpfn_config.get("fit_mode") == "fit_with_cache":
                    model_id_out = self._cache(model, request.get("model_version"))
            prediction = _predict(model, x_test, predict_params)
        except FitFailed as exc:
            raise _Refusal(422, str(exc)) from None
        answer: dict[str, Any] = {"prediction": prediction}
        if model_id_out is not None:
            answer["model_id"] = model_id_out
        return answer, model_id_out

    def _cached(self, model_id: str, task: str) -> FakeModel:
        with self._lock:
            found = self._models.get(model_id)
            if found is None:
                raise _Refusal(404, f"model_id {model_id!r} is not cached (evicted or unknown).")
            self._models.move_to_end(model_id)
        model = found[1]
        if model.task != task:
            raise _Refusal(422, f"model_id {model_id!r} was fitted for {model.task}.")
        return model

    def _cache(self, model: FakeModel, model_version: Any) -> str:
        model_id = uuid.uuid4().hex
        with self._lock:
            self._models[model_id] = (None if model_version is None else str(model_version), model)
            while len(self._models) > self.max_cached_models:
                self._models.popitem(last=False)
        return model_id

    def _take_drop(self) -> bool:
        with self._lock:
            if self._faults and self._faults[0] is None:
                self._faults.pop(0)
                return True
        return False

    def _record(self, request: Request, status: int, entry: dict[str, Any]) -> None:
        with self._lock:
            self._log.append(
                HostedLoggedRequest(
                    method=request.method, path=request.url.path, status=status, **entry
                )
            )


class _DroppedConnection(Exception):
    """Raised inside the app: the server closes the connection without an answer."""


class _Dropper:
    """ASGI wrapper: a request due to be dropped gets an answer start and then nothing."""

    def __init__(self, fake: FakeHostedTabPFN, app: ASGIApp) -> None:
        self._fake = fake
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PREDICT_PATH and self._fake._take_drop():
            headers = dict(scope.get("headers") or [])
            token = _bearer(headers.get(b"authorization", b"").decode("latin-1") or None)
            with self._fake._lock:
                self._fake._log.append(
                    HostedLoggedRequest(scope["method"], PREDICT_PATH, token, status=0)
                )
            # Promise a body, then die: the client sees the connection close mid-answer.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"1000")],
                }
            )
            raise _DroppedConnection("FakeHostedTabPFN dropped this connection on purpose.")
        await self._app(scope, receive, send)


async def _parse(request: Request, body: bytes) -> _Parsed:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _parse_multipart(request)
    try:
        # Python's decoder reads the NaN / Infinity literals tabpfn_client.hosted writes.
        payload = json.loads(body)
    except ValueError:
        raise _Refusal(422, "The body is neither JSON nor multipart/form-data.") from None
    if not isinstance(payload, dict):
        raise _Refusal(422, "The JSON body must be an object.")
    datasets: dict[str, pd.DataFrame] = {}
    for key, name in _JSON_DATASETS.items():
        value = payload.pop(key, None)
        if value is not None:
            datasets[name] = _frame(value, key)
    return _Parsed(payload, datasets, "json")


async def _parse_multipart(request: Request) -> _Parsed:
    try:
        import python_multipart  # noqa: F401 (Starlette's form parser needs it)
    except ImportError:
        raise _Refusal(
            415, "Multipart needs python-multipart: pip install 'tabpfn-gateway[server]'"
        ) from None
    form = await request.form()
    raw = form.get("request")
    if not isinstance(raw, str):
        raise _Refusal(422, "The multipart body needs a 'request' field with the JSON request.")
    try:
        payload = json.loads(raw)
    except ValueError:
        raise _Refusal(422, "The 'request' field is not JSON.") from None
    if not isinstance(payload, dict):
        raise _Refusal(422, "The 'request' field must be a JSON object.")
    datasets: dict[str, pd.DataFrame] = {}
    for name in _JSON_DATASETS.values():
        part = form.get(name)
        if part is None or isinstance(part, str):
            continue
        data = await part.read()
        try:
            datasets[name] = pd.read_parquet(io.BytesIO(data))
        except Exception:  # pyarrow raises several types for a broken file
            raise _Refusal(422, f"{name} is not a readable Parquet file.") from None
    await form.close()
    return _Parsed(payload, datasets, "parquet")


def _frame(value: Any, key: str) -> pd.DataFrame:
    if not isinstance(value, list) or not value:
        raise _Refusal(422, f"{key} must be a non-empty list of rows.")
    try:
        frame = pd.DataFrame(value)
    except ValueError:
        raise _Refusal(422, f"{key} must be a rectangular list of rows.") from None
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _seed(tabpfn_config: Mapping[str, Any]) -> int:
    seed = tabpfn_config.get("random_state")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else 0


def _predict(model: FakeModel, x_test: pd.DataFrame, params: Mapping[str, Any]) -> Any:
    output_type = params.get("output_type")
    if model.task == "classification":
        output_type = output_type or "preds"
        if output_type not in _CLASSIFIER_OUTPUTS:
            raise _Refusal(422, f"Unknown classification output_type {output_type!r}.")
        return fake_models.predict_classification(model, x_test, str(output_type))
    output_type = output_type or "mean"
    if output_type not in _REGRESSOR_OUTPUTS:
        raise _Refusal(422, f"Unknown regression output_type {output_type!r}.")
    quantiles = params.get("quantiles")
    if quantiles is not None and (
        not isinstance(quantiles, list)
        or not all(isinstance(q, int | float) and 0 <= q <= 1 for q in quantiles)
    ):
        raise _Refusal(422, "quantiles must be a list of numbers in [0, 1].")
    return fake_models.predict_regression(model, x_test, str(output_type), quantiles)


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), allow_nan=False),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )
