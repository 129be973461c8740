"""`tabpfn-gateway demo`, in process, twice, on a fresh SQLite store in a temporary data dir:
offline, idempotent, and honest about what it stored."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

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
    assert first["key_created"] is True
    usage = {u["operation"]: u for u in first["usage"]}
    assert usage["fit"]["calls"] == 1
    assert usage["fit"]["rows"] == 426
    assert usage["predict"]["rows"] == 143
    assert first["database"] == f"sqlite ({fresh_machine / 'gateway.db'})"
    secret_file = Path(first["secret_key_file"])
    assert secret_file.parent == fresh_machine
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600

    settings = get_settings()
    store = open_store(settings)
    try:
        principal = store.get_principal_by_name("demo")
        assert principal is not None
        after_one = _rows(store, principal.id)
    finally:
        store.close()

    assert main(["demo"]) == 0
    second, err = capsys.readouterr()
    # It opens with what it did; the generated secret is said once, at the end.
    assert second.startswith("tabpfn-gateway demo\n")
    assert "SECRET_KEY" not in err
    assert second.count("TABPFN_GATEWAY_SECRET_KEY") == 1
    assert "principal         demo (reused)" in second
    assert "credential        reused" in second
    assert f"gateway key       {first['key_id']} (reused, with a new secret" in second
    assert "accuracy on 143 held-out rows: 0.9" in second
    assert str(fresh_machine / "gateway.db") in second
    # The usable line carries this run's key, which the store accepts (the first run's
    # secret is gone: a rerun rotates the one demo key).
    keys_printed = re.findall(r"TABPFN_GATEWAY_API_KEY=(tpg_\S+)", second)
    assert len(keys_printed) == 1
    assert keys_printed[0] != first["key"]
    from tabpfn_gateway.errors import InvalidKey
    from tabpfn_gateway.keys import KeyManager

    store = open_store(settings)
    try:
        # Running it twice leaves the same principals, credentials and keys as once.
        assert _rows(store, principal.id) == after_one
        manager = KeyManager.from_settings(settings, store=store)
        assert manager.verify(keys_printed[0]).key_id == first["key_id"]
        with pytest.raises(InvalidKey):
            manager.verify(first["key"])
        total = sum(s.calls for s in store.summarize_usage(owner_id=principal.id))
        assert total == 2 * first["total_calls_all_runs"]
    finally:
        store.close()
    assert f"calls by the demo principal over all runs: {total}" in second


def _rows(store: Any, owner_id: str) -> tuple[list[str], list[str], list[tuple[str, bool]]]:
    principals = sorted(p.id for p in store.list_principals(limit=1000).items)
    credentials = sorted(c.id for c in store.list_credentials(owner_id=owner_id).items)
    keys = sorted(
        (k.key_id, k.revoked_at is None) for k in store.list_keys(owner_id=owner_id).items
    )
    return principals, credentials, keys


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
