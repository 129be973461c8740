"""Small things a new user trips on: each pinned (issue 9, item 10)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tabpfn_gateway.cli.serve import startup_line
from tabpfn_gateway.config import Settings
from test_server_api import TOKEN, Server, serve


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from serve(tmp_path)


def test_the_admin_key_list_shows_owner_names_beside_ids(server: Server) -> None:
    keys = server.client.get("/api/v1/admin/keys", headers=server.admin()).json()["items"]
    names = {k["owner_id"]: k["owner_name"] for k in keys}
    assert names[server.tenant.principal_id] == "ann"
    assert set(names.values()) == {"ann", "ops"}
    one = server.client.get(f"/api/v1/admin/keys/{server.tenant.key_id}", headers=server.admin())
    assert one.json()["owner_name"] == "ann"


def test_docs_render_offline_from_the_package(server: Server) -> None:
    page = server.client.get("/docs")
    assert page.status_code == 200
    html = page.text
    # Nothing is fetched from a CDN: every script, style and icon is served by this server.
    external = re.findall(r"""(?:src|href)=["']?(https?://[^"' >]+)""", html)
    assert external == [], external
    assets = re.findall(r"""(?:src|href)=["']?(/docs/assets/[^"' >]+)""", html)
    assert {a.rsplit("/", 1)[-1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for asset in assets:
        answer = server.client.get(asset)
        assert answer.status_code == 200, asset
        assert len(answer.content) > 100
    bundle = server.client.get("/docs/assets/swagger-ui-bundle.js").text
    # Swagger UI 5: it renders the OpenAPI 3.1 document FastAPI writes (4.x shows an error).
    assert server.client.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert "isOAS31" in bundle


def test_a_credential_verified_during_setup_is_recorded_as_verified(server: Server) -> None:
    answer = server.client.post(
        "/api/v1/auth/setup", json={"tabpfn_token": TOKEN, "name": "carol"}
    ).json()
    credential = server.gateway.store.get_credential(answer["credential_id"])
    assert credential is not None
    assert credential.verified_at is not None
    events = server.gateway.store.list_audit(target_id=answer["credential_id"]).items
    added = [e for e in events if e.action == "credential.add"]
    assert added
    assert added[0].details["verification"] == "valid"


def test_serve_says_store_upstream_and_setup_in_one_line_without_a_password() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url="postgresql://gw:hunter22@db.internal:5432/gateway",
        upstream_url="http://127.0.0.1:8765",
        allow_self_service_setup=False,
    )
    line = startup_line(settings, "127.0.0.1", 8000)
    assert "\n" not in line
    assert "hunter22" not in line
    assert "postgresql (db.internal:5432/gateway)" in line
    assert "upstream http://127.0.0.1:8765" in line
    assert "self-service setup closed" in line
    assert line.startswith("tabpfn-gateway starting on http://127.0.0.1:8000")


def test_migrations_log_no_alembic_plugin_lines(tmp_path: Path) -> None:
    # What `serve` does first (its logging, then migrate_on_start), in a process of its own.
    script = (
        "import sys; from tabpfn_gateway import migrate; from tabpfn_gateway.config import "
        "Settings; from tabpfn_gateway.logs import setup_logging; setup_logging('INFO'); "
        "migrate.upgrade(Settings(_env_file=None, data_dir=sys.argv[1], "
        "database_url=f'sqlite:///{sys.argv[1]}/gw.db'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "Running upgrade" in done.stdout  # INFO is on: the migration itself is told
    assert "alembic.runtime.plugins" not in done.stdout + done.stderr


def test_fake_upstream_on_a_busy_port_says_so_without_claiming_to_serve() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from tabpfn_gateway.cli import main; sys.exit(main(sys.argv[1:]))",
                "fake-upstream",
                "--token",
                "tok-a",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 1
    assert "serving" not in done.stdout
    assert done.stderr.strip() == (
        f"error: [CONFIGURATION_ERROR] Port {port} on 127.0.0.1 is in use: stop what runs "
        "there, or pick another with --port."
    )


def test_nox_lint_also_checks_formatting() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "project_noxfile", Path(__file__).resolve().parents[1] / "noxfile.py"
    )
    assert spec is not None
    assert spec.loader is not None
    noxfile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(noxfile)

    class Recorder:
        commands: list[tuple[str, ...]] = []

        def run(self, *args: str, **kwargs: object) -> None:
            self.commands.append(args[1:])

    recorder = Recorder()
    noxfile.lint.func(recorder)
    assert recorder.commands[0][:3] == ("-m", "ruff", "check")
    assert any(c[:4] == ("-m", "ruff", "format", "--check") for c in recorder.commands)
