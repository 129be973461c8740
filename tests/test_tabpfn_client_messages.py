"""What the unmodified tabpfn-client 0.6 shows a user when the gateway refuses a call.

tabpfn-client checks its token once, at its first call, with ``GET /protected/``: there it
reads no body (200 valid, 403 "email not verified", anything else "Your TabPFN access token
was rejected..."). Every later call shows the answer's ``message`` as
``Fail to call <method>: [HTTP <status>] <message>``. So the gateway's reason reaches the
user whenever the refusal comes after that first check: a key revoked, disabled or expired
mid-session, a key without the inference scope (it passes /protected/), budgets, rate limits
and the upstream's usage limit. docs/server.md has the table; these tests pin each row.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tabpfn_gateway.errors import (
    BudgetExhausted,
    GatewayError,
    InsufficientScope,
    KeyDisabled,
    KeyExpired,
    KeyRevoked,
    RateLimited,
    UsageLimitReached,
)
from tabpfn_gateway.testing import FakeTabPFN, local_gateway
from tabpfn_gateway.testing.fake_server import serve_in_thread
from tabpfn_gateway.testing.local import LOCAL_TABPFN_TOKEN, LocalGateway

# The vendor's own response handling, fed the gateway's real answers (status and body).
DISPLAY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import httpx
    from tabpfn_client.client import ServiceClient
    from tabpfn_client.api_models import GetSettingsResponse

    shown = []
    for status, body in json.loads(sys.stdin.read()):
        response = httpx.Response(status, json=body)
        try:
            ServiceClient._validate_response(response, "fit", GetSettingsResponse)
        except Exception as exc:
            shown.append(f"{type(exc).__name__}: {exc}")
        else:
            shown.append("no error")
    print(json.dumps(shown))
    """
)

# tabpfn-client end to end: a first fit (which runs its token check), then, after the test's
# admin call between the two, a second fit. Prints what each fit showed.
VENDOR_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import httpx
    from sklearn.datasets import load_iris
    X, y = load_iris(return_X_y=True)
    shown = []
    from tabpfn_client import TabPFNClassifier
    for step in ("first", "second"):
        if step == "second" and len(sys.argv) > 1:
            admin_url, admin_key = sys.argv[1], sys.argv[2]
            auth = {"Authorization": f"Bearer {admin_key}"}
            httpx.post(admin_url, headers=auth).raise_for_status()
        try:
            TabPFNClassifier(n_estimators=1).fit(X, y)
            shown.append("ok")
        except Exception as exc:
            shown.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps(shown))
    """
)


def _python(script: str, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


CASES: list[GatewayError] = [
    KeyRevoked("This gateway key was revoked (by the ops team)."),
    KeyDisabled("This gateway key is disabled; ask your platform team."),
    KeyExpired("This gateway key expired on 2026-01-01."),
    InsufficientScope("This key lacks the 'inference' scope."),
    BudgetExhausted("The team's monthly budget of 500 credits is used up."),
    RateLimited("Rate limit of 60 requests per minute reached; retry in 12 s."),
    UsageLimitReached("The usage limit of this TabPFN account is reached."),
]


def test_every_refusal_after_the_first_check_shows_the_gateways_message() -> None:
    from tabpfn_gateway_server.errors import error_response

    answers = []
    for error in CASES:
        response = error_response(error, "0b3e1c3e-8f4d-4a8f-9d7a-0c7c8a3e2b11")
        answers.append((response.status_code, json.loads(bytes(response.body))))
    shown = _python(DISPLAY_SCRIPT, stdin=json.dumps(answers))
    for error, (status, _), text in zip(CASES, answers, shown, strict=True):
        assert text == (
            f"RuntimeError: Fail to call fit: [HTTP {status}] {error.message}. "
            "Report trace ID: 0b3e1c3e-8f4d-4a8f-9d7a-0c7c8a3e2b11."
        ), error.error_code


@dataclass
class Served:
    url: str
    local: LocalGateway
    admin_key: str


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    from tabpfn_gateway_server.app import create_app

    with local_gateway(fake=FakeTabPFN(tokens=[LOCAL_TABPFN_TOKEN])) as local:
        gateway = local.gateway
        ops = gateway.admin.add_principal("ops", "team", actor="test")
        admin_key = gateway.keys.create(ops.id, None, "ops-admin", admin=True).plaintext
        app = create_app(gateway.settings, gateway=gateway)
        with serve_in_thread(app) as url:
            yield Served(url, local, admin_key)


def _vendor(served: Served, key: str, tmp_path: Path, *admin_call: str) -> list[str]:
    env = {"TABPFN_CLIENT_API_URL": served.url, "TABPFN_TOKEN": key, "HOME": str(tmp_path)}
    shown: list[str] = _python(VENDOR_SCRIPT, *admin_call, env=env)
    return shown


def _new_key(served: Served, name: str, **extra: Any) -> tuple[str, str]:
    gateway = served.local.gateway
    record = gateway.keys.verify(served.local.api_key.get_secret_value())
    created = gateway.keys.create(
        record.owner_id, record.credential_id, name, actor="test", **extra
    )
    return created.record.key_id, created.plaintext


@pytest.mark.parametrize(("action", "error"), [("revoke", KeyRevoked), ("disable", KeyDisabled)])
def test_a_key_refused_mid_session_shows_the_gateways_reason(
    served: Served, tmp_path: Path, action: str, error: type[GatewayError]
) -> None:
    key_id, key = _new_key(served, f"to-{action}")
    admin_call = (f"{served.url}/api/v1/admin/keys/{key_id}/{action}", served.admin_key)
    first, second = _vendor(served, key, tmp_path, *admin_call)
    assert first == "ok"
    assert second.startswith("RuntimeError: Fail to call ")
    assert "[HTTP 401]" in second
    assert error.error_code.split("_")[1].lower() in second.lower()
    assert "rejected by the server" not in second
    assert key not in second


def test_a_key_without_the_inference_scope_shows_the_gateways_reason(
    served: Served, tmp_path: Path
) -> None:
    _, key = _new_key(served, "usage-only", scopes=("usage",))
    first, _ = _vendor(served, key, tmp_path)
    assert first.startswith("RuntimeError: Fail to call ")
    assert "[HTTP 403]" in first
    assert "scope" in first


def test_a_key_refused_at_the_first_check_shows_the_clients_fixed_text(
    served: Served, tmp_path: Path
) -> None:
    # tabpfn-client reads no body from /protected/: this is the one place it cannot show ours.
    key_id, key = _new_key(served, "revoked-before")
    served.local.gateway.keys.revoke(key_id, actor="test")
    first, _ = _vendor(served, key, tmp_path)
    assert "rejected by the server" in first
