"""What every FakeTabPFN part shares: the error answer, the request log entry, JSON helpers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "DroppedConnection",
    "LoggedRequest",
    "Refusal",
    "bearer",
    "json_response",
    "json_scalar",
    "parse_body",
    "parse_json",
]

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class LoggedRequest:
    """One request FakeTabPFN answered: what tests assert on.

    ``token`` is the bearer credential the request carried (``None`` if none): the fake's own
    test tokens, recorded so isolation tests can prove whose request was whose. ``status`` is
    ``0`` for a connection the fake dropped on purpose. ``json`` is the parsed body of a JSON
    request (``None`` otherwise): fidelity tests compare what two clients sent.
    ``headers`` are the request's headers, lower-cased, without ``authorization``.
    """

    method: str
    path: str
    token: str | None
    status: int
    json: Any = field(default=None, compare=False)
    headers: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)


class Refusal(Exception):
    """An error answer, raised from deep in a handler and rendered by the dispatcher."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"message": message, **extra}


class DroppedConnection(Exception):
    """Raised after the response started: the server closes the connection mid-answer."""


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


async def parse_body(request: Request, model: type[ModelT]) -> ModelT:
    raw = await request.body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        detail = [
            {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
            for err in exc.errors()
        ]
        raise Refusal(422, "The request body does not fit the schema.", detail=detail) from None


def json_response(body: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), allow_nan=False),
        status_code=status,
        media_type="application/json",
    )


def json_scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
