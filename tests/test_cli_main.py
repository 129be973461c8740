"""The top-level `tabpfn-gateway` command: every command group registered, --version, help."""

from __future__ import annotations

import pytest

from tabpfn_gateway import __version__
from tabpfn_gateway.cli import build_parser, main


def test_every_command_group_is_registered() -> None:
    help_text = build_parser().format_help()
    for command in (
        "info",
        "db",
        "keys",
        "credentials",
        "secrets",
        "principals",
        "fake-upstream",
        "serve",
        "demo",
    ):
        assert command in help_text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tabpfn-gateway {__version__}"


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
