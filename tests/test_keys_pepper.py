"""Where the HMAC pepper comes from, and why rotating SECRET_KEY keeps every key valid."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import InvalidKey
from tabpfn_gateway.keys import KeyManager
from tabpfn_gateway.keys.hashing import PEPPER_FILE, peppers_from_settings
from tabpfn_gateway.store.memory import MemoryStore
from tabpfn_gateway.store.records import Principal, new_id

FIRST = "first-secret-0123456789abcdef-012345"
SECOND = "second-secret-0123456789abcdef-01234"


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    built = MemoryStore()
    yield built
    built.close()


def make_key(store: MemoryStore, settings: Settings) -> str:
    owner = store.add_principal(Principal(id=new_id(), name=f"p{new_id()[:8]}"))
    manager = KeyManager.from_settings(settings, store=store)
    return manager.create(owner.id, None, "ops", admin=True).plaintext


def test_derived_from_the_secret_and_persisted_0600(tmp_path: Path) -> None:
    settings = Settings(secret_key=SecretStr(FIRST), data_dir=tmp_path)
    pepper, previous = peppers_from_settings(settings)
    path = tmp_path / PEPPER_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip().encode() == pepper
    assert FIRST.encode() not in pepper
    assert previous == []
    # Another replica with the same secret and no file derives the same pepper.
    other = Settings(secret_key=SecretStr(FIRST), data_dir=tmp_path / "other")
    assert peppers_from_settings(other)[0] == pepper


def test_rotating_the_secret_key_keeps_keys_valid(tmp_path: Path, store: MemoryStore) -> None:
    before = Settings(secret_key=SecretStr(FIRST), data_dir=tmp_path)
    key = make_key(store, before)
    after = Settings(
        secret_key=SecretStr(SECOND), previous_secret_keys=[SecretStr(FIRST)], data_dir=tmp_path
    )
    KeyManager.from_settings(after, store=store).verify(key)
    # Even once the old secret is gone for good: the pepper was persisted.
    done = Settings(secret_key=SecretStr(SECOND), data_dir=tmp_path)
    KeyManager.from_settings(done, store=store).verify(key)


def test_a_fresh_replica_after_rotation_bridges_through_the_previous_secret(
    tmp_path: Path, store: MemoryStore
) -> None:
    key = make_key(store, Settings(secret_key=SecretStr(FIRST), data_dir=tmp_path / "a"))
    rotated = Settings(
        secret_key=SecretStr(SECOND),
        previous_secret_keys=[SecretStr(FIRST)],
        data_dir=tmp_path / "b",  # no pepper file here
        key_cache_ttl_seconds=0,
    )
    KeyManager.from_settings(rotated, store=store).verify(key)  # and re-hashed
    alone = Settings(secret_key=SecretStr(SECOND), data_dir=tmp_path / "b")
    KeyManager.from_settings(alone, store=store).verify(key)


def test_an_explicit_pepper_wins_and_old_keys_migrate(tmp_path: Path, store: MemoryStore) -> None:
    key = make_key(store, Settings(secret_key=SecretStr(FIRST), data_dir=tmp_path))
    explicit = Settings(
        secret_key=SecretStr(FIRST),
        key_pepper=SecretStr("an-explicit-pepper-0123456789"),
        data_dir=tmp_path,
        key_cache_ttl_seconds=0,
    )
    pepper, previous = peppers_from_settings(explicit)
    assert pepper == b"an-explicit-pepper-0123456789"
    assert len(previous) == 1
    KeyManager.from_settings(explicit, store=store).verify(key)
    only_explicit = KeyManager(store, pepper=pepper)
    only_explicit.verify(key)  # re-hashed under the explicit pepper on the previous verify


def test_without_any_secret_a_random_pepper_is_persisted_with_a_warning(
    tmp_path: Path, store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="tabpfn_gateway"):
        key = make_key(store, settings)
    path = tmp_path / PEPPER_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in caplog.text
    assert "TABPFN_GATEWAY_KEY_PEPPER" in caplog.text
    assert path.read_text().strip() not in caplog.text
    KeyManager.from_settings(settings, store=store).verify(key)
    # Elsewhere (no file, no secret) the key cannot verify: the warning was right.
    with pytest.raises(InvalidKey):
        KeyManager.from_settings(Settings(data_dir=tmp_path / "elsewhere"), store=store).verify(key)


def test_from_settings_opens_and_closes_its_own_store(tmp_path: Path) -> None:
    settings = Settings(database_url="memory://", secret_key=SecretStr(FIRST), data_dir=tmp_path)
    manager = KeyManager.from_settings(settings)
    assert isinstance(manager.store, MemoryStore)
    assert manager.hash_scheme == "hmac-sha256"
    manager.close()
    from tabpfn_gateway.errors import StoreError

    with pytest.raises(StoreError):
        manager.store.ping()
