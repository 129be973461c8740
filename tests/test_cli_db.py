"""`tabpfn-gateway db ...`: upgrade, current, downgrade; `db upgrade && info` on a fresh HOME."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tabpfn_gateway import migrate
from tabpfn_gateway.cli import main


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SQLite file (not created yet) that the CLI is pointed at, from a clean directory."""
    for name in list(os.environ):
        if name.startswith("TABPFN_GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "data" / "gateway.db"
    monkeypatch.setenv("TABPFN_GATEWAY_DATABASE_URL", f"sqlite:///{path}")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_current_on_a_missing_database(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "db", "current", "--json")
    assert code == 0
    assert json.loads(out) == {
        "current": False,
        "head": migrate.head_revision(),
        "revision": None,
        "store": f"sqlite ({database})",
    }
    assert not database.exists()


def test_upgrade_current_downgrade(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = migrate.head_revision()
    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0
    assert f"schema upgraded from (empty) to {head}" in out
    assert database.is_file()

    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0
    assert f"already at revision {head}" in out

    code, out, _ = run(capsys, "db", "current")
    assert code == 0
    lines = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert lines["revision"] == head
    assert lines["current"] == "True"

    code, out, _ = run(capsys, "db", "downgrade", "base")
    assert code == 0
    assert f"schema downgraded from {head} to (empty)" in out
    assert migrate.current_revision() is None


def test_bad_revision_is_a_clear_error(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "db", "upgrade", "no-such-revision")
    assert code == 1
    assert "[INVALID_REQUEST]" in err
    assert "no-such-revision" in err
    assert "Traceback" not in err


def test_downgrade_needs_a_revision(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["db", "downgrade"])
    assert raised.value.code == 2
    assert "REV" in capsys.readouterr().err


def test_db_without_a_command_prints_help(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "db")
    assert code == 2
    assert "upgrade" in out
    assert "downgrade" in out


def test_unreachable_database_is_reported_without_password(
    database: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TABPFN_GATEWAY_DATABASE_URL", "postgresql://u:hunter22@127.0.0.1:1/gw")
    code, _, err = run(capsys, "db", "upgrade")
    assert code == 1
    assert "[STORE_UNAVAILABLE]" in err
    assert "hunter22" not in err


@pytest.mark.slow
def test_db_upgrade_then_info_on_a_fresh_machine(tmp_path: Path) -> None:
    """`tabpfn-gateway db upgrade && tabpfn-gateway info` with no settings at all."""
    executable = shutil.which("tabpfn-gateway", path=str(Path(sys.executable).parent))
    assert executable is not None, "the console script is not installed"
    home = tmp_path / "home"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TABPFN_GATEWAY_", "XDG_"))
    }
    env["HOME"] = str(home)
    result = subprocess.run(
        f"'{executable}' db upgrade && '{executable}' info --json",
        shell=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    database = home / ".local" / "share" / "tabpfn-gateway" / "gateway.db"
    assert database.is_file()
    info = json.loads(result.stdout[result.stdout.index("{") :])
    assert info["store"] == f"sqlite ({database})"
    assert info["schema_current"] is True
    assert info["schema_revision"] == migrate.head_revision()
