"""A script, a notebook kernel or a test run that uses ``local_gateway()`` ends: no hang at exit."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx

from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway.testing.transport import ASGIBridgeTransport

SCRIPT = textwrap.dedent(
    """
    from sklearn.datasets import load_iris
    from tabpfn_gateway import GatewayClassifier
    from tabpfn_gateway.testing import local_gateway
    X, y = load_iris(return_X_y=True)
    print("score", GatewayClassifier(backend=local_gateway()).fit(X, y).score(X, y))
    """
)


def _run(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # The timeout only turns a hang into a failure; it measures nothing.
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=180,
        check=False,
    )


def test_a_script_that_never_closes_the_backend_exits(tmp_path: Path) -> None:
    done = _run(SCRIPT, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("score 0.9")
    assert "Traceback" not in done.stderr


def test_a_script_that_closes_the_backend_exits(tmp_path: Path) -> None:
    script = SCRIPT.replace(
        "print(", "backend = local_gateway()\nwith backend:\n    print("
    ).replace("GatewayClassifier(backend=local_gateway())", "GatewayClassifier(backend=backend)")
    done = _run(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "score 0.9" in done.stdout


def _portal_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "portal" in t.name}


def test_a_collected_transport_stops_its_event_loop_thread() -> None:
    before = _portal_threads()
    transport = ASGIBridgeTransport(FakeTabPFN().app)
    # Never closed: the way an estimator's backend is often left behind.
    client = httpx.Client(transport=transport, base_url="http://fake.test")
    assert client.get("/").status_code < 500
    started = _portal_threads() - before
    assert len(started) == 1
    (thread,) = started
    del transport, client
    gc.collect()
    thread.join(timeout=60)
    assert not thread.is_alive()


def test_close_stops_the_event_loop_thread_and_a_new_request_starts_another() -> None:
    transport = ASGIBridgeTransport(FakeTabPFN().app)
    before = _portal_threads()
    client = httpx.Client(transport=transport, base_url="http://fake.test")
    client.get("/")
    (first,) = _portal_threads() - before
    transport.close()
    assert not first.is_alive()
    client.get("/")
    (second,) = _portal_threads() - before - {first}
    transport.close()
    assert not second.is_alive()
