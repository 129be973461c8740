"""docs/server.md's offline walkthrough and admin quickstart, run as written (ports aside)."""

from __future__ import annotations

import json
import re
import sys
from contextlib import ExitStack
from pathlib import Path

from tabpfn_gateway.keys import parse_key
from test_docs_runnable import (
    VENDOR_SCRIPT,
    background,
    command_lines,
    fenced_blocks,
    free_port,
    run,
    shell_env,
)


def _lines(block: str) -> list[str]:
    return [line.split("   #")[0].strip() for line in command_lines(block, prompt="$ ")]


def test_server_md_opens_with_an_offline_walkthrough_and_an_admin_quickstart(
    tmp_path: Path,
) -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "server.md").read_text("utf-8")
    first_section = text.split("\n## ")[1]
    assert first_section.startswith("The first hour, offline")
    assert "localhost" not in text
    walkthrough, quickstart = fenced_blocks("docs/server.md", "console")[:2]

    env = shell_env(tmp_path, "http://unused.invalid")
    del env["TABPFN_GATEWAY_UPSTREAM_URL"]  # the walkthrough sets it itself
    (tmp_path / "your_existing_script.py").write_text(VENDOR_SCRIPT)
    ports = {"8765": str(free_port()), "8000": str(free_port())}

    def local(line: str) -> str:
        for documented, used in ports.items():
            line = line.replace(f"127.0.0.1:{documented}", f"127.0.0.1:{used}")
            line = line.replace(f"--port {documented}", f"--port {used}")
        return line

    with ExitStack() as running:
        user_key = ""
        for line in map(local, _lines(walkthrough)):
            if line.endswith("&"):
                port = re.search(r"--port (\d+)", line)
                assert port is not None
                ready = f"http://127.0.0.1:{port.group(1)}/"
                running.enter_context(background(line[:-1], env, tmp_path, ready))
            elif line.startswith("export "):
                line = line.replace("tpg_...", user_key)
                for assignment in line.removeprefix("export ").split():
                    name, value = assignment.split("=", 1)
                    env[name] = value
            elif line.startswith("python "):
                out = run(line.replace("python ", f"{sys.executable} ", 1), env, tmp_path)
                assert float(out.split()[-1]) > 0.8
            else:
                out = run(line, env, tmp_path)
                if "/auth/setup" in line:
                    user_key = json.loads(out)["api_key"]
                    parse_key(user_key)

        admin_key = ""
        for line in _lines(quickstart):
            if line.startswith("ADMIN_KEY=$("):
                admin_key = run(f'{line}; printf %s "$ADMIN_KEY"', env, tmp_path)
                assert parse_key(admin_key).admin
                continue
            if line.startswith("tabpfn-gateway keys revoke"):
                keys = json.loads(
                    run("tabpfn-gateway keys list --owner data-team --json", env, tmp_path)
                )
                line = line.replace("tpg_3xT9kQ2mLp0a", keys["items"][0]["display_prefix"])
            out = run(line, env, tmp_path)
            if line.startswith("tabpfn-gateway keys create --owner data-team"):
                team_key = out.strip()
                parse_key(team_key)
        listed = json.loads(run("tabpfn-gateway keys list --owner data-team --json", env, tmp_path))
        assert [k["status"] for k in listed["items"]] == ["revoked"]
