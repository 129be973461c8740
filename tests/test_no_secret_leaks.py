"""No gateway key, TabPFN token or secret in any log line, error message or repr.

Runs the key and credential flows (create, verify, rotate, revoke, credentials, secret
rotation, the CLI) with DEBUG logging captured twice (caplog, which sees records before any
redaction, and the stdout handler of ``logs.setup_logging``), provokes the errors, and scans
everything captured for every secret used.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gateway_support import decrypted_token
from tabpfn_gateway import logs, migrate
from tabpfn_gateway.admin import Admin
from tabpfn_gateway.cli import main
from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import GatewayError, InvalidKey
from tabpfn_gateway.keys import KeyManager, parse_key
from tabpfn_gateway.keys.format import format_key, new_secret
from tabpfn_gateway.keys.hashing import peppers_from_settings
from tabpfn_gateway.store import open_store
from tabpfn_gateway.vault import TokenVault

SECRET_KEY = "leak-test-secret-key-0123456789abcdef"
TOKENS = ["tabpfn-token-leaktest-AAAA", "tabpfn-token-leaktest-BBBB"]


class Evidence:
    """Everything a secret could leak into, gathered while the flows run."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.secrets: set[str] = set()

    def keep(self, *objects: Any) -> None:
        for obj in objects:
            self.texts.append(repr(obj))
            self.texts.append(str(obj))

    def expect_error(self, error: type[GatewayError], call: Any, *args: Any, **kwargs: Any) -> None:
        with pytest.raises(error) as info:
            call(*args, **kwargs)
        exc: BaseException | None = info.value
        while exc is not None:
            self.keep(exc, exc.args)
            if isinstance(exc, GatewayError):
                self.keep(exc.to_dict(), exc.details)
            exc = exc.__cause__ or exc.__context__

    def secret(self, *values: str) -> None:
        for value in values:
            self.secrets.add(value)
            if value.startswith("tpg"):
                with contextlib.suppress(InvalidKey):  # a deliberately broken key
                    self.secrets.add(parse_key(value).secret)


@pytest.fixture
def stdout_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    logs.setup_logging("DEBUG", stream=stream, force=True)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            if getattr(handler, "_tabpfn_gateway", False):
                root.removeHandler(handler)
        root.setLevel(level)


