"""The server's own API over HTTP (in process): errors, limits, health, metrics, setup, admin."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway_support import (
    Tenant,
    add_admin_key,
    add_tenant,
    asgi_client,
    build_gateway,
    make_settings,
)
from tabpfn_gateway import migrate
from tabpfn_gateway.errors import StoreUnavailable, error_codes
from tabpfn_gateway.gateway import HTTP_STATUS_BY_CODE, Gateway
from tabpfn_gateway.keys.format import format_key, new_key_id, new_secret
from tabpfn_gateway.store import open_store
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway_server import create_app

TOKEN = "tok-server-test-1"
OTHER_TOKEN = "tok-server-test-2"


@dataclass
class Server:
    client: httpx.Client
    gateway: Gateway
    fake: FakeTabPFN
    admin_key: str
    tenant: Tenant

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def user(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tenant.key}"}


def serve(tmp_path: Path, **overrides: Any) -> Iterator[Server]:
    fake = FakeTabPFN(tokens=[TOKEN, OTHER_TOKEN])
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/gateway.db", **overrides)
    migrate.upgrade(settings)
    gateway = build_gateway(settings, fake.app, store=open_store(settings))
    app = create_app(settings, gateway=gateway)
    try:
        with asgi_client(app) as client:
            yield Server(
                client, gateway, fake, add_admin_key(gateway), add_tenant(gateway, "ann", TOKEN)
            )
    finally:
        gateway.close()
        gateway.store.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from serve(tmp_path)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "message", "trace_id"}
    assert body["error_code"] == code
    assert body["message"]
    return dict(body)


# -- health and metrics -----------------------------------------------------------------------


def test_health_and_readiness(server: Server) -> None:
    assert server.client.get("/healthz").json() == {"status": "ok"}
    ready = server.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["schema"] == "current"


def test_readiness_fails_on_an_unmigrated_database(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/empty.db")
    gateway = Gateway.from_settings(settings)
    try:
        with asgi_client(create_app(settings, gateway=gateway)) as client:
            response = client.get("/readyz")
            assert_error(response, 503, "SCHEMA_NOT_CURRENT")
            assert "Retry-After" in response.headers
            assert client.get("/healthz").status_code == 200
    finally:
        gateway.close()


def test_openapi_documents_the_routes(server: Server) -> None:
    schema = server.client.get("/openapi.json").json()
    for path in ("/api/v1/auth/setup", "/api/v1/admin/keys", "/tabpfn/predict", "/protected/"):
        assert path in schema["paths"]
    assert server.client.get("/docs").status_code == 200


def test_metrics_label_routes_and_key_ids_never_keys(server: Server) -> None:
    server.client.get("/protected/", headers=server.user())
    server.client.get("/tabpfn/get_settings", headers=server.user())
    server.client.get("/nope")
    server.client.get("/api/v1/admin/usage/summary", headers=server.admin())  # flushes usage
    text = server.client.get("/metrics", headers=server.admin()).text
    written = re.search(r"^tabpfn_gateway_usage_events_written_total (\S+)$", text, re.MULTILINE)
    assert written is not None
    assert float(written.group(1)) >= 2
    assert 'route="/tabpfn/get_settings"' in text
    assert 'route="unmatched"' in text
    assert f'key_id="{server.tenant.key_id}"' in text
    assert 'operation="get_settings"' in text
    assert server.tenant.key not in text
    assert TOKEN not in text


# -- error bodies -----------------------------------------------------------------------------


def test_missing_and_invalid_keys_are_401_with_a_trace_id(server: Server) -> None:
    missing = server.client.get("/tabpfn/get_settings")
    body = assert_error(missing, 401, "MISSING_CREDENTIALS")
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert body["trace_id"] == missing.headers["X-Trace-Id"]
    invalid = server.client.get(
        "/tabpfn/get_settings", headers={"Authorization": "Bearer tpg_garbage"}
    )
    assert_error(invalid, 401, "INVALID_KEY")
    unknown = format_key(new_key_id(), new_secret())
    assert_error(
        server.client.get("/protected/", headers={"Authorization": f"Bearer {unknown}"}),
        401,
        "INVALID_KEY",
    )


def test_unknown_routes_and_methods(server: Server) -> None:
    assert_error(server.client.get("/no/such/route"), 404, "NOT_FOUND")
    assert_error(server.client.delete("/healthz"), 405, "INVALID_REQUEST")


def test_malformed_json_is_422_invalid_request(server: Server) -> None:
    broken = server.client.post(
        "/tabpfn/fit",
        content=b"{not json",
        headers={**server.user(), "Content-Type": "application/json"},
    )
    body = assert_error(broken, 422, "INVALID_REQUEST")
    assert "not json" not in body["message"]
    wrong_shape = server.client.post("/api/v1/auth/setup", json={"tabpfn_token": 12, "name": ["x"]})
    assert_error(wrong_shape, 422, "INVALID_REQUEST")


def test_request_bodies_past_the_limit_are_413(tmp_path: Path) -> None:
    for server in serve(tmp_path, max_json_body_bytes=2048):
        big = b'{"tabpfn_token": "' + b"x" * 4096 + b'"}'
        declared = server.client.post(
            "/api/v1/auth/setup", content=big, headers={"Content-Type": "application/json"}
        )
        assert_error(declared, 413, "PAYLOAD_TOO_LARGE")

        def chunks() -> Iterator[bytes]:
            # No Content-Length: the limit must hold while the body streams in.
            yield b'{"tabpfn_token": "'
            for _ in range(8):
                yield b"y" * 1024
            yield b'"}'

        streamed = server.client.post(
            "/api/v1/auth/setup", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert_error(streamed, 413, "PAYLOAD_TOO_LARGE")


def test_database_unreachable_is_503_never_401(tmp_path: Path) -> None:
    # PostgreSQL on a closed port: the store cannot answer the key lookup.
    settings = make_settings(tmp_path, "postgresql+psycopg://nobody@127.0.0.1:1/none")
    gateway = Gateway.from_settings(settings)
    try:
        with asgi_client(create_app(settings, gateway=gateway)) as client:
            key = format_key(new_key_id(), new_secret())
            response = client.get(
                "/tabpfn/get_settings", headers={"Authorization": f"Bearer {key}"}
            )
            assert_error(response, 503, "STORE_UNAVAILABLE")
            assert int(response.headers["Retry-After"]) >= 1
            assert_error(client.get("/readyz"), 503, "STORE_UNAVAILABLE")
    finally:
        gateway.close()


# -- setup ------------------------------------------------------------------------------------


def test_setup_disabled_is_403(tmp_path: Path) -> None:
    for server in serve(tmp_path, allow_self_service_setup=False):
        response = server.client.post("/api/v1/auth/setup", json={"tabpfn_token": TOKEN})
        assert_error(response, 403, "SETUP_DISABLED")


def test_setup_rate_limits_repeated_failures_per_address(tmp_path: Path) -> None:
    for server in serve(tmp_path, setup_attempts_per_minute=2):
        for _ in range(2):
            response = server.client.post(
                "/api/v1/auth/setup", json={"tabpfn_token": "tok-wrong-guess"}
            )
            assert_error(response, 401, "UPSTREAM_AUTHENTICATION_FAILED")
        limited = server.client.post("/api/v1/auth/setup", json={"tabpfn_token": OTHER_TOKEN})
        assert_error(limited, 429, "TOO_MANY_ATTEMPTS")
        assert int(limited.headers["Retry-After"]) >= 1


# -- admin API --------------------------------------------------------------------------------


def test_admin_api_needs_an_admin_key(server: Server) -> None:
    assert_error(server.client.get("/api/v1/admin/keys"), 401, "MISSING_CREDENTIALS")
    assert_error(
        server.client.get("/api/v1/admin/keys", headers=server.user()), 403, "INSUFFICIENT_SCOPE"
    )


def test_admin_manages_principals_credentials_and_keys(server: Server) -> None:
    c, h = server.client, server.admin()
    team = c.post("/api/v1/admin/principals", json={"name": "data-team", "kind": "team"}, headers=h)
    assert team.status_code == 201
    team_id = team.json()["id"]
    assert_error(
        c.post("/api/v1/admin/principals", json={"name": "data-team"}, headers=h), 409, "CONFLICT"
    )
    assert c.get("/api/v1/admin/principals/data-team", headers=h).json()["id"] == team_id
    assert_error(c.get("/api/v1/admin/principals/nobody", headers=h), 404, "PRINCIPAL_NOT_FOUND")

    credential = c.post(
        "/api/v1/admin/credentials",
        json={"owner": "data-team", "tabpfn_token": OTHER_TOKEN, "label": "shared"},
        headers=h,
    )
    assert credential.status_code == 201, credential.text
    assert OTHER_TOKEN not in credential.text
    assert credential.json()["verified_at"] is not None
    rejected = c.post(
        "/api/v1/admin/credentials",
        json={"owner": "data-team", "tabpfn_token": "tok-bogus", "label": "bad"},
        headers=h,
    )
    assert_error(rejected, 401, "UPSTREAM_AUTHENTICATION_FAILED")

    created = c.post(
        "/api/v1/admin/keys",
        json={"owner": "data-team", "credential_id": credential.json()["id"], "name": "ci"},
        headers=h,
    )
    assert created.status_code == 201, created.text
    assert created.headers["Cache-Control"] == "no-store"
    new_key = created.json()["api_key"]
    key_id = created.json()["key_id"]
    assert created.json()["state"] == "active"
    assert c.get("/protected/", headers={"Authorization": f"Bearer {new_key}"}).status_code == 200

    shown = c.get(f"/api/v1/admin/keys/{key_id}", headers=h).json()
    assert "api_key" not in shown
    assert new_key not in str(shown)

    assert c.post(f"/api/v1/admin/keys/{key_id}/disable", headers=h).json()["state"] == "disabled"
    assert_error(
        c.get("/protected/", headers={"Authorization": f"Bearer {new_key}"}), 401, "KEY_DISABLED"
    )
    assert c.post(f"/api/v1/admin/keys/{key_id}/enable", headers=h).json()["state"] == "active"

    rotate = {"Idempotency-Key": "rotation-1", **h}
    first = c.post(f"/api/v1/admin/keys/{key_id}/rotate", json={"grace_seconds": 0}, headers=rotate)
    again = c.post(f"/api/v1/admin/keys/{key_id}/rotate", json={"grace_seconds": 0}, headers=rotate)
    assert first.status_code == 200, first.text
    assert first.json()["api_key"] == again.json()["api_key"] != new_key
    assert_error(
        c.get("/protected/", headers={"Authorization": f"Bearer {new_key}"}), 401, "INVALID_KEY"
    )
    rotated = {"Authorization": f"Bearer {first.json()['api_key']}"}
    assert c.get("/protected/", headers=rotated).status_code == 200

    assert c.post(f"/api/v1/admin/keys/{key_id}/revoke", headers=h).json()["state"] == "revoked"
    assert_error(c.get("/protected/", headers=rotated), 401, "KEY_REVOKED")
    assert_error(c.get("/api/v1/admin/keys/nope", headers=h), 404, "KEY_NOT_FOUND")

    actions = {e["action"] for e in c.get("/api/v1/admin/audit", headers=h).json()["items"]}
    assert {"principal.add", "credential.add", "key.create", "key.rotate", "key.revoke"} <= actions
    audit_text = c.get("/api/v1/admin/audit?limit=1000", headers=h).text
    assert OTHER_TOKEN not in audit_text
    assert new_key not in audit_text


def test_admin_lists_are_paginated(server: Server) -> None:
    c, h = server.client, server.admin()
    for n in range(5):
        c.post("/api/v1/admin/principals", json={"name": f"user-{n}"}, headers=h)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = c.get("/api/v1/admin/principals", params=params, headers=h).json()
        assert len(page["items"]) <= 2
        seen.extend(item["name"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted({*seen})  # each exactly once
    assert {f"user-{n}" for n in range(5)} <= set(seen)
    assert_error(
        c.get("/api/v1/admin/principals", params={"cursor": "garbage!"}, headers=h),
        400,
        "INVALID_REQUEST",
    )
    assert_error(
        c.get("/api/v1/admin/principals", params={"limit": 0}, headers=h), 422, "INVALID_REQUEST"
    )


def test_removing_a_credential_stops_its_keys(server: Server) -> None:
    c, h = server.client, server.admin()
    assert c.get("/tabpfn/get_settings", headers=server.user()).status_code == 200
    removed = c.delete(f"/api/v1/admin/credentials/{server.tenant.credential_id}", headers=h)
    assert removed.status_code == 204
    assert_error(c.get("/tabpfn/get_settings", headers=server.user()), 404, "CREDENTIAL_NOT_FOUND")


def test_usage_queries(server: Server) -> None:
    c, h = server.client, server.admin()
    for _ in range(3):
        assert c.get("/tabpfn/get_settings", headers=server.user()).status_code == 200
    summary = c.get(
        "/api/v1/admin/usage/summary", params={"key_id": server.tenant.key_id}, headers=h
    ).json()
    assert [(s["operation"], s["calls"], s["errors"]) for s in summary] == [("get_settings", 3, 0)]
    events = c.get("/api/v1/admin/usage", params={"owner": "ann", "limit": 2}, headers=h).json()
    assert len(events["items"]) == 2
    assert events["next_cursor"] is not None
    assert [e["error_code"] for e in events["items"]] == [None, None]
    # A failed call's event carries the code it was answered with.
    server.fake.fail_next(5, status=503, path="/protected")
    failed = c.get("/protected/", headers=server.user())
    assert failed.status_code == 503
    newest = c.get("/api/v1/admin/usage", params={"owner": "ann", "limit": 1}, headers=h).json()
    assert [(e["status"], e["error_code"]) for e in newest["items"]] == [
        (503, failed.json()["error_code"])
    ]
    # Only the refused and failed calls, however many succeeded after them.
    for _ in range(3):
        assert c.get("/tabpfn/get_settings", headers=server.user()).status_code == 200
    errors = c.get(
        "/api/v1/admin/usage", params={"owner": "ann", "errors_only": "true"}, headers=h
    ).json()
    assert [e["status"] for e in errors["items"]] == [503]
    own = c.get("/api/v1/usage/summary", headers=server.user()).json()
    assert own["operations"][0]["calls"] == 6
    assert own["calls"] == 7  # and the failed check
    assert_error(
        c.get("/api/v1/admin/usage", params={"since": "2030-01-01T00:00:00"}, headers=h),
        400,
        "INVALID_REQUEST",
    )


def test_usage_reads_go_through_admin_and_survive_a_failed_flush(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every usage read (a key's own summary, the report, prune) goes through Admin, which
    # flushes this process's buffer first and answers from the store when that write fails;
    # a route flushing or reading the store itself would answer 503 here.
    c, h = server.client, server.admin()
    assert c.get("/tabpfn/get_settings", headers=server.user()).status_code == 200
    assert c.get("/api/v1/usage/summary", headers=server.user()).json()["calls"] == 1

    def refuse(events: object) -> None:
        raise StoreUnavailable()

    monkeypatch.setattr(server.gateway.store, "record_usage", refuse)
    assert c.get("/tabpfn/get_settings", headers=server.user()).status_code == 200  # buffered
    own = c.get("/api/v1/usage/summary", headers=server.user())
    assert own.status_code == 200, own.text
    assert own.json()["calls"] == 1  # the store's answer; the unwritten call waits its turn
    report = c.get("/api/v1/admin/usage/report", params={"by": "key"}, headers=h)
    assert report.status_code == 200, report.text
    pruned = c.post("/api/v1/admin/prune", json={"older_than_days": 30}, headers=h)
    assert pruned.status_code == 200, pruned.text
    monkeypatch.undo()
    assert c.get("/api/v1/usage/summary", headers=server.user()).json()["calls"] == 2


# -- the error table ----------------------------------------------------------------------------


def test_every_error_code_has_a_status_and_is_documented() -> None:
    codes = error_codes()
    assert set(codes) <= set(HTTP_STATUS_BY_CODE), set(codes) - set(HTTP_STATUS_BY_CODE)
    doc = (Path(__file__).parent.parent / "docs" / "server.md").read_text(encoding="utf-8")
    for code in codes:
        row = re.search(rf"^\|\s*`{code}`\s*\|\s*(\d{{3}})\s*\|", doc, flags=re.MULTILINE)
        assert row is not None, f"{code} is not in the error table of docs/server.md"
        assert int(row.group(1)) == HTTP_STATUS_BY_CODE[code], code


def test_admin_moves_and_removes_a_keys_expiry(server: Server) -> None:
    c, h = server.client, server.admin()
    key_id, user = server.tenant.key_id, server.user()
    soon = datetime.now(UTC) + timedelta(days=2)
    moved = c.put(
        f"/api/v1/admin/keys/{key_id}/expiry", json={"expires_at": soon.isoformat()}, headers=h
    )
    assert moved.status_code == 200, moved.text
    assert datetime.fromisoformat(moved.json()["expires_at"]) == soon
    assert c.get("/protected/", headers=user).status_code == 200
    # A moment ago: the key stops working at once (on the next request, every replica).
    assert_error(
        c.put(
            f"/api/v1/admin/keys/{key_id}/expiry",
            json={"expires_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()},
            headers=h,
        ),
        400,
        "INVALID_REQUEST",
    )
    naive = c.put(
        f"/api/v1/admin/keys/{key_id}/expiry", json={"expires_at": "2031-01-01T00:00:00"}, headers=h
    )
    assert_error(naive, 400, "INVALID_REQUEST")
    assert_error(
        c.put(f"/api/v1/admin/keys/{key_id}/expiry", json={}, headers=h), 422, "INVALID_REQUEST"
    )
    cleared = c.put(f"/api/v1/admin/keys/{key_id}/expiry", json={"expires_at": None}, headers=h)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["expires_at"] is None
    events = c.get(f"/api/v1/admin/audit?target_id={key_id}&action=key.expiry", headers=h).json()[
        "items"
    ]
    assert len(events) == 2
    assert {e["actor"] for e in events} == {events[0]["actor"]} != {"system"}
    # Inference keys cannot do it; a revoked key cannot be changed.
    assert_error(
        c.put(f"/api/v1/admin/keys/{key_id}/expiry", json={"expires_at": None}, headers=user),
        403,
        "INSUFFICIENT_SCOPE",
    )
    c.post(f"/api/v1/admin/keys/{key_id}/revoke", headers=h)
    revoked = c.put(f"/api/v1/admin/keys/{key_id}/expiry", json={"expires_at": None}, headers=h)
    assert revoked.status_code == 409, revoked.text
    assert revoked.json()["error_code"] == "CONFLICT"
    assert_error(
        c.put("/api/v1/admin/keys/nope/expiry", json={"expires_at": None}, headers=h),
        404,
        "KEY_NOT_FOUND",
    )
