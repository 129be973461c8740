"""The fuzz criterion's ground, checked cheaply: the OpenAPI document lists the error answers each
operation can give, with the one error body, and real answers fit it (``nox -s fuzz`` does the
schema-driven run)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from security_support import Stack
from tabpfn_gateway_server.openapi import ErrorBody

REF = "#/components/schemas/ErrorBody"
HEX_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def test_every_operation_documents_its_error_answers(stack: Stack) -> None:
    schema = stack.http.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(schema)
    assert "ErrorBody" in schema["components"]["schemas"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            where = f"{method.upper()} {path}"
            assert {"400", "431"} <= set(responses), where
            if operation.get("security"):
                assert {"401", "403", "404", "429", "503"} <= set(responses), where
            if "requestBody" in operation:
                assert {"413", "422"} <= set(responses), where
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    media = response["content"]["application/json"]
                    assert "$ref" in media["schema"], (where, status)
    metrics = schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert metrics
    assert all(media.startswith("text/plain") for media in metrics)
    upload = schema["paths"]["/gateway/upload/{token}"]["put"]["responses"]["200"]
    assert "content" not in upload  # answered with no body, as storage does


def test_real_error_answers_fit_the_documented_body(stack: Stack) -> None:
    key = stack.bearer(stack.alice.key)
    malformed = stack.http.post("/tabpfn/fit", json={"nope": 1}, headers=key)
    assert malformed.status_code == 422
    ErrorBody.model_validate(malformed.json())
    missing = stack.http.post(
        "/tabpfn/get_fit_status",
        json={"fitted_train_set_id": "00000000-0000-4000-8000-000000000000"},
        headers=key,
    )
    assert missing.status_code == 404, missing.text
    body = ErrorBody.model_validate(missing.json())
    # The documented 404 body says ``format: uuid``: the dashed form.
    assert body.trace_id is not None
    assert HEX_UUID.match(body.trace_id), body.trace_id
    unauthenticated = stack.http.get("/api/v1/admin/keys")
    assert unauthenticated.status_code == 401
    ErrorBody.model_validate(unauthenticated.json())


def test_an_upstream_refusing_the_request_is_400_not_a_bad_gateway(stack: Stack) -> None:
    # Found by the fuzz run: a fit on a prepared upload whose chunks never came. The upstream
    # answers 400 (the caller's to fix); passing it on as 502 told clients to retry.
    key = stack.bearer(stack.alice.key)

    def prepare() -> dict[str, Any]:
        prepared = stack.http.post(
            "/tabpfn/prepare_train_set_upload",
            json={"x_train_info": {"format": "parquet"}, "y_train_info": {"format": "parquet"}},
            headers=key,
        )
        assert prepared.status_code == 200, prepared.text
        answer: dict[str, Any] = prepared.json()
        return answer

    def fit(upload_id: str, path: str) -> httpx.Response:
        return stack.http.post(
            path,
            json={"train_set_upload_id": upload_id, "task_config": {"task": "classification"}},
            headers=key,
        )

    # X came through the gateway (which records the upload as alice's), y never did.
    half = prepare()
    (x_url,) = half["x_train_info"]["signed_urls"]
    assert stack.http.put(x_url, content=b"PAR1 not much of a file").status_code == 200
    # No file came at all: the gateway never saw the upload, so it is unknown here.
    none = prepare()
    for path in ("/tabpfn/fit", "/tabpfn/submit_fit_job"):
        response = fit(half["train_set_upload_id"], path)
        assert response.status_code == 400, response.text
        body = ErrorBody.model_validate(response.json())
        assert body.error_code == "UPSTREAM_REJECTED"
        unknown = fit(none["train_set_upload_id"], path)
        assert unknown.status_code == 404, unknown.text
        assert ErrorBody.model_validate(unknown.json()).error_code == "NOT_FOUND"
