"""The OpenAPI document's error answers: one error body, and every status a route can answer."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

__all__ = ["ErrorBody", "install_error_docs"]


class ErrorBody(BaseModel):
    """The body of every error answer the gateway itself gives."""

    error_code: str = Field(description="A stable code (docs/server.md lists them).")
    message: str = Field(description="What went wrong, for people; never holds a secret.")
    trace_id: str | None = Field(description="Quote it when reporting a problem.")


_REF = "#/components/schemas/ErrorBody"

# What each status means on any route that can answer it (docs/server.md has the codes).
_DESCRIPTIONS = {
    400: "The request is malformed or out of bounds (INVALID_REQUEST and its kinds).",
    401: "The key is missing, invalid, revoked, disabled or expired.",
    403: "The key lacks the scope, or a policy refuses its network.",
    404: "No such object (or not yours).",
    409: "A unique name or id is taken, or the request conflicts with the object's state.",
    413: "The request body exceeds the configured limit (PAYLOAD_TOO_LARGE).",
    422: "The request does not fit the schema (INVALID_REQUEST, with where and what).",
    426: "The upstream requires a newer client (CLIENT_TOO_OLD).",
    429: "A rate limit, budget or attempt limit refused the call (Retry-After).",
    431: "The request line and headers exceed 64 KB (HEADERS_TOO_LARGE).",
    502: "The upstream answered something the gateway cannot pass on.",
    503: "The database or the upstream cannot be reached (Retry-After).",
    504: "The upstream did not answer in time (UPSTREAM_TIMEOUT).",
}

# Routes that call the upstream (TabPFN or a self-hosted container) answer its refusals too.
_UPSTREAM_PREFIXES = ("/tabpfn/", "/protected/", "/get_api_usage/", "/predict")


def _statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    """The statuses ``operation`` can answer besides its successes, by what it takes."""
    statuses = {400, 431}
    parameters = operation.get("parameters", [])
    if "requestBody" in operation:
        statuses |= {413, 422}
    if parameters:
        statuses.add(422)
    if operation.get("security") or any(
        p.get("in") == "header" and p.get("name", "").lower() == "authorization" for p in parameters
    ):
        # Whoever holds a key can name something that is not there (or not theirs), and a
        # key's own credential can be gone.
        statuses |= {401, 403, 404, 429, 503}
    if parameters or method != "get":
        statuses.add(404)
    if method in ("post", "put") and path.startswith("/api/v1/admin/"):
        statuses.add(409)
    if path.startswith(_UPSTREAM_PREFIXES) or path.startswith("/gateway/upload/"):
        statuses |= {401, 403, 404, 426, 429, 502, 503, 504}
    return statuses


def _document(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorBody"] = ErrorBody.model_json_schema(ref_template=_REF)
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses: dict[str, Any] = operation["responses"]
            wanted = {str(s) for s in _statuses(path, method, operation)}
            for status in sorted(wanted | {s for s in responses if s[:1] in "45"}):
                entry = responses.setdefault(status, {"description": _DESCRIPTIONS[int(status)]})
                content = entry.setdefault("content", {})
                json = content.get("application/json")
                # FastAPI's own 422 body is not ours: every error answer has the one body.
                if json is None or not json.get("schema") or _is_fastapi_validation(json):
                    content["application/json"] = {"schema": {"$ref": _REF}}
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def _is_fastapi_validation(media: dict[str, Any]) -> bool:
    ref = media.get("schema", {}).get("$ref", "")
    return str(ref).endswith("/HTTPValidationError")


def install_error_docs(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document list, on each operation, the error statuses it can
    answer, each with the ``ErrorBody`` schema (FastAPI's ``HTTPValidationError`` replaced)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