def test_no_secret_leaks(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    stdout_log: io.StringIO,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"sqlite:///{tmp_path}/g.db"
    monkeypatch.setenv("TABPFN_GATEWAY_DATABASE_URL", url)
    monkeypatch.setenv("TABPFN_GATEWAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TABPFN_GATEWAY_SECRET_KEY", SECRET_KEY)
    settings = Settings()
    migrate.upgrade(settings)
    seen = Evidence()
    seen.secret(SECRET_KEY, *TOKENS)
    pepper, _ = peppers_from_settings(settings)
    seen.secret(pepper.decode())

    with Admin.from_settings(settings) as admin:
        keys = admin.keys
        alice = admin.add_principal("alice")
        credential = admin.add_credential("alice", SecretStr(TOKENS[0]), "main")
        other = admin.add_credential(alice.id, TOKENS[1], "second")
        token = decrypted_token(admin, credential.id)
        seen.keep(alice, credential, other, token, admin, admin.vault, keys)

        created = keys.create(alice.id, credential.id, "laptop")
        ops = keys.create(alice.id, None, "ops", admin=True, scopes=["usage"])
        seen.secret(created.plaintext, ops.plaintext)
        seen.keep(created, ops, created.record, parse_key(created.plaintext))
        seen.keep(keys.verify(created.plaintext, scope="inference"), keys.verify(ops.plaintext))

        wrong = format_key(created.record.key_id, new_secret())
        typo = created.plaintext[:-1] + ("A" if created.plaintext[-1] != "A" else "B")
        seen.secret(wrong, typo)
        for bad in (wrong, typo, created.plaintext + "x", "Bearer " + created.plaintext):
            seen.expect_error(GatewayError, keys.verify, bad)
        usage_only = keys.create(alice.id, credential.id, "u", scopes=["usage"])
        seen.secret(usage_only.plaintext)
        seen.expect_error(GatewayError, keys.verify, usage_only.plaintext, scope="inference")

        rotated = keys.rotate(created.record.key_id, request_id="rotation-1")
        replayed = keys.rotate(created.record.key_id, request_id="rotation-1")
        seen.secret(rotated.plaintext)
        seen.keep(rotated, replayed, keys.get(created.record.key_id), keys.list())
        keys.verify(created.plaintext)
        keys.verify(rotated.plaintext)
        keys.disable(ops.record.key_id)
        seen.expect_error(GatewayError, keys.verify, ops.plaintext)
        keys.revoke(created.record.key_id)
        seen.expect_error(GatewayError, keys.verify, rotated.plaintext)
        seen.expect_error(GatewayError, keys.rotate, created.record.key_id)
        keys.flush_last_used()

        # A ciphertext moved to another row, a vault without the right secret.
        admin.store.update_credential_ciphertexts({other.id: credential.encrypted_token})
        seen.expect_error(GatewayError, decrypted_token, admin, other.id)
        stranger = TokenVault(["some-other-secret-0123456789abcdef"])
        seen.expect_error(
            GatewayError, stranger.decrypt, credential.encrypted_token, credential_id=credential.id
        )
        seen.expect_error(
            GatewayError,
            admin.add_credential,
            "alice",
            "tabpfn-token-rejected-CCCC",
            "x",
            verify=lambda t: False,
        )
        seen.secret("tabpfn-token-rejected-CCCC")
        seen.expect_error(GatewayError, admin.rotate_secrets)  # the moved row stops it
        admin.store.update_credential_ciphertexts(
            {other.id: admin.vault.encrypt(TOKENS[1], credential_id=other.id)}  # type: ignore[union-attr]
        )
        seen.keep(admin.rotate_secrets(), admin.list_audit(limit=1000))
        admin.remove_credential(other.id)
        seen.keep(list(admin.list_audit(limit=1000).items))

    # A KeyManager with a broken store: the outage error must not carry the key either.
    down = open_store(url="postgresql+psycopg://postgres@127.0.0.1:1/none")
    try:
        broken = KeyManager(down, pepper=pepper)
        seen.expect_error(GatewayError, broken.verify, rotated.plaintext)
    finally:
        down.close()

    # The CLI: a new key goes to stdout once (expected); nothing else may show a secret.
    capsys.readouterr()
    assert main(["keys", "create", "--owner", "alice", "--name", "cli", "--admin"]) == 0
    printed = capsys.readouterr()
    cli_key = printed.out.strip()
    seen.secret(cli_key)
    seen.texts.append(printed.err)
    monkeypatch.setattr("sys.stdin", io.StringIO("tabpfn-token-from-stdin-DDDD\n"))
    seen.secret("tabpfn-token-from-stdin-DDDD")
    for argv in (
        ["credentials", "add", "--owner", "alice", "--label", "s", "--token-stdin", "--no-verify"],
        ["credentials", "list", "--json"],
        ["keys", "list", "--json"],
        ["keys", "show", parse_key(cli_key).key_id],
        ["keys", "revoke", parse_key(cli_key).key_id],
        ["secrets", "rotate"],
    ):
        assert main(argv) == 0
        out = capsys.readouterr()
        seen.texts += [out.out, out.err]
    assert main(["keys", "rotate", parse_key(cli_key).key_id]) == 1  # revoked
    out = capsys.readouterr()
    seen.texts += [out.out, out.err]

    seen.texts.append(caplog.text)
    seen.texts += [record.getMessage() for record in caplog.records]
    seen.texts.append(stdout_log.getvalue())
    haystack = "\n".join(seen.texts)
    assert len(caplog.records) > 10  # the flows did log
    assert "alice" in haystack  # and the scan looks at real output
    leaked = sorted(s for s in seen.secrets if s in haystack)
    assert leaked == []
