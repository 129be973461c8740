"""Item 9: the secret that encrypts shared tokens is never silently private to one machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway_support import make_settings
from security_support import CLI, cli_env
from tabpfn_gateway import migrate
from tabpfn_gateway.admin import Admin
from tabpfn_gateway.errors import ConfigurationError, SecretKeyMissing
from tabpfn_gateway.gateway import Gateway
from tabpfn_gateway_server import create_app

SECRET_A = "secret-a-0123456789abcdef-shared"
SECRET_B = "secret-b-0123456789abcdef-other!"
TOKEN = "tok-team-shared-0001"


def test_a_process_with_another_secret_refuses_and_nothing_becomes_undecryptable(
    tmp_path: Path, pg_url: str
) -> None:
    first = make_settings(tmp_path / "a", pg_url, secret_key=SECRET_A)
    migrate.upgrade(first)
    with Admin.from_settings(first) as admin:
        team = admin.add_principal("team", "team", actor="test")
        credential = admin.add_credential(team.id, TOKEN, "shared", actor="test")

    second = make_settings(tmp_path / "b", pg_url, secret_key=SECRET_B)
    for start in (
        lambda: Admin.from_settings(second),
        lambda: Gateway.from_settings(second),
        lambda: create_app(second, migrate=False),
    ):
        with pytest.raises(ConfigurationError) as info:
            start()
        assert "TABPFN_GATEWAY_SECRET_KEY" in str(info.value)
        assert SECRET_A not in str(info.value)
        assert SECRET_B not in str(info.value)

    # The CLI says it in one line, with no traceback, and writes nothing.
    env = cli_env(tmp_path / "cli", database_url=pg_url, secret_key=SECRET_B)
    done = subprocess.run(
        [
            CLI,
            "credentials",
            "add",
            "--owner",
            "team",
            "--label",
            "x",
            "--token-stdin",
            "--no-verify",
        ],
        input="tok-written-with-b\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "TABPFN_GATEWAY_SECRET_KEY" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr + done.stdout

    # Every stored token still opens with the deployment's secret.
    gateway = Gateway.from_settings(first)
    try:
        credentials = gateway.store.list_credentials(limit=100).items
        assert [c.id for c in credentials] == [credential.id]
        for stored in credentials:
            opened = gateway.vault.decrypt(stored.encrypted_token, credential_id=stored.id)
            assert opened.get_secret_value() == TOKEN
    finally:
        gateway.close()


def test_no_secret_is_generated_or_read_from_disk_for_a_shared_database(
    tmp_path: Path, pg_url: str
) -> None:
    settings = make_settings(tmp_path, pg_url, secret_key=None)
    migrate.upgrade(settings)
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    # A secret file left in an admin's data dir must not be picked up for a shared database.
    (data_dir / "secret_key").write_text("a-private-secret-on-one-laptop-0123")
    with pytest.raises(SecretKeyMissing):
        Gateway.from_settings(settings, generate_secret=True)
    with pytest.raises(SecretKeyMissing):
        Admin.from_settings(settings, generate_secret=True)
    assert not (data_dir / "key_pepper").exists()
