"""The public API: an explicit ``tabpfn_gateway.__all__`` whose every name resolves, loaded
lazily so ``import tabpfn_gateway`` stays light."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tabpfn_gateway

INIT = Path(tabpfn_gateway.__file__)


def test_all_is_an_explicit_literal_list() -> None:
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    literal = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            literal = ast.literal_eval(node.value)
    assert isinstance(literal, list), "__all__ must be a literal list of names"
    assert literal == tabpfn_gateway.__all__
    assert len(set(literal)) == len(literal)


def test_every_public_name_resolves() -> None:
    for name in tabpfn_gateway.__all__:
        value = getattr(tabpfn_gateway, name)
        assert value is not None, name
        if name != "__version__":
            assert getattr(value, "__name__", name) == name
    # Everything lazily importable is public, and nothing public is missing from the map.
    assert set(tabpfn_gateway.__all__) == {"__version__", *tabpfn_gateway._LAZY}
    assert sorted(dir(tabpfn_gateway)) == sorted(tabpfn_gateway.__all__)


def test_the_sdk_names_users_need_are_public() -> None:
    from tabpfn_gateway.estimators import GatewayClassifier, GatewayRegressor

    assert tabpfn_gateway.GatewayClassifier is GatewayClassifier
    assert tabpfn_gateway.GatewayRegressor is GatewayRegressor
    for name in ("login", "logout", "KeyManager", "Admin", "Gateway", "HTTPBackend"):
        assert name in tabpfn_gateway.__all__
    import tabpfn_gateway.testing as testing

    assert callable(testing.local_gateway)
    assert set(testing.__all__) >= {"FakeTabPFN", "local_gateway"}


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        tabpfn_gateway.NoSuchThing  # noqa: B018


def test_import_is_light() -> None:
    script = textwrap.dedent(
        """
        import sys
        import tabpfn_gateway
        heavy = ["sklearn", "pandas", "httpx", "tabpfn_client", "sqlalchemy", "keyring",
                 "fastapi", "pyarrow", "cryptography"]
        print(",".join(m for m in heavy if m in sys.modules))
        from tabpfn_gateway import GatewayClassifier
        print(",".join(m for m in ["tabpfn_client", "httpx", "sqlalchemy", "keyring", "fastapi"]
                       if m in sys.modules))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    bare, with_estimator = done.stdout.splitlines()
    assert bare == "", f"import tabpfn_gateway loaded {bare}"
    assert with_estimator == "", f"importing GatewayClassifier loaded {with_estimator}"


def test_admin_commands_do_not_import_the_data_stack(tmp_path: Path) -> None:
    # The CLI runs in hundreds of test subprocesses and in every admin's shell: pandas, numpy
    # and pyarrow (~300 ms) belong to the estimators, not to managing principals and keys.
    script = textwrap.dedent(
        """
        import sys
        heavy = ["pandas", "numpy", "pyarrow", "sklearn"]
        import tabpfn_gateway.admin
        import tabpfn_gateway.gateway
        import tabpfn_gateway.cli
        print(",".join(m for m in heavy if m in sys.modules))
        from tabpfn_gateway.cli import main
        codes = [main(["db", "upgrade"]), main(["principals", "add", "team-y", "--kind", "team"]),
                 main(["principals", "list"])]
        assert codes == [0, 0, 0], codes
        print(",".join(m for m in heavy if m in sys.modules))
        print(",".join(m for m in ["tabpfn_gateway.protocol", "httpx"] if m in sys.modules))
        """
    )
    env = {
        **os.environ,
        "TABPFN_GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
        "TABPFN_GATEWAY_SECRET_KEY": "s" * 32,
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
        cwd=tmp_path,
    )
    lines = done.stdout.splitlines()
    assert any("team-y" in line for line in lines), done.stdout
    imported, after_commands, client = lines[0], lines[-2], lines[-1]
    assert imported == "", f"importing the admin modules loaded {imported}"
    assert after_commands == "", f"running admin commands loaded {after_commands}"
    # Only verifying a TabPFN token needs the protocol client (~150 ms more).
    assert client == "", f"principals add/list loaded {client}"


def test_the_gateway_package_loads_its_parts_on_first_use() -> None:
    import tabpfn_gateway.gateway as gateway

    assert set(gateway.__all__) == set(gateway._LAZY)
    for name in gateway.__all__:
        assert getattr(gateway, name) is not None, name
    from tabpfn_gateway.gateway._core import Gateway

    assert gateway.Gateway is Gateway
    with pytest.raises(AttributeError, match="NoSuchThing"):
        gateway.NoSuchThing  # noqa: B018
    script = "import sys, tabpfn_gateway.gateway; print('tabpfn_gateway.protocol' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False"


def test_renamed_names_still_import_with_a_warning() -> None:
    import importlib
    import sys

    import tabpfn_gateway.api_key as api_key
    import tabpfn_gateway.errors as errors
    import tabpfn_gateway.gateway as gateway

    with pytest.warns(DeprecationWarning, match="MissingApiKey"):
        assert errors.MissingCredentials is errors.MissingApiKey  # type: ignore[attr-defined]
    assert errors.MissingApiKey.error_code == "MISSING_CREDENTIALS"  # stable codes stay
    with pytest.warns(DeprecationWarning, match="SyncGatewaySession"):
        assert gateway.GatewaySession is gateway.SyncGatewaySession  # type: ignore[attr-defined]
    with pytest.warns(DeprecationWarning, match="AsyncGatewayProxy"):
        assert gateway.GatewayProxy is gateway.AsyncGatewayProxy  # type: ignore[attr-defined]
    sys.modules.pop("tabpfn_gateway.credentials", None)
    with pytest.warns(DeprecationWarning, match="tabpfn_gateway.api_key"):
        credentials = importlib.import_module("tabpfn_gateway.credentials")
    assert credentials.resolve_api_key is api_key.resolve_api_key
    assert credentials.login is tabpfn_gateway.login
    with pytest.raises(AttributeError):
        errors.NoSuchError  # type: ignore[attr-defined]  # noqa: B018


def test_admin_no_longer_decrypts_for_calls() -> None:
    from tabpfn_gateway.admin import Admin
    from tabpfn_gateway.keys import KeyManager
    from tabpfn_gateway.store import open_store
    from tabpfn_gateway.vault import TokenVault

    store = open_store(url="memory://")
    admin = Admin(
        store, TokenVault(["a-secret-0123456789abcdef"]), KeyManager(store, pepper=b"p" * 32)
    )
    admin.add_principal("alice")
    credential = admin.add_credential("alice", "tok-api-0001", "main")
    with pytest.warns(DeprecationWarning, match="Authoriser"):
        assert admin.upstream_token(credential.id).get_secret_value() == "tok-api-0001"
