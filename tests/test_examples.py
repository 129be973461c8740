"""Every example in examples/ runs offline and says what it should; the notebook runs in a real
Jupyter kernel (nbclient); every Python code block of docs/sdk.md and README.md runs, in order,
against a real gateway server on loopback."""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# Each example and lines its output must contain (proof it did its job, not just exit 0).
EXPECTED_OUTPUT: dict[str, list[str]] = {
    "quickstart.py": [
        "using an offline in-process gateway",
        "classifier accuracy: 0.9",
        "80% interval",
        "usage recorded: fit x2",
    ],
    "team_setup.py": [
        "verified at",
        "bob using alice's fit: FITTED_MODEL_NOT_FOUND",
        "bob after revocation: KEY_REVOKED",
        "alice after bob's revocation: [",
        "usage of alice's key:",
    ],
    "tabpfn_client_unchanged.py": [
        "tabpfn-client accuracy through the gateway: 0.9",
        "tokens the upstream saw: 1",
        "usage under the key: fit x1",
    ],
}


def _offline_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("TABPFN_GATEWAY_URL", "TABPFN_GATEWAY_API_KEY", "TABPFN_TOKEN"):
        env.pop(name, None)
    env["HOME"] = str(tmp_path)
    return env


def test_every_example_is_covered() -> None:
    found = {p.name for p in EXAMPLES.glob("*.py")}
    assert found == set(EXPECTED_OUTPUT)
    assert (EXAMPLES / "quickstart.ipynb").is_file()


@pytest.mark.parametrize("name", sorted(EXPECTED_OUTPUT))
def test_example_runs_offline(name: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name)],
        cwd=tmp_path,
        env=_offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for line in EXPECTED_OUTPUT[name]:
        assert line in done.stdout, f"{name}: {line!r} not in output:\n{done.stdout}"


def test_notebook_runs_in_a_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    for name in ("TABPFN_GATEWAY_URL", "TABPFN_GATEWAY_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [
        output.get("text", "") or output.get("data", {}).get("text/plain", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    ]
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert not errors
    text = "\n".join(outputs)
    assert re.search(r"accuracy: 0\.9\d\d", text)
    assert "80% interval" in text
    assert "fit: 2 call(s)" in text


# -- docs/sdk.md -------------------------------------------------------------------------------

PLACEHOLDER_URL = "https://tabpfn-gateway.example.com"


def python_blocks(markdown: str) -> list[str]:
    """The ```python fenced blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE)


@pytest.fixture
def served_gateway() -> Iterator[tuple[str, str]]:
    from tabpfn_gateway.testing import local_gateway
    from tabpfn_gateway.testing.fake_server import serve_in_thread
    from tabpfn_gateway_server.app import create_app

    with local_gateway() as local:
        app = create_app(local.gateway.settings, gateway=local.gateway)
        with serve_in_thread(app) as url:
            yield url, local.api_key.get_secret_value()


@pytest.mark.parametrize(("document", "minimum_blocks"), [("docs/sdk.md", 6), ("README.md", 1)])
def test_python_blocks_of_the_docs_run(
    document: str,
    minimum_blocks: int,
    served_gateway: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import keyring
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from tests.test_api_key import MemoryKeyring

    url, key = served_gateway
    blocks = python_blocks((ROOT / document).read_text(encoding="utf-8"))
    assert len(blocks) >= minimum_blocks
    # The reader's machine: a keyring, a person typing the key when asked, no env keys.
    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": key)
    for name in ("TABPFN_GATEWAY_URL", "TABPFN_GATEWAY_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    # README's snippet uses the reader's own data; give it some.
    features, target = load_breast_cancer(return_X_y=True, as_frame=True)
    x_train, x_test, y_train, _ = train_test_split(features, target, random_state=0)
    namespace: dict[str, object] = {
        "__name__": "doc",
        "X_train": x_train,
        "X_test": x_test,
        "y_train": y_train,
    }
    try:
        for number, block in enumerate(blocks, start=1):
            code = block.replace(PLACEHOLDER_URL, url)
            try:
                exec(compile(code, f"{document} block {number}", "exec"), namespace)
            except Exception as exc:
                raise AssertionError(f"{document} block {number} failed:\n{block}") from exc
    finally:
        keyring.set_keyring(previous)
        for value in namespace.values():
            close = getattr(value, "close", None)
            if type(value).__name__ == "LocalGateway" and callable(close):
                close()
    assert isinstance(namespace.get("proba"), np.ndarray)
