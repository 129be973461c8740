"""OpenTelemetry (the otel extra): one request is one trace, with the upstream call (aiohttp, over
a real socket to FakeTabPFN) and the database queries (SQLAlchemy on SQLite) as its children,
the caller's traceparent honoured, and no key, token or upload token in any span attribute."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway_support import (
    SECRET,
    Tenant,
    add_tenant,
    make_settings,
    serve_in_thread,
)
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway_server import create_app
from tabpfn_gateway_server.otel import instrument_app, scrub_url
from test_fake_app import prepare_train

TOKEN = "tok-otel-upstream-0001"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@dataclass
class Traced:
    client: httpx.Client
    exporter: InMemorySpanExporter
    tenant: Tenant

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tenant.key}"}

    def spans_of(self, trace_id: str) -> list[ReadableSpan]:
        return [
            span
            for span in self.exporter.get_finished_spans()
            if f"{span.context.trace_id:032x}" == trace_id
        ]


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[Traced]:
    fake = FakeTabPFN(tokens=[TOKEN])
    with serve_in_thread(fake.app) as upstream_url:
        settings = make_settings(
            tmp_path, f"sqlite:///{tmp_path}/gateway.db", upstream_url=upstream_url
        )
        # The app builds (and at shutdown closes) its own gateway, with the default upstream
        # transport (aiohttp's pool, over a real socket): what runs in production.
        app = create_app(settings)
        gateway = app.state.gateway
        tenant = add_tenant(gateway, "team-otel", TOKEN)
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        stop_tracing = instrument_app(app, gateway, tracer_provider=provider)
        try:
            with (
                serve_in_thread(app) as gateway_url,
                httpx.Client(base_url=gateway_url, timeout=60) as client,
            ):
                yield Traced(client, exporter, tenant)
        finally:
            stop_tracing()


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


def test_one_request_is_one_trace_with_upstream_and_database_children(traced: Traced) -> None:
    answer = traced.client.post(
        "/get_api_usage/",
        headers={**traced.auth(), "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Trace-Id"] == TRACE
    spans = traced.spans_of(TRACE)
    by_id = {span.context.span_id: span for span in spans}
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len(servers) == 1, [s.name for s in spans]
    (server,) = servers
    # The caller's span is the server span's parent: the gateway joined the caller's trace.
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert server.attributes is not None
    assert server.attributes.get("http.route") == "/get_api_usage/"
    clients = [
        s for s in spans if s.kind is SpanKind.CLIENT and "db.system" not in (s.attributes or {})
    ]
    queries = [s for s in spans if "db.system" in (s.attributes or {})]
    assert clients, "no upstream call span"
    assert queries, "no database query span"
    for child in clients + queries:
        assert server in ancestors(child, by_id), child.name
    assert any(
        str(
            (s.attributes or {}).get("url.full", (s.attributes or {}).get("http.url", ""))
        ).endswith("/get_api_usage/")
        for s in clients
    )
    assert {str((q.attributes or {}).get("db.system")) for q in queries} == {"sqlite"}


def test_without_a_traceparent_the_trace_id_is_the_spans(traced: Traced) -> None:
    answer = traced.client.post("/get_api_usage/", headers=traced.auth())
    assert answer.status_code == 200, answer.text
    trace_id = answer.headers["X-Trace-Id"]
    # The id answered and logged is the trace's own, so logs and traces join.
    assert len(traced.spans_of(trace_id)) >= 2


def test_no_span_attribute_holds_a_key_or_token(traced: Traced) -> None:
    headers = traced.auth()
    traced.client.post("/get_api_usage/", headers=headers)
    prepare = prepare_train(traced.client, traced.tenant.key)
    assert prepare.status_code == 200, prepare.text
    upload_urls = _urls_in(prepare.json())
    upload_tokens = [url.rsplit("/", 1)[-1] for url in upload_urls if "/gateway/upload/" in url]
    assert upload_tokens, upload_urls
    for url, payload in zip(upload_urls, prepare.extensions["payloads"], strict=True):
        uploaded = traced.client.put(url, content=payload, headers=headers)
        assert uploaded.status_code < 300, uploaded.text
    # A key sent in a path is refused, and still never recorded.
    traced.client.get(f"/api/v1/admin/keys/{traced.tenant.key}", headers=headers)
    secrets = [traced.tenant.key, TOKEN, SECRET, *upload_tokens]
    spans = traced.exporter.get_finished_spans()
    assert len(spans) > 5
    for span in spans:
        values = [span.name, *(str(v) for v in (span.attributes or {}).values())]
        for event in span.events:
            values += [str(v) for v in (event.attributes or {}).values()]
        for value in values:
            for secret in secrets:
                assert secret not in value, f"{span.name}: {value}"
            assert "?" not in value or "://" not in value, f"a query string in {value}"


def _urls_in(body: Any) -> list[str]:
    if isinstance(body, str):
        return [body] if body.startswith("http") else []
    if isinstance(body, dict):
        return [url for value in body.values() for url in _urls_in(value)]
    if isinstance(body, list):
        return [url for value in body for url in _urls_in(value)]
    return []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://storage.test/b/obj?X-Goog-Signature=abc&x=1", "https://storage.test/b/obj"),
        (
            "http://gw.test/gateway/upload/sealed.token-value",
            "http://gw.test/gateway/upload/[REDACTED]",
        ),
        (
            "/api/v1/admin/keys/tpg_4f9a2b7c_Zq8xW3vK9mN2pL5rT7yU1aB4c",
            "/api/v1/admin/keys/[REDACTED]",
        ),
        ("https://api.test/get_api_usage/", "https://api.test/get_api_usage/"),
    ],
)
def test_scrub_url(url: str, expected: str) -> None:
    assert scrub_url(url) == expected


def test_without_the_extra_the_message_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import builtins

    from tabpfn_gateway.errors import ConfigurationError

    real_import = builtins.__import__

    def no_otel(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("opentelemetry.instrumentation"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_otel)
    settings = make_settings(tmp_path, "memory://", otel_enabled=True)
    with pytest.raises(ConfigurationError, match=r"pip install 'tabpfn-gateway\[server,otel\]'"):
        create_app(settings, migrate=False)
