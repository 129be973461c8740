"""deploy/: the Prometheus rules pass promtool's check and unit tests, and the rules and the
Grafana dashboard only name metrics (and labels) the server really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tabpfn_gateway.config import Settings
from tabpfn_gateway_server import create_app

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "tabpfn-gateway.json"

# Spend governance (issue 12) adds these; the rules and the dashboard are ready for them.
GOVERNANCE_METRICS = {
    "tabpfn_gateway_budget_alerts_total": {"threshold"},
    "tabpfn_gateway_policy_refusals_total": {"error_code"},
}
# Labels Prometheus itself adds at scrape time, and the histogram bucket label.
SCRAPE_LABELS = {"job", "instance"}

METRIC = re.compile(r"\b(tabpfn_gateway_[a-z_]+|up)\b(?:\{([^}]*)\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: apt-get install prometheus (.ci/run does it in CI)"
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


def exported_series() -> dict[str, set[str]]:
    """Every series name the app's registry can export, with its label names."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url="memory://", secret_key="alerts-test-secret-0123456789abcdef"
    )
    app = create_app(settings, migrate=False)
    names: dict[str, set[str]] = {}
    for family in app.state.metrics.registry.collect():
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels)
        # Labelled families have no samples until first use: read the declared label names.
        collector = app.state.metrics.registry._names_to_collectors.get(family.name)
        labels |= set(getattr(collector, "_labelnames", ()))
        if family.type == "counter":
            names[family.name + "_total"] = labels
        elif family.type == "histogram":
            names[family.name + "_bucket"] = labels | {"le"}
            names[family.name + "_sum"] = labels
            names[family.name + "_count"] = labels
        else:
            names[family.name] = labels
    return names


def referenced(expressions: list[str]) -> list[tuple[str, set[str]]]:
    found = []
    for expr in expressions:
        for name, matchers in METRIC.findall(expr):
            found.append((name, set(MATCHER.findall(matchers))))
    return found


def alert_rules() -> list[dict[str, object]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def test_promtool_checks_the_rules() -> None:
    result = run_promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("threshold", "moved", "alert"),
    [
        ("> 0.05", "> 0.5", "TabpfnGatewayHighErrorRate"),
        ("ratio) >= 0.9", "ratio) >= 0.99", "TabpfnGatewayBudgetNearlyExhausted"),
    ],
)
def test_promtool_unit_tests_can_fail(
    tmp_path: Path, threshold: str, moved: str, alert: str
) -> None:
    # The same tests against rules whose thresholds moved must fail: they assert something.
    rules = (PROMETHEUS / "alerts.yml").read_text(encoding="utf-8")
    assert rules.count(threshold) == 1
    rules = rules.replace(threshold, moved)
    (tmp_path / "alerts.yml").write_text(rules, encoding="utf-8")
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path / "alerts_test.yml")
    result = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert alert in result.stdout + result.stderr


def test_every_alert_is_unit_tested_and_labelled() -> None:
    tests = (PROMETHEUS / "alerts_test.yml").read_text(encoding="utf-8")
    for rule in alert_rules():
        assert f"alertname: {rule['alert']}" in tests, rule["alert"]
        labels = rule["labels"]
        assert isinstance(labels, dict)
        assert labels["severity"] in {"critical", "warning", "info"}
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert annotations["runbook"] == f"docs/operations.md#{str(rule['alert']).lower()}"


# What issue 14 asks the rules to cover, each with the series its alert must read.
MUST_ALERT_ON = {
    "TabpfnGatewayHighErrorRate": "tabpfn_gateway_http_requests_total",
    "TabpfnGatewayUpstreamFailures": "tabpfn_gateway_operations_total",
    "TabpfnGatewayHighLatencyP99": "tabpfn_gateway_http_request_duration_seconds_bucket",
    "TabpfnGatewayDatabaseUnavailable": "tabpfn_gateway_errors_total",
    "TabpfnGatewayUsageNotWritten": "tabpfn_gateway_usage_events_written_total",
    "TabpfnGatewayBudgetNearlyExhausted": "tabpfn_gateway_budget_used_ratio",
}


def test_the_rules_cover_what_an_operator_must_act_on() -> None:
    rules = {str(rule["alert"]): str(rule["expr"]) for rule in alert_rules()}
    for alert, series in MUST_ALERT_ON.items():
        assert alert in rules, alert
        assert series in {name for name, _ in referenced([rules[alert]])}, alert
    assert "histogram_quantile(0.99," in rules["TabpfnGatewayHighLatencyP99"]
    assert "STORE_UNAVAILABLE" in rules["TabpfnGatewayDatabaseUnavailable"]


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_expressions_name_only_exported_metrics_and_labels(source: str) -> None:
    if source == "alerts":
        exprs = [str(rule["expr"]) for rule in alert_rules()]
    else:
        exprs = dashboard_expressions()
    known = exported_series() | GOVERNANCE_METRICS | {"up": set()}
    refs = referenced(exprs)
    assert refs, "no metric found in the expressions"
    for name, labels in refs:
        assert name in known, f"{source} names {name}, which the server does not export"
        unknown = labels - known[name] - SCRAPE_LABELS
        assert not unknown, f"{source}: {name} has no label(s) {sorted(unknown)}"


def test_the_dashboard_is_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "tabpfn-gateway"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    # Every exported family appears on the dashboard (a new metric gets a panel).
    shown = {name for name, _ in referenced(dashboard_expressions())}
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in exported_series()}
    for family in families:
        assert any(name.startswith(family) for name in shown), f"{family} has no panel"
