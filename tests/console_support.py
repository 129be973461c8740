"""Helpers for the console's browser tests, screenshots and benchmark: a served console with
believable data, and Debian's headless Chromium driven by Playwright."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway_support import IN_CI, build_gateway, make_settings, serve_in_thread
from tabpfn_gateway import migrate
from tabpfn_gateway.gateway import Gateway
from tabpfn_gateway.store import open_store
from tabpfn_gateway.store.records import ApiKey, UsageEvent, new_id, utcnow
from tabpfn_gateway.testing import FakeTabPFN

CHROMIUM_ENV = "TABPFN_GATEWAY_TEST_CHROMIUM"
TOKEN = "tok-console-browser"
AXE = Path(__file__).resolve().parent / "data" / "axe-core" / "axe.min.js"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 360, "height": 740}


def chromium_or_skip() -> str:
    """Debian's chromium (``TABPFN_GATEWAY_TEST_CHROMIUM`` overrides); missing: a skip on a
    developer machine, a failure in CI (.ci/run installs it)."""
    path = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        message = f"headless Chromium not found at {path}: apt-get install chromium"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A Playwright browser on the system Chromium (never a downloaded one)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_or_skip()
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class ServedConsole:
    url: str
    gateway: Gateway
    app: Any
    admin_key: str
    fake: FakeTabPFN

    @property
    def console(self) -> str:
        return f"{self.url}/console"


@contextlib.contextmanager
def served_console(tmp_path: Path, **overrides: Any) -> Iterator[ServedConsole]:
    """The gateway with its console, served by uvicorn on a loopback port (SQLite file store,
    FakeTabPFN upstream in process), and one admin key."""
    from tabpfn_gateway_server import create_app

    fake = FakeTabPFN(tokens=[TOKEN])
    settings = make_settings(
        tmp_path, f"sqlite:///{tmp_path}/gateway.db", console_enabled=True, **overrides
    )
    migrate.upgrade(settings)
    gateway = build_gateway(settings, fake.app, store=open_store(settings))
    try:
        ops = gateway.admin.add_principal("platform", "team", actor="test")
        admin_key = gateway.keys.create(ops.id, None, "console admin", admin=True).plaintext
        app = create_app(settings, gateway=gateway)
        with serve_in_thread(app) as url:
            yield ServedConsole(url, gateway, app, admin_key, fake)
    finally:
        gateway.close()
        gateway.store.close()


def seed_usage(gateway: Gateway, *, days: int = 30, seed: int = 7) -> None:
    """Teams, users, keys and a month of usage that looks like real traffic (for screenshots
    and the benchmark)."""
    rng = random.Random(seed)
    now = utcnow()
    teams = ["data-science", "risk-models", "marketing-analytics", "research"]
    keys = []
    for name in teams:
        team = gateway.admin.add_principal(name, "team", actor="seed")
        credential = gateway.admin.add_credential(team.id, TOKEN, f"{name} TabPFN", actor="seed")
        for label in ("notebooks", "nightly batch"):
            created = gateway.keys.create(
                team.id,
                credential.id,
                f"{name} {label}",
                expires_at=now + timedelta(days=rng.randint(5, 300)),
                actor="seed",
            )
            keys.append(created.record)
    for person in ("ada", "grace", "alan"):
        gateway.admin.add_principal(person, "user", actor="seed")
    spend_budgets(gateway, keys)
    events = []
    for day in range(days):
        when = now - timedelta(days=day)
        for key in keys:
            for _ in range(rng.randint(0, 6)):
                failed = rng.random() < 0.06
                status = rng.choice([429, 503]) if failed else 200
                events.append(
                    UsageEvent(
                        id=new_id(),
                        key_id=key.key_id,
                        owner_id=key.owner_id,
                        operation=rng.choice(["fit", "predict", "predict", "get_settings"]),
                        status=status,
                        latency_ms=rng.uniform(20, 900),
                        credential_id=key.credential_id,
                        rows=rng.randint(100, 20_000),
                        columns=rng.randint(5, 60),
                        bytes=rng.randint(10_000, 5_000_000),
                        credits=None if failed else rng.randint(1, 40),
                        created_at=when - timedelta(minutes=rng.randint(0, 600)),
                        error_code=(
                            rng.choice(["RATE_LIMITED", "BUDGET_EXHAUSTED"])
                            if status == 429
                            else "UPSTREAM_UNAVAILABLE"
                            if status == 503
                            else None
                        ),
                    )
                )
    gateway.store.record_usage(events)


def spend_budgets(gateway: Gateway, keys: list[ApiKey]) -> None:
    """Budgets on two teams and one key, part spent through the policy engine (as calls
    settle them), so the overview lists budgets nearest their limit."""
    engine = gateway.policy_engine
    assert engine is not None
    admin = gateway.admin
    by_owner = {key.owner_id: key for key in keys}
    for name, budget, mode, spent in (
        ("data-science", 5000, "hard", 4300),
        ("research", 2000, "soft", 900),
    ):
        team = admin.get_principal(name)
        admin.set_policy(
            team.id,
            {"budget_credits": budget, "budget_mode": mode, "alert_thresholds": [80]},
            actor="seed",
        )
        engine.admit(by_owner[team.id], "predict", credits=spent).settle(spent)
    key = keys[2]
    admin.set_policy(
        key.key_id, {"budget_credits": 300, "budget_period": "day"}, kind="key", actor="seed"
    )
    engine.admit(key, "predict", credits=120).settle(120)
