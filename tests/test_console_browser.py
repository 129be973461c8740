"""The admin console in a real browser (Debian's headless Chromium, driven by Playwright):
end to end with the SDK, XSS, CSRF, session expiry, keyboard use, small screens, axe-core."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sklearn.datasets import load_iris

from console_support import (
    AXE,
    DESKTOP,
    PHONE,
    TOKEN,
    ServedConsole,
    chromium,
    seed_usage,
    served_console,
)
from tabpfn_gateway import GatewayClassifier
from tabpfn_gateway.errors import KeyRevoked
from tabpfn_gateway.sessions import AdminSessions
from tabpfn_gateway.store.records import Principal, new_id, utcnow

pytestmark = pytest.mark.slow

XSS = "<script>alert(1)</script>"
SCREENSHOTS_ENV = "TABPFN_GATEWAY_CONSOLE_SCREENSHOTS"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedConsole]:
    with served_console(tmp_path) as console:
        yield console


def sign_in(page: Any, served: ServedConsole) -> None:
    page.goto(f"{served.console}/")
    assert page.url.endswith("/console/sign-in")
    page.get_by_label("Admin key").fill(served.admin_key)
    page.get_by_label("Admin key").press("Enter")
    page.wait_for_url(f"{served.console}/")


def watch(page: Any) -> dict[str, list[str]]:
    """Collect what must never happen on a console page: dialogs nobody asked for, CSP
    violations and script errors."""
    seen: dict[str, list[str]] = {"dialogs": [], "errors": []}

    def on_dialog(dialog: Any) -> None:
        seen["dialogs"].append(dialog.message)
        # The console's own confirmations are accepted; anything else is recorded.
        dialog.accept()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.on(
        "console",
        lambda message: seen["errors"].append(message.text) if message.type == "error" else None,
    )
    return seen


def test_end_to_end_sign_in_team_key_sdk_chart_revoke(browser: Any, served: ServedConsole) -> None:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    seen = watch(page)
    sign_in(page, served)

    # A team, its TabPFN token (checked with the upstream), and a key.
    page.get_by_role("link", name="Teams & users").click()
    page.get_by_label("Name").fill("data-science")
    page.get_by_label("Kind").select_option("team")
    page.get_by_role("button", name="Add").click()
    page.wait_for_url(re.compile(r".*/console/principals/[0-9a-f]{32}\?notice=principal-added"))
    assert page.get_by_role("heading", level=1).inner_text().endswith("data-science")
    page.get_by_label("Token label").fill("ds TabPFN account")
    page.get_by_label("TabPFN token").fill(TOKEN)
    page.get_by_role("button", name="Store token").click()
    page.wait_for_url(re.compile(r".*notice=credential-added"))
    expect(page.locator("#credentials").get_by_text("ds TabPFN account")).to_be_visible()
    assert TOKEN not in page.content()
    page.locator("#key-name").fill("notebook of ada")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").input_value()
    assert key.startswith("tpg_")
    # console.js ran under the CSP: the copy button is shown, and copying works.
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy").click()
    expect(page.locator(".copied")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == key

    # The key works through the SDK against the same server.
    features, target = load_iris(return_X_y=True)
    classifier = GatewayClassifier(base_url=served.url, api_key=key, progress=False)
    classifier.fit(features, target)
    assert classifier.predict(features[:10]).shape == (10,)

    # Its calls appear on the overview chart and in the team's totals.
    page.get_by_role("link", name="Overview").click()
    today = utcnow().date().isoformat()
    bar = page.locator(f'g.day[data-day="{today}"]')
    assert int(bar.get_attribute("data-calls") or 0) >= 2
    assert bar.locator("rect.bar").count() == 1
    row = page.locator("#per-principal tr", has_text="data-science")
    assert int(row.locator("td").nth(3).inner_text().replace(",", "")) >= 2

    # Revoked in the console (confirming the dialog), refused to the SDK at once.
    page.get_by_role("link", name="Keys").click()
    page.get_by_role("button", name="Revoke key notebook of ada").click()
    page.wait_for_url(re.compile(r".*notice=key-revoked"))
    assert page.locator("tr", has_text="notebook of ada").locator(".state").inner_text() == (
        "revoked"
    )
    assert seen["dialogs"] == ["Revoke key notebook of ada for good?"]
    with pytest.raises(KeyRevoked):
        GatewayClassifier(base_url=served.url, api_key=key, progress=False).fit(features, target)
    assert seen["errors"] == []
    context.close()


@pytest.mark.parametrize("bypass_csp", [False, True])
def test_a_script_in_a_name_renders_as_text(
    browser: Any, served: ServedConsole, bypass_csp: bool
) -> None:
    # With the CSP bypassed, only escaping stands between the name and the page.
    gateway = served.gateway
    team = gateway.store.add_principal(Principal(id=new_id(), name=XSS, kind="team"))
    credential = gateway.admin.add_credential(team.id, TOKEN, "<img src=x onerror=alert(2)>")
    gateway.keys.create(team.id, credential.id, XSS, actor="test")
    context = browser.new_context(viewport=DESKTOP, bypass_csp=bypass_csp)
    page = context.new_page()
    seen = watch(page)
    sign_in(page, served)
    for path in ("/principals", f"/principals/{team.id}", "/keys", "/audit"):
        page.goto(served.console + path)
        assert page.locator("main td, main h1", has_text=XSS).first.is_visible(), path
    assert page.locator("script:not([src])").count() == 0
    page.goto(f"{served.console}/principals/{team.id}")
    assert page.get_by_role("cell", name="<img src=x onerror=alert(2)>", exact=True).is_visible()
    assert page.locator("img").count() == 0
    assert seen["dialogs"] == []
    context.close()


def test_a_form_on_another_site_cannot_change_anything(browser: Any, served: ServedConsole) -> None:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    sign_in(page, served)
    page.set_content(
        f'<form method="post" action="{served.console}/principals">'
        '<input name="name" value="forged-team"><input name="kind" value="team">'
        '<button type="submit">go</button></form>'
    )
    with page.expect_navigation():
        page.get_by_role("button", name="go").click()
    assert served.gateway.store.get_principal_by_name("forged-team") is None
    # Either the cookie stayed home (SameSite=Strict: sign-in page) or the token was missing.
    text = page.content()
    assert "CSRF_FAILED" in text or "Sign in" in text
    # The real session is untouched.
    page.goto(f"{served.console}/principals")
    assert page.get_by_role("heading", level=1).inner_text() == "Teams & users"
    context.close()


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def test_an_idle_session_sends_the_browser_back_to_sign_in(
    browser: Any, served: ServedConsole
) -> None:
    clock = Clock()
    gateway = served.gateway
    served.app.state.console.sessions = AdminSessions(
        gateway.store,
        gateway.keys,
        idle=timedelta(minutes=30),
        lifetime=timedelta(hours=12),
        clock=clock,
    )
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    sign_in(page, served)
    clock.now += timedelta(minutes=31)
    page.get_by_role("link", name="Keys").click()
    page.wait_for_url(re.compile(r".*/console/sign-in\?ended=idle"))
    assert page.get_by_role("status").first.inner_text().startswith("Your session ended")
    assert context.cookies(served.console) == [
        c for c in context.cookies(served.console) if c["name"] != "tpg_console"
    ]
    context.close()


def test_keyboard_alone_signs_in_and_reaches_every_page(
    browser: Any, served: ServedConsole
) -> None:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(f"{served.console}/")
    # The key field has focus on arrival: type and press Enter.
    assert page.evaluate("document.activeElement.id") == "admin_key"
    page.keyboard.type(served.admin_key)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{served.console}/")
    # The first Tab reaches the skip link, which moves focus to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    visited = []
    for name in ("Teams & users", "Keys", "Usage", "Audit log", "Overview"):
        page.get_by_role("link", name=name, exact=True).focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        visited.append(page.get_by_role("heading", level=1).inner_text())
    assert visited == ["Teams & users", "Keys", "Usage", "Audit log", "Overview"]
    # Every control has a label an assistive technology can read.
    for path in ("/principals", "/keys", "/usage", "/audit"):
        page.goto(served.console + path)
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, button')]
                .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                              && !el.textContent.trim())
                .map(el => el.outerHTML)"""
        )
        assert unlabelled == [], path
    context.close()


