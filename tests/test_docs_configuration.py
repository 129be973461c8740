"""docs/configuration.md stays true: every setting documented, with its real default."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tabpfn_gateway.config import ENV_PREFIX, Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
ROW = re.compile(r"^\|\s*`(TABPFN_GATEWAY_[A-Z0-9_]+)`\s*\|([^|]*)\|([^|]*)\|\s*$", re.MULTILINE)


def documented_rows() -> dict[str, tuple[str, str]]:
    rows = {}
    for variable, default, meaning in ROW.findall(DOC.read_text(encoding="utf-8")):
        assert variable not in rows, f"{variable} is documented twice"
        rows[variable] = (default.strip(), meaning.strip())
    return rows


def test_every_setting_is_documented() -> None:
    rows = documented_rows()
    expected = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    assert sorted(expected - set(rows)) == [], "settings missing from docs/configuration.md"
    assert sorted(set(rows) - expected) == [], "docs/configuration.md lists unknown settings"
    assert all(meaning for _, meaning in rows.values())


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_documented_default_is_the_real_one(name: str) -> None:
    field = Settings.model_fields[name]
    default_cell, _ = documented_rows()[ENV_PREFIX + name.upper()]
    if field.default_factory is not None:
        return  # computed defaults (paths, empty lists) are described in words
    if field.default is None:
        assert default_cell == "unset"
    else:
        assert default_cell == f"`{field.default}`"


def test_linux_data_dir_row_matches_platformdirs(monkeypatch: pytest.MonkeyPatch) -> None:
    from tabpfn_gateway.config import default_data_dir

    text = DOC.read_text(encoding="utf-8")
    assert "~/.local/share/tabpfn-gateway/gateway.db" in text
    assert "~/Library/Application Support/tabpfn-gateway" in text
    assert r"%LOCALAPPDATA%\tabpfn-gateway" in text
    if sys.platform.startswith("linux"):
        monkeypatch.delenv("XDG_DATA_HOME", raising=False)
        monkeypatch.setenv("HOME", "/home/someone")
        assert default_data_dir() == Path("/home/someone/.local/share/tabpfn-gateway")
