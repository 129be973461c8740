"""MkDocs hooks: the reference pages (Python API, CLI, HTTP API) and the changelog, generated
from the code at build time so the site cannot drift from what ships."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]

# Modules whose public names get their own section, after the top-level facade.
_SECTIONS: list[tuple[str, str, str]] = [
    (
        "tabpfn_gateway.errors",
        "Errors",
        "Every error the SDK and the gateway raise; each has a stable `error_code`.",
    ),
    (
        "tabpfn_gateway.testing",
        "Testing support",
        "FakeTabPFN (the offline upstream), an in-process gateway for your own tests, and the "
        "store contract suite.",
    ),
]


def api_reference() -> str:
    """The Python API page: every name in ``tabpfn_gateway.__all__``, then the sections."""
    import importlib

    import tabpfn_gateway

    lines = [
        "# Python API",
        "",
        "Generated from the docstrings. The top-level names are `tabpfn_gateway.__all__`;",
        "each is imported lazily, so `import tabpfn_gateway` stays light.",
        "",
        "## `tabpfn_gateway`",
        "",
    ]
    for name in tabpfn_gateway.__all__:
        if name.startswith("__"):
            continue
        module = getattr(getattr(tabpfn_gateway, name), "__module__", tabpfn_gateway._LAZY[name])
        lines += [f"::: {module}.{name}", "    options:", "      heading_level: 3", ""]
    for module_name, title, blurb in _SECTIONS:
        module = importlib.import_module(module_name)
        lines += [f"## {title}", "", blurb, ""]
        for name in getattr(module, "__all__", []):
            # The defining module: lazily re-exported names are invisible to static analysis.
            home = getattr(getattr(module, name), "__module__", module_name)
            lines += [f"::: {home}.{name}", "    options:", "      heading_level: 3"]
            if module_name == "tabpfn_gateway.testing" and name == "StoreContractTests":
                # Its test_* methods are the suite itself, documented by their names.
                lines += ["      members: false"]
            lines += [""]
    return "\n".join(lines)


def _walk(parser: argparse.ArgumentParser, words: list[str]) -> list[tuple[str, str]]:
    pages = [(" ".join(words), parser.format_help())]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                pages += _walk(sub, [*words, name])
    return pages


def cli_reference() -> str:
    """The command-line page: the help of every command, straight from the parser."""
    from tabpfn_gateway.cli import build_parser

    os.environ.setdefault("COLUMNS", "100")
    parser = build_parser()
    parser.prog = "tabpfn-gateway"
    lines = [
        "# Command line",
        "",
        "Generated from `tabpfn-gateway`'s argument parser: every command and its options.",
        "",
    ]
    for command, text in _walk(parser, ["tabpfn-gateway"]):
        depth = min(2 + command.count(" "), 4)
        lines += [f"{'#' * depth} `{command}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(lines)


def openapi_document() -> dict[str, Any]:
    """The server's OpenAPI document, from an app on the in-memory store."""
    from pydantic import SecretStr

    from tabpfn_gateway.config import Settings
    from tabpfn_gateway_server.app import create_app

    settings = Settings(
        database_url="memory://",
        secret_key=SecretStr("docs-build-secret-not-used-for-anything-0000"),
        _env_file=None,  # type: ignore[call-arg]
    )
    return create_app(settings, migrate=False).openapi()


def http_reference(document: dict[str, Any]) -> str:
    """The HTTP API page: every route, its parameters and its documented answers."""
    lines = [
        "# HTTP API",
        "",
        "Generated from the server's OpenAPI document "
        "([openapi.json](openapi.json), also served at `/openapi.json` and browsable at "
        '`/docs`). Every error body is `{"error_code", "message", "trace_id"}`; the '
        "error codes are listed in the [server guide](../server.md).",
        "",
    ]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            title = operation.get("summary") or operation.get("operationId", "")
            lines += [f"## `{method.upper()} {path}`", "", f"**{title}**", ""]
            description = (operation.get("description") or "").strip()
            if description:
                lines += [description, ""]
            parameters = operation.get("parameters") or []
            if parameters:
                lines += ["| parameter | in | required |", "|---|---|---|"]
                for parameter in parameters:
                    required = "yes" if parameter.get("required") else "no"
                    lines.append(f"| `{parameter['name']}` | {parameter['in']} | {required} |")
                lines.append("")
            body = operation.get("requestBody", {}).get("content", {})
            for media_type, content in body.items():
                ref = content.get("schema", {}).get("$ref", "")
                schema = ref.rsplit("/", 1)[-1] if ref else "body"
                lines += [f"Request body: `{media_type}` ({schema})", ""]
            responses = operation.get("responses") or {}
            if responses:
                lines += ["| status | meaning |", "|---|---|"]
                for status, answer in responses.items():
                    meaning = (answer.get("description") or "").replace("\n", " ")
                    lines.append(f"| {status} | {meaning} |")
                lines.append("")
    return "\n".join(lines)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated pages to the site."""
    document = openapi_document()
    generated = {
        "reference/api.md": api_reference(),
        "reference/cli.md": cli_reference(),
        "reference/http.md": http_reference(document),
        "reference/openapi.json": json.dumps(document, indent=2),
        # CHANGELOG.md links docs/ pages from the repository root; the site has them at its root.
        "changelog.md": (ROOT / "CHANGELOG.md")
        .read_text(encoding="utf-8")
        .replace("](docs/", "]("),
    }
    for uri, content in generated.items():
        files.append(File.generated(config, uri, content=content))
    return files
