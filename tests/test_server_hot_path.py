"""What the forwarding hot path leaves out: FastAPI's own per-request telemetry (the gateway's
tracing is its own), an unbounded method label, and a startup heap the garbage collector walks
on every full collection; each checked in a process of its own where it touches global state."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from gateway_support import asgi_client, make_settings, serve_in_thread
from tabpfn_gateway_server import create_app


def run_python(code: str, tmp_path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent,
        env={
            "PATH": "/usr/bin:/bin",
            "TABPFN_GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path}/g.db",
            "TABPFN_GATEWAY_DATA_DIR": str(tmp_path / "data"),
            "TABPFN_GATEWAY_SECRET_KEY": "hot-path-secret-0123456789abcdef",
            "TABPFN_GATEWAY_LOG_LEVEL": "WARNING",
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_a_configured_tracer_provider_gets_no_second_server_span(tmp_path: Path) -> None:
    # A process that configures OpenTelemetry for itself (a global provider) without the
    # gateway's tracing on: FastAPI's native telemetry would trace every request itself.
    out = run_python(
        """
        import httpx
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

        from tabpfn_gateway_server import create_app_from_env

        from gateway_support import serve_in_thread

        with serve_in_thread(create_app_from_env()) as url:
            assert httpx.get(url + "/healthz").status_code == 200
            assert httpx.post(url + "/get_api_usage/").status_code == 401
        print(len(exporter.get_finished_spans()))
        """,
        tmp_path,
    )
    assert out.splitlines()[-1] == "0"


def test_the_served_app_freezes_its_startup_heap_and_an_embedded_one_does_not(
    tmp_path: Path,
) -> None:
    out = run_python(
        """
        import gc
        import sys
        import httpx
        from gateway_support import serve_in_thread
        from tabpfn_gateway.config import get_settings
        from tabpfn_gateway_server import create_app, create_app_from_env

        with serve_in_thread(create_app(get_settings())) as url:
            assert httpx.get(url + "/healthz").status_code == 200
            embedded = gc.get_freeze_count()
            preloaded = "pyarrow.parquet" in sys.modules
        with serve_in_thread(create_app_from_env()) as url:
            assert httpx.get(url + "/healthz").status_code == 200
            served = gc.get_freeze_count()
            # What requests import on first use is imported before the freeze.
            assert "pyarrow.parquet" in sys.modules
        print(embedded, served, preloaded)
        """,
        tmp_path,
    )
    embedded, served, preloaded = out.splitlines()[-1].split()
    assert int(embedded) == 0
    assert preloaded == "False"  # an embedding process imports nothing it did not ask for
    # Everything startup built: tens of thousands of objects (about 190,000 measured).
    assert int(served) > 10_000


def test_a_served_gateway_imports_nothing_on_its_first_proxied_calls(tmp_path: Path) -> None:
    # A module imported after the startup freeze stays in the collected heap: aiohttp and
    # what it imports (about 19,000 objects) cost every full collection 12 ms under load.
    out = run_python(
        """
        import gc
        import os
        import types
        from sklearn.datasets import make_classification
        from gateway_support import serve_in_thread
        from tabpfn_gateway.protocol import ProtocolClient
        from tabpfn_gateway.protocol.messages import (
            ClassifierConfig,
            ClassifierFitTaskConfig,
            ClassifierPredictParams,
        )
        from tabpfn_gateway.testing import FakeTabPFN
        from tabpfn_gateway_server import create_app_from_env
        import httpx

        X, y = make_classification(120, 4, random_state=0)
        probas = ClassifierConfig(predict_params=ClassifierPredictParams(output_type="probas"))
        with serve_in_thread(FakeTabPFN(tokens=["tok-hot-1"]).app) as upstream:
            with ProtocolClient(upstream, "tok-hot-1") as direct:  # the client's own imports
                fit = direct.fit(X[:100], y[:100], ClassifierFitTaskConfig())
                direct.predict(fit.fitted_train_set_id, X[100:], probas)
            os.environ["TABPFN_GATEWAY_UPSTREAM_URL"] = upstream
            with serve_in_thread(create_app_from_env()) as url:
                setup = httpx.post(url + "/api/v1/auth/setup", json={"tabpfn_token": "tok-hot-1"})
                key = setup.json()["api_key"]
                with ProtocolClient(url, key) as client:
                    fit = client.fit(X[:100], y[:100], ClassifierFitTaskConfig())
                    client.predict(fit.fitted_train_set_id, X[100:], probas)
                    client.get_api_usage()
                # Imported since the freeze: what every full collection walks again.
                late = [m for m in gc.get_objects() if isinstance(m, types.ModuleType)]
                print(sorted(module.__name__ for module in late))
        """,
        tmp_path,
    )
    assert out.splitlines()[-1] == "[]"


def test_any_method_a_client_sends_is_one_bounded_label(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, f"sqlite:///{tmp_path}/g.db", metrics_token="scrape-0123456789abcdef"
    )
    # In process: uvicorn's httptools parser refuses unknown methods, h11 and other ASGI
    # servers pass any token through.
    with asgi_client(create_app(settings)) as client:
        for n in range(40):
            client.request(f"METHOD{n}", "/nowhere")
        client.request("GET", "/nowhere")
        text = client.get(
            "/metrics", headers={"Authorization": "Bearer scrape-0123456789abcdef"}
        ).text
    methods = {
        line.split('method="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("tabpfn_gateway_http_requests_total{")
    }
    assert "other" in methods
    assert "GET" in methods
    assert not any(method.startswith("METHOD") for method in methods)


def test_the_stack_starts_at_the_edge_and_an_unexpected_error_is_the_documented_500(
    tmp_path: Path,
) -> None:
    from tabpfn_gateway_server.middleware import EdgeMiddleware

    app = create_app(make_settings(tmp_path, f"sqlite:///{tmp_path}/g.db"))
    # FastAPI's own outer layers (a second last-resort handler, its native telemetry, an
    # unused body limit) are gone from the hot path: the edge is the whole outside.
    assert isinstance(app.build_middleware_stack(), EdgeMiddleware)

    async def broken() -> None:
        raise RuntimeError("an unexpected failure")

    app.add_api_route("/broken", broken)
    gateway = app.state.gateway

    async def broken_proxy(*args: object, **kwargs: object) -> None:
        raise RuntimeError("an unexpected failure on the direct path")

    gateway.proxy.get_api_usage = broken_proxy
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        for method, path in (("GET", "/broken"), ("POST", "/get_api_usage/")):
            answer = client.request(method, path, headers={"Authorization": "Bearer x"})
            assert answer.status_code == 500, (path, answer.text)
            body = answer.json()
            assert body["error_code"] == "GATEWAY_ERROR"
            assert body["trace_id"] == answer.headers["X-Trace-Id"]
            assert "unexpected failure" not in answer.text
        # Still serving.
        assert client.get("/healthz").status_code == 200
