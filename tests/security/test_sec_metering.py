"""Item 1: usage metering cannot be poisoned: bounded at the boundary, bad events dropped alone."""

from __future__ import annotations

from security_support import Stack
from tabpfn_gateway.gateway import UsageRecorder
from tabpfn_gateway.store import UsageEvent, new_id

POISON = 2**63  # one past BIGINT: NumericValueOutOfRange on PostgreSQL, OverflowError on SQLite


def event(stack_tenant: object, rows: int | None = 10) -> UsageEvent:
    return UsageEvent(
        id=new_id(),
        key_id=stack_tenant.key_id,  # type: ignore[attr-defined]
        owner_id=stack_tenant.principal_id,  # type: ignore[attr-defined]
        credential_id=stack_tenant.credential_id,  # type: ignore[attr-defined]
        operation="predict",
        status=200,
        latency_ms=1.0,
        rows=rows,
    )


def recorded(stack: Stack) -> int:
    total = 0
    for tenant in (stack.alice, stack.bob):
        total += len(stack.gateway.store.list_usage(key_id=tenant.key_id, limit=1000).items)
    return total


def test_one_poison_event_among_100_good_ones_loses_only_itself(stack: Stack) -> None:
    recorder = UsageRecorder(stack.gateway.store, flush_interval=3600)
    try:
        for i in range(100):
            recorder.record(event(stack.alice if i % 2 else stack.bob))
            if i == 50:
                recorder.record(event(stack.alice, rows=POISON))
        assert recorder.flush() == 100
        assert recorded(stack) == 100
        assert recorder.rejected == 1
        assert recorder.pending == 0  # not re-queued forever
        # Later events of everyone are written as usual.
        recorder.record(event(stack.bob))
        assert recorder.flush() == 1
        assert recorded(stack) == 101
    finally:
        recorder.close()


def test_oversized_counts_are_refused_at_the_boundary(stack: Stack) -> None:
    key = stack.bearer(stack.alice.key)
    for path, body in (
        ("/tabpfn/estimate_cost", {"train_rows": POISON, "raw_columns": 1}),
        ("/tabpfn/estimate_cost", {"train_rows": 1, "raw_columns": -1}),
        ("/tabpfn/estimate_cost", {"train_rows": 1, "raw_columns": 1, "test_rows": POISON}),
        (
            "/tabpfn/prepare_train_set_upload",
            {
                "x_train_info": {"format": "parquet", "size_bytes": POISON},
                "y_train_info": {"format": "parquet"},
            },
        ),
    ):
        response = stack.http.post(path, json=body, headers=key)
        assert response.status_code == 400, (path, body, response.text)
        assert response.json()["error_code"] == "INVALID_REQUEST"
    assert stack.fake.requests_to("/tabpfn/estimate_cost") == []  # nothing forwarded


def test_a_failing_flush_never_fails_a_usage_read(stack: Stack) -> None:
    ok = stack.http.post(
        "/tabpfn/estimate_cost",
        json={"train_rows": 100, "raw_columns": 3},
        headers=stack.bearer(stack.alice.key),
    )
    assert ok.status_code == 200, ok.text
    stack.gateway.usage.record(event(stack.alice, rows=POISON))
    admin = stack.bearer(stack.admin_key)
    listed = stack.http.get("/api/v1/admin/usage", headers=admin)
    assert listed.status_code == 200, listed.text
    operations = [item["operation"] for item in listed.json()["items"]]
    assert operations == ["estimate_cost"]
    summary = stack.http.get("/api/v1/usage/summary", headers=stack.bearer(stack.alice.key))
    assert summary.status_code == 200, summary.text
