"""The upload URLs this gateway hands out: PUT bodies streamed through to the upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import InvalidRequest, InvalidUpload, PayloadTooLarge
from tabpfn_gateway.gateway import UPLOAD_PATH_PREFIX
from tabpfn_gateway_server.deps import GatewayDep

__all__ = ["build_upload_router"]


async def _request_body(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body chunk by chunk, with transport failures as gateway errors."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise InvalidUpload("The upload was interrupted before its end.") from None
    except StarletteHTTPException as exc:
        if exc.status_code == 413:
            raise PayloadTooLarge(f"Uploads are limited to {limit} bytes.") from None
        raise


def build_upload_router(settings: Settings) -> APIRouter:
    """The upload route (``EdgeMiddleware`` gives it the upload limit, not the JSON one)."""
    router = APIRouter(tags=["Uploads"])
    limit = settings.max_upload_bytes

    @router.put(
        UPLOAD_PATH_PREFIX + "{token}",
        summary="Upload one chunk of a dataset (a URL from prepare_*_upload)",
        # 200 with no body, as a storage signed URL answers.
        response_class=Response,
        responses={
            200: {"description": "Stored (passed on to the upstream's storage)."},
            400: {"description": "The upload URL is invalid, expired or not yours."},
            413: {"description": "The body exceeds max_upload_bytes."},
        },
    )
    async def upload(token: str, request: Request, gateway: GatewayDep) -> Response:
        # The sealed token is the credential here, as with a cloud storage signed URL.
        declared = request.headers.get("content-length")
        content_length: int | None = None
        if declared is not None:
            try:
                content_length = int(declared)
            except ValueError:
                raise InvalidRequest("Content-Length is not a number.") from None
            if content_length > limit:
                raise PayloadTooLarge(f"Uploads are limited to {limit} bytes.")
        await gateway.proxy.upload(
            token, _request_body(request, limit), content_length=content_length
        )
        return Response(status_code=200)

    return router
