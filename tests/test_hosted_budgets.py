"""Budgets for hosted keys: a container has no credits, so a budget may count cells (rows x
columns) or calls. A hosted prediction that would exceed a cell budget is refused (429
BUDGET_EXHAUSTED) before the container has a complete body; exact under 16 concurrent callers
on SQLite, through the admin API, and the same units on cloud predictions."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from gateway_support import add_admin_key, add_tenant, build_gateway, make_settings, serve_in_thread
from hosted_support import InProcessContainer
from tabpfn_gateway import migrate
from tabpfn_gateway.errors import BudgetExhausted
from tabpfn_gateway.gateway import Gateway
from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    ClassifierFitTaskConfig,
    ClassifierPredictParams,
)
from tabpfn_gateway.store import open_store
from tabpfn_gateway.testing import FakeHostedTabPFN, FakeTabPFN
from tabpfn_gateway_server import create_app

pytestmark = pytest.mark.slow

BEARER = "tok-hosted-budget-0001"
CLOUD_TOKEN = "tok-cloud-budget-0002"
TRAIN_ROWS, TEST_ROWS, COLUMNS = 20, 5, 4
# What one request costs: the rows the container computes over (train + test) x columns.
CELLS = (TRAIN_ROWS + TEST_ROWS) * COLUMNS


@dataclass
class Stack:
    url: str
    gateway: Gateway
    container: FakeHostedTabPFN
    cloud: FakeTabPFN
    admin_key: str

    def hosted_key(self, name: str) -> tuple[str, str]:
        admin = self.gateway.admin
        principal = admin.add_principal(name, "team", actor="test")
        credential = admin.add_hosted_credential(
            principal.id, "box", endpoint_url="http://container.test/predict", token=BEARER
        )
        created = self.gateway.keys.create(principal.id, credential.id, "k")
        return created.record.key_id, created.plaintext


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/gateway.db")
    migrate.upgrade(settings)
    cloud = FakeTabPFN(tokens=[CLOUD_TOKEN])
    container = FakeHostedTabPFN(tokens=[BEARER])
    gateway = build_gateway(settings, cloud.app, store=open_store(settings))
    try:
        app = create_app(
            settings, gateway=gateway, hosted_transport=InProcessContainer(container.app)
        )
        with serve_in_thread(app) as url:
            yield Stack(url, gateway, container, cloud, add_admin_key(gateway))
    finally:
        gateway.close()
        gateway.store.close()


def _body(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "task_config": {"task": "classification", "predict_params": {"output_type": "preds"}},
        "X_train": rng.normal(size=(TRAIN_ROWS, COLUMNS)).tolist(),
        "y_train": [[i % 2] for i in range(TRAIN_ROWS)],
        "X_test": rng.normal(size=(TEST_ROWS, COLUMNS)).tolist(),
    }


def _predict(stack: Stack, key: str, seed: int) -> httpx.Response:
    return httpx.post(
        stack.url + "/predict",
        json=_body(seed),
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def _set_policy(stack: Stack, kind: str, target: str, **fields: Any) -> dict[str, Any]:
    answer = httpx.put(
        f"{stack.url}/api/v1/admin/policies/{kind}/{target}",
        json=fields,
        headers={"Authorization": f"Bearer {stack.admin_key}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_a_cell_budget_is_exact_under_16_concurrent_hosted_callers(stack: Stack) -> None:
    key_id, key = stack.hosted_key("hosted-team")
    policy = _set_policy(
        stack, "principals", "hosted-team",
        budget_credits=7 * CELLS, budget_unit="cells", budget_window="rolling",
    )  # fmt: skip
    assert policy["budget_unit"] == "cells"

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda i: _predict(stack, key, i), range(16)))

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 7 + [429] * 9
    for refused in (a for a in answers if a.status_code == 429):
        body = refused.json()
        assert body["error_code"] == "BUDGET_EXHAUSTED"
        assert 'qu="cells"' in refused.headers["RateLimit-Policy"]
        assert "Retry-After" in refused.headers
    # Only the admitted predictions reached the container whole.
    assert [r.status for r in stack.container.requests].count(200) == 7
    [status] = stack.gateway.admin.budget_status(key_id)
    assert (status.unit, status.spent, status.reserved) == ("cells", 7 * CELLS, 0)
    assert status.remaining == 0


def test_a_call_budget_counts_hosted_predictions_and_credits_do_not(stack: Stack) -> None:
    key_id, key = stack.hosted_key("counted-team")
    # A credit budget of nothing: a container spends no credits, so it does not apply.
    _set_policy(stack, "keys", key_id, budget_credits=0, budget_window="rolling")
    assert _predict(stack, key, 0).status_code == 200
    _set_policy(stack, "principals", "counted-team", budget_credits=2, budget_unit="calls")
    assert [_predict(stack, key, i).status_code for i in range(1, 4)] == [200, 200, 429]
    calls = [s for s in stack.gateway.admin.budget_status(key_id) if s.unit == "calls"]
    assert [(s.spent, s.reserved) for s in calls] == [(2, 0)]
    # A refused call left nothing with the container.
    assert [r.status for r in stack.container.requests].count(200) == 3


def test_a_cell_budget_counts_cloud_predictions_by_their_test_set(stack: Stack) -> None:
    tenant = add_tenant(stack.gateway, "cloud-team", CLOUD_TOKEN)
    _set_policy(
        stack, "keys", tenant.key_id,
        budget_credits=2 * TEST_ROWS * COLUMNS, budget_unit="cells", budget_window="rolling",
    )  # fmt: skip
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(TRAIN_ROWS, COLUMNS)), np.arange(TRAIN_ROWS) % 2
    probas = ClassifierConfig(predict_params=ClassifierPredictParams(output_type="probas"))
    session = stack.gateway.session(tenant.key)
    fit = session.fit(X, y, ClassifierFitTaskConfig())
    for _ in range(2):
        session.predict(fit.fitted_train_set_id, rng.normal(size=(TEST_ROWS, COLUMNS)), probas)
    with pytest.raises(BudgetExhausted) as refused:
        session.predict(fit.fitted_train_set_id, rng.normal(size=(TEST_ROWS, COLUMNS)), probas)
    assert refused.value.details["unit"] == "cells"
    [status] = stack.gateway.admin.budget_status(tenant.key_id)
    assert (status.unit, status.spent) == ("cells", 2 * TEST_ROWS * COLUMNS)


def test_bad_budget_units_are_invalid_requests(stack: Stack) -> None:
    answer = httpx.put(
        f"{stack.url}/api/v1/admin/policies/principals/nobody",
        json={"budget_unit": "euros"},
        headers={"Authorization": f"Bearer {stack.admin_key}"},
        timeout=30,
    )
    assert answer.status_code in (400, 422)
    assert "error_code" in answer.json()
    stack.gateway.admin.add_principal("someone", "team")
    with pytest.raises(Exception, match="budget_unit"):
        stack.gateway.admin.set_policy("someone", {"budget_unit": "euros"})
