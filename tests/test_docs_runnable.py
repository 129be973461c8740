"""The shell and Python blocks of docs/keys.md, docs/server.md and docs/protocol.md, executed.

Each block runs as written, against FakeTabPFN on loopback and a real `tabpfn-gateway serve`
process; the only edits are placeholders a reader fills in (ports, ids, keys, tokens).
(docs/sdk.md and README.md blocks run in tests/test_examples.py.)
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from tabpfn_gateway.keys import parse_key
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway.testing.fake_server import serve_in_thread

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TOKEN = "tok-docs-0001"

# A script a tabpfn-client user already has: nothing in it knows about the gateway.
VENDOR_SCRIPT = """
from sklearn.datasets import load_iris
from tabpfn_client import TabPFNClassifier

X, y = load_iris(return_X_y=True)
clf = TabPFNClassifier().fit(X[::2], y[::2])
print("accuracy", (clf.predict(X[1::2]) == y[1::2]).mean())
"""


def fenced_blocks(document: str, language: str) -> list[str]:
    """The bodies of the ```language fenced blocks of ``document``."""
    text = (ROOT / document).read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def command_lines(block: str, *, prompt: str = "") -> list[str]:
    """Commands of a shell block: continuation lines joined, prompts stripped."""
    joined = block.replace("\\\n", " ")
    lines = []
    for line in joined.splitlines():
        line = line.strip()
        if prompt:
            if not line.startswith(prompt):
                continue
            line = line[len(prompt) :]
        if line:
            lines.append(line)
    return lines


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def shell_env(tmp_path: Path, upstream: str) -> dict[str, str]:
    """A fresh user's environment: own HOME and data dir, the fake as the upstream."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TABPFN_GATEWAY_", "TABPFN_CLIENT_", "TABPFN_TOKEN"))
    }
    env.update(
        HOME=str(tmp_path / "home"),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        TABPFN_GATEWAY_DATA_DIR=str(tmp_path / "data"),
        TABPFN_GATEWAY_UPSTREAM_URL=upstream,
        TABPFN_GATEWAY_LOG_LEVEL="WARNING",
    )
    return env


def run(command: str, env: dict[str, str], cwd: Path, *, typed: str | None = None) -> str:
    """Run one shell command line with bash; it must succeed; return its stdout.

    ``typed``: the command's stdin is a terminal (a pty), and this line is typed at its
    prompt, for commands that prompt (and refuse to without a terminal).
    """
    if typed is None:
        done = subprocess.run(
            ["bash", "-c", f"set -euo pipefail; {command}"],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,
            check=False,
        )
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    else:
        terminal, tty = pty.openpty()
        process = subprocess.Popen(
            ["bash", "-c", f"set -euo pipefail; {command}"],
            env=env,
            cwd=cwd,
            stdin=tty,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            # getpass flushes input typed before its prompt (TCSAFLUSH): wait for the prompt.
            seen = b""
            deadline = time.monotonic() + 60
            while b": " not in seen and process.poll() is None and time.monotonic() < deadline:
                ready, _, _ = select.select([terminal], [], [], 0.2)
                if ready:
                    seen += os.read(terminal, 1024)
            os.write(terminal, typed.encode())
            stdout, stderr = process.communicate(timeout=120)
            code = process.returncode
        finally:
            os.close(terminal)
            os.close(tty)
    assert code == 0, f"{command!r} failed:\n{stdout}\n{stderr}"
    return stdout


@contextmanager
def background(command: str, env: dict[str, str], cwd: Path, ready_url: str) -> Iterator[None]:
    """Start a long-running command of a block; wait until ``ready_url`` answers 200."""
    process = subprocess.Popen(
        command,
        shell=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"{command!r} exited: {process.stderr.read()}"  # type: ignore[union-attr]
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{command!r} did not become ready"
            time.sleep(0.1)
        yield
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture
def upstream() -> Iterator[str]:
    fake = FakeTabPFN(tokens=[TOKEN])
    with serve_in_thread(fake.app) as url:
        yield url


# -- docs/keys.md -----------------------------------------------------------------------------


def test_keys_md_cli_walkthrough_runs(tmp_path: Path, upstream: str) -> None:
    env = shell_env(tmp_path, upstream)
    env["TABPFN_TOKEN"] = TOKEN  # the block pipes "$TABPFN_TOKEN" into --token-stdin
    (block,) = fenced_blocks("docs/keys.md", "console")
    lines = [line.split("   #")[0].strip() for line in command_lines(block, prompt="$ ")]
    assert shutil.which("jq"), "the walkthrough pipes JSON through jq"

    def cli_json(command: str) -> dict:  # type: ignore[type-arg]
        result: dict = json.loads(run(f"tabpfn-gateway {command} --json", env, tmp_path))  # type: ignore[type-arg]
        return result

    credential_id = prefix = ""
    for line in lines:
        line = line.replace("<credential id>", credential_id)
        if prefix:  # the key created above, named by its display prefix
            line = line.replace("tpg_3xT9kQ2mLp0a", prefix)
        if "disable|enable|revoke|show" in line:
            for verb in ("disable", "enable", "show", "revoke"):
                run(line.replace("disable|enable|revoke|show", verb), env, tmp_path)
            continue
        if line.startswith("KEY=$("):
            key = run(f'{line}; printf %s "$KEY"', env, tmp_path)
            assert not parse_key(key).admin  # a working user key, captured alone
            keys = cli_json("keys list --owner alice")["items"]
            prefix = next(k["display_prefix"] for k in keys if k["name"] == "laptop")
            continue
        # The line that prompts reads the token from its hidden prompt: type it there.
        prompts = "credentials add" in line and "--token" not in line
        out = run(line, env, tmp_path, typed=f"{TOKEN}\n" if prompts else None)
        if "--admin --json | jq -r .key" in line:
            assert parse_key(out.strip()).admin
        if "--token-stdin" in line:
            credentials = cli_json("credentials list --owner alice")["items"]
            assert len(credentials) == 2  # the prompted one and the piped one
            credential_id = credentials[0]["id"]
    laptop = [k for k in cli_json("keys list --owner alice")["items"] if k["name"] == "laptop"]
    assert laptop[0]["status"] == "revoked"
    assert laptop[0]["previous_valid_until"] is not None  # it was rotated with a grace window
    assert TOKEN not in run("tabpfn-gateway credentials list --json", env, tmp_path)


# -- docs/server.md ---------------------------------------------------------------------------


def test_server_md_blocks_run(tmp_path: Path, upstream: str) -> None:
    env = shell_env(tmp_path, upstream)
    serve_block, setup_block, client_block, admin_block = fenced_blocks("docs/server.md", "bash")

    # `tabpfn-gateway serve ...`, each form: it starts and answers /healthz.
    for line in command_lines(serve_block):
        line = line.split("#")[0].strip()
        port = free_port()
        if "--port" in line:
            line = re.sub(r"--port \d+", f"--port {port}", line)
        else:
            line += f" --port {port}"
        with background(line, env, tmp_path, f"http://127.0.0.1:{port}/healthz"):
            pass

    port = free_port()
    with background(
        f"tabpfn-gateway serve --port {port}", env, tmp_path, f"http://127.0.0.1:{port}/readyz"
    ):
        gateway = f"http://127.0.0.1:{port}"
        # Self-service setup with a TabPFN token: 201 and the key, once.
        (setup,) = command_lines(setup_block)
        answer = json.loads(
            run(
                setup.replace("http://127.0.0.1:8000", gateway).replace(
                    "<your TabPFN token>", TOKEN
                ),
                env,
                tmp_path,
            )
        )
        assert answer["principal_name"].startswith("setup:alice-")
        user_key = answer["api_key"]
        parse_key(user_key)

        # Existing tabpfn-client code, pointed at the gateway with that key.
        (tmp_path / "your_existing_script.py").write_text(VENDOR_SCRIPT)
        script = "\n".join(line.split("#")[0] for line in command_lines(client_block))
        script = script.replace("http://127.0.0.1:8000", gateway).replace("tpg_...", user_key)
        out = run(script.replace("python ", f"{sys.executable} "), env, tmp_path)
        assert float(out.split()[-1]) > 0.8

        # The admin flow: the first admin key from the CLI, then the documented calls.
        run("tabpfn-gateway principals add ops --kind team", env, tmp_path)
        admin_key = run(
            "tabpfn-gateway keys create --owner ops --name ops-admin --admin", env, tmp_path
        ).strip()
        assignment, *calls = command_lines(admin_block)
        assignment = assignment.replace("tpga_...", admin_key)
        answers: list[dict] = []  # type: ignore[type-arg]
        filled: dict[str, str] = {}  # placeholders the reader copies from earlier answers
        for call in calls:
            call = call.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            call = call.replace('"tabpfn_token": "..."', f'"tabpfn_token": "{TOKEN}"')
            for placeholder, value in filled.items():
                call = call.replace(placeholder, value)
            answer = json.loads(run(f"{assignment}\n{call} --fail-with-body", env, tmp_path))
            if "/credentials" in call:
                filled["<id>"] = answer["id"]
            if "api_key" in answer:  # the key just created
                filled["<key_id>"] = answer["key_id"]
            answers.append(answer)
        principal, credential, created, revoked = answers
        assert principal["name"] == "data-team"
        assert credential["owner_id"] == principal["id"]
        assert TOKEN not in json.dumps(credential)
        parse_key(created["api_key"])
        assert revoked["state"] == "revoked"
        refused = httpx.get(
            f"{gateway}/tabpfn/get_settings",
            headers={"Authorization": f"Bearer {created['api_key']}"},
        )
        assert refused.json()["error_code"] == "KEY_REVOKED"


# -- docs/protocol.md -------------------------------------------------------------------------


def test_protocol_md_python_block_runs(upstream: str) -> None:
    (block,) = fenced_blocks("docs/protocol.md", "python")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] > 0).astype(int)
    namespace = {"token": TOKEN, "X": X, "y": y, "X_test": X[:20]}
    exec(block.replace("https://api.priorlabs.ai", upstream), namespace)
    predictions = np.asarray(namespace["result"].y_pred)  # type: ignore[attr-defined]
    assert predictions.shape == (20,)  # ClassifierConfig() without output_type: labels
    assert set(predictions.tolist()) <= {0, 1}


def test_protocol_md_shell_block_runs(tmp_path: Path) -> None:
    env = shell_env(tmp_path, "http://unused.invalid")
    (block,) = fenced_blocks("docs/protocol.md", "bash")
    serve, client = command_lines(block)
    port = free_port()
    (tmp_path / "my_tabpfn_script.py").write_text(VENDOR_SCRIPT)
    with background(
        serve.replace("--port 8765", f"--port {port}"), env, tmp_path, f"http://127.0.0.1:{port}/"
    ):
        client = client.replace("127.0.0.1:8765", f"127.0.0.1:{port}")
        out = run(client.replace(" python ", f" {sys.executable} "), env, tmp_path)
    assert float(out.split()[-1]) > 0.8
