"""Readiness: the database answers, its schema is current and whole, and the secret is its own."""

from __future__ import annotations

import time
from collections.abc import Callable

from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import GatewayError, SchemaNotCurrent, StoreError
from tabpfn_gateway.store import Store

__all__ = ["Readiness"]

# A positive schema answer is trusted this long (reading it opens a connection of its own).
_SCHEMA_CHECK_SECONDS = 5.0


class Readiness:
    """``check()`` returns if the gateway can serve, else raises why it cannot."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._schema_current_until = 0.0
        self._pending: list[Callable[[], None]] = []

    def require(self, check: Callable[[], None]) -> None:
        """Run ``check`` on each readiness check until it passes once (e.g. the secret's
        fingerprint, when the database could not be asked at start)."""
        self._pending.append(check)

    def check(self) -> None:
        """Return if the database answers and its schema is current with every table; else
        raise ``StoreUnavailable``, ``SchemaNotCurrent`` (or what a required check raises)."""
        self._store.ping()
        while self._pending:
            self._pending[0]()
            self._pending.pop(0)
        if self._settings.database_url.startswith("memory://"):
            return
        # Reading the revision opens a connection of its own; a current schema stays current
        # until a newer release migrates it, so a positive answer is trusted for a while.
        if time.monotonic() < self._schema_current_until:
            return
        from tabpfn_gateway.migrate import is_current, missing_tables

        try:
            current = is_current(self._settings)
            missing = missing_tables(self._settings) if current else []
        except GatewayError:
            raise
        except Exception as exc:  # migrate is a boundary to Alembic and SQLAlchemy
            raise StoreError("Could not read the schema revision.") from exc
        if not current:
            raise SchemaNotCurrent()
        if missing:
            raise SchemaNotCurrent(
                f"The database lacks tables the gateway needs ({', '.join(missing)}): "
                "restore them or migrate a fresh database."
            )
        self._schema_current_until = time.monotonic() + _SCHEMA_CHECK_SECONDS
