"""Item 3: no 500 from bad input; item 7: nothing echoes a secret, 503s keep the insides."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from security_support import Stack

BAD_TOKENS = ["tok\r\nX-Injected: 1", "tok\x00nul", "tökén-ünïcode", "tok\nline"]


def assert_clean_4xx(response: object, *codes: int) -> None:
    status = response.status_code  # type: ignore[attr-defined]
    assert status in (codes or (400, 401, 422)), response.text  # type: ignore[attr-defined]
    if status >= 400:
        assert response.json()["error_code"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("token", BAD_TOKENS)
def test_setup_with_a_header_unsafe_token_is_400(stack: Stack, token: str) -> None:
    response = stack.http.post("/api/v1/auth/setup", json={"tabpfn_token": token})
    assert_clean_4xx(response, 400)
    assert stack.fake.requests_to("/get_api_usage/") == []  # never sent anywhere


@pytest.mark.parametrize("token", BAD_TOKENS)
def test_admin_credentials_refuse_header_unsafe_tokens_even_unverified(
    stack: Stack, token: str
) -> None:
    response = stack.http.post(
        "/api/v1/admin/credentials",
        json={"owner": "alice", "label": "x", "tabpfn_token": token, "verify": False},
        headers=stack.bearer(stack.admin_key),
    )
    assert_clean_4xx(response, 400, 422)


def test_lone_surrogate_in_a_forwarded_string_is_400(stack: Stack) -> None:
    body = '{"train_rows": 10, "raw_columns": 2, "model_version": "\\ud800"}'
    response = stack.http.post(
        "/tabpfn/estimate_cost",
        content=body,
        headers={**stack.bearer(stack.alice.key), "Content-Type": "application/json"},
    )
    assert_clean_4xx(response, 400, 422)


@pytest.mark.parametrize(
    "query",
    [
        {"since": "0001-01-01T00:00:00+14:00"},
        {"until": "9999-12-31T23:59:59-14:00"},
    ],
)
def test_calendar_edges_are_400(stack: Stack, query: dict[str, str]) -> None:
    for path, key in (
        ("/api/v1/usage/summary", stack.alice.key),
        ("/api/v1/admin/usage", stack.admin_key),
    ):
        response = stack.http.get(path, params=query, headers=stack.bearer(key))
        assert_clean_4xx(response, 400, 422)


def test_calendar_edge_cursor_is_400(stack: Stack) -> None:
    edge = json.dumps(["0001-01-01T00:00:00+14:00", "x"]).encode()
    cursor = base64.urlsafe_b64encode(edge).decode().rstrip("=")
    response = stack.http.get(
        "/api/v1/admin/keys", params={"cursor": cursor}, headers=stack.bearer(stack.admin_key)
    )
    assert_clean_4xx(response, 400)


def test_huge_grace_and_edge_expiry_are_refused(stack: Stack) -> None:
    admin = stack.bearer(stack.admin_key)
    rotate = stack.http.post(
        f"/api/v1/admin/keys/{stack.alice.key_id}/rotate",
        json={"grace_seconds": 1e300},
        headers=admin,
    )
    assert_clean_4xx(rotate, 400, 422)
    created = stack.http.post(
        "/api/v1/admin/keys",
        json={
            "owner": "alice",
            "credential_id": stack.alice.credential_id,
            "name": "edge",
            "expires_at": "0001-01-01T00:00:00+14:00",
        },
        headers=admin,
    )
    assert_clean_4xx(created, 400, 422)


def test_nul_in_any_string_is_400_not_500(stack: Stack) -> None:
    admin = stack.bearer(stack.admin_key)
    for path, body in (
        ("/api/v1/admin/principals", {"name": "nul\x00name"}),
        ("/api/v1/admin/keys", {"owner": "alice", "name": "k\x00"}),
        ("/api/v1/admin/principals", {"name": "ok", "kind": "team\x00"}),
    ):
        response = stack.http.post(path, json=body, headers=admin)
        # SQLite stores a NUL; PostgreSQL cannot: a clean 400 there, never a 500 anywhere.
        assert_clean_4xx(response, 201, 400, 404, 422)
    for path in ("/api/v1/admin/principals/a%00b", "/api/v1/admin/keys/a%00b"):
        assert_clean_4xx(stack.http.get(path, headers=admin), 400, 404)


# -- item 7 -------------------------------------------------------------------------------------


def test_no_error_message_echoes_a_key_or_token(stack: Stack) -> None:
    admin = stack.bearer(stack.admin_key)
    secrets = [stack.alice.key, stack.alice.token, stack.admin_key]
    answers = [
        stack.http.get(f"/api/v1/admin/keys/{stack.alice.key}", headers=admin),
        stack.http.get(f"/api/v1/admin/principals/{stack.alice.token}", headers=admin),
        stack.http.get(f"/api/v1/admin/principals/{stack.alice.key}", headers=admin),
        stack.http.post(
            "/api/v1/admin/keys", json={"owner": stack.alice.key, "name": "x"}, headers=admin
        ),
        stack.http.post(
            "/api/v1/admin/credentials",
            json={"owner": stack.alice.token, "label": "x", "tabpfn_token": "t0k-new"},
            headers=admin,
        ),
    ]
    for response in answers:
        assert response.status_code < 500, response.text
        for secret in secrets:
            assert secret not in response.text


def test_503_bodies_do_not_describe_the_database(tmp_path: Path) -> None:
    from gateway_support import asgi_client, make_settings
    from tabpfn_gateway.gateway import Gateway
    from tabpfn_gateway.keys.format import format_key, new_key_id, new_secret
    from tabpfn_gateway_server import create_app

    # A PostgreSQL that does not answer: every key lookup is a 503.
    settings = make_settings(
        tmp_path,
        "postgresql+psycopg://nobody@127.0.0.1:1/secretdb",
        db_connect_timeout_seconds=2,
    )
    gateway = Gateway.from_settings(settings)
    app = create_app(settings, gateway=gateway)
    try:
        with asgi_client(app) as http:
            key = format_key(new_key_id(), new_secret())
            answers = [
                http.get("/tabpfn/get_settings", headers={"Authorization": f"Bearer {key}"}),
                http.get("/readyz"),
            ]
    finally:
        gateway.close()
    for response in answers:
        assert response.status_code == 503, response.text
        for detail in ("127.0.0.1", "secretdb", "psycopg", "nobody", "port 1"):
            assert detail not in response.text
        assert response.headers["x-trace-id"]
