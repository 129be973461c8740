"""scikit-learn's own estimator checks on both estimators, through an in-process gateway over
FakeTabPFN (real scikit-learn models upstream, so results are deterministic per random_state).

Expected failures: none. One check, ``check_array_api_input``, needs ``SCIPY_ARRAY_API=1``
set before SciPy is imported, so it runs in a subprocess with that variable instead of
being skipped here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from tabpfn_gateway import GatewayClassifier, GatewayRegressor
from tabpfn_gateway.testing import local_gateway

# One gateway for every check: parametrize_with_checks needs the estimators at collection.
# It is closed by the module fixture below; its threads are daemons either way.
BACKEND = local_gateway()

# {check name: reason} - intentionally empty; a check that starts failing must be fixed or
# listed here with its reason.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_backend() -> Iterator[None]:
    yield
    BACKEND.close()


def _check_name(check: Callable[..., Any]) -> str:
    return check.func.__name__ if isinstance(check, partial) else check.__name__


_CHECKS = parametrize_with_checks(
    [
        GatewayClassifier(backend=BACKEND, progress=False),
        GatewayRegressor(backend=BACKEND, progress=False),
    ],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS,
)
# The same parametrization, its generator made a list: pytest 9 deprecates generators there
# (and warnings are errors in this suite).
_CHECKS_AS_LIST = pytest.mark.parametrize(_CHECKS.args[0], list(_CHECKS.args[1]), **_CHECKS.kwargs)


@_CHECKS_AS_LIST
def test_sklearn_compatible_estimator(estimator: Any, check: Callable[..., Any]) -> None:
    if _check_name(check) == "check_array_api_input":
        _run_array_api_check_in_subprocess(type(estimator).__name__, check)
        return
    check(estimator)


def _run_array_api_check_in_subprocess(name: str, check: Callable[..., Any]) -> None:
    assert isinstance(check, partial)
    script = textwrap.dedent(
        f"""
        from sklearn.utils.estimator_checks import check_array_api_input
        from tabpfn_gateway import {name}
        from tabpfn_gateway.testing import local_gateway

        with local_gateway() as backend:
            check_array_api_input(
                {name!r}, {name}(backend=backend, progress=False), **{check.keywords!r}
            )
        print("array api check passed")
        """
    )
    env = {**os.environ, "SCIPY_ARRAY_API": "1"}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "array api check passed" in done.stdout
