"""TabPFN-compatible routes: the cloud's paths and bodies, authenticated by gateway keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from tabpfn_gateway import __version__
from tabpfn_gateway.errors import InsufficientScope
from tabpfn_gateway.gateway._forward import Answer
from tabpfn_gateway.protocol.messages import (
    DuplicateTestSetErrorResponse,
    DuplicateTrainSetErrorResponse,
    EstimateCostRequest,
    EstimateCostResponse,
    FitRequest,
    FitResponse,
    GetFitStatusRequest,
    GetFitStatusResponse,
    GetSettingsResponse,
    NotFoundErrorResponse,
    PredictRequest,
    PredictResponse,
    PrepareTestSetUploadRequest,
    PrepareTestSetUploadResponse,
    PrepareTrainSetUploadRequest,
    PrepareTrainSetUploadResponse,
    SubmitFitJobRequest,
    SubmitFitJobResponse,
)
from tabpfn_gateway_server.deps import BearerKey, GatewayDep, public_base_url

__all__ = ["router"]

router = APIRouter(tags=["TabPFN-compatible"])

_JSON = "application/json"

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The request is malformed or out of bounds (INVALID_REQUEST)."},
    401: {"description": "The gateway key is missing, invalid, revoked, disabled or expired."},
    403: {"description": "The key lacks the scope, or the upstream refused the account."},
    503: {"description": "The database or the upstream cannot be reached (Retry-After)."},
}


def _relay(answer: Answer) -> Response:
    # The upstream's own bytes (checked by the proxy), not parsed and encoded again.
    return Response(content=answer.content, status_code=answer.status, media_type=_JSON)


def _json(model: BaseModel, status_code: int = 200) -> Response:
    # Fields the upstream sent, as it sent them (pydantic-core serialises large predictions
    # far faster than json.dumps over model_dump).
    return Response(
        content=model.model_dump_json(exclude_unset=True),
        status_code=status_code,
        media_type="application/json",
    )


@router.get("/", summary="Root (reachability check)")
async def root() -> dict[str, str]:
    return {"message": f"tabpfn-gateway {__version__}: TabPFN-compatible API"}


@router.get(
    "/protected/",
    summary="Check the gateway key (and its TabPFN token upstream)",
    responses=_ERRORS,
)
async def protected(gateway: GatewayDep, key: BearerKey) -> dict[str, str]:
    try:
        await gateway.proxy.check_token(key)
    except InsufficientScope:
        # The key is genuine but may not run inference. tabpfn-client reads no body here and
        # shows a 403 as "your email address is not verified"; accepted, it goes on to
        # get_settings, whose 403 it shows with our reason (docs/server.md, tabpfn-client).
        return {"message": "Welcome to the protected root (this key cannot run inference)."}
    return {"message": "Welcome to the protected root."}


@router.get("/retrieve_greeting_messages/", summary="Greeting messages (none from a gateway)")
async def retrieve_greeting_messages() -> dict[str, list[str]]:
    # The vendor's greetings are news for its own users; a gateway has none to relay.
    return {"messages": []}


@router.get(
    "/tabpfn/get_settings",
    summary="Upstream limits and async-fit settings",
    responses={200: {"model": GetSettingsResponse}, **_ERRORS},
)
async def get_settings(gateway: GatewayDep, key: BearerKey) -> Response:
    return _json(await gateway.proxy.get_settings(key))


@router.post(
    "/tabpfn/prepare_train_set_upload",
    summary="Upload URLs for a train set (pointing at this gateway)",
    responses={
        200: {"model": PrepareTrainSetUploadResponse},
        409: {"model": DuplicateTrainSetErrorResponse, "description": "Already uploaded."},
        **_ERRORS,
    },
)
async def prepare_train_set_upload(
    body: PrepareTrainSetUploadRequest, request: Request, gateway: GatewayDep, key: BearerKey
) -> Response:
    answer = await gateway.proxy.prepare_train_set_upload(
        key, body, base_url=public_base_url(request)
    )
    return _relay(answer)


@router.post(
    "/tabpfn/fit",
    summary="Fit an uploaded train set (synchronously)",
    responses={200: {"model": FitResponse}, **_ERRORS},
)
async def fit(body: FitRequest, gateway: GatewayDep, key: BearerKey) -> Response:
    return _relay(await gateway.proxy.fit(key, body))


@router.post(
    "/tabpfn/submit_fit_job",
    summary="Start an asynchronous fit",
    responses={200: {"model": SubmitFitJobResponse}, **_ERRORS},
)
async def submit_fit_job(
    body: SubmitFitJobRequest, gateway: GatewayDep, key: BearerKey
) -> Response:
    return _relay(await gateway.proxy.submit_fit_job(key, body))


@router.post(
    "/tabpfn/get_fit_status",
    summary="Status of one of your fits",
    responses={
        200: {"model": GetFitStatusResponse},
        404: {"model": NotFoundErrorResponse, "description": "No such fit of yours."},
        **_ERRORS,
    },
)
async def get_fit_status(
    body: GetFitStatusRequest, gateway: GatewayDep, key: BearerKey
) -> Response:
    return _relay(await gateway.proxy.get_fit_status(key, body.fitted_train_set_id))


@router.post(
    "/tabpfn/prepare_test_set_upload",
    summary="Upload URL for a test set of one of your fits",
    responses={
        200: {"model": PrepareTestSetUploadResponse},
        404: {"model": NotFoundErrorResponse, "description": "No such fit of yours."},
        409: {"model": DuplicateTestSetErrorResponse, "description": "Already uploaded."},
        **_ERRORS,
    },
)
async def prepare_test_set_upload(
    body: PrepareTestSetUploadRequest, request: Request, gateway: GatewayDep, key: BearerKey
) -> Response:
    answer = await gateway.proxy.prepare_test_set_upload(
        key, body, base_url=public_base_url(request)
    )
    return _relay(answer)


@router.post(
    "/tabpfn/predict",
    summary="Predict with one of your fits",
    responses={
        200: {"model": PredictResponse},
        404: {"model": NotFoundErrorResponse, "description": "No such fit of yours."},
        **_ERRORS,
    },
)
async def predict(body: PredictRequest, gateway: GatewayDep, key: BearerKey) -> Response:
    return _relay(await gateway.proxy.predict(key, body))


@router.post("/get_api_usage/", summary="The upstream account's usage", responses=_ERRORS)
async def get_api_usage(gateway: GatewayDep, key: BearerKey) -> Response:
    return _relay(await gateway.proxy.get_api_usage(key))


@router.post(
    "/tabpfn/estimate_cost",
    summary="A cost quote from dimensions only",
    responses={200: {"model": EstimateCostResponse}, **_ERRORS},
)
async def estimate_cost(body: EstimateCostRequest, gateway: GatewayDep, key: BearerKey) -> Response:
    return _relay(await gateway.proxy.estimate_cost(key, body))
