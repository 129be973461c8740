"""The admin CLI in process (`tabpfn_gateway.cli.main`) on a SQLite file after `db upgrade`."""

from __future__ import annotations

import io
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway_support import decrypted_token
from tabpfn_gateway.cli import main
from tabpfn_gateway.config import Settings
from tabpfn_gateway.keys import KeyManager
from tabpfn_gateway.store import open_store

TOKEN = "tabpfn-token-cli-0001"


class Shell:
    """Runs CLI commands in process and keeps what they printed."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.capsys = capsys
        self.monkeypatch = monkeypatch
        self.upstream_transport: Any = None

    def run(self, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            self.monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(list(argv), upstream_transport=self.upstream_transport)
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str, stdin: str | None = None) -> str:
        code, out, err = self.run(*argv, stdin=stdin)
        assert code == 0, err
        return out

    def json(self, *argv: str, stdin: str | None = None) -> Any:
        return json.loads(self.ok(*argv, "--json", stdin=stdin))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    url = f"sqlite:///{tmp_path}/gateway.db"
    monkeypatch.setenv("TABPFN_GATEWAY_DATABASE_URL", url)
    monkeypatch.setenv("TABPFN_GATEWAY_DATA_DIR", str(tmp_path / "data"))
    for name in ("SECRET_KEY", "PREVIOUS_SECRET_KEYS", "KEY_PEPPER"):
        monkeypatch.delenv(f"TABPFN_GATEWAY_{name}", raising=False)
    return Settings()


@pytest.fixture
def shell(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Shell:
    sh = Shell(capsys, monkeypatch)
    sh.ok("db", "upgrade")
    return sh


@pytest.fixture
def credential_id(shell: Shell) -> str:
    shell.ok("principals", "add", "alice")
    added = shell.json(
        "credentials", "add", "--owner", "alice", "--label", "main", "--token-stdin",
        "--no-verify", stdin=TOKEN + "\n",
    )  # fmt: skip
    return str(added["id"])


def test_principals(shell: Shell) -> None:
    alice = shell.json("principals", "add", "alice")
    shell.ok("principals", "add", "ml", "--kind", "team")
    assert alice["name"] == "alice"
    assert alice["kind"] == "user"
    listed = shell.json("principals", "list")
    assert [p["name"] for p in listed["items"]] == ["ml", "alice"]
    table = shell.ok("principals", "list", "--kind", "team")
    assert table.splitlines()[0].split()[:2] == ["NAME", "KIND"]
    assert "ml" in table
    assert "alice" not in table
    code, _, err = shell.run("principals", "add", "alice")
    assert code == 1
    assert "[CONFLICT]" in err


def test_credentials_from_stdin_are_stored_encrypted(
    shell: Shell, settings: Settings, credential_id: str
) -> None:
    listed = shell.json("credentials", "list", "--owner", "alice")
    assert [c["id"] for c in listed["items"]] == [credential_id]
    assert listed["items"][0]["label"] == "main"
    shell_output = shell.ok("credentials", "list")
    assert TOKEN not in shell_output
    # The secret was generated on first use, 0600, in the data dir the server shares.
    secret_file = Path(settings.data_dir) / "secret_key"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    from tabpfn_gateway.admin import Admin

    with Admin.from_settings(Settings()) as admin:
        assert decrypted_token(admin, credential_id).get_secret_value() == TOKEN
        credential = admin.get_credential(credential_id)
        assert TOKEN.encode() not in credential.encrypted_token
    removed = shell.json("credentials", "remove", credential_id)
    assert removed == {"removed": credential_id}
    assert shell.json("credentials", "list")["items"] == []


def test_token_on_argv_works_with_a_warning(shell: Shell) -> None:
    shell.ok("principals", "add", "alice")
    code, out, err = shell.run(
        "credentials", "add", "--owner", "alice", "--label", "x", "--token", TOKEN, "--no-verify"
    )
    assert code == 0
    assert "shell history" in err
    assert TOKEN not in out + err


def test_no_token_and_no_terminal_is_a_clear_error(shell: Shell) -> None:
    shell.ok("principals", "add", "alice")
    code, _, err = shell.run(
        "credentials", "add", "--owner", "alice", "--label", "x", "--no-verify", stdin=""
    )
    assert code == 1
    assert "--token-stdin" in err


def test_keys_create_prints_the_key_alone_on_stdout(
    shell: Shell, settings: Settings, credential_id: str
) -> None:
    code, out, err = shell.run(
        "keys", "create", "--owner", "alice", "--credential", credential_id, "--name", "laptop"
    )
    assert code == 0
    key = out.strip()
    assert out == key + "\n"
    assert "will not be shown again" in err
    assert key not in err
    store = open_store(settings)
    try:
        manager = KeyManager.from_settings(settings, store=store)
        record = manager.verify(key, scope="inference")
        assert record.name == "laptop"
        events = store.list_audit(target_id=record.key_id).items
        assert [e.action for e in events] == ["key.create"]
        assert events[0].actor.startswith("cli")
    finally:
        store.close()
    quiet = shell.run(
        "keys", "create", "--owner", "alice", "--credential", credential_id, "--name", "q",
        "--quiet",
    )  # fmt: skip
    assert quiet[2] == ""
    assert quiet[1].startswith("tpg_")


def test_keys_lifecycle_in_json(shell: Shell, settings: Settings, credential_id: str) -> None:
    created = shell.json(
        "keys", "create", "--owner", "alice", "--credential", credential_id, "--name", "ci",
        "--scope", "usage", "--expires", "30d",
    )  # fmt: skip
    key, key_id = created["key"], created["key_id"]
    assert created["scopes"] == ["usage"]
    assert created["expires_at"] is not None
    assert "secret_hash" not in created
    listed = shell.json("keys", "list", "--owner", "alice")
    assert [k["key_id"] for k in listed["items"]] == [key_id]
    assert "key" not in listed["items"][0]
    assert key not in json.dumps(listed)
    shown = shell.json("keys", "show", created["display_prefix"])
    assert shown["status"] == "active"
    assert shell.json("keys", "disable", key_id)["status"] == "disabled"
    assert shell.json("keys", "enable", key_id)["status"] == "active"
    rotated = shell.json("keys", "rotate", key_id, "--grace", "1h", "--request-id", "r-1")
    assert rotated["key"] != key
    assert rotated["previous_valid_until"] is not None
    again = shell.json("keys", "rotate", key_id, "--grace", "1h", "--request-id", "r-1")
    assert again["key"] == rotated["key"]
    store = open_store(settings)
    try:
        manager = KeyManager.from_settings(settings, store=store)
        manager.verify(key)  # within the grace window
        manager.verify(rotated["key"])
    finally:
        store.close()
    moved = shell.json("keys", "expire", key_id, "--at", "2h")
    assert moved["expires_at"] != created["expires_at"]
    assert shell.json("keys", "expire", key_id, "--never")["expires_at"] is None
    for argv in (("--at", "2001-01-01T00:00:00Z"), ("--at", "whenever")):
        code, out, err = shell.run("keys", "expire", key_id, *argv)
        assert code == 1, argv
        assert "[INVALID_REQUEST]" in err
        assert out == ""
    with pytest.raises(SystemExit) as usage:  # argparse: say --at or --never
        shell.run("keys", "expire", key_id)
    assert usage.value.code == 2
    assert shell.json("keys", "show", key_id)["expires_at"] is None  # nothing changed
    assert shell.json("keys", "revoke", key_id)["status"] == "revoked"
    code, _, err = shell.run("keys", "expire", key_id, "--never")
    assert code == 1
    assert "[KEY_REVOKED]" in err
    code, _, err = shell.run("keys", "enable", key_id)
    assert code == 1
    assert "[KEY_REVOKED]" in err


def test_admin_keys_and_bad_arguments(shell: Shell, credential_id: str) -> None:
    created = shell.json("keys", "create", "--owner", "alice", "--name", "ops", "--admin")
    assert created["key"].startswith("tpga_")
    assert "admin" in created["scopes"]
    shell.ok("principals", "add", "bob")  # no credential
    for argv, code_text in [
        (("keys", "create", "--owner", "bob", "--name", "x"), "INVALID_REQUEST"),
        (("keys", "create", "--owner", "nobody", "--name", "x"), "PRINCIPAL_NOT_FOUND"),
        (("keys", "create", "--owner", "alice", "--name", "x", "--expires", "soon"), "INVALID"),
        (("keys", "rotate", created["key_id"], "--grace", "forever"), "INVALID_REQUEST"),
        (("keys", "show", "tpg_doesnotexist"), "KEY_NOT_FOUND"),
        # Durations past the calendar's edge: refused, never an OverflowError.
        (
            ("keys", "create", "--owner", "alice", "--name", "x", "--expires", "999999999d"),
            "INVALID",
        ),
        (("keys", "expire", created["key_id"], "--at", "99999999999999999999d"), "INVALID"),
        (("keys", "rotate", created["key_id"], "--grace", "999999999d"), "INVALID_REQUEST"),
        (("usage", "--since", "999999999d"), "INVALID_REQUEST"),
        (("db", "prune", "--older-than", "999999999d"), "INVALID_REQUEST"),
        (("credentials", "remove", "nope"), "CREDENTIAL_NOT_FOUND"),
    ]:
        code, out, err = shell.run(*argv)
        assert code == 1, argv
        assert code_text in err
        assert out == ""


def test_keys_create_without_credential_uses_the_owners_only_one(
    shell: Shell, credential_id: str
) -> None:
    created = shell.json("keys", "create", "--owner", "alice", "--name", "laptop")
    assert created["credential_id"] == credential_id
    shell.json(
        "credentials", "add", "--owner", "alice", "--label", "second", "--token-stdin",
        "--no-verify", stdin=TOKEN + "\n",
    )  # fmt: skip
    code, out, err = shell.run("keys", "create", "--owner", "alice", "--name", "laptop-2")
    assert (code, out) == (1, "")
    assert err.startswith("error: [INVALID_REQUEST]")
    assert "several credentials" in err
    assert "tabpfn-gateway credentials list --owner alice" in err
    assert "Traceback" not in err


def test_secrets_rotate_moves_rows_to_the_configured_secret(
    shell: Shell, settings: Settings, credential_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = (Path(settings.data_dir) / "secret_key").read_text().strip()
    # The operator now configures a secret; the generated one still decrypts until rotation.
    monkeypatch.setenv("TABPFN_GATEWAY_SECRET_KEY", "configured-secret-0123456789abcdef")
    report = shell.json("secrets", "rotate")
    assert report == {"rows": 1, "reencrypted": 1, "already_current": 0}
    assert shell.json("secrets", "rotate") == {"rows": 1, "reencrypted": 0, "already_current": 1}
    human = shell.ok("secrets", "rotate")
    assert "already_current" in human
    from tabpfn_gateway.vault import TokenVault

    only_new = TokenVault(["configured-secret-0123456789abcdef"])
    store = open_store(Settings())
    try:
        credential = store.get_credential(credential_id)
        assert credential is not None
        opened = only_new.decrypt(credential.encrypted_token, credential_id=credential_id)
        assert opened.get_secret_value() == TOKEN
        assert generated not in human
    finally:
        store.close()


def test_group_without_a_command_prints_help(shell: Shell) -> None:
    code, out, _ = shell.run("keys")
    assert code == 2
    assert "rotate" in out


# -- token verification against FakeTabPFN (in process) ---------------------------------------


@pytest.fixture
def fake_upstream(shell: Shell) -> Iterator[Any]:
    from tabpfn_gateway.testing import FakeTabPFN
    from tabpfn_gateway.testing.transport import ASGIBridgeTransport

    fake = FakeTabPFN(
        tokens={TOKEN: None, "tabpfn-token-spent-0002": 0},
        unverified_tokens=["tabpfn-token-unverified-3"],
    )
    with ASGIBridgeTransport(fake.app) as transport:
        shell.upstream_transport = transport  # injected, not patched in
        yield fake


def add_credential(shell: Shell, token: str, *extra: str) -> tuple[int, str, str]:
    return shell.run(
        "credentials", "add", "--owner", "alice", "--label", "x", "--token-stdin", "--json",
        *extra, stdin=token,
    )  # fmt: skip


def test_credentials_are_verified_upstream_by_default(shell: Shell, fake_upstream: Any) -> None:
    shell.ok("principals", "add", "alice")
    code, out, _ = add_credential(shell, TOKEN)
    assert code == 0
    assert json.loads(out)["verified_at"] is not None
    code, out, _ = add_credential(shell, "tabpfn-token-spent-0002")
    assert code == 0  # over its limit, but a real token: stored
    assert json.loads(out)["verified_at"] is not None
    for rejected in ("tabpfn-token-wrong-0004", "tabpfn-token-unverified-3"):
        code, out, err = add_credential(shell, rejected)
        assert code == 1
        assert "[UPSTREAM_AUTHENTICATION_FAILED]" in err
        assert rejected not in err
    assert len(shell.json("credentials", "list")["items"]) == 2
    # --no-verify stores without asking.
    code, out, _ = add_credential(shell, "tabpfn-token-wrong-0004", "--no-verify")
    assert code == 0
    assert json.loads(out)["verified_at"] is None
    assert [r.token for r in fake_upstream.requests].count("tabpfn-token-wrong-0004") == 1


def test_an_unreachable_upstream_is_retryable_and_stores_nothing(
    shell: Shell, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TABPFN_GATEWAY_UPSTREAM_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("TABPFN_GATEWAY_UPSTREAM_CONNECT_TIMEOUT_SECONDS", "2")
    shell.ok("principals", "add", "alice")
    code, _, err = add_credential(shell, TOKEN)
    assert code == 1
    assert "[UPSTREAM_UNAVAILABLE]" in err
    assert shell.json("credentials", "list")["items"] == []


def test_usage_and_audit_commands(shell: Shell, credential_id: str, settings: Settings) -> None:
    from tabpfn_gateway.store import UsageEvent, new_id

    created = shell.json(
        "keys", "create", "--owner", "alice", "--name", "nb", "--credential", credential_id
    )
    store = open_store(settings)
    try:
        alice = store.get_principal_by_name("alice")
        assert alice is not None
        store.record_usage(
            [
                UsageEvent(
                    id=new_id(),
                    key_id=created["key_id"],
                    owner_id=alice.id,
                    operation="predict",
                    status=status,
                    latency_ms=2.0,
                    rows=rows,
                )
                for status, rows in ((200, 30), (502, None))
            ]
        )
    finally:
        store.close()
    rows = shell.json("usage", "--owner", "alice", "--since", "1h")
    assert [(r["operation"], r["calls"], r["errors"], r["rows"]) for r in rows] == [
        ("predict", 2, 1, 30)
    ]
    assert shell.json("usage", "--key", created["display_prefix"], "--until", "1h") == []
    table = shell.ok("usage", "--owner", "alice")
    assert "predict" in table
    assert created["key_id"] in table
    code, _, err = shell.run("usage", "--since", "yesterday")
    assert code == 1
    assert "INVALID_REQUEST" in err

    shell.ok("keys", "revoke", created["display_prefix"])
    events = shell.json("audit", "--target", created["key_id"])["items"]
    assert [e["action"] for e in events] == ["key.revoke", "key.create"]
    assert events[0]["actor"].startswith("cli")
    assert "key.revoke" in shell.ok("audit", "--action", "key.revoke")
