"""`tabpfn-gateway fake-upstream`: serves FakeTabPFN on loopback; clear errors otherwise."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from tabpfn_gateway.cli import main
from tabpfn_gateway.cli.fake import _parse_tokens

RUN_CLI = "import sys; from tabpfn_gateway.cli import main; sys.exit(main())"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"fake-upstream exited: {process.communicate()}")
        try:
            httpx.get(url + "/", timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("fake-upstream did not start")


def test_fake_upstream_serves_on_loopback_with_the_given_tokens() -> None:
    port = free_port()
    command = [
        sys.executable,
        "-c",
        RUN_CLI,
        "fake-upstream",
        "--port",
        str(port),
        "--token",
        "tok-cli-a",
        "--token",
        "tok-cli-b:5",
        "--unverified-token",
        "tok-cli-u",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)

        def protected(token: str) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            return httpx.get(url + "/protected/", headers=headers).status_code

        assert protected("tok-cli-a") == 200
        assert protected("tok-cli-u") == 403
        assert protected("tok-nobody") == 401
        usage = httpx.post(
            url + "/get_api_usage/", headers={"Authorization": "Bearer tok-cli-b"}
        ).json()
        assert usage["usage_limit"] == 5
    finally:
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}" in stdout
    assert "tok-cli" not in stdout + stderr  # tokens are never printed


def test_token_limits_parse() -> None:
    assert _parse_tokens(["a", "b:5", "c:d", "x:y:7"]) == {"a": None, "b": 5, "c:d": None, "x:y": 7}


def test_no_token_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fake-upstream"]) == 1
    assert "--token" in capsys.readouterr().err


def test_missing_uvicorn_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # makes `import uvicorn` fail
    assert main(["fake-upstream", "--token", "t"]) == 1
    assert "pip install 'tabpfn-gateway[server]'" in capsys.readouterr().err
