"""Credentials: lookup order (argument, env, keyring), login/logout with a real keyring backend,
and the no-keyring machine (keyring's fail backend) getting a clear message."""

from __future__ import annotations

from collections.abc import Iterator

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from keyring.errors import PasswordDeleteError
from pydantic import SecretStr

from tabpfn_gateway import api_key as api_key_module
from tabpfn_gateway.api_key import (
    API_KEY_ENV,
    BASE_URL_ENV,
    KEYRING_SERVICE,
    login,
    logout,
    normalize_base_url,
    resolve_api_key,
    resolve_base_url,
)
from tabpfn_gateway.errors import ConfigurationError, InvalidKey, MissingApiKey

URL = "https://gateway.example.com"
KEY = "tpg_testkeyid_0123456789abcdefghijklmnopqrstuv"


class MemoryKeyring(KeyringBackend):
    """A real keyring backend that keeps passwords in a dict (keyring's backend contract)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.passwords: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.passwords.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.passwords[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        try:
            del self.passwords[(service, username)]
        except KeyError:
            raise PasswordDeleteError("not found") from None


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    monkeypatch.delenv(BASE_URL_ENV, raising=False)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


@pytest.fixture
def no_keyring() -> Iterator[None]:
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        yield
    finally:
        keyring.set_keyring(previous)


# -- lookup order ----------------------------------------------------------------------------


def test_argument_wins_over_env_and_keyring(
    memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory_keyring.set_password(KEYRING_SERVICE, URL, "from-keyring")
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert resolve_api_key(URL, "from-argument").get_secret_value() == "from-argument"
    assert resolve_api_key(URL, SecretStr("secret-arg")).get_secret_value() == "secret-arg"


def test_env_wins_over_keyring(
    memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory_keyring.set_password(KEYRING_SERVICE, URL, "from-keyring")
    monkeypatch.setenv(API_KEY_ENV, "  from-env  ")
    assert resolve_api_key(URL).get_secret_value() == "from-env"


def test_keyring_is_per_base_url(memory_keyring: MemoryKeyring) -> None:
    memory_keyring.set_password(KEYRING_SERVICE, URL, "key-one")
    memory_keyring.set_password(KEYRING_SERVICE, "https://other.example.com", "key-two")
    # Spelling variants of one URL share the entry.
    assert resolve_api_key("HTTPS://Gateway.Example.com/").get_secret_value() == "key-one"
    assert resolve_api_key("https://other.example.com").get_secret_value() == "key-two"


def test_missing_everywhere_says_what_to_do(memory_keyring: MemoryKeyring) -> None:
    with pytest.raises(MissingApiKey) as info:
        resolve_api_key(URL)
    message = str(info.value)
    assert info.value.error_code == "MISSING_CREDENTIALS"
    assert f"tabpfn_gateway.login('{URL}')" in message
    assert API_KEY_ENV in message
    assert "api_key=" in message


def test_blank_argument_is_not_a_key(memory_keyring: MemoryKeyring) -> None:
    with pytest.raises(MissingApiKey):
        resolve_api_key(URL, "   ")


def test_no_keyring_backend_gives_a_clear_message(no_keyring: None) -> None:
    with pytest.raises(MissingApiKey) as info:
        resolve_api_key(URL)
    message = str(info.value)
    assert "no OS keyring" in message
    assert API_KEY_ENV in message
    assert "keyrings.alt" in message
    assert "Traceback" not in message
    # The keyring error is not chained: users see one message, not keyring's internals.
    assert info.value.__cause__ is None


def test_env_works_without_a_keyring(no_keyring: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, KEY)
    assert resolve_api_key(URL).get_secret_value() == KEY


def test_base_url_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match=BASE_URL_ENV):
        resolve_base_url(None)
    monkeypatch.setenv(BASE_URL_ENV, "https://env.example.com/")
    assert resolve_base_url(None) == "https://env.example.com"
    assert resolve_base_url("http://arg.example.com:8080/api/") == "http://arg.example.com:8080/api"


@pytest.mark.parametrize("bad", ["", "gateway.example.com", "://nohost", "https://"])
def test_invalid_urls_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="Invalid gateway URL"):
        normalize_base_url(bad)


# -- login / logout --------------------------------------------------------------------------


def test_login_without_verification_stores_per_url(memory_keyring: MemoryKeyring) -> None:
    login(URL + "/", KEY, verify=False)
    assert memory_keyring.passwords == {(KEYRING_SERVICE, URL): KEY}
    assert resolve_api_key(URL).get_secret_value() == KEY
    assert logout(URL) is True
    assert memory_keyring.passwords == {}
    assert logout(URL) is False
    with pytest.raises(MissingApiKey):
        resolve_api_key(URL)


def test_login_says_what_it_stored_and_where_without_the_key(
    memory_keyring: MemoryKeyring, capsys: pytest.CaptureFixture[str]
) -> None:
    from tabpfn_gateway.keys.format import format_key, new_key_id, new_secret

    key_id = new_key_id()
    key = format_key(key_id, new_secret())
    login(URL, key, verify=False)
    out = capsys.readouterr().out
    assert out.startswith(f"Stored gateway key tpg_{key_id} for {URL} in the OS keyring")
    assert "MemoryKeyring" in out
    assert key not in out
    assert key.rsplit("_", 1)[-1] not in out


def test_login_asks_with_getpass(
    memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []

    def fake_getpass(prompt: str) -> str:
        prompts.append(prompt)
        return f"  {KEY}\n"

    monkeypatch.setattr(api_key_module.getpass, "getpass", fake_getpass)
    login(URL, verify=False)
    assert prompts == [f"Gateway key for {URL}: "]
    assert memory_keyring.passwords[(KEYRING_SERVICE, URL)] == KEY


def test_login_refuses_an_empty_entry(
    memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_key_module.getpass, "getpass", lambda prompt: "")
    with pytest.raises(InvalidKey):
        login(URL, verify=False)
    assert memory_keyring.passwords == {}


def test_login_without_keyring_backend_is_a_clear_error(no_keyring: None) -> None:
    with pytest.raises(ConfigurationError) as info:
        login(URL, KEY, verify=False)
    assert "no OS keyring" in str(info.value)
    assert API_KEY_ENV in str(info.value)
    assert KEY not in str(info.value)
    assert logout(URL) is False
