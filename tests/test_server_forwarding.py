"""The proxy's forwarding: upstream answers pass through as their own bytes, still checked
against the protocol, with the protocol client's retry rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway_support import Tenant, add_tenant, asgi_client, build_gateway, make_settings
from tabpfn_gateway.gateway import UPLOAD_PATH_PREFIX
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway_server import create_app
from tabpfn_gateway_server.direct import DirectRoutes

TOKEN = "tok-forward-000001"


def _bearer(tenant: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.key}"}


@pytest.fixture
def fake() -> FakeTabPFN:
    return FakeTabPFN(tokens=[TOKEN])


@pytest.fixture
def served(tmp_path: Path, fake: FakeTabPFN) -> Iterator[tuple[httpx.Client, Tenant]]:
    settings = make_settings(tmp_path, "memory://")
    gateway = build_gateway(settings, fake.app)
    try:
        tenant = add_tenant(gateway, "ann", TOKEN)
        with asgi_client(create_app(settings, gateway=gateway)) as http:
            yield http, tenant
    finally:
        gateway.close()


def test_answers_are_the_upstreams_own_bytes(
    served: tuple[httpx.Client, Tenant], fake: FakeTabPFN
) -> None:
    http, tenant = served
    estimate = {"train_rows": 100, "raw_columns": 5, "test_rows": 10}
    through = [
        http.post("/get_api_usage/", headers=_bearer(tenant)),
        http.post("/tabpfn/estimate_cost", json=estimate, headers=_bearer(tenant)),
    ]
    with asgi_client(fake.app, "http://upstream.test") as upstream:
        direct = [
            upstream.post("/get_api_usage/", headers={"Authorization": f"Bearer {TOKEN}"}),
            upstream.post(
                "/tabpfn/estimate_cost", json=estimate, headers={"Authorization": f"Bearer {TOKEN}"}
            ),
        ]
    for ours, theirs in zip(through, direct, strict=True):
        assert ours.status_code == theirs.status_code == 200
        assert ours.headers["content-type"] == "application/json"
        assert ours.content == theirs.content


def _garbage_upstream(seen: list[str]) -> Starlette:
    async def garbage(request: Request) -> Response:
        seen.append(request.url.path)
        # Echoes the credential, as a broken upstream might: it must not reach the caller.
        token = request.headers.get("authorization", "")
        return Response(f'["not", "an object", "{token}"]', media_type="application/json")

    async def flaky(request: Request) -> Response:
        seen.append(request.url.path)
        if seen.count(request.url.path) == 1:
            return Response("busy", status_code=503)
        return Response(b'{"usage": 1}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/tabpfn/estimate_cost", garbage, methods=["POST"]),
            Route("/get_api_usage/", flaky, methods=["POST"]),
        ]
    )


def test_a_misfit_answer_is_502_and_a_transient_one_is_retried(tmp_path: Path) -> None:
    seen: list[str] = []
    settings = make_settings(tmp_path, "memory://")
    gateway = build_gateway(settings, _garbage_upstream(seen))
    try:
        tenant = add_tenant(gateway, "bo", TOKEN)
        with asgi_client(create_app(settings, gateway=gateway)) as http:
            bad = http.post(
                "/tabpfn/estimate_cost",
                json={"train_rows": 1, "raw_columns": 1},
                headers=_bearer(tenant),
            )
            usage = http.post("/get_api_usage/", headers=_bearer(tenant))
    finally:
        gateway.close()
    assert bad.status_code == 502
    assert bad.json()["error_code"] == "MALFORMED_RESPONSE"
    assert TOKEN not in bad.text
    assert tenant.key not in bad.text
    # get_api_usage is idempotent: the 503 was retried, and the second answer passed through.
    assert usage.status_code == 200
    assert usage.content == b'{"usage": 1}'
    assert seen.count("/get_api_usage/") == 2


def test_hot_routes_are_answered_directly_with_fastapis_answers(
    served: tuple[httpx.Client, Tenant],
) -> None:
    http, tenant = served
    app = http._transport.app  # type: ignore[attr-defined]
    path = "/tabpfn/estimate_cost"
    cases = [
        ({}, b'{"train_rows": 1, "raw_columns": 1}', 401, "MISSING_CREDENTIALS"),
        (_bearer(tenant), b'{"train_rows": 1', 422, "INVALID_REQUEST"),
        (_bearer(tenant), b"", 422, "INVALID_REQUEST"),
        (_bearer(tenant), b'{"train_rows": "many"}', 422, "INVALID_REQUEST"),
    ]
    for headers, body, status, code in cases:
        answer = http.post(
            path, content=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert answer.status_code == status, answer.text
        assert answer.json()["error_code"] == code
        assert answer.headers["x-trace-id"]
    malformed = http.post(path, content=b'{"train_rows": "many"}', headers=_bearer(tenant))
    assert "body.train_rows" in malformed.json()["message"]
    assert "body.raw_columns" in malformed.json()["message"]
    plain = http.post(
        path, content=b"{}", headers={**_bearer(tenant), "Content-Type": "text/plain"}
    )
    assert plain.status_code == 422
    direct = _direct_routes(app)
    assert {
        ("POST", "/get_api_usage/"),
        ("POST", "/tabpfn/get_fit_status"),
        ("POST", "/tabpfn/fit"),
        ("POST", "/tabpfn/predict"),
        ("GET", "/tabpfn/get_settings"),
    } <= direct.paths
    # Metrics label direct answers by route template, as FastAPI's router does.
    metrics = app.state.metrics.render().decode()
    assert 'route="/tabpfn/estimate_cost"' in metrics


def test_the_upload_route_is_answered_directly_by_its_template(
    served: tuple[httpx.Client, Tenant],
) -> None:
    http, _ = served
    app = http._transport.app  # type: ignore[attr-defined]
    template = UPLOAD_PATH_PREFIX + "{token}"
    refused = http.put(UPLOAD_PATH_PREFIX + "not-a-sealed-token", content=b"x")
    assert refused.status_code == 400, refused.text
    assert refused.json()["error_code"] == "INVALID_UPLOAD"
    assert refused.headers["x-trace-id"]
    # Starlette's matching is kept: a token is one non-empty path segment.
    for path in (UPLOAD_PATH_PREFIX, UPLOAD_PATH_PREFIX + "a/b"):
        assert http.put(path, content=b"x").status_code == 404
    assert ("PUT", template) in _direct_routes(app).paths
    metrics = app.state.metrics.render().decode()
    assert f'route="{template}"' in metrics


def _direct_routes(app: object) -> DirectRoutes:
    layer = app.middleware_stack  # type: ignore[attr-defined]
    while not isinstance(layer, DirectRoutes):
        layer = layer.app
    return layer
