"""64 concurrent predictions against a budget that fits 10 spend exactly 10: on SQLite, on
PostgreSQL, and across two replicas (two apps, two engines) on one PostgreSQL database."""

from __future__ import annotations

from pathlib import Path

import pytest

from governance_support import (
    TOKEN,
    admin_key,
    concurrent_predictions,
    fit_once,
    replicas,
    tenant,
)

CALLERS = 64
PRICE = 5 * 4  # rows x columns: FakeTabPFN's price of one prediction
BUDGET = 10 * PRICE


def _exact_spend(tmp_path: Path, url: str, replica_count: int) -> None:
    with replicas(tmp_path, url, count=replica_count) as (fake, apps):
        ann = tenant(apps[0])
        apps[0].gateway.admin.set_policy(
            ann.key_id,
            # Rolling: a calendar month's reset cannot fall in the middle of the test.
            {"budget_credits": BUDGET, "budget_period": "month", "budget_window": "rolling"},
            kind="key",
        )
        fit_id = fit_once(apps[0].client(ann.key))
        used_before = fake.usage(TOKEN)
        clients = [apps[i % replica_count].client(ann.key) for i in range(CALLERS)]
        successes, codes = concurrent_predictions(clients, fit_id)
        assert successes == 10
        assert codes == ["BUDGET_EXHAUSTED"] * (CALLERS - 10)
        # The upstream charged exactly ten predictions, and the ledger agrees to the credit.
        assert fake.usage(TOKEN) - used_before == BUDGET
        [status] = apps[0].gateway.admin.budget_status(ann.key_id)
        assert (status.spent, status.reserved, status.remaining) == (BUDGET, 0, 0)
        # Usage events carry the settled credits.
        for app in apps:
            app.gateway.usage.flush()
        summary = apps[0].gateway.store.summarize_usage(key_id=ann.key_id)
        predicted = [s for s in summary if s.operation == "predict"]
        assert predicted[0].credits == BUDGET
        # Refusals are recorded too (status 429), with no credits.
        assert (predicted[0].calls, predicted[0].errors) == (CALLERS, CALLERS - 10)


def test_exact_spend_on_sqlite(tmp_path: Path, sqlite_url: str) -> None:
    _exact_spend(tmp_path, sqlite_url, 1)


def test_exact_spend_on_sqlite_with_two_apps_on_one_file(tmp_path: Path, sqlite_url: str) -> None:
    _exact_spend(tmp_path, sqlite_url, 2)


def test_exact_spend_on_postgres(tmp_path: Path, pg_url: str) -> None:
    _exact_spend(tmp_path, pg_url, 1)


def test_exact_spend_across_two_postgres_replicas(tmp_path: Path, pg_url: str) -> None:
    _exact_spend(tmp_path, pg_url, 2)


@pytest.mark.parametrize("url", ["memory://"])
def test_exact_spend_in_memory(tmp_path: Path, url: str) -> None:
    _exact_spend(tmp_path, url, 1)


def test_admin_key_helper_is_usable(tmp_path: Path, sqlite_url: str) -> None:
    with replicas(tmp_path, sqlite_url) as (_, apps):
        assert admin_key(apps[0]).startswith("tpga_")
