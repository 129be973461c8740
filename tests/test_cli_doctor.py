"""`tabpfn-gateway doctor`: every check against real parts (SQLite, PostgreSQL, Redis, FakeTabPFN
served over HTTP), each failure with its fix, --json, and the exit code."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gateway_support import (
    SECRET,
    add_tenant,
    build_gateway,
    free_port,
    make_settings,
    redis_url_or_skip,
    serve_in_thread,
)
from tabpfn_gateway import Admin, migrate
from tabpfn_gateway.cli import main
from tabpfn_gateway.config import get_settings
from tabpfn_gateway.diagnostics import Doctor
from tabpfn_gateway.store import open_store
from tabpfn_gateway.testing import FakeTabPFN

TOKEN = "tok-doctor-valid-0001"
OTHER_SECRET = "another-secret-key-fedcba9876543210"


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """FakeTabPFN on a loopback port: the doctor reaches it over real HTTP."""
    fake = FakeTabPFN(tokens=[TOKEN])
    with serve_in_thread(fake.app) as url:
        yield url


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream: str) -> dict[str, str]:
    """A clean environment for one deployment in tmp_path (no .env, no stray variables)."""
    for name in list(os.environ):
        test_setting = name.startswith("TABPFN_GATEWAY_TEST_")
        if (name.startswith("TABPFN_GATEWAY_") and not test_setting) or name == "TABPFN_TOKEN":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    values = {
        "TABPFN_GATEWAY_DATA_DIR": str(data_dir),
        "TABPFN_GATEWAY_DATABASE_URL": f"sqlite:///{data_dir}/gateway.db",
        "TABPFN_GATEWAY_SECRET_KEY": SECRET,
        "TABPFN_GATEWAY_UPSTREAM_URL": upstream,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(f"TABPFN_GATEWAY_{name.upper()}", value)


def store_a_credential(database_url: str, tmp_path: Path, secret: str = SECRET) -> None:
    """A principal with an encrypted TabPFN token, written with ``secret``."""
    settings = make_settings(tmp_path, database_url, secret_key=secret)
    fake = FakeTabPFN(tokens=[TOKEN])
    gateway = build_gateway(settings, fake.app, store=open_store(settings))
    try:
        add_tenant(gateway, "team-doctor", TOKEN)
    finally:
        gateway.close()
        gateway.store.close()


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["doctor", *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out


def doctor_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out = doctor(capsys, "--json", *args)
    report = json.loads(out)
    return code, {check["name"]: check for check in report["checks"]} | {"_report": report}


def healthy_sqlite(env: dict[str, str], tmp_path: Path) -> None:
    migrate.upgrade(get_settings())
    store_a_credential(env["TABPFN_GATEWAY_DATABASE_URL"], tmp_path)


def test_a_healthy_sqlite_deployment_passes(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    healthy_sqlite(env, tmp_path)
    code, checks = doctor_json(capsys)
    assert code == 0
    assert checks["_report"]["ok"] is True
    statuses = {name: c["status"] for name, c in checks.items() if name != "_report"}
    assert statuses == {
        "settings": "ok",
        "database": "ok",
        "schema": "ok",
        "secret": "ok",
        "pepper": "ok",
        "fingerprint": checks["fingerprint"]["status"],  # see the fingerprint test
        "clock": "ok",
        "files": "ok",
        "redis": "skip",
        "upstream": "ok",
        "credentials": "skip",
        "token": "skip",
        "hosted": "skip",
    }
    assert "decrypt the 1 stored token(s)" in checks["secret"]["detail"]
    assert "HTTP 200" in checks["upstream"]["detail"]
    # The human form: one line a check, and a closing verdict.
    code, out = doctor(capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("[  ok] settings")
    assert lines[-1] == "No check failed."
    assert SECRET not in out


def test_an_unmigrated_database_fails_with_the_upgrade_command(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = doctor(capsys)
    assert code == 1
    assert "[FAIL] schema" in out
    assert "fix: Run `tabpfn-gateway db upgrade`" in out
    assert out.splitlines()[-1] == "1 check(s) failed."


def test_a_secret_that_does_not_decrypt_the_stored_tokens_fails(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    healthy_sqlite(env, tmp_path)
    set_env(monkeypatch, secret_key=OTHER_SECRET)
    code, checks = doctor_json(capsys)
    assert code == 1
    assert checks["secret"]["status"] == "fail"
    assert "1 of 1 stored TabPFN tokens cannot be decrypted" in checks["secret"]["detail"]
    assert "PREVIOUS_SECRET_KEYS" in checks["secret"]["fix"]
    # The old secret as a decrypt-only one is a valid rotation state.
    set_env(monkeypatch, previous_secret_keys=SECRET)
    code, checks = doctor_json(capsys)
    assert code == 0
    assert checks["secret"]["status"] == "ok"
    text = json.dumps(checks)
    assert SECRET not in text
    assert OTHER_SECRET not in text
    assert TOKEN not in text


def test_invalid_settings_fail_first_and_skip_the_rest(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_env(monkeypatch, db_pool_size="lots")
    code, checks = doctor_json(capsys)
    assert code == 1
    assert checks["settings"]["status"] == "fail"
    assert "TABPFN_GATEWAY_DB_POOL_SIZE" in checks["settings"]["detail"]
    assert {c["status"] for n, c in checks.items() if n not in ("_report", "settings")} == {"skip"}


def test_an_unreachable_database_fails_without_showing_its_password(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    set_env(
        monkeypatch,
        database_url=f"postgresql://gw:hunter2-password@127.0.0.1:{port}/gateway",
        db_connect_timeout_seconds="2",
    )
    code, out = doctor(capsys)
    assert code == 1
    assert "[FAIL] database" in out
    assert "fix: Check TABPFN_GATEWAY_DATABASE_URL" in out
    assert "[skip] schema" in out
    assert "hunter2-password" not in out


def test_world_readable_generated_secret_fails_with_chmod(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    healthy_sqlite(env, tmp_path)
    secret_file = tmp_path / "data" / "secret_key"
    secret_file.write_text("a-generated-secret-value-0123456789\n", encoding="utf-8")
    secret_file.chmod(0o644)
    monkeypatch.delenv("TABPFN_GATEWAY_SECRET_KEY")
    monkeypatch.setenv("TABPFN_GATEWAY_PREVIOUS_SECRET_KEYS", SECRET)
    code, checks = doctor_json(capsys)
    assert code == 1
    assert checks["files"]["status"] == "fail"
    assert f"chmod 600 {secret_file}" in checks["files"]["fix"]
    assert "a-generated-secret-value" not in json.dumps(checks)
    secret_file.chmod(0o600)
    code, checks = doctor_json(capsys)
    assert checks["files"]["status"] == "ok"
    assert code == 0


def test_a_database_directory_others_can_enter_is_a_warning(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    healthy_sqlite(env, tmp_path)
    (tmp_path / "data").chmod(0o755)
    (tmp_path / "data" / "gateway.db").chmod(0o644)
    code, checks = doctor_json(capsys)
    assert checks["files"]["status"] == "warn"
    assert code == 0  # warnings do not fail the run


def test_an_unreachable_upstream_fails(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_env(monkeypatch, upstream_url=f"http://127.0.0.1:{free_port()}")
    code, checks = doctor_json(capsys)
    assert code == 1
    assert checks["upstream"]["status"] == "fail"
    assert "cannot be reached" in checks["upstream"]["detail"]


def test_each_credentials_own_cloud_url_is_asked(
    env: dict[str, str], tmp_path: Path, upstream: str, capsys: pytest.CaptureFixture[str]
) -> None:
    healthy_sqlite(env, tmp_path)
    settings = make_settings(tmp_path, env["TABPFN_GATEWAY_DATABASE_URL"], secret_key=SECRET)
    admin = Admin.from_settings(settings)
    dead = f"http://127.0.0.1:{free_port()}"
    try:
        admin.add_principal("team-urls")
        # Two credentials on the live URL (asked once), one on a port nobody listens on.
        for label, url in (("eu", upstream), ("eu-2", upstream), ("gone", dead)):
            admin.add_credential("team-urls", TOKEN, label, endpoint_url=url, verify=False)
        code, checks = doctor_json(capsys)
        assert code == 1
        check = checks["credentials"]
        assert check["status"] == "fail"
        assert check["detail"] == f"1 of 2 URL(s) failed: {dead} cannot be reached (ConnectError)"
        assert "--upstream-url" in check["fix"]
        assert TOKEN not in json.dumps(checks["_report"])
        for credential in admin.list_credentials(owner="team-urls").items:
            if credential.endpoint_url == dead:
                admin.remove_credential(credential.id)
        code, checks = doctor_json(capsys)
        assert code == 0
        assert checks["credentials"]["status"] == "ok"
        assert checks["credentials"]["detail"] == "1 credential URL(s) answered"
    finally:
        admin.close()


def test_redis_is_checked_when_configured(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    healthy_sqlite(env, tmp_path)
    set_env(monkeypatch, redis_url=redis_url_or_skip())
    code, checks = doctor_json(capsys)
    assert checks["redis"]["status"] == "ok"
    assert code == 0
    set_env(monkeypatch, redis_url=f"redis://:pw-not-shown@127.0.0.1:{free_port()}/0")
    code, checks = doctor_json(capsys)
    assert code == 1
    assert checks["redis"]["status"] == "fail"
    assert "pw-not-shown" not in json.dumps(checks)


def test_a_token_is_verified_when_asked(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    healthy_sqlite(env, tmp_path)
    monkeypatch.setenv("TABPFN_TOKEN", TOKEN)
    code, checks = doctor_json(capsys, "--check-token")
    assert checks["token"]["status"] == "ok"
    assert code == 0
    monkeypatch.setenv("TABPFN_TOKEN", "tok-doctor-wrong-0002")
    code, checks = doctor_json(capsys, "--check-token")
    assert checks["token"]["status"] == "fail"
    assert "rejects the token" in checks["token"]["detail"]
    assert code == 1
    assert "tok-doctor-wrong" not in json.dumps(checks)


def test_a_token_can_come_from_stdin(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    healthy_sqlite(env, tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(TOKEN + "\n"))
    code, checks = doctor_json(capsys, "--check-token")
    assert checks["token"]["status"] == "ok"
    assert code == 0


@pytest.mark.postgres
def test_postgresql_healthy_then_without_a_secret(
    env: dict[str, str],
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    set_env(monkeypatch, database_url=pg_url)
    migrate.upgrade(get_settings())
    store_a_credential(pg_url, tmp_path)
    code, checks = doctor_json(capsys)
    assert code == 0, checks  # a warning does not fail the run
    assert checks["pepper"]["status"] == "warn"
    assert "same long random value on every replica" in checks["pepper"]["fix"]
    set_env(monkeypatch, key_pepper="a-shared-pepper-0123456789abcdef")
    code, checks = doctor_json(capsys)
    assert code == 0, checks
    assert checks["pepper"]["status"] == "ok"
    assert checks["database"]["detail"].startswith("postgresql")
    assert checks["clock"]["status"] == "ok"
    assert "against the database" in checks["clock"]["detail"]
    # A shared database with no secret configured is refused (a generated one would be private).
    monkeypatch.delenv("TABPFN_GATEWAY_SECRET_KEY")
    code, checks = doctor_json(capsys)
    assert code == 1
    assert checks["secret"]["status"] == "fail"
    assert "same value on every replica" in checks["secret"]["fix"]


@pytest.mark.postgres
def test_postgresql_clock_skew_warns_then_fails(
    env: dict[str, str], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, database_url=pg_url)
    settings = get_settings()
    migrate.upgrade(settings)

    def skewed(seconds: float) -> Any:
        return lambda: time.time() + seconds

    checks = {c.name: c for c in Doctor(settings, clock=skewed(10)).run()}
    assert checks["clock"].status == "warn"
    skew = float(checks["clock"].detail.split()[0])
    assert -11 < skew < -9  # the database is about 10 s behind this (skewed) clock
    checks = {c.name: c for c in Doctor(settings, clock=skewed(-120)).run()}
    assert checks["clock"].status == "fail"
    assert "NTP" in (checks["clock"].fix or "")


def test_the_secret_is_checked_against_the_recorded_fingerprint(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib

    healthy_sqlite(env, tmp_path)
    try:
        recorder = importlib.import_module("tabpfn_gateway.secret_fingerprint")
    except ImportError:
        # A version that records no fingerprint: the check says so instead of guessing.
        code, checks = doctor_json(capsys)
        assert checks["fingerprint"]["status"] == "skip"
        assert code == 0
        return
    store = open_store(get_settings())
    try:
        store.claim_state(recorder.SECRET_STATE, recorder.secret_fingerprint(SecretStr(SECRET)))
    finally:
        store.close()
    code, checks = doctor_json(capsys)
    assert checks["fingerprint"]["status"] == "ok"
    assert "set up with" in checks["fingerprint"]["detail"]
    set_env(monkeypatch, secret_key=OTHER_SECRET)
    code, checks = doctor_json(capsys)
    assert code == 1
    assert checks["fingerprint"]["status"] == "fail"
    assert OTHER_SECRET not in json.dumps(checks)
