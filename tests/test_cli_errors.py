"""The CLI never answers bad input with a traceback: one `error: [CODE] message` line instead."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tabpfn_gateway.cli import build_parser, main

# Commands that never open the database: nothing for a bad URL to break.
_NO_DATABASE = {("fake-upstream",)}
# Input a command asks for before it opens the database.
_OTHER_INPUT = {("credentials", "add"): ["--token-stdin", "--no-verify"]}
_RUN_CLI = "import sys; from tabpfn_gateway.cli import main; sys.exit(main(sys.argv[1:]))"


def _leaf_commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Every runnable command line of ``parser``, required arguments filled with "x"."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subparsers and prefix:
        leaves = []
        for name, child in subparsers[0].choices.items():
            leaves.extend(_leaf_commands(child, (*prefix, name)))
        return leaves
    if subparsers:
        return [
            leaf
            for name, child in subparsers[0].choices.items()
            for leaf in _leaf_commands(child, (name,))
        ]
    args: list[str] = []
    for action in parser._actions:
        if action.required and action.option_strings:
            args += [action.option_strings[0], "x"]
        elif not action.option_strings and action.nargs not in ("?", "*"):
            args.append("x")
    for group in parser._mutually_exclusive_groups:
        if group.required:  # one of them must be given: a flag if there is one ("x" is no time)
            choice = min(group._group_actions, key=lambda action: action.nargs != 0)
            args += [choice.option_strings[0], *(["x"] if choice.nargs != 0 else [])]
    return [(*prefix, *args, *_OTHER_INPUT.get(prefix, []))]


COMMANDS = [c for c in _leaf_commands(build_parser()) if c[:1] not in _NO_DATABASE]


def test_every_command_group_is_covered() -> None:
    groups = {command[0] for command in COMMANDS}
    assert {"info", "db", "principals", "credentials", "keys", "secrets", "serve", "demo"} <= groups
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("url", ["notaurl", "mysql://user@db.example/gateway"])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_bad_database_url_is_one_line_naming_the_setting(
    command: tuple[str, ...],
    url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TABPFN_GATEWAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TABPFN_GATEWAY_DATABASE_URL", url)
    monkeypatch.setattr("sys.stdin", io.StringIO("a-tabpfn-token\n"))
    code = main(list(command))
    out, err = capsys.readouterr()
    assert code != 0
    assert "Traceback" not in out + err
    assert "ModuleNotFoundError" not in out + err
    if command[0] == "doctor":
        # A checklist, not an error: its failed settings line names the variable.
        assert "[FAIL] settings" in out
        assert "TABPFN_GATEWAY_DATABASE_URL" in out
        return
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: [CONFIGURATION_ERROR]")
    assert "TABPFN_GATEWAY_DATABASE_URL" in lines[0]
    if url.startswith("mysql"):
        assert "only SQLite and PostgreSQL URLs are supported" in lines[0]


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    # The reader is gone before the first write (`tabpfn-gateway info | head -0`).
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, "HOME": str(tmp_path), "TABPFN_GATEWAY_DATA_DIR": str(tmp_path / "d")}
    env.pop("TABPFN_GATEWAY_DATABASE_URL", None)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _RUN_CLI, "info"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "BrokenPipeError" not in done.stderr


def test_an_unexpected_error_is_one_line_without_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TABPFN_GATEWAY_LOG_LEVEL", raising=False)
    parser = build_parser()

    def broken(args: argparse.Namespace) -> int:
        raise RuntimeError("boom")

    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    subparsers.choices["info"].set_defaults(handler=broken)
    monkeypatch.setattr("tabpfn_gateway.cli.build_parser", lambda: parser)
    assert main(["info"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("error: [INTERNAL_ERROR] unexpected RuntimeError")
