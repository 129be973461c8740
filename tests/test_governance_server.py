"""Governance through the server, end to end: 429s with their headers, typed SDK errors,
allowlists, the admin API for policies and teams, usage reports (JSON and CSV), a key's own
summary and get_usage(), prune, the signed webhook against a local receiver, metrics."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway_support import Tenant, serve_in_thread
from governance_support import (
    BASE_URL,
    Replica,
    admin_key,
    concurrent_predictions,
    fit_once,
    replicas,
    tenant,
)
from tabpfn_gateway.errors import BudgetExhausted, IpNotAllowed, RateLimited
from tabpfn_gateway.governance import SIGNATURE_HEADER
from tabpfn_gateway.protocol.messages import ClassifierConfig
from tabpfn_gateway.testing.transport import ASGIBridgeTransport


class Stack:
    def __init__(self, replica: Replica, admin: str, ann: Tenant) -> None:
        self.replica = replica
        self.gateway = replica.gateway
        self.admin_headers = {"Authorization": f"Bearer {admin}"}
        self.ann = ann
        self.transport = ASGIBridgeTransport(replica.app, client=("10.1.2.3", 5555))
        self.http = httpx.Client(transport=self.transport, base_url=BASE_URL, timeout=60)

    def user(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.ann.key}"}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with replicas(tmp_path, f"sqlite:///{tmp_path}/gateway.db") as (_, apps):
        built = Stack(apps[0], admin_key(apps[0]), tenant(apps[0]))
        try:
            yield built
        finally:
            built.http.close()
            built.transport.close()


def put_policy(stack: Stack, kind: str, target: str, body: dict[str, Any]) -> dict[str, Any]:
    response = stack.http.put(
        f"/api/v1/admin/policies/{kind}/{target}", json=body, headers=stack.admin_headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_rate_limited_answers_429_with_ietf_headers(stack: Stack) -> None:
    put_policy(stack, "keys", stack.ann.key_id, {"requests_per_minute": 2})
    first = stack.http.get("/protected/", headers=stack.user())
    assert first.status_code == 200
    assert first.headers["RateLimit-Policy"] == '"key-minute";q=2;w=60'
    assert first.headers["RateLimit"].startswith('"key-minute";r=1;t=')
    assert stack.http.get("/protected/", headers=stack.user()).status_code == 200
    refused = stack.http.get("/protected/", headers=stack.user())
    assert refused.status_code == 429
    body = refused.json()
    assert body["error_code"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Policy"] == '"key-minute";q=2;w=60'
    assert refused.headers["RateLimit"].startswith('"key-minute";r=0;t=')
    metrics = stack.http.get("/metrics", headers=stack.admin_headers).text
    assert 'tabpfn_gateway_policy_refusals_total{error_code="RATE_LIMITED"} 1.0' in metrics


def test_the_sdk_raises_a_typed_error_with_retry_after(stack: Stack) -> None:
    put_policy(stack, "principals", "ann", {"requests_per_hour": 1})
    client = stack.replica.client(stack.ann.key)
    # Hourly windows are aligned to the clock: both calls must fall in the same hour, and
    # Retry-After is the time left in it (CI once ran this at 23:59:33 and waited 27 s).
    if 3600 - time.time() % 3600 < 5:
        time.sleep(6)
    client.check_token()
    left_in_hour = 3600 - time.time() % 3600
    with pytest.raises(RateLimited) as refused:
        client.check_token()
    assert refused.value.retry_after is not None
    assert 1 <= refused.value.retry_after <= math.ceil(left_in_hour) + 1
    assert refused.value.retry_after >= math.floor(left_in_hour) - 5
    assert refused.value.error_code == "RATE_LIMITED"


def test_budget_exhausted_through_the_sdk(stack: Stack) -> None:
    # A rolling window: a calendar day's reset at midnight cannot fall between the calls.
    put_policy(
        stack,
        "keys",
        stack.ann.key_id,
        {"budget_credits": 30, "budget_period": "day", "budget_window": "rolling"},
    )
    client = stack.replica.client(stack.ann.key)
    fit_id = fit_once(stack.replica.client(stack.ann.key))
    client.predict(fit_id, np.ones((5, 4)), ClassifierConfig())  # 20 credits
    with pytest.raises(BudgetExhausted) as refused:
        client.predict(fit_id, np.zeros((5, 4)), ClassifierConfig())  # 20 more: refused
    assert refused.value.retry_after is not None
    assert refused.value.retry_after >= 1
    summary = stack.http.get("/api/v1/usage/summary", headers=stack.user()).json()
    assert summary["credits"] == 20
    [budget] = summary["budgets"]
    assert (budget["level"], budget["spent"], budget["remaining"]) == ("key", 20, 10)


def test_budget_used_ratio_per_budget_in_metrics(stack: Stack) -> None:
    put_policy(stack, "keys", stack.ann.key_id, {"budget_credits": 80, "budget_period": "day"})
    team = stack.gateway.admin.add_principal("data-team", "team", actor="test")
    put_policy(stack, "principals", "data-team", {"budget_credits": 1000})
    put_policy(
        stack, "principals", "ann", {"budget_credits": 5, "budget_unit": "calls"}
    )  # counted in calls, on counters of their own
    fit_id = fit_once(stack.replica.client(stack.ann.key))
    client = stack.replica.client(stack.ann.key)
    client.predict(fit_id, np.ones((5, 4)), ClassifierConfig())  # 20 credits of 80
    metrics = stack.http.get("/metrics", headers=stack.admin_headers).text
    ratio = "tabpfn_gateway_budget_used_ratio"
    assert f'{ratio}{{level="key",target="{stack.ann.key_id}"}} 0.25' in metrics
    assert f'{ratio}{{level="team",target="{team.id}"}} 0.0' in metrics
    assert f'{ratio}{{level="user",target="{stack.ann.principal_id}"}} 0.2' in metrics
    assert metrics.count(f"{ratio}{{") == 3
    # Bounded: only the most used budgets, most used first.
    engine = stack.gateway.policy_engine
    assert engine is not None
    [most_used] = engine.budget_usage(1)
    assert (most_used.level, most_used.target_id, most_used.spent) == ("key", stack.ann.key_id, 20)


def test_allowlist_refuses_other_networks_and_trusts_only_configured_proxies(
    stack: Stack,
) -> None:
    put_policy(stack, "keys", stack.ann.key_id, {"allowed_cidrs": ["10.1.0.0/16"]})
    assert stack.http.get("/protected/", headers=stack.user()).status_code == 200  # 10.1.2.3
    outside = ASGIBridgeTransport(stack.replica.app, client=("192.0.2.7", 1))
    try:
        with httpx.Client(transport=outside, base_url=BASE_URL) as other:
            refused = other.get("/protected/", headers=stack.user())
            assert refused.status_code == 403
            assert refused.json()["error_code"] == "IP_NOT_ALLOWED"
            # No trusted proxies: a forged X-Forwarded-For changes nothing.
            forged = other.get(
                "/protected/", headers={**stack.user(), "X-Forwarded-For": "10.1.9.9"}
            )
            assert forged.status_code == 403
    finally:
        outside.close()
    with pytest.raises(IpNotAllowed):
        stack.replica.client(stack.ann.key, address="172.16.0.1").check_token()


def test_policies_and_teams_through_the_admin_api(stack: Stack) -> None:
    h = stack.admin_headers
    assert (
        stack.http.post(
            "/api/v1/admin/principals", json={"name": "ml-team", "kind": "team"}, headers=h
        ).status_code
        == 201
    )
    added = stack.http.post("/api/v1/admin/teams/ml-team/members", json={"user": "ann"}, headers=h)
    assert added.status_code == 201
    again = stack.http.post("/api/v1/admin/teams/ml-team/members", json={"user": "ann"}, headers=h)
    assert again.status_code == 409
    members = stack.http.get("/api/v1/admin/teams/ml-team/members", headers=h).json()
    assert [m["user_id"] for m in members] == [stack.ann.principal_id]
    put_policy(stack, "principals", "ml-team", {"requests_per_minute": 7, "budget_credits": 100})
    put_policy(stack, "keys", stack.ann.key_id, {"requests_per_minute": 50})
    effective = stack.http.get(
        f"/api/v1/admin/keys/{stack.ann.key_id}/effective-policy", headers=h
    ).json()
    assert effective["requests_per_minute"] == 7
    assert [s["level"] for s in effective["sources"]] == ["key", "team"]
    bad = stack.http.put(
        "/api/v1/admin/policies/principals/ann", json={"allowed_cidrs": ["x"]}, headers=h
    )
    assert bad.status_code == 400
    assert bad.json()["error_code"] == "INVALID_REQUEST"
    assert stack.http.get("/api/v1/admin/policies", headers=h).json()[0]["target_type"]
    assert (
        stack.http.delete("/api/v1/admin/policies/principals/ml-team", headers=h).status_code == 204
    )
    assert stack.http.get("/api/v1/admin/policies/principals/ml-team", headers=h).status_code == 404
    removed = stack.http.delete(
        f"/api/v1/admin/teams/ml-team/members/{stack.ann.principal_id}", headers=h
    )
    assert removed.status_code == 204
    refused = stack.http.put(
        "/api/v1/admin/policies/principals/ann", json={"budget_credits": 1}, headers=stack.user()
    )
    assert refused.status_code == 403


def test_usage_report_json_and_csv_and_get_usage(stack: Stack) -> None:
    import tabpfn_gateway

    h = stack.admin_headers
    stack.gateway.admin.add_principal("ml-team", "team")
    stack.gateway.admin.add_member("ml-team", "ann")
    fit_id = fit_once(stack.replica.client(stack.ann.key))
    successes, _ = concurrent_predictions([stack.replica.client(stack.ann.key)] * 1, fit_id)
    assert successes == 1
    report = stack.http.get(
        "/api/v1/admin/usage/report", params={"by": "team,operation"}, headers=h
    ).json()
    predict = [r for r in report["rows"] if r["group"]["operation"] == "predict"]
    assert len(predict) == 1
    assert predict[0]["group"] == {"team": "ml-team", "operation": "predict"}
    assert (predict[0]["calls"], predict[0]["credits"], predict[0]["rows"]) == (1, 20, 5)
    assert report["total"]["credits"] == 20
    as_csv = stack.http.get(
        "/api/v1/admin/usage/report", params={"by": "principal,day", "format": "csv"}, headers=h
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert rows[0]["principal"] == "ann"
    assert rows[0]["day"] == datetime.now(UTC).date().isoformat()
    assert sum(int(r["credits"]) for r in rows) == 20
    bad = stack.http.get("/api/v1/admin/usage/report", params={"by": "colour"}, headers=h)
    assert bad.status_code == 400
    usage = tabpfn_gateway.get_usage(BASE_URL, stack.ann.key, transport=stack.transport)
    assert usage["credits"] == 20
    assert {op["operation"] for op in usage["operations"]} >= {"fit", "predict"}


def test_prune_keeps_the_report_the_same(stack: Stack) -> None:
    h = stack.admin_headers
    stack.http.get("/protected/", headers=stack.user())
    before = stack.http.get("/api/v1/admin/usage/report", params={"by": "key"}, headers=h).json()
    # Backdate the events, as if they were two years old.
    from tabpfn_gateway.store import schema

    store: Any = stack.gateway.store
    stack.gateway.usage.flush()
    with store.engine.begin() as connection:
        connection.execute(
            schema.usage_events.update().values(created_at=datetime.now(UTC) - timedelta(days=800))
        )
    pruned = stack.http.post("/api/v1/admin/prune", json={"older_than_days": 400}, headers=h)
    assert pruned.status_code == 200
    assert pruned.json()["usage_events"] >= 1
    after = stack.http.get("/api/v1/admin/usage/report", params={"by": "key"}, headers=h).json()
    assert after["rows"] == before["rows"]
    audit = stack.gateway.admin.list_audit(action="db.prune").items
    assert len(audit) == 1
    too_soon = stack.http.post("/api/v1/admin/prune", json={"older_than_days": 0.5}, headers=h)
    assert too_soon.status_code == 422


class Receiver:
    """A local webhook receiver: fails the first ``failures`` deliveries with 500."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.attempts = 0
        self.done = threading.Event()

        async def hook(request: Request) -> Response:
            self.attempts += 1
            body = await request.body()
            if self.attempts <= self.failures:
                return Response(status_code=500)
            self.received.append((dict(request.headers), body))
            self.done.set()
            return Response(status_code=204)

        self.app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])


