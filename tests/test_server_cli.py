"""`tabpfn-gateway serve` as users run it: no configuration, embedded SQLite, generated secret."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway_support import free_port

CLI = str(Path(sys.executable).parent / "tabpfn-gateway")


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABPFN_GATEWAY_")}
    # platformdirs puts the default data dir (database, secret) under XDG_DATA_HOME.
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    env["HOME"] = str(tmp_path / "home")
    return env


def wait_ready(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early:\n{process.communicate()[0][-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("serve did not become ready")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_serve_starts_with_no_configuration(tmp_path: Path, workers: int) -> None:
    port = free_port()
    process = subprocess.Popen(
        [CLI, "serve", "--port", str(port), "--workers", str(workers)],
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        data_dir = tmp_path / "xdg" / "tabpfn-gateway"
        assert (data_dir / "gateway.db").is_file()  # migrated SQLite in the data dir
        secret = data_dir / "secret_key"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        key_missing = httpx.get(f"{url}/tabpfn/get_settings")
        assert key_missing.status_code == 401
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=60)
    # Each serving process set what startup built aside from the garbage collector (full
    # collections under load walked it all: the 99th-percentile latency, benchmarks/gateway.py).
    assert output.count("startup heap settled") == workers, output[-3000:]
    # The loud warning says where the secret is, never what it is.
    assert "TABPFN_GATEWAY_SECRET_KEY" in output
    assert str(secret) in output
    assert secret.read_text().strip() not in output


def test_the_core_never_imports_the_server() -> None:
    code = (
        "import sys, tabpfn_gateway.gateway, tabpfn_gateway.gateway._proxy;"
        "bad = [m for m in ('fastapi', 'tabpfn_gateway_server', 'uvicorn') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
