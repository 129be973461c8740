"""The token vault: round trips, several secrets, tampering, moved rows, generated secrets."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import (
    ConfigurationError,
    InvalidRequest,
    SecretKeyMissing,
    TokenDecryptionFailed,
)
from tabpfn_gateway.logs import REDACTED, redact
from tabpfn_gateway.vault import SECRET_KEY_FILE, TokenVault

OLD = "old-secret-0123456789abcdef-0123456789"
NEW = "new-secret-0123456789abcdef-0123456789"
VAULT = TokenVault([NEW])

tokens = st.text(min_size=1, max_size=300)
credential_ids = st.text(min_size=1, max_size=64)


@settings(deadline=None)  # no timed assertions: these machines are shared
@given(tokens, credential_ids)
def test_round_trip(token: str, credential_id: str) -> None:
    sealed = VAULT.encrypt(token, credential_id=credential_id)
    assert token.encode() not in sealed or len(token) < 4
    opened = VAULT.decrypt(sealed, credential_id=credential_id)
    assert isinstance(opened, SecretStr)
    assert opened.get_secret_value() == token
    assert VAULT.is_current(sealed)


def test_same_token_encrypts_differently_each_time() -> None:
    assert VAULT.encrypt("tok", credential_id="c1") != VAULT.encrypt("tok", credential_id="c1")


@settings(max_examples=200, deadline=None)
@given(tokens, st.data())
def test_any_flipped_byte_fails(token: str, data: st.DataObject) -> None:
    sealed = bytearray(VAULT.encrypt(token, credential_id="c1"))
    position = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    sealed[position] ^= 1 << bit
    with pytest.raises(TokenDecryptionFailed):
        VAULT.decrypt(bytes(sealed), credential_id="c1")


@settings(deadline=None)  # no timed assertions: these machines are shared
@given(tokens, credential_ids, credential_ids)
def test_a_ciphertext_moved_to_another_row_fails(token: str, mine: str, other: str) -> None:
    if mine == other:
        return
    token = "secret:" + token
    sealed = VAULT.encrypt(token, credential_id=mine)
    with pytest.raises(TokenDecryptionFailed) as info:
        VAULT.decrypt(sealed, credential_id=other)
    assert token not in str(info.value)


@settings(deadline=None)  # no timed assertions: these machines are shared
@given(st.binary(max_size=100))
def test_garbage_fails_cleanly(garbage: bytes) -> None:
    with pytest.raises(TokenDecryptionFailed):
        VAULT.decrypt(garbage, credential_id="c1")


def test_truncated_ciphertexts_fail() -> None:
    sealed = VAULT.encrypt("a-token-of-some-length", credential_id="c1")
    for cut in range(len(sealed)):
        with pytest.raises(TokenDecryptionFailed):
            VAULT.decrypt(sealed[:cut], credential_id="c1")


def test_the_first_secret_encrypts_and_all_decrypt() -> None:
    old_vault = TokenVault([OLD])
    old_sealed = old_vault.encrypt("tok-1", credential_id="c1")
    rotating = TokenVault([SecretStr(NEW), SecretStr(OLD)])
    assert rotating.decrypt(old_sealed, credential_id="c1").get_secret_value() == "tok-1"
    assert not rotating.is_current(old_sealed)
    new_sealed = rotating.encrypt("tok-1", credential_id="c1")
    assert rotating.is_current(new_sealed)
    assert VAULT.decrypt(new_sealed, credential_id="c1").get_secret_value() == "tok-1"
    with pytest.raises(TokenDecryptionFailed):
        old_vault.decrypt(new_sealed, credential_id="c1")


def test_a_wrong_secret_error_names_the_settings_and_not_the_token() -> None:
    sealed = TokenVault([OLD]).encrypt("tok-very-secret-value", credential_id="c1")
    with pytest.raises(TokenDecryptionFailed) as info:
        VAULT.decrypt(sealed, credential_id="c1")
    message = str(info.value)
    assert "TABPFN_GATEWAY_SECRET_KEY" in message
    assert "TABPFN_GATEWAY_PREVIOUS_SECRET_KEYS" in message
    assert "c1" in message
    assert "tok-very-secret-value" not in message
    assert info.value.error_code == "TOKEN_DECRYPTION_FAILED"


def test_decrypted_tokens_are_redacted_from_logs() -> None:
    token = "plain-token-with-no-known-shape-7f3a"
    sealed = VAULT.encrypt(token, credential_id="c9")
    assert redact(f"using {token}") == f"using {token}"  # not yet known
    VAULT.decrypt(sealed, credential_id="c9")
    assert redact(f"using {token}") == f"using {REDACTED}"


def test_bad_arguments() -> None:
    with pytest.raises(SecretKeyMissing):
        TokenVault([])
    with pytest.raises(ConfigurationError) as info:
        TokenVault(["s3cr3t-v4lue"])
    assert "s3cr3t-v4lue" not in str(info.value)
    assert "TABPFN_GATEWAY_SECRET_KEY" in str(info.value)
    with pytest.raises(InvalidRequest):
        VAULT.encrypt("", credential_id="c1")
    with pytest.raises(InvalidRequest):
        VAULT.encrypt("tok", credential_id="")
    assert repr(VAULT) == "TokenVault(secrets=1)"


# -- from settings -----------------------------------------------------------------------------


def test_from_settings_uses_current_then_previous(tmp_path: Path) -> None:
    old_sealed = TokenVault([OLD]).encrypt("tok", credential_id="c1")
    configured = Settings(
        secret_key=SecretStr(NEW), previous_secret_keys=[SecretStr(OLD)], data_dir=tmp_path
    )
    vault = TokenVault.from_settings(configured)
    assert vault.decrypt(old_sealed, credential_id="c1").get_secret_value() == "tok"
    assert vault.is_current(vault.encrypt("tok", credential_id="c1"))
    assert not (tmp_path / SECRET_KEY_FILE).exists()


def test_previous_secrets_parse_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TABPFN_GATEWAY_SECRET_KEY", NEW)
    monkeypatch.setenv("TABPFN_GATEWAY_PREVIOUS_SECRET_KEYS", f"{OLD}, another-old-secret-0123")
    monkeypatch.setenv("TABPFN_GATEWAY_DATA_DIR", str(tmp_path))
    vault = TokenVault.from_settings()
    old_sealed = TokenVault([OLD]).encrypt("tok", credential_id="c1")
    assert vault.decrypt(old_sealed, credential_id="c1").get_secret_value() == "tok"
    assert repr(vault) == "TokenVault(secrets=3)"


def test_no_secret_is_secret_key_missing(tmp_path: Path) -> None:
    with pytest.raises(SecretKeyMissing) as info:
        TokenVault.from_settings(Settings(data_dir=tmp_path))
    assert "TABPFN_GATEWAY_SECRET_KEY" in str(info.value)
    assert not (tmp_path / SECRET_KEY_FILE).exists()


def test_generated_secret_is_persisted_0600_and_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "fresh" / "data"
    configured = Settings(data_dir=data_dir)
    with caplog.at_level(logging.WARNING, logger="tabpfn_gateway"):
        vault = TokenVault.from_settings(configured, generate=True)
    path = data_dir / SECRET_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert len(secret) >= 32
    warning = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(path) in warning
    assert "TABPFN_GATEWAY_SECRET_KEY" in warning
    assert secret not in caplog.text
    sealed = vault.encrypt("tok", credential_id="c1")
    # Later starts (and the CLI, without generate) reuse the persisted secret.
    caplog.clear()
    again = TokenVault.from_settings(configured, generate=True)
    assert caplog.records == []
    assert again.decrypt(sealed, credential_id="c1").get_secret_value() == "tok"
    reused = TokenVault.from_settings(configured)
    assert reused.decrypt(sealed, credential_id="c1").get_secret_value() == "tok"
    # Once a secret is configured the persisted one still decrypts (until secrets rotate).
    moved = TokenVault.from_settings(Settings(data_dir=data_dir, secret_key=SecretStr(NEW)))
    assert moved.decrypt(sealed, credential_id="c1").get_secret_value() == "tok"
    assert not moved.is_current(sealed)
