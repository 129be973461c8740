"""The trace id of a request honours traceparent and X-Request-ID and comes back in answers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from tabpfn_gateway_server.tracing import request_trace_ids
from test_server_api import Server, serve

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from serve(tmp_path)


def scope_with(**headers: str) -> dict[str, object]:
    return {
        "type": "http",
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}, TRACE),
        ({"traceparent": f"00-{TRACE.upper()}-00F067AA0BA902B7-00"}, TRACE),
        # traceparent wins over a request id; the request id is still echoed.
        ({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01", "x_request_id": "abc"}, TRACE),
        ({"x_request_id": "order-7/retry-2"}, "order-7/retry-2"),
    ],
)
def test_trace_id_comes_from_the_caller(headers: dict[str, str], expected: str) -> None:
    trace_id, _ = request_trace_ids(scope_with(**headers))
    assert trace_id == expected


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"traceparent": "garbage"},
        {"traceparent": f"ff-{TRACE}-00f067aa0ba902b7-01"},  # version ff is forbidden
        {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"},  # all-zero trace id
        {"traceparent": f"00-{TRACE}-{'0' * 16}-01"},  # all-zero parent id
        {"x_request_id": "has space"},
        {"x_request_id": "x" * 129},
        {"x_request_id": 'quote"d'},
    ],
)
def test_malformed_or_missing_ids_get_a_new_trace_id(headers: dict[str, str]) -> None:
    trace_id, request_id = request_trace_ids(scope_with(**headers))
    assert HEX32.match(trace_id)
    assert request_id is None
    assert trace_id != request_trace_ids(scope_with(**headers))[0]


def test_answers_carry_the_callers_trace_id(server: Server) -> None:
    answer = server.client.get(
        "/healthz", headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
    )
    assert answer.headers["X-Trace-Id"] == TRACE
    refused = server.client.get(
        "/api/v1/admin/keys", headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
    )
    assert refused.status_code == 401
    assert refused.json()["trace_id"] == TRACE
    assert refused.headers["X-Trace-Id"] == TRACE


def test_request_id_is_echoed_and_used(server: Server) -> None:
    answer = server.client.get("/api/v1/admin/keys", headers={"X-Request-ID": "req-1234"})
    assert answer.status_code == 401
    assert answer.headers["X-Request-ID"] == "req-1234"
    assert answer.headers["X-Trace-Id"] == "req-1234"
    assert answer.json()["trace_id"] == "req-1234"


def test_a_new_trace_id_is_a_uuid_and_not_echoed_as_request_id(server: Server) -> None:
    answer = server.client.get("/healthz")
    assert HEX32.match(answer.headers["X-Trace-Id"])
    UUID(answer.headers["X-Trace-Id"])  # tabpfn-client parses 404/409 trace ids as UUIDs
    assert "X-Request-ID" not in answer.headers


def test_a_non_uuid_request_id_stays_out_of_404_bodies(server: Server) -> None:
    # tabpfn-client validates 404 bodies with ``trace_id: UUID | None``.
    answer = server.client.post(
        "/tabpfn/get_fit_status",
        json={"fitted_train_set_id": "00000000-0000-0000-0000-000000000000"},
        headers={**server.user(), "X-Request-ID": "not-a-uuid"},
    )
    assert answer.status_code == 404, answer.text
    assert answer.json()["trace_id"] is None
    assert answer.headers["X-Trace-Id"] == "not-a-uuid"
