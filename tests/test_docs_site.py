"""The documentation site and release hygiene: getting-started pages run, every guide is in the
site's navigation, every public name is documented, the changelog builds, one version."""

from __future__ import annotations

import getpass
import importlib
import inspect
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests.test_examples import PLACEHOLDER_URL, python_blocks, served_gateway

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["served_gateway"]  # the fixture, imported for the getting-started pages


def _nav_files(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _nav_files(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _nav_files(value)


def _mkdocs_config() -> dict[str, object]:
    # mkdocs.yml uses no custom YAML tags, so the safe loader reads it.
    loaded = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


GENERATED = {"reference/api.md", "reference/cli.md", "reference/http.md", "changelog.md"}


def test_every_guide_is_in_the_site_and_every_nav_entry_exists() -> None:
    nav = set(_nav_files(_mkdocs_config()["nav"]))
    on_disk = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk - nav == set(), "pages missing from mkdocs.yml's nav"
    assert nav - on_disk - GENERATED == set(), "nav entries with no page"
    assert nav >= GENERATED


def test_the_generated_references_cover_the_public_api_cli_and_http() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        hooks = importlib.import_module("docs_hooks")
    finally:
        sys.path.remove(str(ROOT / "tools"))
    import tabpfn_gateway
    from tabpfn_gateway.cli import build_parser

    api = hooks.api_reference()
    for name in tabpfn_gateway.__all__:
        if not name.startswith("__"):
            assert f".{name}\n" in api, name
    cli = hooks.cli_reference()
    subcommands = next(
        action
        for action in build_parser()._actions
        if hasattr(action, "choices") and action.choices
    )
    for command in subcommands.choices:
        assert f"`tabpfn-gateway {command}`" in cli, command
    document = hooks.openapi_document()
    http = hooks.http_reference(document)
    for path, operations in document["paths"].items():
        for method in operations:
            assert f"`{method.upper()} {path}`" in http


@pytest.mark.parametrize(
    ("document", "minimum_blocks", "via"),
    [
        ("docs/getting-started/notebook.md", 2, "keyring"),
        ("docs/getting-started/services.md", 2, "environment"),
    ],
)
def test_getting_started_pages_run(
    document: str,
    minimum_blocks: int,
    via: str,
    served_gateway: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import keyring
    from tests.test_api_key import MemoryKeyring

    url, key = served_gateway
    blocks = python_blocks((ROOT / document).read_text(encoding="utf-8"))
    assert len(blocks) >= minimum_blocks
    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    for name in ("TABPFN_GATEWAY_URL", "TABPFN_GATEWAY_API_KEY"):
        # setenv first so monkeypatch restores the variable to its old state even when a
        # block sets it (delenv of an absent variable records nothing to undo).
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    if via == "keyring":
        monkeypatch.setattr(getpass, "getpass", lambda prompt="": key)
    else:
        monkeypatch.setenv("TABPFN_GATEWAY_API_KEY", key)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "doc"}
    try:
        for number, block in enumerate(blocks, start=1):
            code = block.replace(PLACEHOLDER_URL, url)
            try:
                exec(compile(code, f"{document} block {number}", "exec"), namespace)
            except Exception as exc:
                raise AssertionError(f"{document} block {number} failed:\n{block}") from exc
    finally:
        keyring.set_keyring(previous)
    assert isinstance(namespace.get("proba"), np.ndarray) or isinstance(
        namespace.get("prediction"), np.ndarray
    )


# -- docstrings -----------------------------------------------------------------------------

PUBLIC_MODULES = [
    "tabpfn_gateway",
    "tabpfn_gateway.errors",
    "tabpfn_gateway.testing",
    "tabpfn_gateway.protocol",
    "tabpfn_gateway.keys",
    "tabpfn_gateway.store",
    "tabpfn_gateway.gateway",
    "tabpfn_gateway.estimators",
]


def _public_objects() -> Iterator[tuple[str, object]]:
    seen: set[int] = set()
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            if name.startswith("__"):
                continue
            value = getattr(module, name)
            if id(value) in seen:
                continue
            seen.add(id(value))
            if inspect.isclass(value) or inspect.isfunction(value):
                # Type aliases (Literal[...]) cannot carry a docstring; the modules document them.
                yield f"{module_name}.{name}", value
            if not (inspect.isclass(value) and value.__module__.startswith("tabpfn_gateway")):
                continue
            for attribute, member in vars(value).items():
                # test_* methods of the shipped contract suite are documented by their names.
                if attribute.startswith(("_", "test_")):
                    continue
                function = member.fget if isinstance(member, property) else member
                function = getattr(function, "__func__", function)
                if inspect.isfunction(function):
                    yield f"{module_name}.{name}.{attribute}", function


def test_every_public_name_has_a_docstring() -> None:
    undocumented = [
        name for name, value in _public_objects() if not (inspect.getdoc(value) or "").strip()
    ]
    assert undocumented == []


def test_the_estimators_docstrings_follow_numpydoc() -> None:
    from numpydoc.docscrape import ClassDoc

    from tabpfn_gateway import GatewayClassifier, GatewayRegressor

    for estimator in (GatewayClassifier, GatewayRegressor):
        doc = ClassDoc(estimator)
        # Every constructor parameter documented once, nothing else (scikit-learn's rule).
        signature = [p for p in inspect.signature(estimator.__init__).parameters if p != "self"]
        documented = [p.name for p in doc["Parameters"]]
        assert sorted(documented) == sorted(signature), estimator.__name__
        assert all(p.type and p.desc for p in doc["Parameters"]), estimator.__name__
        attributes = {p.name for p in doc["Attributes"]}
        assert {"n_features_in_", "model_id_"} <= attributes, estimator.__name__
        assert any(">>>" in line for line in doc["Examples"]), estimator.__name__


# -- changelog and version ------------------------------------------------------------------


def test_changelog_fragments_build(tmp_path: Path) -> None:
    fragments = [p for p in (ROOT / "changelog.d").iterdir() if p.suffix == ".md"]
    assert fragments, "changelog.d/ holds the unreleased changes"
    draft = subprocess.run(
        [sys.executable, "-m", "towncrier", "build", "--draft", "--version", "9.9.9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for fragment in fragments:
        first_words = " ".join(fragment.read_text(encoding="utf-8").split()[:6])
        assert first_words in " ".join(draft.split()), fragment.name
    assert "<!-- towncrier release notes start -->" in (ROOT / "CHANGELOG.md").read_text()


def test_the_version_has_one_place() -> None:
    from importlib.metadata import version

    import tabpfn_gateway

    with (ROOT / "pyproject.toml").open("rb") as handle:
        declared = tomllib.load(handle)["project"]["version"]
    assert version("tabpfn-gateway") == declared
    assert tabpfn_gateway.__version__ == declared
    for path in (ROOT / "src").rglob("*.py"):
        assert f'"{declared}"' not in path.read_text(encoding="utf-8"), path
