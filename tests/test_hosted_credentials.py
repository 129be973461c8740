"""Hosted credentials: stored with their kind, endpoint and timeouts, secrets encrypted together,
verified with one tiny prediction, through Admin, the CLI and the admin API; migration 0005."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway_support import SECRET, add_admin_key, asgi_client, build_gateway, make_settings
from tabpfn_gateway import migrate
from tabpfn_gateway.admin import Admin
from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import (
    InvalidRequest,
    UpstreamAuthenticationFailed,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from tabpfn_gateway.hosted import HostedEndpoint, open_secrets, verify_hosted_endpoint
from tabpfn_gateway.protocol import TokenStatus
from tabpfn_gateway.store import open_store
from tabpfn_gateway.testing import FakeHostedTabPFN, FakeTabPFN, serve_in_thread
from tabpfn_gateway_server import create_app
from test_cli_admin import Shell

BEARER = "hosted-bearer-0001"
HEADER_SECRET = "header-secret-value-77"


@pytest.fixture(scope="module")
def container() -> Iterator[tuple[FakeHostedTabPFN, str]]:
    fake = FakeHostedTabPFN(tokens=[BEARER], required_headers={"X-Api-Key": HEADER_SECRET})
    with serve_in_thread(fake.app) as url:
        yield fake, url + "/predict"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/gateway.db")
    migrate.upgrade(settings)
    return settings


@pytest.fixture
def admin(settings: Settings) -> Iterator[Admin]:
    with Admin.from_settings(settings) as admin:
        admin.add_principal("team-a", "team")
        yield admin


def test_a_hosted_credential_is_stored_with_its_kind_and_its_secrets_encrypted(
    admin: Admin, settings: Settings, container: tuple[FakeHostedTabPFN, str]
) -> None:
    fake, url = container
    record = admin.add_hosted_credential(
        "team-a",
        "gpu box",
        endpoint_url=url,
        token=BEARER,
        extra_headers={"X-Api-Key": HEADER_SECRET},
        timeout_seconds=120,
        verify=verify_hosted_endpoint,
        actor="test",
    )
    assert (record.kind, record.endpoint_url, record.timeout_seconds) == ("hosted", url, 120.0)
    assert record.verified_at is not None
    assert fake.requests[-1].status == 200
    assert fake.requests[-1].token == BEARER
    # The database holds neither the token nor the header value in clear.
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as connection:
        dump = repr(connection.execute(sa.text("SELECT * FROM upstream_credentials")).all())
        audit = repr(connection.execute(sa.text("SELECT * FROM audit_events")).all())
    engine.dispose()
    for secret in (BEARER, HEADER_SECRET):
        assert secret not in dump
        assert secret not in audit
        assert secret not in repr(record)
    assert "X-Api-Key" in audit  # the header's name is audited, not its value
    assert admin.vault is not None
    plain = admin.vault.decrypt(record.encrypted_token, credential_id=record.id)
    token, headers = open_secrets(plain, credential_id=record.id)
    assert token is not None
    assert token.get_secret_value() == BEARER
    assert headers == {"X-Api-Key": HEADER_SECRET}
    # Cloud credentials keep their kind too.
    cloud = admin.add_credential("team-a", "tabpfn-token-0001", "cloud", actor="test")
    assert (cloud.kind, cloud.endpoint_url) == ("cloud", None)


def test_secret_rotation_keeps_hosted_secrets_readable(
    admin: Admin, settings: Settings, container: tuple[FakeHostedTabPFN, str]
) -> None:
    _, url = container
    record = admin.add_hosted_credential("team-a", "box", endpoint_url=url, token=BEARER)
    rotated = make_settings(
        Path(settings.data_dir).parent,
        settings.database_url,
        secret_key="another-secret-key-0123456789",
        previous_secret_keys=[SECRET],
    )
    with Admin.from_settings(rotated) as second:
        assert second.rotate_secrets().reencrypted == 1
        assert second.vault is not None
        stored = second.get_credential(record.id)
        plain = second.vault.decrypt(stored.encrypted_token, credential_id=record.id)
        assert open_secrets(plain, credential_id=record.id)[0] is not None


def test_verification_failures_store_nothing(
    admin: Admin, container: tuple[FakeHostedTabPFN, str]
) -> None:
    _, url = container
    with pytest.raises(UpstreamAuthenticationFailed):
        admin.add_hosted_credential(
            "team-a", "x", endpoint_url=url, token="wrong-token", verify=verify_hosted_endpoint
        )
    with pytest.raises(UpstreamAuthenticationFailed):  # the header is missing: 403
        admin.add_hosted_credential(
            "team-a", "x", endpoint_url=url, token=BEARER, verify=verify_hosted_endpoint
        )
    with pytest.raises(UpstreamNotFound) as not_found:
        admin.add_hosted_credential(
            "team-a", "x", endpoint_url=url.replace("/predict", "/nope"), token=BEARER,
            extra_headers={"X-Api-Key": HEADER_SECRET}, verify=verify_hosted_endpoint,
        )  # fmt: skip
    assert "/predict URL" in not_found.value.message
    with pytest.raises(UpstreamUnavailable) as unreachable:
        admin.add_hosted_credential(
            "team-a", "x", endpoint_url="http://127.0.0.1:1/predict", token=BEARER,
            connect_timeout_seconds=2, verify=verify_hosted_endpoint,
        )  # fmt: skip
    assert unreachable.value.retryable
    assert BEARER not in str(unreachable.value)
    assert admin.list_credentials().items == []


def test_a_failing_container_is_unavailable_not_invalid(
    admin: Admin, container: tuple[FakeHostedTabPFN, str]
) -> None:
    fake, url = container
    fake.fail_next(503)
    endpoint = HostedEndpoint(url, token=None, headers={})
    with pytest.raises(UpstreamUnavailable):
        verify_hosted_endpoint(endpoint)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"endpoint_url": "ftp://box/predict"}, "http"),
        ({"endpoint_url": "http://user:pw@box/predict"}, "user or password"),
        ({"endpoint_url": "predict"}, "http"),
        ({"endpoint_url": "http://box/pre dict"}, "printable"),
        ({"extra_headers": {"Authorization": "Bearer x"}}, "bearer token"),
        ({"extra_headers": {"Content-Length": "3"}}, "sets Content-Length"),
        ({"extra_headers": {"X-A": "line\r\nbreak"}}, "printable"),
        ({"extra_headers": {"bad name": "x"}}, "header name"),
        ({"token": "tok\nen"}, "printable"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": float("inf")}, "timeout_seconds"),
        ({"label": ""}, "label"),
    ],
)
def test_bad_hosted_arguments_are_invalid_requests(
    admin: Admin, changes: dict[str, Any], fragment: str
) -> None:
    arguments: dict[str, Any] = {"endpoint_url": "http://box.internal/predict", "label": "x"}
    arguments.update(changes)
    label = arguments.pop("label")
    with pytest.raises(InvalidRequest) as caught:
        admin.add_hosted_credential("team-a", label, **arguments)
    assert fragment in caught.value.message
    assert "line\r\nbreak" not in caught.value.message


def test_migration_0005_makes_existing_credentials_cloud(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/old.db")
    migrate.upgrade(settings, "0001")
    engine = sa.create_engine(settings.database_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO principals (id, name, kind, created_at) "
                "VALUES ('p1', 'old', 'user', '2026-01-01 00:00:00')"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO upstream_credentials (id, owner_id, label, encrypted_token, "
                "created_at) VALUES ('c1', 'p1', 'old', x'01', '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    migrate.upgrade(settings)
    store = open_store(settings)
    try:
        old = store.get_credential("c1")
    finally:
        store.close()
    assert old is not None
    assert (old.kind, old.endpoint_url, old.timeout_seconds) == ("cloud", None, None)
    migrate.downgrade(settings, "0001")  # and back down, keeping the row
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as connection:
        assert (
            connection.execute(sa.text("SELECT count(*) FROM upstream_credentials")).scalar() == 1
        )
    engine.dispose()


# -- the CLI and the admin API ---------------------------------------------------------------


@pytest.fixture
def shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Shell:
    monkeypatch.setenv("TABPFN_GATEWAY_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("TABPFN_GATEWAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TABPFN_GATEWAY_SECRET_KEY", SECRET)
    sh = Shell(capsys, monkeypatch)
    sh.ok("db", "upgrade")
    sh.ok("principals", "add", "team-a")
    return sh


def test_cli_adds_a_hosted_credential(
    shell: Shell, container: tuple[FakeHostedTabPFN, str]
) -> None:
    _, url = container
    base = ["credentials", "add", "--owner", "team-a", "--label", "box", "--kind", "hosted"]
    added = shell.json(
        *base, "--endpoint", url, "--token-stdin", "--header", f"X-Api-Key={HEADER_SECRET}",
        "--timeout", "60", stdin=BEARER,
    )  # fmt: skip
    assert (added["kind"], added["endpoint_url"]) == ("hosted", url)
    assert added["verified_at"] is not None
    code, out, err = shell.run(*base, "--endpoint", url, "--token-stdin", "--json", stdin="bad")
    assert code == 1
    assert "[UPSTREAM_AUTHENTICATION_FAILED]" in err
    assert "bad" not in out
    code, _, err = shell.run(*base, "--json")
    assert code == 1
    assert "--endpoint" in err
    code, _, err = shell.run(
        "credentials", "add", "--owner", "team-a", "--label", "c", "--header", "X-A=1", "--json"
    )
    assert code == 1
    assert "--kind hosted" in err
    listed = shell.json("credentials", "list")["items"]
    assert [(c["kind"], c["endpoint_url"]) for c in listed] == [("hosted", url)]
    assert HEADER_SECRET not in json.dumps(listed)


def test_admin_api_adds_hosted_and_cloud_credentials(
    tmp_path: Path, container: tuple[FakeHostedTabPFN, str]
) -> None:
    _, url = container
    settings = make_settings(tmp_path, "memory://")
    upstream = FakeTabPFN({"tabpfn-token-0001": None})
    gateway = build_gateway(settings, upstream.app)
    admin_key = add_admin_key(gateway)
    gateway.admin.add_principal("team-a", "team")
    auth = {"Authorization": f"Bearer {admin_key}"}
    try:
        with asgi_client(create_app(gateway=gateway)) as client:
            hosted = client.post(
                "/api/v1/admin/credentials",
                headers=auth,
                json={
                    "owner": "team-a", "label": "box", "kind": "hosted", "endpoint_url": url,
                    "bearer_token": BEARER, "extra_headers": {"X-Api-Key": HEADER_SECRET},
                    "timeout_seconds": 30,
                },
            )  # fmt: skip
            assert hosted.status_code == 201, hosted.text
            body = hosted.json()
            assert (body["kind"], body["endpoint_url"], body["timeout_seconds"]) == (
                "hosted", url, 30.0,
            )  # fmt: skip
            assert BEARER not in hosted.text
            assert HEADER_SECRET not in hosted.text
            refused = client.post(
                "/api/v1/admin/credentials",
                headers=auth,
                json={"owner": "team-a", "label": "box", "kind": "hosted", "endpoint_url": url},
            )
            assert refused.status_code == 401
            assert refused.json()["error_code"] == "UPSTREAM_AUTHENTICATION_FAILED"
            for bad in (
                {"kind": "hosted"},
                {"kind": "hosted", "endpoint_url": url, "tabpfn_token": "x"},
                {"kind": "cloud"},
                {"kind": "cloud", "tabpfn_token": "tabpfn-token-0001", "bearer_token": "x"},
                {"kind": "cloud", "tabpfn_token": "tabpfn-token-0001", "endpoint_url": "ftp://x"},
            ):
                answer = client.post(
                    "/api/v1/admin/credentials",
                    headers=auth,
                    json={"owner": "team-a", "label": "x", "verify": False, **bad},
                )
                assert answer.status_code in (400, 422), bad
                assert "error_code" in answer.json()
            cloud = client.post(
                "/api/v1/admin/credentials",
                headers=auth,
                json={"owner": "team-a", "label": "c", "tabpfn_token": "tabpfn-token-0001"},
            )
            assert cloud.status_code == 201
            assert cloud.json()["kind"] == "cloud"
            listed = client.get("/api/v1/admin/credentials", headers=auth).json()["items"]
            assert sorted(c["kind"] for c in listed) == ["cloud", "hosted"]
    finally:
        gateway.close()


def test_token_status_of_a_valid_container(container: tuple[FakeHostedTabPFN, str]) -> None:
    _, url = container
    endpoint = HostedEndpoint(url, token=None, headers={"X-Api-Key": HEADER_SECRET})
    assert verify_hosted_endpoint(endpoint) is TokenStatus.INVALID  # no bearer token: 401


def test_doctor_asks_each_hosted_container_for_a_tiny_prediction(
    admin: Admin, settings: Settings, container: tuple[FakeHostedTabPFN, str]
) -> None:
    from tabpfn_gateway.diagnostics import Doctor

    fake, url = container
    assert Doctor(settings).run()[-1].status == "skip"  # no hosted credential yet
    admin.add_hosted_credential(
        "team-a", "good", endpoint_url=url, token=BEARER, extra_headers={"X-Api-Key": HEADER_SECRET}
    )
    seen = len(fake.requests)
    ok = {c.name: c for c in Doctor(settings).run()}["hosted"]
    assert ok.status == "ok", ok.detail
    assert fake.requests[seen].token == BEARER
    assert fake.requests[seen].status == 200
    admin.add_hosted_credential("team-a", "stale", endpoint_url=url, token="old-token-000")
    admin.add_hosted_credential(
        "team-a", "gone", endpoint_url="http://127.0.0.1:1/predict", token=BEARER
    )
    failed = {c.name: c for c in Doctor(settings).run()}["hosted"]
    assert failed.status == "fail"
    assert "2 of 3" in failed.detail
    assert "'stale'" in failed.detail
    assert "'gone'" in failed.detail
    assert "old-token-000" not in failed.detail
    assert failed.fix is not None
