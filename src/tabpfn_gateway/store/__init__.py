"""Persistence: the Store protocol, its records, and ``open_store`` to get one from a URL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tabpfn_gateway.store.base import MAX_PAGE_SIZE, Store
from tabpfn_gateway.store.records import (
    ApiKey,
    AuditEvent,
    FittedModel,
    KeyChanges,
    KeyState,
    Page,
    Principal,
    PrincipalKind,
    UpstreamCredential,
    UsageEvent,
    UsageSummary,
    new_id,
    utcnow,
)

if TYPE_CHECKING:
    from tabpfn_gateway.config import Settings

__all__ = [
    "MAX_PAGE_SIZE",
    "ApiKey",
    "AuditEvent",
    "FittedModel",
    "KeyChanges",
    "KeyState",
    "Page",
    "Principal",
    "PrincipalKind",
    "Store",
    "UpstreamCredential",
    "UsageEvent",
    "UsageSummary",
    "new_id",
    "open_store",
    "utcnow",
]


def open_store(settings: Settings | None = None, *, url: str | None = None) -> Store:
    """The store for ``url`` (or ``settings.database_url``): ``memory://`` gives an in-memory
    store; any SQLAlchemy URL (SQLite, PostgreSQL) gives the SQL store. The SQL store does not
    create tables: the schema belongs to Alembic (``tabpfn-gateway db upgrade``)."""
    if url is None:
        if settings is None:
            from tabpfn_gateway.config import get_settings

            settings = get_settings()
        url = settings.database_url
    if url.startswith("memory://"):
        from tabpfn_gateway.store.memory import MemoryStore

        return MemoryStore()
    from tabpfn_gateway.store.sql import SqlStore

    return SqlStore.from_url(url, settings=settings)
