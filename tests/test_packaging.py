"""The built wheel: the core requires only what the SDK, the CLI and the offline demo use."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Each one is imported by the core (src/tabpfn_gateway) on a path a user of
# `pip install tabpfn-gateway` takes: the estimators and protocol client (httpx, pandas,
# pyarrow for Parquet uploads, google-crc32c, tenacity, tqdm), the store and its migrations,
# keys and the vault, login's keyring, settings, and FakeTabPFN behind `tabpfn-gateway demo`
# (starlette, anyio).
CORE_REQUIREMENTS = {
    "alembic",
    "anyio",
    "cryptography",
    "google-crc32c",
    "httpx",
    "keyring",
    "libpass",
    "limits",
    "numpy",
    "pandas",
    "platformdirs",
    "pyarrow",
    "pydantic",
    "pydantic-settings",
    "scikit-learn",
    "sqlalchemy",
    "starlette",
    "tenacity",
    "tqdm",
}


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built by the project's own build backend."""
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from hatchling.build import build_wheel; print(build_wheel(sys.argv[1]))",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return out / built.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def metadata(wheel: Path) -> dict[str, list[str]]:
    """The built wheel's METADATA: Requires-Dist per extra ("" for the core)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(name).decode("utf-8"))
    by_extra: dict[str, list[str]] = {}
    for requirement in message.get_all("Requires-Dist") or []:
        extra = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", requirement)
        by_extra.setdefault(extra.group(1) if extra else "", []).append(requirement)
    return by_extra


def test_the_core_requires_exactly_what_it_uses(metadata: dict[str, list[str]]) -> None:
    assert {_name(r) for r in metadata[""]} == CORE_REQUIREMENTS


def test_tabpfn_client_is_only_an_extra(metadata: dict[str, list[str]]) -> None:
    # It pins pandas, pydantic, httpx and scikit-learn from above: never force it on a user.
    assert "tabpfn-client" not in {_name(r) for r in metadata[""]}
    assert "tabpfn-client" in {_name(r) for r in metadata["client"]}
    assert any("client" in r for r in metadata["dev"])


def test_the_server_and_its_drivers_are_extras(metadata: dict[str, list[str]]) -> None:
    core = {_name(r) for r in metadata[""]}
    assert not core & {"fastapi", "uvicorn", "psycopg", "redis", "prometheus-client", "sniffio"}
    assert {"fastapi", "uvicorn"} <= {_name(r) for r in metadata["server"]}
    assert "psycopg" in {_name(r) for r in metadata["postgres"]}


def test_the_core_never_imports_tabpfn_client() -> None:
    # A user without the client extra must be able to import and use every core module.
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "src").rglob("*.py")
        if re.search(r"^\s*(import|from)\s+tabpfn_client\b", path.read_text("utf-8"), re.M)
    ]
    assert offenders == []


def test_the_licence_file_matches_the_declared_licence(wheel: Path) -> None:
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["license"]
    assert declared == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text("utf-8")
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    with zipfile.ZipFile(wheel) as archive:
        shipped = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert shipped, "the wheel carries no LICENSE"
        assert archive.read(shipped[0]).decode("utf-8") == text
        meta = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA")))
    assert "License-Expression: Apache-2.0" in meta.decode("utf-8")


def test_the_dev_extra_has_what_the_notebook_test_and_the_docs_need(
    metadata: dict[str, list[str]],
) -> None:
    dev = {_name(r) for r in metadata["dev"]}
    # tests/test_examples.py runs the notebook with nbclient on an ipykernel kernel.
    assert {"nbformat", "nbclient", "ipykernel"} <= dev
    # The documentation site's tools (the docs extra, folded into dev by the backend).
    assert {"mkdocs", "mkdocs-material", "mkdocstrings-python"} <= dev
    assert "fastapi-swagger" in {_name(r) for r in metadata["server"]}
