"""`tabpfn-gateway demo`, in process, twice, on a fresh SQLite store in a temporary data dir:
offline, idempotent, and honest about what it stored."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tabpfn_gateway.cli import main
from tabpfn_gateway.config import get_settings
from tabpfn_gateway.store import open_store


@pytest.fixture
def fresh_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("TABPFN_GATEWAY_DATA_DIR", str(data_dir))
    monkeypatch.setenv("TABPFN_GATEWAY_DATABASE_URL", f"sqlite:///{data_dir / 'gateway.db'}")
    for name in ("TABPFN_TOKEN", "TABPFN_GATEWAY_SECRET_KEY", "TABPFN_GATEWAY_KEY_PEPPER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return data_dir


def test_demo_twice(fresh_machine: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["upstream"] == "FakeTabPFN (in process)"
    assert first["accuracy"] > 0.9
    assert (first["train_rows"], first["test_rows"]) == (426, 143)
    assert first["principal_created"] is True
    assert first["credential_created"] is True
    assert first["revoked_keys"] == 0
    usage = {u["operation"]: u for u in first["usage"]}
    assert usage["fit"]["calls"] == 1
    assert usage["fit"]["rows"] == 426
    assert usage["predict"]["rows"] == 143
    assert first["database"] == f"sqlite ({fresh_machine / 'gateway.db'})"
    secret_file = Path(first["secret_key_file"])
    assert secret_file.parent == fresh_machine
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600

    assert main(["demo"]) == 0
    second = capsys.readouterr().out
    assert "principal         demo (reused)" in second
    assert "credential        reused" in second
    assert "revoked 1 earlier demo key(s)" in second
    assert "accuracy on 143 held-out rows: 0.9" in second
    assert str(fresh_machine / "gateway.db") in second
    # Key ids are public; plaintext keys and the fake's token are never printed.
    assert "tpg_" not in second
    assert "demo-fake-tabpfn-token" not in second

    settings = get_settings()
    store = open_store(settings)
    try:
        principal = store.get_principal_by_name("demo")
        assert principal is not None
        keys = store.list_keys(owner_id=principal.id).items
        assert len(keys) == 2
        assert sum(k.revoked_at is None for k in keys) == 1
        assert len(store.list_credentials(owner_id=principal.id).items) == 1
        total = sum(s.calls for s in store.summarize_usage(owner_id=principal.id))
        assert total == 2 * first["total_calls_all_runs"]
    finally:
        store.close()
    assert f"calls by the demo principal over all runs: {total}" in second


def test_readme_first_command_is_the_demo_and_runs_on_a_fresh_home(tmp_path: Path) -> None:
    """The README's first command ends in `tabpfn-gateway demo`; run that console script with
    no settings at all (a fresh HOME: default data dir, generated secret)."""
    import os
    import re
    import shutil
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    first = re.search(r"```bash\n(.*?)\n```", readme, flags=re.DOTALL)
    assert first is not None
    assert first.group(1) == (
        "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/tabpfn-gateway demo"
    )
    executable = shutil.which("tabpfn-gateway", path=str(Path(sys.executable).parent))
    assert executable is not None, "the console script is not installed"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TABPFN_GATEWAY_", "XDG_")) and k != "TABPFN_TOKEN"
    }
    env["HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [executable, "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data_dir = tmp_path / "home" / ".local" / "share" / "tabpfn-gateway"
    assert f"database          sqlite ({data_dir / 'gateway.db'})" in done.stdout
    assert "accuracy on 143 held-out rows: 0.9" in done.stdout
    assert (data_dir / "gateway.db").is_file()


def test_demo_uses_the_upstream_when_tabpfn_token_is_valid(
    fresh_machine: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # "The cloud" here is FakeTabPFN on loopback: tests never call TabPFN itself.
    from tabpfn_gateway.testing import FakeTabPFN
    from tabpfn_gateway.testing.fake_server import serve_in_thread

    fake = FakeTabPFN(tokens=["valid-cloud-token"])
    with serve_in_thread(fake.app) as url:
        monkeypatch.setenv("TABPFN_GATEWAY_UPSTREAM_URL", url)
        monkeypatch.setenv("TABPFN_TOKEN", "valid-cloud-token")
        assert main(["demo", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["upstream"] == url
        assert report["notes"] == []
        assert report["accuracy"] > 0.9
        assert fake.requests_to("/tabpfn/fit")
        assert {r.token for r in fake.requests_to("/tabpfn/")} == {"valid-cloud-token"}

        monkeypatch.setenv("TABPFN_TOKEN", "rejected-token")
        fake.clear_log()
        assert main(["demo", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["upstream"] == "FakeTabPFN (in process)"
        assert report["notes"] == ["TABPFN_TOKEN is set but TabPFN rejected it; used FakeTabPFN."]
        assert fake.requests_to("/tabpfn/fit") == []


def test_demo_falls_back_offline_when_the_upstream_is_unreachable(
    fresh_machine: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("TABPFN_GATEWAY_UPSTREAM_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("TABPFN_TOKEN", "some-token")
    assert main(["demo", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["upstream"] == "FakeTabPFN (in process)"
    assert report["notes"][0].startswith("TABPFN_TOKEN is set but TabPFN cannot be checked now")
    assert "some-token" not in report["notes"][0]
    assert main(["demo", "--offline", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["notes"] == []
