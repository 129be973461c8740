"""compose.yaml and .env.example: valid against the Compose Specification's JSON schema, the shape
the operations guide describes, and in step with docs/configuration.md.

``tests/data/compose-spec.schema.json`` is the Compose Specification's schema (compose-spec
project, Apache-2.0), as shipped in the npm package ``dclint`` 3.1.0
(``schemas/compose.schema.json``, MIT). No container engine runs here, so the file is validated,
not started.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tabpfn_gateway.config import ENV_PREFIX, Settings
from test_docs_configuration import documented_rows

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA = Path(__file__).parent / "data" / "compose-spec.schema.json"

# Compose interpolation: $$, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}.
_VARIABLE = re.compile(
    r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)
# Settings that are secrets: .env.example may only hold placeholders for them.
SECRET_SETTINGS = {"TABPFN_GATEWAY_SECRET_KEY", "TABPFN_GATEWAY_KEY_PEPPER", "POSTGRES_PASSWORD"}
SECRET_SHAPES = [
    re.compile(r"\btpga?_[0-9A-Za-z_]{8,}"),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/-]{8,}"),
    re.compile(r"\beyJ[0-9A-Za-z_-]{5,}\.[0-9A-Za-z_-]{5,}\.[0-9A-Za-z_-]{5,}"),
]


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not NAME=value"
            assert name not in values, f".env.example sets {name} twice"
            values[name] = value
    return values


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation over every string of the loaded file."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3)
        value = env.get(name)
        if operator in (":-", ":?") and not value:
            value = None
        if value is not None:
            return value
        if operator in (":-", "-"):
            return argument
        if operator in (":?", "?"):
            raise KeyError(f"{name}: {argument}")
        return ""

    if isinstance(node, str):
        return _VARIABLE.sub(substitute, node)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


def variables_used() -> dict[str, str | None]:
    """Each variable compose.yaml interpolates, with its operator (None: plain ${VAR})."""
    found: dict[str, str | None] = {}
    for match in _VARIABLE.finditer(COMPOSE.read_text(encoding="utf-8")):
        name = match.group(1) or match.group(4)
        if name:
            found[name] = match.group(2)
    return found


def loaded() -> dict[str, Any]:
    # The YAML loader resolves the `<<: *gateway` merge keys, as compose does.
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def resolved() -> dict[str, Any]:
    document = interpolate(loaded(), env_example())
    assert isinstance(document, dict)
    return document


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_the_schema_is_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert schema["title"] == "Compose Specification"
    jsonschema.Draft7Validator.check_schema(schema)


@pytest.mark.parametrize("interpolated", [False, True], ids=["as-written", "interpolated"])
def test_compose_file_is_valid_against_the_specification(interpolated: bool) -> None:
    document = resolved() if interpolated else loaded()
    assert schema_errors(document) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["services"]["gateway"].update(helthcheck={}),
        lambda d: d["services"]["gateway"]["depends_on"]["migrate"].update(condition="done"),
        lambda d: d["services"]["gateway"]["deploy"].update(replicaz=2),
        lambda d: d["services"]["postgres"]["healthcheck"].update(tset=["CMD", "true"]),
        lambda d: d["volumes"].update({"postgres-data": {"drivr": "local"}}),
        lambda d: d["services"]["redis"].update(command={"redis-server": True}),
    ],
    ids=["typo", "bad-condition", "deploy-typo", "healthcheck-typo", "volume-typo", "bad-command"],
)
def test_the_schema_refuses_a_broken_file(break_it: Any) -> None:
    document = copy.deepcopy(resolved())
    break_it(document)
    assert schema_errors(document) != []


def test_the_deployment_has_the_documented_shape() -> None:
    services = resolved()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "gateway", "fake-upstream"}
    gateway, migrate = services["gateway"], services["migrate"]
    assert gateway["deploy"]["replicas"] == 2
    # The replicas wait for the one-shot migration, which waits for PostgreSQL.
    assert gateway["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert gateway["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["command"] == ["tabpfn-gateway", "db", "upgrade"]
    assert migrate["restart"] == "no"
    # Neither the replicas nor the migration job migrate on start: the job's command does.
    for service in (gateway, migrate):
        assert service["environment"]["TABPFN_GATEWAY_MIGRATE_ON_START"] == "false"
        assert service["environment"]["TABPFN_GATEWAY_DATABASE_URL"].startswith(
            "postgresql://tabpfn_gateway:change-me-postgres-password@postgres:5432/"
        )
        assert service["environment"]["TABPFN_GATEWAY_REDIS_URL"] == "redis://redis:6379/0"
        assert service["read_only"] is True
    # Health checks everywhere a service keeps running; the gateway's hits /healthz.
    for name in ("postgres", "redis", "gateway", "fake-upstream"):
        assert services[name]["healthcheck"]["test"], name
    assert "/healthz" in " ".join(gateway["healthcheck"]["test"])
    # Named volumes for the data that must survive.
    volumes = resolved()["volumes"]
    assert set(volumes) == {"postgres-data", "redis-data"}
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    # The offline profile adds FakeTabPFN, which .env.example's upstream URL points at.
    fake = services["fake-upstream"]
    assert fake["profiles"] == ["offline"]
    assert fake["command"][:2] == ["tabpfn-gateway", "fake-upstream"]
    assert "offline" not in gateway.get("profiles", [])
    assert gateway["depends_on"]["fake-upstream"]["required"] is False
    port = fake["command"][fake["command"].index("--port") + 1]
    assert env_example()["TABPFN_GATEWAY_UPSTREAM_URL"] == f"http://fake-upstream:{port}"
    token = fake["command"][fake["command"].index("--token") + 1]
    assert token == env_example()["OFFLINE_TABPFN_TOKEN"]


def test_every_dependency_names_a_service_and_every_volume_is_declared() -> None:
    document = resolved()
    services = document["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            assert source in document["volumes"], f"{name} mounts undeclared {source}"


def test_every_variable_compose_needs_is_in_env_example() -> None:
    example = env_example()
    for name, operator in variables_used().items():
        if operator in (":?", "?", None):
            assert name in example, f"compose.yaml needs {name}; .env.example lacks it"
    # And .env.example sets nothing that neither compose nor the gateway reads.
    used = set(variables_used())
    for name in example:
        assert name in used or name.startswith(ENV_PREFIX), f".env.example: {name} is unused"


def test_env_example_comments_every_variable() -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if not line.strip() or line.startswith("#"):
            continue
        # The nearest line above that is not a variable (a group shares one) is its comment.
        above = index - 1
        while above >= 0 and lines[above].strip() and not lines[above].startswith("#"):
            above -= 1
        assert above >= 0, f".env.example: {line!r} has no comment"
        assert lines[above].startswith("#"), f".env.example: {line!r} has no comment"


def test_compose_and_env_example_name_only_documented_settings() -> None:
    documented = set(documented_rows())
    named = {n for n in env_example() if n.startswith(ENV_PREFIX)}
    named |= {n for n in variables_used() if n.startswith(ENV_PREFIX)}
    for service in resolved()["services"].values():
        named |= {n for n in service.get("environment", {}) if n.startswith(ENV_PREFIX)}
    named.discard("TABPFN_GATEWAY_IMAGE")  # the image name, a compose variable
    assert named, "no setting found"
    assert sorted(named - documented) == [], "not in docs/configuration.md"
    # Each value .env.example gives is one the settings accept.
    overrides = {
        name[len(ENV_PREFIX) :].lower(): value
        for name, value in env_example().items()
        if name.startswith(ENV_PREFIX) and name != "TABPFN_GATEWAY_IMAGE"
    }
    Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


def test_configuration_doc_points_at_the_compose_files() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert "compose.yaml" in text
    assert ".env.example" in text


def test_readme_links_the_operations_guide() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/operations.md)" in readme
    guide = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert guide.startswith("# Operations\n")


def test_no_real_secret_in_the_deployment_files() -> None:
    example = env_example()
    for name in SECRET_SETTINGS & set(example):
        assert example[name].startswith("change-me"), f"{name} must be a placeholder"
    for path in (COMPOSE, ENV_EXAMPLE, ROOT / "Dockerfile"):
        text = path.read_text(encoding="utf-8")
        # Nothing shaped like a gateway key, a bearer credential or a JWT.
        for shape in SECRET_SHAPES:
            assert not shape.search(text), f"{path.name} holds something secret-shaped"
    # compose refuses to start without the two secrets rather than falling back to a default.
    used = variables_used()
    assert used["POSTGRES_PASSWORD"] == ":?"
    assert used["TABPFN_GATEWAY_SECRET_KEY"] == ":?"
    assert used["TABPFN_GATEWAY_KEY_PEPPER"] == ":?"
