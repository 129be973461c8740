"""The admin console over HTTP (in process): sign-in, sessions, CSRF, escaping, pages, audit."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from gateway_support import Tenant, add_admin_key, add_tenant, asgi_client, build_gateway
from gateway_support import make_settings as base_settings
from tabpfn_gateway import migrate
from tabpfn_gateway.gateway import Gateway
from tabpfn_gateway.sessions import AdminSessions, session_id_for
from tabpfn_gateway.store import open_store
from tabpfn_gateway.store.records import Principal, UsageEvent, new_id, utcnow
from tabpfn_gateway.testing import FakeHostedTabPFN, FakeTabPFN, serve_in_thread
from tabpfn_gateway_server import create_app
from tabpfn_gateway_server.console._routes import build_console_router

TOKEN = "tok-console-test-1"
XSS = "<script>alert(1)</script>"
HOSTED_BEARER = "tok-console-container-2"


@dataclass
class Console:
    client: httpx.Client
    gateway: Gateway
    app: Any
    admin_key: str
    tenant: Tenant

    def sign_in(self, key: str | None = None, client: httpx.Client | None = None) -> httpx.Response:
        client = client or self.client
        page = client.get("/console/sign-in")
        assert page.status_code == 200
        return client.post(
            "/console/sign-in",
            data={"csrf_token": field(page.text, "csrf_token"), "admin_key": key or self.admin_key},
        )

    def csrf(self, path: str = "/console/") -> str:
        page = self.client.get(path)
        assert page.status_code == 200, page.text
        return field(page.text, "csrf_token")


def field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found is not None, f"no field {name}"
    return found.group(1)


def open_console(
    tmp_path: Path, base_url: str = "http://gateway.test", **overrides: Any
) -> Iterator[Console]:
    fake = FakeTabPFN(tokens=[TOKEN])
    settings = base_settings(
        tmp_path, f"sqlite:///{tmp_path}/gateway.db", console_enabled=True, **overrides
    )
    migrate.upgrade(settings)
    gateway = build_gateway(settings, fake.app, store=open_store(settings))
    app = create_app(settings, gateway=gateway)
    try:
        with asgi_client(app, base_url) as client:
            yield Console(
                client, gateway, app, add_admin_key(gateway), add_tenant(gateway, "ann", TOKEN)
            )
    finally:
        gateway.close()
        gateway.store.close()


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    yield from open_console(tmp_path)


@pytest.fixture
def signed_in(console: Console) -> Console:
    answer = console.sign_in()
    assert answer.status_code == 303, answer.text
    return console


# -- enabling ----------------------------------------------------------------------------------


def test_the_console_is_off_unless_enabled(tmp_path: Path) -> None:
    settings = base_settings(tmp_path, "memory://")
    gateway = build_gateway(settings, FakeTabPFN(tokens=[TOKEN]).app)
    try:
        with asgi_client(create_app(settings, gateway=gateway)) as client:
            assert client.get("/console/").status_code == 404
            assert client.get("/console/static/console.css").status_code == 404
    finally:
        gateway.close()


def test_pages_redirect_to_sign_in_without_a_session(console: Console) -> None:
    for path in ("/console/", "/console/keys", "/console/audit", "/console/usage.csv"):
        answer = console.client.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/sign-in"


def test_static_files_ship_in_the_package_with_the_security_headers(console: Console) -> None:
    css = console.client.get("/console/static/console.css")
    js = console.client.get("/console/static/console.js")
    assert css.status_code == 200
    assert "text/css" in css.headers["content-type"]
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert "script-src 'self'" in js.headers["content-security-policy"]


# -- signing in --------------------------------------------------------------------------------


def test_sign_in_sets_a_strict_httponly_session_cookie(console: Console) -> None:
    answer = console.sign_in()
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("tpg_console="))
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "path=/console", "samesite=strict"} <= attributes
    assert "secure" not in attributes  # plain http here; see the TLS test
    token = cookie.split(";")[0].split("=", 1)[1]
    # The database keeps a hash of the token, never the token.
    stored = console.gateway.store.get_admin_session(session_id_for(token))
    assert stored is not None
    assert stored.id != token
    overview = console.client.get("/console/")
    assert overview.status_code == 200
    assert "Overview" in overview.text


def test_the_cookie_is_secure_behind_tls(tmp_path: Path) -> None:
    # The scheme is https when uvicorn is told so by a trusted proxy (or the public URL is).
    for console in open_console(tmp_path, "https://gateway.test"):
        answer = console.sign_in()
        cookie = next(
            c for c in answer.headers.get_list("set-cookie") if c.startswith("tpg_console=")
        )
        assert "secure" in {part.strip().lower() for part in cookie.split(";")}


@pytest.mark.parametrize(
    ("which", "status", "message"),
    [
        ("wrong", 401, "was not accepted"),
        ("inference", 403, "not an admin key"),
        ("empty", 400, "Enter an admin key"),
    ],
)
def test_sign_in_refuses_other_keys(
    console: Console, which: str, status: int, message: str
) -> None:
    key = {"wrong": console.admin_key[:-4] + "AAAA", "inference": console.tenant.key}.get(
        which, "  "
    )
    answer = console.sign_in(key)
    assert answer.status_code == status
    assert message in answer.text
    assert key.strip() == "" or key not in answer.text
    assert "tpg_console=" not in ";".join(answer.headers.get_list("set-cookie"))
    assert console.client.get("/console/").status_code == 303


def test_sign_in_without_the_form_token_is_refused(console: Console) -> None:
    answer = console.client.post("/console/sign-in", data={"admin_key": console.admin_key})
    assert answer.status_code == 403
    assert "CSRF_FAILED" in answer.text
    assert console.client.get("/console/").status_code == 303


def test_failed_sign_ins_are_rate_limited_per_address(tmp_path: Path) -> None:
    for console in open_console(tmp_path, setup_attempts_per_minute=2):
        assert console.sign_in("tpga_nope").status_code == 401
        assert console.sign_in("tpga_nope").status_code == 401
        answer = console.sign_in()  # even the right key waits out the window
        assert answer.status_code == 429
        assert "TOO_MANY_ATTEMPTS" in answer.text


def test_sign_in_and_out_are_audited_with_the_admin_key(signed_in: Console) -> None:
    key_id = signed_in.admin_key.split("_")[1]
    answer = signed_in.client.post("/console/sign-out", data={"csrf_token": signed_in.csrf()})
    assert answer.status_code == 303
    assert signed_in.client.get("/console/").status_code == 303
    actions = [e.action for e in signed_in.gateway.admin.list_audit(actor=f"key:{key_id}").items]
    assert actions[:2] == ["console.sign_out", "console.sign_in"]


# -- sessions ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def use_clock(console: Console, **limits: timedelta) -> Clock:
    clock = Clock()
    gateway = console.gateway
    console.app.state.console.sessions = AdminSessions(
        gateway.store, gateway.keys, clock=clock, **limits
    )
    return clock


def test_an_idle_session_ends(console: Console) -> None:
    clock = use_clock(console, idle=timedelta(minutes=30), lifetime=timedelta(hours=12))
    console.sign_in()
    clock.now += timedelta(minutes=20)
    assert console.client.get("/console/").status_code == 200  # use keeps it alive
    clock.now += timedelta(minutes=29)
    assert console.client.get("/console/").status_code == 200
    clock.now += timedelta(minutes=31)
    answer = console.client.get("/console/")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in?ended=idle"
    assert "without use" in console.client.get(answer.headers["location"]).text


def test_a_busy_session_still_ends_at_its_absolute_limit(console: Console) -> None:
    clock = use_clock(console, idle=timedelta(minutes=30), lifetime=timedelta(hours=2))
    console.sign_in()
    for _ in range(7):
        clock.now += timedelta(minutes=17)
        assert console.client.get("/console/").status_code == 200
    clock.now += timedelta(minutes=2)
    answer = console.client.get("/console/")
    assert answer.headers["location"] == "/console/sign-in?ended=expired"


def test_revoking_the_admin_key_ends_its_sessions(signed_in: Console) -> None:
    key_id = signed_in.admin_key.split("_")[1]
    signed_in.gateway.keys.revoke(key_id, actor="test")
    answer = signed_in.client.get("/console/keys")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in?ended=key"
    assert signed_in.sign_in().status_code == 401


def test_replicas_share_sessions_through_the_database(tmp_path: Path) -> None:
    settings = base_settings(tmp_path, f"sqlite:///{tmp_path}/gateway.db", console_enabled=True)
    migrate.upgrade(settings)
    fake = FakeTabPFN(tokens=[TOKEN])
    first = build_gateway(settings, fake.app, store=open_store(settings))
    second = build_gateway(settings, fake.app, store=open_store(settings))
    try:
        admin_key = add_admin_key(first)
        with (
            asgi_client(create_app(settings, gateway=first)) as a,
            asgi_client(create_app(settings, gateway=second)) as b,
        ):
            page = a.get("/console/sign-in")
            a.post(
                "/console/sign-in",
                data={"csrf_token": field(page.text, "csrf_token"), "admin_key": admin_key},
            )
            b.cookies.set("tpg_console", a.cookies["tpg_console"], path="/console")
            assert b.get("/console/keys").status_code == 200
            csrf = field(b.get("/console/").text, "csrf_token")
            assert b.post("/console/sign-out", data={"csrf_token": csrf}).status_code == 303
            assert a.get("/console/").status_code == 303  # signed out everywhere
    finally:
        for gateway in (first, second):
            gateway.close()
            gateway.store.close()


# -- CSRF --------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "0" * 64])
def test_changes_without_the_sessions_csrf_token_are_refused(
    signed_in: Console, token: str | None
) -> None:
    data = {"name": "forged-team", "kind": "team"}
    if token is not None:
        data["csrf_token"] = token
    answer = signed_in.client.post("/console/principals", data=data)
    assert answer.status_code == 403
    assert "CSRF_FAILED" in answer.text
    assert signed_in.gateway.store.get_principal_by_name("forged-team") is None
    revoke = signed_in.client.post(
        f"/console/keys/{signed_in.tenant.key_id}/revoke", data={"csrf_token": token or ""}
    )
    assert revoke.status_code == 403
    assert signed_in.gateway.keys.get(signed_in.tenant.key_id).revoked_at is None


def console_changes(app: Any) -> list[str]:
    """Every state-changing console route (sign-in has its own pre-session token), from the
    router the app includes."""
    return sorted(
        route.path
        for route in build_console_router(app.state.console).routes
        if isinstance(route, APIRoute)
        and "POST" in route.methods
        and route.path != "/console/sign-in"
    )


def test_every_change_needs_the_csrf_token_and_the_same_origin(signed_in: Console) -> None:
    admin, tenant = signed_in.gateway.admin, signed_in.tenant
    team = admin.add_principal("forge-team", "team", actor="test")
    member = admin.add_principal("member-ann", "user", actor="test")
    admin.add_member(team.id, member.id, actor="test")
    ids = {
        "principal_id": team.id,
        "key_id": tenant.key_id,
        "credential_id": tenant.credential_id,
        "user_id": member.id,
        "action": "revoke",
    }
    paths = [path.format(**ids) for path in console_changes(signed_in.app)]
    # A new route shows up here (and must refuse like the others).
    assert len(paths) == 15, paths
    # A form that would change something on every route, were it accepted.
    form = {
        "name": "forged",
        "kind": "team",
        "label": "forged",
        "tabpfn_token": TOKEN,
        "endpoint_url": "http://10.0.0.1/predict",
        "owner": tenant.principal_id,
        "credential_id": tenant.credential_id,
        "grace_hours": "1",
        "expires_on": "2099-01-01",
        "budget_credits": "1",
        "user": member.id,
    }
    before = admin.list_audit(limit=1000).items
    for path in paths:
        missing = signed_in.client.post(path, data=form)
        assert missing.status_code == 403, path
        assert "CSRF_FAILED" in missing.text, path
        foreign = signed_in.client.post(
            path,
            data={**form, "csrf_token": signed_in.csrf()},
            headers={"Origin": "https://evil.example"},
        )
        assert foreign.status_code == 403, path
    # Nothing changed: no audit event, the key still works, the session is still signed in.
    assert admin.list_audit(limit=1000).items == before
    assert signed_in.gateway.authenticate(tenant.key).key_id == tenant.key_id
    assert signed_in.client.get("/console/").status_code == 200


def test_changes_from_another_origin_are_refused(signed_in: Console) -> None:
    answer = signed_in.client.post(
        "/console/principals",
        data={"name": "forged-team", "kind": "team", "csrf_token": signed_in.csrf()},
        headers={"Origin": "https://evil.example"},
    )
    assert answer.status_code == 403
    assert signed_in.gateway.store.get_principal_by_name("forged-team") is None


def test_another_sessions_csrf_token_does_not_work(signed_in: Console) -> None:
    mine = signed_in.csrf()
    signed_in.client.cookies.clear()
    signed_in.sign_in()
    answer = signed_in.client.post(
        "/console/principals", data={"name": "x-team", "kind": "team", "csrf_token": mine}
    )
    assert answer.status_code == 403


# -- pages and changes -------------------------------------------------------------------------


def test_every_page_renders_with_a_strict_content_security_policy(signed_in: Console) -> None:
    paths = [
        "/console/",
        "/console/?days=90",
        "/console/principals",
        "/console/principals?kind=team",
        f"/console/principals/{signed_in.tenant.principal_id}",
        "/console/keys",
        f"/console/keys/{signed_in.tenant.key_id}",
        "/console/usage",
        "/console/audit",
    ]
    for path in paths:
        answer = signed_in.client.get(path)
        assert answer.status_code == 200, path
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["cache-control"] == "no-store"
        # No inline script and no inline style anywhere.
        assert not re.search(r"<script(?![^>]*\bsrc=)", answer.text), path
        assert "style=" not in answer.text, path
        assert "<style" not in answer.text, path


def test_create_team_credential_and_key_then_revoke(signed_in: Console) -> None:
    client = signed_in.client
    answer = client.post(
        "/console/principals",
        data={"name": "data-science", "kind": "team", "csrf_token": signed_in.csrf()},
    )
    assert answer.status_code == 303
    team = signed_in.gateway.admin.get_principal("data-science")
    assert answer.headers["location"].startswith(f"/console/principals/{team.id}")
    page = f"/console/principals/{team.id}"
    answer = client.post(
        f"{page}/credentials",
        data={"label": "ds token", "tabpfn_token": TOKEN, "csrf_token": signed_in.csrf(page)},
    )
    assert answer.status_code == 303
    team_page = client.get(page).text
    assert "ds token" in team_page
    assert TOKEN not in team_page
    credential_id = signed_in.gateway.admin.list_credentials(owner=team.id).items[0].id
    assert f'<option value="{credential_id}">ds token</option>' in team_page
    created = client.post(
        "/console/keys",
        data={
            "owner": team.id,
            "credential_id": credential_id,
            "name": "notebook",
            "scope_inference": "on",
            "expires_on": "2099-01-31",
            "csrf_token": signed_in.csrf(page),
        },
    )
    assert created.status_code == 200, created.text
    plaintext = re.search(
        r'id="new-key" class="mono" type="text" readonly value="([^"]+)"', created.text
    ).group(1)  # type: ignore[union-attr]
    assert plaintext.startswith("tpg_")
    assert "TABPFN_CLIENT_API_URL" in created.text
    assert "GatewayClassifier" in created.text
    record = signed_in.gateway.authenticate(plaintext).key
    assert record.owner_id == team.id
    assert record.scopes == ("inference",)
    assert record.expires_at is not None
    assert record.expires_at.year == 2099
    assert plaintext not in client.get(page).text  # shown once
    answer = client.post(
        f"/console/keys/{record.key_id}/revoke",
        data={"csrf_token": signed_in.csrf(), "back": page},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{page}?notice=key-revoked"
    assert signed_in.gateway.keys.get(record.key_id).revoked_at is not None
    # Every change is audited with the signed-in admin key as the actor.
    admin_actor = "key:" + signed_in.admin_key.split("_")[1]
    actions = {e.action for e in signed_in.gateway.admin.list_audit(actor=admin_actor).items}
    assert {"principal.add", "credential.add", "key.create", "key.revoke"} <= actions


def test_add_a_hosted_container_verified_like_the_cli(signed_in: Console) -> None:
    container = FakeHostedTabPFN(tokens=[HOSTED_BEARER])
    client = signed_in.client
    team = signed_in.gateway.admin.add_principal("secure-team", "team", actor="test")
    page = f"/console/principals/{team.id}"
    form = client.get(page).text
    assert f'action="{page}/hosted-credentials"' in form
    with serve_in_thread(container.app) as url:
        endpoint = url + "/predict"

        def post(**data: str) -> httpx.Response:
            fields = {"label": "gpu box", "endpoint_url": endpoint, "verify": "on"}
            fields.update(data)
            return client.post(
                f"{page}/hosted-credentials", data={**fields, "csrf_token": signed_in.csrf(page)}
            )

        refused = post(bearer_token="not-the-token")
        assert refused.status_code == 401
        assert "refused this token" in refused.text
        assert "not-the-token" not in refused.text
        bad_url = post(endpoint_url="ftp://box.internal/predict", bearer_token=HOSTED_BEARER)
        assert bad_url.status_code == 400
        assert "endpoint_url must be an absolute http" in bad_url.text
        assert signed_in.gateway.admin.list_credentials(owner=team.id).items == []
        # The container was asked once (the refused token); the bad URL never left.
        assert [r.status for r in container.requests] == [401]

        answer = post(bearer_token=HOSTED_BEARER)
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == f"{page}?notice=hosted-credential-added"
        assert [r.status for r in container.requests] == [401, 200]
        assert container.requests[-1].token == HOSTED_BEARER
    [stored] = signed_in.gateway.admin.list_credentials(owner=team.id).items
    assert (stored.kind, stored.endpoint_url, stored.label) == ("hosted", endpoint, "gpu box")
    assert stored.verified_at is not None
    team_page = client.get(answer.headers["location"]).text
    assert "self-hosted container is stored" in team_page
    assert endpoint in team_page
    assert HOSTED_BEARER not in team_page
    assert f'<option value="{stored.id}">gpu box</option>' in team_page
    # Without verification (and without a token: it is optional) nothing is asked upstream.
    unverified = client.post(
        f"{page}/hosted-credentials",
        data={"label": "open box", "endpoint_url": "http://10.9.8.7/predict",
              "csrf_token": signed_in.csrf(page)},
    )  # fmt: skip
    assert unverified.status_code == 303
    kinds = sorted(
        (c.label, c.verified_at is None)
        for c in signed_in.gateway.admin.list_credentials(owner=team.id).items
    )
    assert kinds == [("gpu box", False), ("open box", True)]
    admin_actor = "key:" + signed_in.admin_key.split("_")[1]
    added = [
        e
        for e in signed_in.gateway.admin.list_audit(actor=admin_actor).items
        if e.action == "credential.add"
    ]
    assert {e.details["kind"] for e in added} == {"hosted"}


def test_disable_enable_and_rotate_a_key(signed_in: Console) -> None:
    key_id = signed_in.tenant.key_id
    client = signed_in.client
    client.post(f"/console/keys/{key_id}/disable", data={"csrf_token": signed_in.csrf()})
    assert signed_in.gateway.keys.get(key_id).disabled_at is not None
    client.post(f"/console/keys/{key_id}/enable", data={"csrf_token": signed_in.csrf()})
    assert signed_in.gateway.keys.get(key_id).disabled_at is None
    rotated = client.post(
        f"/console/keys/{key_id}/rotate",
        data={"csrf_token": signed_in.csrf(), "grace_hours": "1"},
    )
    assert rotated.status_code == 200
    new_key = re.search(r'readonly value="([^"]+)"', rotated.text).group(1)  # type: ignore[union-attr]
    assert new_key != signed_in.tenant.key
    assert signed_in.gateway.authenticate(new_key).key_id == key_id
    assert signed_in.gateway.authenticate(signed_in.tenant.key).key_id == key_id  # grace
    bad = client.post(
        f"/console/keys/{key_id}/rotate",
        data={"csrf_token": signed_in.csrf(), "grace_hours": "99999999999999999999"},
    )
    assert bad.status_code == 400


def test_bad_input_answers_with_a_page_never_a_500(signed_in: Console) -> None:
    client = signed_in.client
    answer = client.post(
        "/console/principals", data={"name": "", "kind": "team", "csrf_token": signed_in.csrf()}
    )
    assert answer.status_code == 400
    assert "principal name" in answer.text
    typed = client.post(
        "/console/principals",
        data={"name": "bad name!", "kind": "user", "csrf_token": signed_in.csrf()},
    )
    assert typed.status_code == 400
    assert 'value="bad name!"' in typed.text  # what was typed stays in the form
    missing = client.get("/console/principals/no-such-team")
    assert missing.status_code == 404
    assert 'aria-label="Console"' in missing.text  # the error page keeps the navigation
    answer = client.post("/console/keys/nokey/revoke", data={"csrf_token": signed_in.csrf()})
    assert answer.status_code == 404
    assert "KEY_NOT_FOUND" in answer.text
    assert client.get("/console/usage?since=not-a-date").status_code == 400
    assert client.get("/console/audit?cursor=garbage").status_code == 400
    answer = client.post(
        "/console/principals",
        content=b'{"name": "json"}',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 400
    assert "text/html" in answer.headers["content-type"]


# -- escaping ----------------------------------------------------------------------------------


def test_every_value_is_escaped(signed_in: Console) -> None:
    gateway = signed_in.gateway
    # A name the core refuses today may come from elsewhere (an older version, the database):
    # it must still render as text.
    team = gateway.store.add_principal(Principal(id=new_id(), name=XSS, kind="team"))
    credential = gateway.admin.add_credential(team.id, TOKEN, "<img src=x onerror=alert(2)>")
    xss_key = gateway.keys.create(team.id, credential.id, XSS, actor="test").record
    for path in (
        f"/console/keys/{xss_key.key_id}",
        "/console/principals",
        f"/console/principals/{team.id}",
        "/console/keys",
        "/console/audit",
        "/console/usage",
    ):
        html = signed_in.client.get(path).text
        assert XSS not in html, path
        assert "<img src=x" not in html, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in signed_in.client.get("/console/keys").text


# -- usage -------------------------------------------------------------------------------------


def record_usage(gateway: Gateway, tenant: Tenant, **fields: Any) -> None:
    values: dict[str, Any] = {
        "id": new_id(),
        "key_id": tenant.key_id,
        "owner_id": tenant.principal_id,
        "operation": "predict",
        "status": 200,
        "latency_ms": 10.0,
        "rows": 100,
        "bytes": 2000,
    }
    values.update(fields)
    gateway.store.record_usage([UsageEvent(**values)])


def test_overview_and_usage_show_recorded_calls(signed_in: Console) -> None:
    gateway, tenant = signed_in.gateway, signed_in.tenant
    for _ in range(3):
        record_usage(gateway, tenant, credits=7)
    record_usage(gateway, tenant, status=429, operation="fit", error_code="BUDGET_EXHAUSTED")
    overview = signed_in.client.get("/console/").text
    today = utcnow().date().isoformat()
    assert re.search(rf'data-day="{today}" data-calls="4" data-errors="1"', overview)
    assert 'id="total-calls">4<' in overview
    assert 'id="total-credits">21<' in overview
    assert "ann" in overview
    # The refusal says which limit refused it: a 429 is a rate limit or a budget.
    assert '>429</td><td><code class="error-code">BUDGET_EXHAUSTED</code>' in overview
    usage = signed_in.client.get(f"/console/usage?owner=ann&since={today}&until={today}").text
    assert ">predict<" in usage
    assert ">fit<" in usage
    csv_answer = signed_in.client.get(f"/console/usage.csv?owner={tenant.principal_id}")
    assert csv_answer.status_code == 200
    assert csv_answer.headers["content-type"].startswith("text/csv")
    lines = csv_answer.text.strip().splitlines()
    assert lines[0] == "principal,operation,calls,errors,credits,rows,bytes"
    assert "ann,predict,3,0,21,300,6000" in lines
    by_key = signed_in.client.get("/console/usage.csv?by=key&by=day").text.splitlines()
    assert by_key[0] == "key,day,calls,errors,credits,rows,bytes"
    assert f"{tenant.key_id},{today},4,1,21,400,8000" in by_key
    grouped = signed_in.client.get("/console/usage?by=team").text
    assert "(no team)" in grouped
    bad = signed_in.client.get("/console/usage?by=weekday")
    assert bad.status_code == 400
    assert signed_in.client.get("/console/usage?until=2000-01-01").text.count("No usage") == 1


def test_recent_problems_tell_rate_limits_budgets_and_upstream_errors_apart(
    signed_in: Console,
) -> None:
    gateway, tenant = signed_in.gateway, signed_in.tenant
    record_usage(gateway, tenant, status=429, error_code="RATE_LIMITED")
    record_usage(gateway, tenant, status=502, error_code="UPSTREAM_ERROR")
    record_usage(gateway, tenant, status=429)  # written before error codes were kept
    overview = signed_in.client.get("/console/").text
    problems = overview[overview.index('id="problems-heading"') :]
    answers = re.findall(r'class="num">(\d+)</td><td>(.*?)</td></tr>', problems)
    assert sorted(answers) == [
        ("429", '<code class="error-code">RATE_LIMITED</code>'),
        ("429", '<span class="help">not recorded</span>'),
        ("502", '<code class="error-code">UPSTREAM_ERROR</code>'),
    ]


def test_a_refusal_shows_however_many_calls_succeeded_since(signed_in: Console) -> None:
    gateway, tenant = signed_in.gateway, signed_in.tenant
    record_usage(gateway, tenant, status=429, error_code="BUDGET_EXHAUSTED")
    gateway.store.record_usage(
        [
            UsageEvent(new_id(), tenant.key_id, tenant.principal_id, "predict", 200, 5.0)
            for _ in range(400)
        ]
    )
    overview = signed_in.client.get("/console/").text
    problems = overview[overview.index('id="problems-heading"') :]
    assert "BUDGET_EXHAUSTED" in problems


def test_csv_cells_that_look_like_formulas_are_quoted(signed_in: Console) -> None:
    record_usage(signed_in.gateway, signed_in.tenant, operation="=HYPERLINK(1)")
    text = signed_in.client.get("/console/usage.csv?by=operation").text
    assert "'=HYPERLINK(1)" in text


def test_audit_log_filters_and_pages(signed_in: Console) -> None:
    gateway = signed_in.gateway
    for n in range(60):
        gateway.admin.add_principal(f"user-{n:02d}", "user", actor="bulk")
    first = signed_in.client.get("/console/audit?actor=bulk").text
    assert first.count("principal.add") == 50
    older = re.search(r'href="/console/audit\?([^"]+)" rel="next"', first)
    assert older is not None
    second = signed_in.client.get("/console/audit?" + older.group(1).replace("&amp;", "&")).text
    assert second.count("principal.add") == 10
    assert 'rel="next"' not in second
    only = signed_in.client.get("/console/audit?action=console.sign_in").text
    assert "console.sign_in" in only
    assert "principal.add" not in only


def test_a_keys_page_sets_and_clears_its_expiry(signed_in: Console) -> None:
    key_id = signed_in.tenant.key_id
    page = f"/console/keys/{key_id}"
    html = signed_in.client.get(page).text
    assert "ann-key" in html
    assert "Not used yet." in html
    answer = signed_in.client.post(
        f"{page}/expiry", data={"expires_on": "2098-06-30", "csrf_token": signed_in.csrf(page)}
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{page}?notice=key-expiry"
    expires_at = signed_in.gateway.admin.get_key(key_id).expires_at
    assert expires_at is not None
    assert expires_at.isoformat() == "2098-06-30T00:00:00+00:00"
    assert 'value="2098-06-30"' in signed_in.client.get(page).text
    past = signed_in.client.post(
        f"{page}/expiry", data={"expires_on": "2001-01-01", "csrf_token": signed_in.csrf(page)}
    )
    assert past.status_code == 400
    assert "in the future" in past.text
    cleared = signed_in.client.post(
        f"{page}/expiry", data={"clear": "on", "csrf_token": signed_in.csrf(page)}
    )
    assert cleared.status_code == 303
    assert signed_in.gateway.admin.get_key(key_id).expires_at is None
    admin_actor = "key:" + signed_in.admin_key.split("_")[1]
    changes = signed_in.gateway.admin.list_audit(target_id=key_id, action="key.expiry").items
    assert [e.actor for e in changes] == [admin_actor, admin_actor]
    assert changes[1].details["expires_at"] == "2098-06-30T00:00:00+00:00"
    forged = signed_in.client.post(f"{page}/expiry", data={"clear": "on"})
    assert forged.status_code == 403


def test_signing_in_again_ends_the_previous_session(signed_in: Console) -> None:
    first = signed_in.client.cookies["tpg_console"]
    assert signed_in.sign_in().status_code == 303
    second = signed_in.client.cookies["tpg_console"]
    assert second != first
    store = signed_in.gateway.store
    assert store.get_admin_session(session_id_for(first)) is None
    assert store.get_admin_session(session_id_for(second)) is not None


def test_team_members_and_a_team_policy(signed_in: Console) -> None:
    admin = signed_in.gateway.admin
    team = admin.add_principal("ds-team", "team", actor="test")
    ada = admin.add_principal("ada", "user", actor="test")
    page = f"/console/principals/{team.id}"
    client = signed_in.client
    answer = client.post(
        f"{page}/members", data={"user": ada.id, "csrf_token": signed_in.csrf(page)}
    )
    assert answer.status_code == 303
    assert [m.user_id for m in admin.list_members(team.id)] == [ada.id]
    assert f'href="/console/principals/{ada.id}">ada<' in client.get(page).text
    assert (
        f'href="/console/principals/{team.id}">ds-team<'
        in client.get(f"/console/principals/{ada.id}").text
    )
    policy = {
        "requests_per_minute": "60",
        "requests_per_hour": "",
        "max_concurrent_fits": "2",
        "budget_credits": "1,000",
        "budget_period": "month",
        "budget_window": "calendar",
        "budget_mode": "hard",
        "alert_thresholds": "50, 80%",
    }
    answer = client.post(f"{page}/policy", data={**policy, "csrf_token": signed_in.csrf(page)})
    assert answer.status_code == 303
    stored = admin.get_policy(team.id)
    assert stored is not None
    assert (stored.requests_per_minute, stored.requests_per_hour) == (60, None)
    assert (stored.max_concurrent_fits, stored.budget_credits) == (2, 1000)
    assert stored.alert_thresholds == (50, 80)
    assert "1,000 credits a month" in client.get(page).text
    bad = client.post(
        f"{page}/policy",
        data={**policy, "budget_credits": "lots", "csrf_token": signed_in.csrf(page)},
    )
    assert bad.status_code == 400
    assert "whole number" in bad.text
    cleared = client.post(f"{page}/policy/clear", data={"csrf_token": signed_in.csrf(page)})
    assert cleared.status_code == 303
    assert admin.get_policy(team.id) is None
    removed = client.post(
        f"{page}/members/{ada.id}/remove", data={"csrf_token": signed_in.csrf(page)}
    )
    assert removed.status_code == 303
    assert admin.list_members(team.id) == []
    admin_actor = "key:" + signed_in.admin_key.split("_")[1]
    actions = [e.action for e in admin.list_audit(actor=admin_actor, target_id=team.id).items]
    assert {"team.member.add", "team.member.remove", "policy.set", "policy.clear"} <= set(actions)


def test_a_key_policy_with_an_allowlist_and_a_budget_on_the_overview(
    signed_in: Console,
) -> None:
    admin = signed_in.gateway.admin
    key_id = signed_in.tenant.key_id
    page = f"/console/keys/{key_id}"
    data = {
        "budget_credits": "50",
        "budget_period": "day",
        "budget_mode": "soft",
        "allowed_cidrs": "10.0.0.0/8, 192.0.2.7/32",
        "csrf_token": signed_in.csrf(page),
    }
    answer = signed_in.client.post(f"{page}/policy", data=data)
    assert answer.status_code == 303
    stored = admin.get_policy(key_id, kind="key")
    assert stored is not None
    assert stored.allowed_cidrs == ("10.0.0.0/8", "192.0.2.7/32")
    assert (stored.budget_credits, stored.budget_period, stored.budget_mode) == (50, "day", "soft")
    html = signed_in.client.get(page).text
    assert "10.0.0.0/8, 192.0.2.7/32" in html
    assert "0 spent + 0 reserved of 50 credits this day (soft)" in html
    overview = signed_in.client.get("/console/").text
    assert 'id="budgets"' in overview
    assert "0 of 50 credits (0%) this day, soft" in overview
    bad = signed_in.client.post(
        f"{page}/policy",
        data={**data, "allowed_cidrs": "not-a-network", "csrf_token": signed_in.csrf(page)},
    )
    assert bad.status_code == 400
    assert admin.get_policy(key_id, kind="key") == stored


def _budget_list(page: str, marker: str) -> tuple[str, list[tuple[str, str, str]]]:
    """The budget list after ``marker`` on a console page, and its (link, name, kind) items."""
    section = page[page.index(marker) :]
    section = section[: section.index("</ul>")]
    items = re.findall(r'<a href="([^"]+)">([^<]+)</a> <span class="kind">([^<]+)</span>', section)
    return section, items


def test_budgets_are_named_by_their_team_user_or_key(signed_in: Console) -> None:
    # The core names a budget's target by id; the pages name it as people know it, and link
    # to where it is set: a team's budget over a member's key links to the team, not the user.
    admin, gateway = signed_in.gateway.admin, signed_in.gateway
    team = admin.add_principal("budget-team", "team", actor="test")
    ada = admin.add_principal("ada-budget", "user", actor="test")
    admin.add_member(team.id, ada.id, actor="test")
    credential = admin.add_credential(ada.id, TOKEN, "ada token", actor="test")
    key = gateway.keys.create(ada.id, credential.id, "ada notebook", actor="test").record
    admin.set_policy(team.id, {"budget_credits": 1000}, actor="test")
    admin.set_policy(ada.id, {"budget_credits": 500}, actor="test")
    admin.set_policy(key.key_id, {"budget_credits": 100}, kind="key", actor="test")
    engine = gateway.policy_engine
    assert engine is not None
    engine.admit(key, "predict", credits=90).settle(90)
    overview = signed_in.client.get("/console/").text
    budgets, items = _budget_list(overview, 'id="budgets"')
    assert items == [
        (f"/console/keys/{key.key_id}", "ada notebook", "key"),
        (f"/console/principals/{ada.id}", "ada-budget", "user"),
        (f"/console/principals/{team.id}", "budget-team", "team"),
    ]
    assert "90 of 100 credits (90%)" in budgets
    assert team.id not in re.sub(r'href="[^"]*"', "", budgets)
    page = signed_in.client.get(f"/console/keys/{key.key_id}").text
    section, named = _budget_list(page, "Budgets over this key")
    assert named == [
        (f"/console/keys/{key.key_id}", "ada notebook", "key"),
        (f"/console/principals/{ada.id}", "ada-budget", "user"),
        (f"/console/principals/{team.id}", "budget-team", "team"),
    ]
    assert ada.id not in re.sub(r'href="[^"]*"', "", section)
