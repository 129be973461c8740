"""Item 10: /metrics answers only its scraper token or an admin key, and its labels are bounded."""

from __future__ import annotations

from pathlib import Path

from security_support import Stack, build_stack
from tabpfn_gateway.gateway import UpstreamCall
from tabpfn_gateway_server.metrics import GatewayMetrics

SCRAPER = "scrape-token-7f3c9a1e5b2d4c6f8a0b"


def test_metrics_refuse_anonymous_and_inference_callers(stack: Stack) -> None:
    assert stack.http.get("/protected/", headers=stack.bearer(stack.alice.key)).status_code == 200
    anonymous = stack.http.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.json()["error_code"] == "MISSING_CREDENTIALS"
    assert stack.alice.key_id not in anonymous.text
    inference = stack.http.get("/metrics", headers=stack.bearer(stack.alice.key))
    assert inference.status_code == 403
    assert inference.json()["error_code"] == "INSUFFICIENT_SCOPE"
    forged = stack.http.get("/metrics", headers=stack.bearer("anything-at-all"))
    assert forged.status_code == 401
    admin = stack.http.get("/metrics", headers=stack.bearer(stack.admin_key))
    assert admin.status_code == 200
    assert admin.headers["content-type"].startswith("text/plain")
    assert f'key_id="{stack.alice.key_id}"' in admin.text


def test_the_metrics_token_lets_a_scraper_in(tmp_path: Path) -> None:
    for stack in build_stack(tmp_path, f"sqlite:///{tmp_path}/g.db", metrics_token=SCRAPER):
        scraped = stack.http.get("/metrics", headers=stack.bearer(SCRAPER))
        assert scraped.status_code == 200
        assert "tabpfn_gateway_http_requests_total" in scraped.text
        wrong = stack.http.get("/metrics", headers=stack.bearer(SCRAPER[:-1] + "X"))
        assert wrong.status_code == 401
        # The token opens /metrics only, nothing else.
        other = stack.http.get("/api/v1/admin/keys", headers=stack.bearer(SCRAPER))
        assert other.status_code == 401


def test_key_id_labels_are_capped() -> None:
    metrics = GatewayMetrics(max_key_ids=3)
    for n in range(50):
        metrics.observe_operation(
            UpstreamCall(operation="predict", key_id=f"key{n:04d}", status=200, seconds=0.01)
        )
    text = metrics.render().decode()
    key_ids = {
        line.split('key_id="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("tabpfn_gateway_operations_total{")
    }
    assert key_ids == {"key0000", "key0001", "key0002", "other"}
    assert (
        'tabpfn_gateway_operations_total{key_id="other",operation="predict",status="200"} 47.0'
        in text
    )
    # The latency histogram has no per-key series at all.
    assert not any(
        "key_id=" in line
        for line in text.splitlines()
        if line.startswith("tabpfn_gateway_operation_duration_seconds")
    )


def test_default_cap_bounds_a_gateway_with_many_keys() -> None:
    metrics = GatewayMetrics()
    for n in range(5000):
        metrics.observe_operation(
            UpstreamCall(operation="fit", key_id=f"k{n}", status=200, seconds=0.5)
        )
    series = [
        line
        for line in metrics.render().decode().splitlines()
        if line.startswith("tabpfn_gateway_operations_total{")
    ]
    assert len(series) <= 101
