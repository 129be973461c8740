"""The TabPFN-compatible routes served without FastAPI's per-request routing and dependency
solving: the same endpoint functions, called with exactly what their signatures ask for.

A forwarded small call spent about a fifth of its time in FastAPI's route matching and
dependency resolution (``benchmarks/gateway.py``, py-spy). ``DirectRoutes`` answers the
routes it is given by a dictionary lookup on (method, path) and builds their arguments
itself, for the few kinds they use: the app's gateway, the bearer key (through the same
``bearer_key`` dependency function), the request, one JSON body model, and one text path
parameter at the end of the path (the upload URLs' token). A route asking for anything else
is left to FastAPI. Errors go to the app's own exception handlers, so every
answer (and every error body) is what FastAPI would have sent. The routes stay declared on
the FastAPI router, which keeps them in the OpenAPI document.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.convertors import StringConvertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from tabpfn_gateway_server.deps import BearerKey, GatewayDep, bearer_key_of

__all__ = ["DirectRoutes"]

Argument = Callable[[Request], Awaitable[Any]]


@dataclass(frozen=True)
class _Plan:
    route: APIRoute
    arguments: dict[str, Argument]
    status_code: int
    # A route ending in one text parameter (``/prefix/{name}``): its literal prefix and name.
    prefix: str | None = None
    parameter: str | None = None


class DirectRoutes:
    """ASGI middleware answering ``routes`` directly (see the module docstring); every other
    request goes on to ``app``. Place it inside the middleware that must see every request
    (trace ids, metrics, body limits)."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self._plans: dict[tuple[str, str], _Plan] = {}
        # (method, literal prefix, parameter name, plan) of routes ending in a parameter.
        self._prefixed: list[tuple[str, str, str, _Plan]] = []
        for route in routes:
            plan = _plan(route)
            if plan is None:
                continue
            for method in plan.route.methods or ():
                if plan.prefix is None or plan.parameter is None:
                    self._plans[(method, plan.route.path)] = plan
                else:
                    self._prefixed.append((method, plan.prefix, plan.parameter, plan))

    @property
    def paths(self) -> frozenset[tuple[str, str]]:
        """The (method, path template) pairs answered here."""
        return frozenset(self._plans) | {(m, plan.route.path) for m, _, _, plan in self._prefixed}

    def _match(self, method: str, path: str) -> tuple[_Plan, dict[str, str]] | None:
        plan = self._plans.get((method, path))
        if plan is not None:
            return plan, {}
        for wanted, prefix, parameter, plan in self._prefixed:
            # Starlette's match for a text parameter: one non-empty segment.
            if method == wanted and path.startswith(prefix):
                value = path[len(prefix) :]
                if value and "/" not in value:
                    return plan, {parameter: value}
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = self._match(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if matched is None:
            await self.app(scope, receive, send)
            return
        plan, path_params = matched
        # What FastAPI's router records: metrics and logs label requests by route template.
        scope["route"] = plan.route
        scope["endpoint"] = plan.route.endpoint
        scope["path_params"] = path_params
        request = Request(scope, receive)
        try:
            kwargs = {name: await build(request) for name, build in plan.arguments.items()}
            result = await plan.route.endpoint(**kwargs)
            response = (
                result
                if isinstance(result, Response)
                else JSONResponse(result, status_code=plan.status_code)
            )
        except Exception as exc:
            handler = _handler_for(scope, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def _plan(route: BaseRoute) -> _Plan | None:
    if not isinstance(route, APIRoute):
        return None
    prefix = parameter = None
    if route.param_convertors:
        # Only one text parameter ending the path; anything else needs FastAPI's matching.
        if len(route.param_convertors) != 1:
            return None
        ((parameter, convertor),) = route.param_convertors.items()
        prefix = route.path.removesuffix(f"{{{parameter}}}")
        if (
            not isinstance(convertor, StringConvertor)
            or prefix == route.path
            or not prefix.endswith("/")
            or "{" in prefix
        ):
            return None
    endpoint = route.endpoint
    if not inspect.iscoroutinefunction(endpoint) or route.dependencies:
        return None
    hints = typing.get_type_hints(endpoint, include_extras=True)
    arguments: dict[str, Argument] = {}
    for name in inspect.signature(endpoint).parameters:
        if name == parameter and hints.get(name) is str:
            arguments[name] = _path_parameter(name)
            continue
        build = _argument(hints.get(name))
        if build is None:
            return None
        arguments[name] = build
    if parameter is not None and parameter not in arguments:
        return None
    return _Plan(route, arguments, route.status_code or 200, prefix, parameter)


def _path_parameter(name: str) -> Argument:
    async def value(request: Request) -> str:
        text: str = request.path_params[name]
        return text

    return value


def _argument(annotation: Any) -> Argument | None:
    if annotation == GatewayDep:
        return _gateway
    if annotation == BearerKey:
        return bearer_key_of
    if annotation is Request:
        return _request
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _body_of(annotation)
    return None


async def _gateway(request: Request) -> Any:
    return request.app.state.gateway


async def _request(request: Request) -> Request:
    return request


def _body_of(model: type[BaseModel]) -> Argument:
    async def body(request: Request) -> BaseModel:
        content_type = request.headers.get("content-type", "application/json").lower()
        media = content_type.split(";", 1)[0].strip()
        if media != "application/json" and not media.endswith("+json"):
            # FastAPI reads a non-JSON body as bytes, which no message model accepts.
            raise RequestValidationError(
                [{"type": "model_attributes_type", "loc": ("body",), "msg": _NOT_AN_OBJECT}]
            )
        raw = await request.body()
        if not raw:
            raise RequestValidationError(
                [{"type": "missing", "loc": ("body",), "msg": "Field required"}]
            )
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            # FastAPI's shape: locations start at "body".
            raise RequestValidationError(
                [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
            ) from None

    return body


_NOT_AN_OBJECT = "Input should be a valid dictionary or object to extract fields from"


def _handler_for(
    scope: Scope, exc: Exception
) -> Callable[[Request, Exception], Awaitable[Response]] | None:
    # Starlette's lookup: the most specific registered class in the exception's MRO.
    handlers: dict[Any, Any] = getattr(scope.get("app"), "exception_handlers", {})
    for cls in type(exc).__mro__:
        if cls in handlers:
            handler: Callable[[Request, Exception], Awaitable[Response]] = handlers[cls]
            return handler
    return None
