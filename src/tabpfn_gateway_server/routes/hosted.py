"""The self-hosted container protocol: ``POST /predict`` for keys on hosted credentials, and
``GET /api/v1/whoami`` (which protocol a key's credential speaks, for the SDK)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from tabpfn_gateway.errors import InvalidRequest, PayloadTooLarge
from tabpfn_gateway.gateway._hosted import HostedGateway
from tabpfn_gateway_server.deps import BearerKey, GatewayDep

__all__ = ["PREDICT_PATH", "router"]

PREDICT_PATH = "/predict"

router = APIRouter(tags=["Self-hosted container protocol"])

_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "As tabpfn_client.hosted sends it: a JSON object (task_config, optional "
        "model_version and context.model_id, X_train, y_train, X_test), or multipart/form-data "
        "with a 'request' field holding that JSON without the datasets and x_train, y_train, "
        "x_test as zstd Parquet files. Streamed through to the container unchanged.",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "multipart/form-data": {"schema": {"type": "object"}},
        },
    }
}


def hosted_of(request: Request) -> HostedGateway:
    hosted: HostedGateway = request.app.state.hosted
    return hosted


async def _body(request: Request, limit: int) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise InvalidRequest("The request body was interrupted before its end.") from None
    except StarletteHTTPException as exc:
        if exc.status_code == 413:
            raise PayloadTooLarge(f"Prediction bodies are limited to {limit} bytes.") from None
        raise


@router.post(
    PREDICT_PATH,
    summary="Predict through the key's self-hosted inference container",
    openapi_extra=_PREDICT_BODY,
    responses={
        200: {"description": "The container's answer: prediction (and model_id when cached)."},
        400: {"description": "A malformed body, or the key's credential is a cloud token."},
        401: {"description": "The gateway key is missing, invalid, revoked, disabled or expired."},
        404: {"description": "No cached model with this model_id belongs to you."},
        413: {"description": "The body exceeds max_upload_bytes."},
        503: {"description": "The container cannot be reached (Retry-After)."},
    },
)
async def predict(request: Request, gateway: GatewayDep, key: BearerKey) -> Response:
    declared = request.headers.get("content-length")
    content_length: int | None = None
    if declared is not None:
        try:
            content_length = int(declared)
        except ValueError:
            raise InvalidRequest("Content-Length is not a number.") from None
    limit = gateway.settings.max_upload_bytes
    answer = await hosted_of(request).predict(
        key,
        _body(request, limit),
        content_type=request.headers.get("content-type"),
        content_length=content_length,
    )
    return Response(answer.content, status_code=answer.status, media_type=answer.content_type)


class WhoAmIOut(BaseModel):
    """The calling key and what its credential reaches (never a secret)."""

    key_id: str
    principal_id: str
    scopes: list[str]
    upstream_kind: str = Field(
        description="cloud: speak the TabPFN protocol; hosted: POST /predict (the container "
        "protocol). The SDK picks its protocol from this."
    )


@router.get(
    "/api/v1/whoami",
    summary="The calling key, and which protocol its credential speaks",
    response_model=WhoAmIOut,
)
async def whoami(request: Request, gateway: GatewayDep, key: BearerKey) -> WhoAmIOut:
    hosted = hosted_of(request)

    def describe() -> WhoAmIOut:
        caller = gateway.authenticate(key, scope="inference")
        return WhoAmIOut(
            key_id=caller.key_id,
            principal_id=caller.owner_id,
            scopes=list(caller.key.scopes),
            upstream_kind=hosted.upstream_kind(key),
        )

    return await anyio.to_thread.run_sync(describe)
