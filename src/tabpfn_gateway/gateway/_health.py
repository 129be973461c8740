"""Readiness: the database answers and its schema is current."""

from __future__ import annotations

import time

from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import GatewayError, SchemaNotCurrent, StoreError
from tabpfn_gateway.store import Store

__all__ = ["Readiness"]

_SCHEMA_CHECK_SECONDS = 30.0


class Readiness:
    """``check()`` returns if the gateway can serve, else raises why it cannot."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._schema_current_until = 0.0

    def check(self) -> None:
        """Return if the database answers and its schema is current; else raise
        ``StoreUnavailable`` or ``SchemaNotCurrent``."""
        self._store.ping()
        if self._settings.database_url.startswith("memory://"):
            return
        # Reading the revision opens a connection of its own; a current schema stays current
        # until a newer release migrates it, so a positive answer is trusted for a while.
        if time.monotonic() < self._schema_current_until:
            return
        from tabpfn_gateway.migrate import is_current

        try:
            current = is_current(self._settings)
        except GatewayError:
            raise
        except Exception as exc:  # migrate is a boundary to Alembic and SQLAlchemy
            raise StoreError("Could not read the schema revision.") from exc
        if not current:
            raise SchemaNotCurrent()
        self._schema_current_until = time.monotonic() + _SCHEMA_CHECK_SECONDS
