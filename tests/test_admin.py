"""Admin on the memory store, SQLite and PostgreSQL: principals, credentials, secret rotation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gateway_support import decrypted_token
from tabpfn_gateway import migrate
from tabpfn_gateway.admin import Admin, RotationReport
from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import (
    Conflict,
    CredentialNotFound,
    InvalidRequest,
    PrincipalNotFound,
    SecretKeyMissing,
    TokenDecryptionFailed,
    UpstreamAuthenticationFailed,
    UpstreamUnavailable,
)
from tabpfn_gateway.keys import KeyManager
from tabpfn_gateway.store import Store, open_store
from tabpfn_gateway.store.sql import SqlStore
from tabpfn_gateway.vault import TokenVault

OLD = "old-secret-0123456789abcdef-0123456789"
NEW = "new-secret-0123456789abcdef-0123456789"
PEPPER = b"test-pepper-0123456789abcdef0123"
TOKEN = "tabpfn-token-aaaa-0001"


def migrated(url: str) -> SqlStore:
    settings = Settings(database_url=url)
    migrate.upgrade(settings)
    return SqlStore.from_url(url, settings=settings)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        built: Store = open_store(url="memory://")
    elif request.param == "sqlite":
        built = migrated(f"sqlite:///{tmp_path}/admin.db")
    else:
        built = migrated(request.getfixturevalue("pg_url"))
    try:
        yield built
    finally:
        built.close()


def admin_for(store: Store, *secrets: str) -> Admin:
    vault = TokenVault(list(secrets)) if secrets else None
    return Admin(store, vault, KeyManager(store, pepper=PEPPER))


@pytest.fixture
def admin(store: Store) -> Admin:
    return admin_for(store, NEW)


def actions(store: Store) -> list[tuple[str, str, str]]:
    return sorted((e.action, e.actor, e.target_type) for e in store.list_audit().items)


# -- principals --------------------------------------------------------------------------------


def test_principals(admin: Admin, store: Store) -> None:
    alice = admin.add_principal("alice", actor="cli:root")
    team = admin.add_principal("ml-team", "team", actor="cli:root")
    assert admin.get_principal("alice") == alice
    assert admin.get_principal(team.id) == team
    assert [p.name for p in admin.list_principals(kind="team").items] == ["ml-team"]
    assert {p.name for p in admin.list_principals().items} == {"alice", "ml-team"}
    with pytest.raises(Conflict):
        admin.add_principal("alice")
    with pytest.raises(PrincipalNotFound):
        admin.get_principal("nobody")
    for bad_name in ["", " alice", "a b", "x" * 101, "-dash"]:
        with pytest.raises(InvalidRequest):
            admin.add_principal(bad_name)
    with pytest.raises(InvalidRequest):
        admin.add_principal("carol", "robot")  # type: ignore[arg-type]
    assert actions(store) == [("principal.add", "cli:root", "principal")] * 2


# -- credentials -------------------------------------------------------------------------------


def test_add_credential_encrypts_bound_to_its_row(admin: Admin, store: Store) -> None:
    alice = admin.add_principal("alice")
    credential = admin.add_credential("alice", f"  {TOKEN}\n", "main", actor="admin:bob")
    assert credential.owner_id == alice.id
    assert credential.verified_at is None
    assert TOKEN.encode() not in credential.encrypted_token
    assert TOKEN not in repr(credential)
    assert decrypted_token(admin, credential.id).get_secret_value() == TOKEN
    assert admin.get_credential(credential.id) == credential
    # A ciphertext copied into another row does not decrypt there.
    other = admin.add_credential(alice.id, "tabpfn-token-bbbb-0002", "second")
    store.update_credential_ciphertexts({other.id: credential.encrypted_token})
    with pytest.raises(TokenDecryptionFailed):
        decrypted_token(admin, other.id)
    event = store.list_audit(action="credential.add", target_id=credential.id).items[0]
    assert event.actor == "admin:bob"
    assert event.details["verification"] == "skipped"
    assert TOKEN not in repr(event)


class Status:
    """Stands for protocol.TokenStatus: Admin reads only the name."""

    def __init__(self, name: str) -> None:
        self.name = name


@pytest.mark.parametrize(
    ("answer", "expected"),
    [(Status("VALID"), "valid"), (Status("VALID_LIMIT_REACHED"), "valid_limit_reached")],
)
def test_verified_credentials(admin: Admin, store: Store, answer: Any, expected: str) -> None:
    admin.add_principal("alice")
    seen: list[SecretStr] = []

    def verify(token: SecretStr) -> Any:
        seen.append(token)
        return answer

    credential = admin.add_credential("alice", TOKEN, "main", verify=verify)
    assert [t.get_secret_value() for t in seen] == [TOKEN]
    assert credential.verified_at is not None
    event = store.list_audit(action="credential.add").items[0]
    assert event.details["verification"] == expected


def test_rejected_or_unverifiable_tokens_are_not_stored(admin: Admin, store: Store) -> None:
    admin.add_principal("alice")
    with pytest.raises(UpstreamAuthenticationFailed) as info:
        admin.add_credential("alice", TOKEN, "main", verify=lambda token: Status("INVALID"))
    assert TOKEN not in str(info.value)

    def unreachable(token: SecretStr) -> Any:
        raise UpstreamUnavailable("TabPFN cannot be reached.")

    with pytest.raises(UpstreamUnavailable):
        admin.add_credential("alice", TOKEN, "main", verify=unreachable)
    assert list(admin.list_credentials().items) == []
    assert [e.action for e in store.list_audit().items] == ["principal.add"]


def test_credential_bad_input(admin: Admin) -> None:
    admin.add_principal("alice")
    with pytest.raises(InvalidRequest):
        admin.add_credential("alice", "   ", "main")
    with pytest.raises(InvalidRequest):
        admin.add_credential("alice", TOKEN, "")
    with pytest.raises(PrincipalNotFound):
        admin.add_credential("bob", TOKEN, "main")
    with pytest.raises(CredentialNotFound):
        decrypted_token(admin, "missing")
    with pytest.raises(CredentialNotFound):
        admin.remove_credential("missing")
    assert list(admin.list_credentials().items) == []


def test_list_and_remove_credentials(admin: Admin, store: Store) -> None:
    admin.add_principal("alice")
    admin.add_principal("bob")
    mine = admin.add_credential("alice", TOKEN, "main")
    admin.add_credential("bob", "tabpfn-token-bbbb-0002", "theirs")
    assert [c.id for c in admin.list_credentials(owner="alice").items] == [mine.id]
    assert len(admin.list_credentials().items) == 2
    key = admin.keys.create(mine.owner_id, mine.id, "k")
    admin.remove_credential(mine.id, actor="admin:bob")
    with pytest.raises(CredentialNotFound):
        admin.get_credential(mine.id)
    # The key stays (the gateway refuses it: its credential is gone).
    assert admin.keys.get(key.record.key_id).credential_id == mine.id
    assert ("credential.remove", "admin:bob", "credential") in actions(store)


def test_without_a_secret_credentials_need_one(store: Store) -> None:
    admin = admin_for(store)
    admin.add_principal("alice")
    with pytest.raises(SecretKeyMissing):
        admin.add_credential("alice", TOKEN, "main")
    with pytest.raises(SecretKeyMissing):
        admin.rotate_secrets()


# -- secret rotation ---------------------------------------------------------------------------


def test_rotate_secrets_reencrypts_every_row_under_the_new_secret(store: Store) -> None:
    before = admin_for(store, OLD)
    before.add_principal("alice")
    originals = {
        before.add_credential("alice", f"tabpfn-token-{i:04d}", f"c{i}").id: f"tabpfn-token-{i:04d}"
        for i in range(5)
    }
    during = admin_for(store, NEW, OLD)
    newest = during.add_credential("alice", "tabpfn-token-new", "fresh")
    originals[newest.id] = "tabpfn-token-new"
    report = during.rotate_secrets(actor="cli:root")
    assert report == RotationReport(rows=6, reencrypted=5, already_current=1)
    after = admin_for(store, NEW)  # the old secret is gone for good
    for credential_id, token in originals.items():
        assert decrypted_token(after, credential_id).get_secret_value() == token
    assert after.rotate_secrets() == RotationReport(rows=6, reencrypted=0, already_current=6)
    event = store.list_audit(action="secrets.rotate", actor="cli:root").items[0]
    assert event.details == {"rows": 6, "reencrypted": 5, "already_current": 1}


def test_rotate_secrets_is_all_or_nothing(store: Store) -> None:
    old_admin = admin_for(store, OLD)
    old_admin.add_principal("alice")
    readable = old_admin.add_credential("alice", TOKEN, "readable")
    stranger = admin_for(store, "a-secret-nobody-configured-0123")
    lost = stranger.add_credential("alice", "tabpfn-token-lost", "lost")
    before = {c.id: c.encrypted_token for c in store.iter_credentials()}
    with pytest.raises(TokenDecryptionFailed) as info:
        admin_for(store, NEW, OLD).rotate_secrets()
    assert lost.id in str(info.value)
    assert "TABPFN_GATEWAY_SECRET_KEY" in str(info.value)
    assert {c.id: c.encrypted_token for c in store.iter_credentials()} == before
    assert store.list_audit(action="secrets.rotate").items == []
    assert decrypted_token(old_admin, readable.id).get_secret_value() == TOKEN


def test_from_settings_on_a_fresh_sqlite_install(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/g.db", data_dir=tmp_path / "data")
    migrate.upgrade(settings)
    with Admin.from_settings(settings) as without_secret:
        assert without_secret.vault is None
        without_secret.add_principal("alice")
    with Admin.from_settings(settings, generate_secret=True) as admin:
        assert admin.vault is not None
        credential = admin.add_credential("alice", TOKEN, "main")
        created = admin.keys.create(credential.owner_id, credential.id, "k")
    with Admin.from_settings(settings) as again:
        assert decrypted_token(again, credential.id).get_secret_value() == TOKEN
        assert again.keys.verify(created.plaintext).key_id == created.record.key_id
    secret = (tmp_path / "data" / "secret_key").read_text().strip()
    assert secret not in repr(again)
    assert repr(again.vault) == "TokenVault(secrets=1)"


# -- keys, usage and announcements: what the CLI and the admin routes share -----------------


class Recorder:
    """A bus that keeps what was published (Admin needs only ``publish``)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def publish(self, message: str) -> None:
        self.messages.append(message)


