"""Item 10: /readyz sees a missing table at once (not only the migration number, no stale cache)."""

from __future__ import annotations

import sqlalchemy as sa

from security_support import Stack
from tabpfn_gateway.store.sql import create_engine_for_url


def test_readyz_is_503_as_soon_as_a_table_is_missing(stack: Stack) -> None:
    ready = stack.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    settings = stack.gateway.settings
    engine = create_engine_for_url(settings.database_url, settings)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE usage_events"))
    finally:
        engine.dispose()
    # Right away: a positive answer a moment ago must not hide the loss.
    response = stack.http.get("/readyz")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error_code"] == "SCHEMA_NOT_CURRENT"
    assert stack.http.get("/healthz").status_code == 200
