"""Governance from the shell, in process on a SQLite file: policies, teams, usage reports
(table, JSON, CSV) and `db prune`."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tabpfn_gateway.cli import main
from tabpfn_gateway.config import Settings
from tabpfn_gateway.store import UsageEvent, new_id, open_store


class Shell:
    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.capsys = capsys
        self.monkeypatch = monkeypatch

    def run(self, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            self.monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str, stdin: str | None = None) -> str:
        code, out, err = self.run(*argv, stdin=stdin)
        assert code == 0, err
        return out

    def json(self, *argv: str, stdin: str | None = None) -> Any:
        return json.loads(self.ok(*argv, "--json", stdin=stdin))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("TABPFN_GATEWAY_DATABASE_URL", f"sqlite:///{tmp_path}/gateway.db")
    monkeypatch.setenv("TABPFN_GATEWAY_DATA_DIR", str(tmp_path / "data"))
    for name in ("SECRET_KEY", "PREVIOUS_SECRET_KEYS", "KEY_PEPPER", "REDIS_URL"):
        monkeypatch.delenv(f"TABPFN_GATEWAY_{name}", raising=False)
    return Settings()


@pytest.fixture
def shell(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Shell:
    sh = Shell(capsys, monkeypatch)
    sh.ok("db", "upgrade")
    sh.ok("principals", "add", "alice")
    sh.ok("principals", "add", "ml", "--kind", "team")
    sh.json(
        "credentials", "add", "--owner", "alice", "--label", "main", "--token-stdin",
        "--no-verify", stdin="tabpfn-token-cli-gov\n",
    )  # fmt: skip
    return sh


def _key(shell: Shell) -> str:
    created = shell.json("keys", "create", "--owner", "alice", "--name", "laptop")
    return str(created["key_id"])


def test_policies_and_teams(shell: Shell) -> None:
    key_id = _key(shell)
    member = shell.json("teams", "add-member", "ml", "alice")
    assert (member["team"], member["user"]) == ("ml", "alice")
    code, _, err = shell.run("teams", "add-member", "ml", "alice")
    assert code == 1
    assert "CONFLICT" in err
    assert [m["user"] for m in shell.json("teams", "members", "ml")] == ["alice"]
    team = shell.json("policy", "set", "ml", "--budget", "100", "--alerts", "80,50")
    assert (team["budget_credits"], team["alert_thresholds"]) == (100, "50,80")
    shell.json("policy", "set", "alice", "--rpm", "30", "--rph", "600")
    shell.json("policy", "set", key_id, "--key", "--rpm", "5", "--allow-cidr", "10.0.0.0/8")
    shown = shell.json("policy", "show", key_id, "--key")
    assert shown["requests_per_minute"] == 5
    assert [s["level"] for s in shown["sources"]] == ["key", "owner", "team"]
    assert shown["budgets"][0]["budget"] == 100
    assert shown["budgets"][0]["remaining"] == 100
    human = shell.ok("policy", "show", key_id, "--key")
    assert "from team" in human
    assert "100 left" in human
    cleared = shell.json("policy", "set", "alice", "--rpm", "none")
    assert (cleared["requests_per_minute"], cleared["requests_per_hour"]) == (None, 600)
    assert len(shell.json("policy", "list")) == 3
    assert shell.json("policy", "clear", "alice")["removed"] is True
    code, _, err = shell.run("policy", "set", "alice", "--budget", "-4")
    assert code == 1
    assert "INVALID_REQUEST" in err
    code, _, err = shell.run("policy", "set", "alice")
    assert code == 1
    assert "Nothing to set" in err
    shell.json("teams", "remove-member", "ml", "alice")
    assert shell.json("teams", "members", "ml") == []
    actions = [e["action"] for e in shell.json("audit", "--limit", "50")["items"]]
    assert {"policy.set", "policy.clear", "team.member.add", "team.member.remove"} <= set(actions)


def _record_usage(settings: Settings, key_id: str, owner_id: str, when: datetime) -> None:
    store = open_store(settings)
    try:
        store.record_usage(
            [
                UsageEvent(
                    id=new_id(),
                    key_id=key_id,
                    owner_id=owner_id,
                    operation=operation,
                    status=status,
                    latency_ms=1.0,
                    rows=rows,
                    bytes=10,
                    credits=credits,
                    created_at=when,
                )
                for operation, status, rows, credits in (
                    ("predict", 200, 5, 20),
                    ("predict", 200, 3, 12),
                    ("predict", 429, None, None),
                    ("fit", 200, 60, None),
                )
            ]
        )
    finally:
        store.close()


def test_usage_report_table_json_and_csv(shell: Shell, settings: Settings) -> None:
    key_id = _key(shell)
    shell.ok("teams", "add-member", "ml", "alice")
    owner = shell.json("principals", "list")["items"]
    alice_id = next(p["id"] for p in owner if p["name"] == "alice")
    today = datetime.now(UTC)
    _record_usage(settings, key_id, alice_id, today)
    report = shell.json("usage", "--by", "team,operation")
    assert report["by"] == ["team", "operation"]
    assert report["rows"] == [
        {"team": "ml", "operation": "fit", "calls": 1, "errors": 0, "credits": 0, "rows": 60,
         "bytes": 10},
        {"team": "ml", "operation": "predict", "calls": 3, "errors": 1, "credits": 32, "rows": 8,
         "bytes": 30},
    ]  # fmt: skip
    assert report["total"]["credits"] == 32
    table = shell.ok("usage", "--by", "principal,month")
    assert "alice" in table
    assert "total: 4 calls, 32 credits" in table
    rows = list(csv.DictReader(io.StringIO(shell.ok("usage", "--by", "key,day", "--csv"))))
    assert rows == [
        {"key": key_id, "day": today.date().isoformat(), "calls": "4", "errors": "1",
         "credits": "32", "rows": "68", "bytes": "40"}
    ]  # fmt: skip
    assert shell.json("usage", "--by", "team", "--since", "1h")["total"]["calls"] == 4
    assert shell.json("usage", "--by", "team", "--until", "1h")["rows"] == []
    code, _, err = shell.run("usage", "--by", "weekday")
    assert code == 1
    assert "Unknown report dimension" in err
    # Without --by the per-key summary stays, now with credits.
    summary = shell.json("usage")
    assert {r["operation"]: r["credits"] for r in summary} == {"fit": 0, "predict": 32}


def test_db_prune_keeps_the_report(shell: Shell, settings: Settings) -> None:
    key_id = _key(shell)
    principals = shell.json("principals", "list")["items"]
    alice_id = next(p["id"] for p in principals if p["name"] == "alice")
    old = datetime.now(UTC) - timedelta(days=500)
    _record_usage(settings, key_id, alice_id, old)
    _record_usage(settings, key_id, alice_id, datetime.now(UTC))
    before = shell.json("usage", "--by", "key,day")
    pruned = shell.json("db", "prune", "--older-than", "400d")
    assert pruned["usage_events"] == 4
    assert shell.json("usage", "--by", "key,day") == before
    assert shell.json("db", "prune", "--older-than", "400d")["usage_events"] == 0
    code, _, err = shell.run("db", "prune", "--older-than", "12h")
    assert code == 1
    assert "at least one day" in err or "1d" in err
    code, _, err = shell.run("db", "prune", "--older-than", "soon")
    assert code == 1
    assert "--older-than" in err
    audited = shell.json("audit", "--action", "db.prune")["items"]
    assert [e["details"]["usage_events"] for e in audited] == [0, 4]  # newest first
