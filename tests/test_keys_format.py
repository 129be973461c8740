"""The gateway key format: parsing, checksum, scanner regex, and hypothesis on bad input."""

from __future__ import annotations

import re
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tabpfn_gateway import keys
from tabpfn_gateway.errors import InvalidKey
from tabpfn_gateway.keys import KEY_PATTERN, ParsedKey, parse_key
from tabpfn_gateway.keys.format import (
    BASE62_ALPHABET,
    base62,
    checksum,
    format_key,
    new_key_id,
    new_secret,
)
from tabpfn_gateway.logs import REDACTED, redact

base62_text = st.text(alphabet=BASE62_ALPHABET, min_size=1)


def make_key(*, admin: bool = False) -> str:
    return format_key(new_key_id(), new_secret(), admin=admin)


def test_public_names() -> None:
    assert sorted(keys.__all__) == sorted(
        [
            "ALL_SCOPES",
            "DEFAULT_SCOPES",
            "KEY_PATTERN",
            "ROTATION_REPLAY_WINDOW",
            "SCOPE_ADMIN",
            "SCOPE_INFERENCE",
            "SCOPE_USAGE",
            "CreatedKey",
            "KeyManager",
            "ParsedKey",
            "parse_key",
        ]
    )
    assert keys.DEFAULT_SCOPES == ("inference", "usage")


def test_a_key_has_its_documented_shape() -> None:
    key = make_key()
    assert re.fullmatch(r"tpg_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}", key)
    admin_key = make_key(admin=True)
    assert re.fullmatch(r"tpga_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}", admin_key)
    # The log redactor's pattern (logs.py) must match every key whole.
    assert re.fullmatch(r"tpga?_[0-9A-Za-z_]{8,}", key)
    assert redact(f"got {key} and {admin_key}.") == f"got {REDACTED} and {REDACTED}."


def test_parse_round_trip_and_repr_hides_the_secret() -> None:
    key_id, secret = new_key_id(), new_secret()
    parsed = parse_key(format_key(key_id, secret, admin=True))
    assert parsed == ParsedKey(key_id=key_id, secret=secret, admin=True)
    assert parsed.display_prefix == f"tpga_{key_id}"
    assert parsed.plaintext == format_key(key_id, secret, admin=True)
    assert secret not in repr(parsed)
    # Surrounding whitespace from a paste is forgiven.
    assert parse_key(f"  {parsed.plaintext}\n") == parsed


def test_secret_has_at_least_160_random_bits() -> None:
    import math

    assert len(new_secret()) * math.log2(62) >= 160
    assert len({new_secret() for _ in range(1000)}) == 1000


def test_checksum_is_base62_crc32_of_the_rest() -> None:
    body = "tpg_abcdefghijkl_" + "x" * 32
    assert checksum(body) == base62(zlib.crc32(body.encode()), 6)
    assert base62(0, 6) == "000000"
    assert base62(61, 2) == "0z"
    assert base62(2**32 - 1, 6) == "4gfFC3"  # the largest CRC32 still fits 6 characters
    with pytest.raises(ValueError):
        base62(-1, 6)


def test_admin_prefix_swap_is_refused() -> None:
    key = make_key()
    with pytest.raises(InvalidKey):
        parse_key("tpga_" + key[len("tpg_") :])


@pytest.mark.parametrize(
    "text",
    ["", "tpg_", "Bearer tpg_x", "tpg_" + "a" * 51, "x" * 10_000, "tpg_abc_def", None, 42, b"tpg_"],
)
def test_malformed_keys_are_invalid(text: object) -> None:
    with pytest.raises(InvalidKey) as info:
        parse_key(text)  # type: ignore[arg-type]
    assert info.value.error_code == "INVALID_KEY"


@settings(deadline=None)  # no timed assertions: these machines are shared
@given(st.text(max_size=120))
def test_any_string_parses_or_raises_invalid_key_only(text: str) -> None:
    try:
        parsed = parse_key(text)
    except InvalidKey:
        return
    assert parsed.plaintext == text.strip()


@given(
    st.data(),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_any_single_character_change_is_caught_offline(data: st.DataObject, admin: bool) -> None:
    key = make_key(admin=admin)
    start = len("tpga_" if admin else "tpg_")
    position = data.draw(st.integers(min_value=start, max_value=len(key) - 1))
    if key[position] == "_":
        return
    # An offset rather than a filtered draw: the key is random, so a filter would make
    # hypothesis draw differently on replay (FlakyStrategyDefinition).
    offset = data.draw(st.integers(min_value=1, max_value=len(BASE62_ALPHABET) - 1))
    replacement = BASE62_ALPHABET[
        (BASE62_ALPHABET.index(key[position]) + offset) % len(BASE62_ALPHABET)
    ]
    typo = key[:position] + replacement + key[position + 1 :]
    # CRC32 detects every burst error up to 32 bits, so every one-character typo.
    with pytest.raises(InvalidKey):
        parse_key(typo)


@given(st.data())
@settings(max_examples=100, deadline=None)
def test_truncated_or_extended_keys_are_invalid(data: st.DataObject) -> None:
    key = make_key()
    cut = data.draw(st.integers(min_value=0, max_value=len(key) - 1))
    with pytest.raises(InvalidKey):
        parse_key(key[:cut])
    with pytest.raises(InvalidKey):
        parse_key(key + data.draw(base62_text))


def test_key_pattern_finds_keys_in_text_for_scanners() -> None:
    first, second = make_key(), make_key(admin=True)
    text = f"export TABPFN_TOKEN={first}\nconfig = {{'key': '{second}'}}\nnot_tpg_{'a' * 51}"
    found = [m.group(0) for m in KEY_PATTERN.finditer(text)]
    assert found == [first, second]
    # The gitleaks / GitHub custom pattern documented in docs/keys.md matches the same keys.
    documented = re.compile(r"\btpga?_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}\b")
    assert [m.group(0) for m in documented.finditer(text)] == found