def test_budget_alert_webhook_is_signed_and_retried(tmp_path: Path) -> None:
    receiver = Receiver(failures=2)
    with serve_in_thread(receiver.app) as receiver_url:
        overrides = {
            "budget_webhook_url": f"{receiver_url}/hook",
            "budget_webhook_secret": "whsec-test-0123",
            "budget_webhook_backoff_seconds": 0.05,
        }
        with replicas(tmp_path, f"sqlite:///{tmp_path}/g.db", **overrides) as (_, apps):
            ann = tenant(apps[0])
            apps[0].gateway.admin.set_policy(
                ann.key_id, {"budget_credits": 40, "alert_thresholds": [50]}, kind="key"
            )
            fit_id = fit_once(apps[0].client(ann.key))
            concurrent_predictions([apps[0].client(ann.key)], fit_id)  # 20 of 40: 50%
            assert receiver.done.wait(30)
            key = admin_key(apps[0])
            with httpx.Client(transport=apps[0].transport(), base_url=BASE_URL) as http:
                metrics = http.get("/metrics", headers={"Authorization": f"Bearer {key}"}).text
            assert 'tabpfn_gateway_budget_alerts_total{threshold="50"} 1.0' in metrics
    assert receiver.attempts == 3  # two failures, then delivered
    [(headers, body)] = receiver.received
    timestamp = headers["x-tabpfn-gateway-timestamp"]
    expected = hmac.new(b"whsec-test-0123", timestamp.encode() + b"." + body, hashlib.sha256)
    assert headers[SIGNATURE_HEADER.lower()] == "sha256=" + expected.hexdigest()
    alert = json.loads(body)
    assert (alert["event"], alert["threshold"], alert["spent"], alert["budget"]) == (
        "budget.threshold",
        50,
        20,
        40,
    )
    assert alert["subject_id"] == ann.key_id
    assert alert["unit"] == "credits"  # what spent and budget count
