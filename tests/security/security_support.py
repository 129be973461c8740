"""Helpers of the security suite: a gateway app over FakeTabPFN, and `serve` as operators run it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway_support import (
    Tenant,
    add_admin_key,
    add_tenant,
    asgi_client,
    build_gateway,
    free_port,
    make_settings,
)
from tabpfn_gateway import migrate
from tabpfn_gateway.gateway import Gateway
from tabpfn_gateway.store import open_store
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway_server import create_app

TOKENS = ("tok-sec-alpha-0001", "tok-sec-bravo-0002")
GATEWAY_URL = "http://gateway.test"


@dataclass
class Stack:
    """A gateway app (in process) over a FakeTabPFN, with two tenants and an admin key."""

    gateway: Gateway
    fake: FakeTabPFN
    app: Any
    http: httpx.Client
    alice: Tenant
    bob: Tenant
    admin_key: str

    @staticmethod
    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


def build_stack(
    tmp_path: Path, database_url: str, fake: FakeTabPFN | None = None, **overrides: Any
) -> Iterator[Stack]:
    settings = make_settings(tmp_path, database_url, **overrides)
    migrate.upgrade(settings)
    fake = fake if fake is not None else FakeTabPFN(tokens=TOKENS)
    gateway = build_gateway(settings, fake.app, store=open_store(settings))
    app = create_app(settings, gateway=gateway)
    try:
        with asgi_client(app, GATEWAY_URL) as http:
            yield Stack(
                gateway,
                fake,
                app,
                http,
                add_tenant(gateway, "alice", TOKENS[0]),
                add_tenant(gateway, "bob", TOKENS[1]),
                add_admin_key(gateway),
            )
    finally:
        gateway.close()
        gateway.store.close()


CLI = str(Path(sys.executable).parent / "tabpfn-gateway")


def cli_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """A clean environment for the CLI: no inherited TABPFN_GATEWAY_*, ``settings`` added."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABPFN_GATEWAY_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    env["HOME"] = str(tmp_path / "home")
    for name, value in settings.items():
        env[f"TABPFN_GATEWAY_{name.upper()}"] = value
    return env


@contextlib.contextmanager
def serve_cli(env: dict[str, str], *args: str) -> Iterator[str]:
    """``tabpfn-gateway serve`` as operators run it, on a free loopback port; its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [CLI, "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise AssertionError(f"serve exited early:\n{process.communicate()[0][-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("serve did not start")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