def console_paths(served: ServedConsole) -> list[str]:
    team = served.gateway.admin.get_principal("data-science")
    key = served.gateway.admin.list_keys(owner=team.id).items[0]
    return [
        "/",
        "/principals",
        f"/principals/{team.id}",
        "/keys",
        f"/keys/{key.key_id}",
        "/usage",
        "/audit",
    ]


def test_axe_finds_no_serious_violations_and_phones_need_no_sideways_scroll(
    browser: Any, served: ServedConsole
) -> None:
    seed_usage(served.gateway, days=30)
    axe = AXE.read_text(encoding="utf-8")
    assert axe.startswith("/*! axe v4.14.1")
    for viewport in (DESKTOP, PHONE):
        # axe is injected as a script, which the console's CSP rightly refuses: bypass it here.
        context = browser.new_context(viewport=viewport, bypass_csp=True)
        page = context.new_page()
        sign_in(page, served)
        for path in [*console_paths(served), "/sign-in"]:
            if path == "/sign-in":
                context.clear_cookies()
            page.goto(served.console + path)
            if path == "/":
                # The budgets nearest their limit are on the page axe scans (meters and all).
                assert page.locator("#budgets meter").count() == 3
            page.add_script_tag(content=axe)
            results = page.evaluate("() => axe.run(document)")
            serious = [
                f"{v['id']} ({v['impact']}): {[n['html'] for n in v['nodes'][:3]]}"
                for v in results["violations"]
                if v["impact"] in ("serious", "critical")
            ]
            assert serious == [], f"{path} at {viewport['width']} px"
            assert len(results["passes"]) > 10
            if viewport is PHONE:
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= PHONE["width"], f"{path} scrolls sideways at 360 px"
        context.close()


def test_screenshots_of_every_page_at_desktop_and_phone_widths(
    browser: Any, served: ServedConsole, tmp_path: Path
) -> None:
    """Saved for review (``nox -s console_screenshots``), not compared pixel by pixel."""
    target = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    seed_usage(served.gateway, days=30)
    names = ["overview", "principals", "principal", "keys", "key", "usage", "audit"]
    saved = []
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        page.goto(f"{served.console}/sign-in")
        sign_in_shot = target / f"sign-in-{label}.png"
        page.screenshot(path=str(sign_in_shot), full_page=True)
        saved.append(sign_in_shot)
        sign_in(page, served)
        for name, path in zip(names, console_paths(served), strict=True):
            page.goto(served.console + path)
            shot = target / f"{name}-{label}.png"
            page.screenshot(path=str(shot), full_page=True)
            saved.append(shot)
        context.close()
    for shot in saved:
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width = int.from_bytes(data[16:20], "big")
        assert width in (DESKTOP["width"], PHONE["width"]), shot.name
