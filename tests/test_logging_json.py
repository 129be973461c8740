"""JSON logs, redaction in front of every handler, and the request's trace id on its records."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway_support import asgi_client, build_gateway, make_settings
from tabpfn_gateway import logs, migrate
from tabpfn_gateway.logs import REDACTED, setup_logging
from tabpfn_gateway.store import open_store
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway_server import create_app

GATEWAY_KEY = "tpg_4f9a2b7c_Zq8xW3vK9mN2pL5rT7yU1aB4cD6eF8gH_0a1b2c3d"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJlLWJ5dGVz"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put back the root handlers, level and record factory that setup_logging changes."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    factory = logging.getLogRecordFactory()
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        logging.setLogRecordFactory(factory)
        logs._configured = False


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_have_the_fields_and_no_secret() -> None:
    stream = io.StringIO()
    setup_logging("INFO", stream=stream, force=True, log_format="json")
    logger = logging.getLogger("tabpfn_gateway.tests.json")
    logger.info("made %s", GATEWAY_KEY, extra={"caller_token": JWT, "rows": 3})
    try:
        raise ValueError(f"bad key {GATEWAY_KEY}")
    except ValueError:
        logger.exception("failed")
    first, second = json_lines(stream)
    assert first["level"] == "INFO"
    assert first["logger"] == "tabpfn_gateway.tests.json"
    assert first["message"] == f"made {REDACTED}"
    assert first["caller_token"] == REDACTED  # extra= fields are redacted too
    assert first["rows"] == 3
    assert first["timestamp"].endswith("+00:00")
    assert "trace_id" not in first  # outside a request there is none
    assert second["message"] == "failed"
    assert "ValueError: bad key [REDACTED]" in second["exc_info"]
    assert GATEWAY_KEY not in stream.getvalue()
    assert JWT not in stream.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_handlers_added_later_to_our_loggers_get_redacted_records() -> None:
    setup_logging("INFO", stream=io.StringIO(), force=True)
    # Logger filters do not reach child loggers; a user's handler on one of them, added after
    # setup and without any filter, must still never see a secret.
    theirs = io.StringIO()
    handler = logging.StreamHandler(theirs)
    handler.setFormatter(logging.Formatter("%(message)s | %(exc_text)s"))
    child = logging.getLogger("tabpfn_gateway.gateway.some_child")
    child.addHandler(handler)
    try:
        child.warning("token=%s and %s", "s3cr3t-value-123", GATEWAY_KEY)
        try:
            raise RuntimeError(f"Bearer {JWT}")
        except RuntimeError:
            child.exception("boom")
    finally:
        child.removeHandler(handler)
    output = theirs.getvalue()
    assert "s3cr3t-value-123" not in output
    assert GATEWAY_KEY not in output
    assert JWT not in output
    assert output.count(REDACTED) >= 3


@pytest.mark.usefixtures("restore_logging")
def test_positional_args_survive_redaction_for_formatters_that_read_them() -> None:
    # uvicorn's AccessFormatter unpacks record.args (client, method, path, version, status).
    setup_logging("INFO", stream=io.StringIO(), force=True)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    # A logger of its own: other tests' logging configs may disable uvicorn's (alembic does).
    access = logging.getLogger("tests.uvicorn_like.access")
    access.setLevel(logging.INFO)
    keep = Keep()
    access.addHandler(keep)
    try:
        access.info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "GET",
            f"/api/v1/admin/keys/{GATEWAY_KEY}",
            "1.1",
            404,
        )
    finally:
        access.removeHandler(keep)
    (record,) = records
    assert isinstance(record.args, tuple)
    assert len(record.args) == 5
    assert record.args[2] == f"/api/v1/admin/keys/{REDACTED}"
    assert record.args[4] == 404


def test_json_format_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from tabpfn_gateway.config import get_settings
    from tabpfn_gateway.errors import ConfigurationError

    monkeypatch.setenv("TABPFN_GATEWAY_LOG_FORMAT", "json")
    assert get_settings().log_format == "json"
    monkeypatch.setenv("TABPFN_GATEWAY_LOG_FORMAT", "xml")
    with pytest.raises(ConfigurationError, match="TABPFN_GATEWAY_LOG_FORMAT"):
        get_settings()


@pytest.mark.usefixtures("restore_logging")
def test_log_records_made_while_answering_carry_the_request_trace_id(tmp_path: Path) -> None:
    stream = io.StringIO()
    setup_logging("INFO", stream=stream, force=True, log_format="json")
    fake = FakeTabPFN(tokens=["tok-json-logs"])
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/gateway.db")
    migrate.upgrade(settings)
    gateway = build_gateway(settings, fake.app, store=open_store(settings))
    app = create_app(settings, gateway=gateway)

    @app.get("/test-logs-something")
    async def log_something() -> dict[str, str]:
        logging.getLogger("tabpfn_gateway.tests.route").info("inside %s", GATEWAY_KEY)
        return {"ok": "yes"}

    try:
        with asgi_client(app) as client:
            answer = client.get("/test-logs-something", headers={"traceparent": TRACEPARENT})
            assert answer.headers["X-Trace-Id"] == TRACE
            client.get("/test-logs-something", headers={"X-Request-ID": "req-42"})
    finally:
        gateway.close()
        gateway.store.close()
    inside = [line for line in json_lines(stream) if line["logger"] == "tabpfn_gateway.tests.route"]
    assert [line["trace_id"] for line in inside] == [TRACE, "req-42"]
    assert all(line["message"] == f"inside {REDACTED}" for line in inside)