def test_keys_by_owner_name_and_display_prefix(store: Store) -> None:
    from datetime import timedelta

    from tabpfn_gateway.errors import KeyNotFound
    from tabpfn_gateway.store import utcnow

    bus = Recorder()
    admin = Admin(store, TokenVault([NEW]), KeyManager(store, pepper=PEPPER), bus=bus)
    alice = admin.add_principal("alice", actor="test")
    credential = admin.add_credential("alice", TOKEN, "laptop", actor="test")
    created = admin.create_key("alice", credential.id, "notebook", actor="test")
    record = created.record
    assert record.owner_id == alice.id
    assert record.scopes == ("inference", "usage")
    assert admin.get_key(record.display_prefix) == record
    # A whole key pasted by mistake finds its record and is never echoed.
    assert admin.get_key(created.plaintext).key_id == record.key_id
    assert [k.key_id for k in admin.list_keys(owner="alice").items] == [record.key_id]
    assert admin.owner_names([record.owner_id, "gone"]) == {alice.id: "alice"}
    with pytest.raises(InvalidRequest, match="timezone"):
        admin.create_key(
            "alice",
            credential.id,
            "naive",
            expires_at=(utcnow() + timedelta(days=1)).replace(tzinfo=None),
        )
    with pytest.raises(KeyNotFound):
        admin.get_key("tpg_nosuchkeyid")

    assert admin.disable_key(record.display_prefix, actor="test").state() == "disabled"
    assert admin.enable_key(record.key_id, actor="test").state() == "active"
    rotated = admin.rotate_key(record.key_id, grace=timedelta(0), actor="test")
    assert rotated.plaintext != created.plaintext
    assert admin.revoke_key(record.key_id, actor="test").state() == "revoked"
    admin.remove_credential(credential.id, actor="test")
    key = f"key:{record.key_id}"
    assert bus.messages == [key, key, key, key, f"credential:{credential.id}"]


def test_usage_reads_take_owner_names_and_need_aware_times(store: Store) -> None:
    from datetime import datetime

    from tabpfn_gateway.store import UsageEvent, new_id, utcnow

    admin = admin_for(store, NEW)
    alice = admin.add_principal("alice", actor="test")
    store.record_usage(
        [
            UsageEvent(
                id=new_id(),
                key_id="k1",
                owner_id=alice.id,
                operation="fit",
                status=200,
                latency_ms=3.0,
                rows=10,
            )
        ]
    )
    assert [e.key_id for e in admin.list_usage(owner="alice").items] == ["k1"]
    summary = admin.summarize_usage(owner="alice", until=utcnow())
    assert [(s.operation, s.calls, s.rows) for s in summary] == [("fit", 1, 10)]
    with pytest.raises(PrincipalNotFound):
        admin.list_usage(owner="nobody")
    with pytest.raises(InvalidRequest, match="since needs a timezone"):
        admin.summarize_usage(since=datetime(2030, 1, 1))
