"""Settings: the TABPFN_GATEWAY_ prefix, .env, precedence, clear errors that keep secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from tabpfn_gateway.config import Settings, default_data_dir, get_settings
from tabpfn_gateway.errors import ConfigurationError


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No TABPFN_GATEWAY_ variables, and a working directory without a .env file."""
    for name in list(os.environ):
        if name.startswith("TABPFN_GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults() -> None:
    settings = get_settings()
    assert settings.data_dir == default_data_dir()
    assert settings.database_url == f"sqlite:///{default_data_dir() / 'gateway.db'}"
    assert settings.is_sqlite
    assert settings.secret_key is None
    assert settings.previous_secret_keys == []
    assert settings.all_secret_keys() == []
    assert settings.key_hash_scheme == "hmac-sha256"
    assert settings.log_level == "INFO"


def test_environment_variables_use_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABPFN_GATEWAY_DB_POOL_SIZE", "3")
    monkeypatch.setenv("TABPFN_GATEWAY_LOG_LEVEL", "debug")
    monkeypatch.setenv("TABPFN_GATEWAY_ALLOW_SELF_SERVICE_SETUP", "false")
    monkeypatch.setenv("DB_POOL_SIZE", "99")  # unprefixed: ignored
    settings = get_settings()
    assert settings.db_pool_size == 3
    assert settings.log_level == "DEBUG"
    assert settings.allow_self_service_setup is False


def test_dot_env_file_is_read(clean_environment: Path) -> None:
    (clean_environment / ".env").write_text(
        "TABPFN_GATEWAY_UPSTREAM_URL=http://from-dotenv:8080\nTABPFN_GATEWAY_DB_POOL_SIZE=4\n"
    )
    settings = get_settings()
    assert settings.upstream_url == "http://from-dotenv:8080"
    assert settings.db_pool_size == 4


def test_precedence_arguments_then_environment_then_dot_env_then_defaults(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_environment / ".env").write_text(
        "TABPFN_GATEWAY_DB_POOL_SIZE=4\n"
        "TABPFN_GATEWAY_UPSTREAM_URL=http://dotenv\n"
        "TABPFN_GATEWAY_LOG_LEVEL=ERROR\n"
    )
    monkeypatch.setenv("TABPFN_GATEWAY_DB_POOL_SIZE", "5")
    monkeypatch.setenv("TABPFN_GATEWAY_UPSTREAM_URL", "http://env")
    settings = get_settings(db_pool_size=6)
    assert settings.db_pool_size == 6  # argument beats environment and .env
    assert settings.upstream_url == "http://env"  # environment beats .env
    assert settings.log_level == "ERROR"  # .env beats the default
    assert settings.db_pool_timeout_seconds == 5.0  # default


def test_postgresql_urls_are_normalised_to_psycopg3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABPFN_GATEWAY_DATABASE_URL", "postgresql://u:p@db:5432/gw")
    assert get_settings().database_url == "postgresql+psycopg://u:p@db:5432/gw"
    assert get_settings(database_url="postgres://u@db/gw").database_url == (
        "postgresql+psycopg://u@db/gw"
    )
    unchanged = "postgresql+psycopg://u@db/gw"
    assert get_settings(database_url=unchanged).database_url == unchanged
    assert not get_settings(database_url=unchanged).is_sqlite


def test_data_dir_moves_the_default_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABPFN_GATEWAY_DATA_DIR", "/srv/tabpfn-gateway")
    settings = get_settings()
    assert settings.data_dir == Path("/srv/tabpfn-gateway")
    assert settings.database_url == "sqlite:////srv/tabpfn-gateway/gateway.db"


def test_comma_separated_previous_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABPFN_GATEWAY_SECRET_KEY", "current-secret")
    monkeypatch.setenv("TABPFN_GATEWAY_PREVIOUS_SECRET_KEYS", " old-one , older-two,, ")
    settings = get_settings()
    assert [s.get_secret_value() for s in settings.previous_secret_keys] == [
        "old-one",
        "older-two",
    ]
    assert [s.get_secret_value() for s in settings.all_secret_keys()] == [
        "current-secret",
        "old-one",
        "older-two",
    ]
    assert all(isinstance(s, SecretStr) for s in settings.all_secret_keys())


def test_secrets_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABPFN_GATEWAY_SECRET_KEY", "current-secret-value")
    monkeypatch.setenv("TABPFN_GATEWAY_PREVIOUS_SECRET_KEYS", "old-secret-value")
    monkeypatch.setenv("TABPFN_GATEWAY_KEY_PEPPER", "pepper-secret-value")
    settings = get_settings()
    for text in (repr(settings), str(settings), repr(settings.model_dump())):
        assert "secret-value" not in text


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TABPFN_GATEWAY_DB_POOL_SIZE", "lots"),
        ("TABPFN_GATEWAY_DB_POOL_SIZE", "0"),
        ("TABPFN_GATEWAY_KEY_HASH_SCHEME", "md5"),
        ("TABPFN_GATEWAY_LOG_LEVEL", "chatty"),
        ("TABPFN_GATEWAY_ALLOW_SELF_SERVICE_SETUP", "perhaps"),
        ("TABPFN_GATEWAY_MAX_JSON_BODY_BYTES", "12"),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as raised:
        get_settings()
    assert variable in str(raised.value)
    assert raised.value.error_code == "CONFIGURATION_ERROR"
    assert raised.value.__cause__ is None


def test_a_bad_value_never_echoes_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABPFN_GATEWAY_SECRET_KEY", "s3cret-that-must-stay-hidden")
    monkeypatch.setenv("TABPFN_GATEWAY_DATABASE_URL", "postgresql://u:db-password-xyz@h/d")
    monkeypatch.setenv("TABPFN_GATEWAY_DB_POOL_SIZE", "not-a-number-s3cret")
    with pytest.raises(ConfigurationError) as raised:
        get_settings()
    error = raised.value
    everything = " ".join([str(error), repr(error), str(error.__context__)])
    assert "TABPFN_GATEWAY_DB_POOL_SIZE" in str(error)
    assert "s3cret" not in everything
    assert "db-password-xyz" not in everything


def test_a_secret_of_the_wrong_type_is_not_echoed() -> None:
    with pytest.raises(ConfigurationError) as raised:
        get_settings(secret_key=["s3cret-in-a-list"])
    assert "TABPFN_GATEWAY_SECRET_KEY" in str(raised.value)
    assert "s3cret" not in str(raised.value)
    assert "s3cret" not in str(raised.value.__context__)


def test_settings_class_direct_use_keeps_pydantic_semantics() -> None:
    settings = Settings(database_url="sqlite:///x.db", db_pool_size=2)
    assert settings.db_pool_size == 2
    assert settings.is_sqlite
