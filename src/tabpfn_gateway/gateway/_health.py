"""Readiness: the database answers, its schema is current and whole, and the secret is its own."""

from __future__ import annotations

from collections.abc import Callable

from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import GatewayError, SchemaNotCurrent, StoreError
from tabpfn_gateway.store import Store

__all__ = ["Readiness"]


class Readiness:
    """``check()`` returns if the gateway can serve, else raises why it cannot."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._head: str | None = None
        self._pending: list[Callable[[], None]] = []

    def require(self, check: Callable[[], None]) -> None:
        """Run ``check`` on each readiness check until it passes once (e.g. the secret's
        fingerprint, when the database could not be asked at start)."""
        self._pending.append(check)

    def check(self) -> None:
        """Return if the database answers and its schema is current with every table; else
        raise ``StoreUnavailable``, ``SchemaNotCurrent`` (or what a required check raises).

        Asked afresh each time (a table dropped by hand shows at the next check): one pooled
        connection reads the revision and the table names, a few milliseconds.
        """
        self._store.ping()
        while self._pending:
            self._pending[0]()
            self._pending.pop(0)
        if self._settings.database_url.startswith("memory://"):
            return
        from tabpfn_gateway import migrate
        from tabpfn_gateway.store import schema

        try:
            if self._head is None:
                self._head = migrate.head_revision()
            revision, present = self._schema_state()
        except GatewayError:
            raise
        except Exception as exc:  # migrate is a boundary to Alembic and SQLAlchemy
            raise StoreError("Could not read the schema revision.") from exc
        if revision != self._head:
            raise SchemaNotCurrent()
        missing = sorted(set(schema.metadata.tables) - present)
        if missing:
            raise SchemaNotCurrent(
                f"The database lacks tables the gateway needs ({', '.join(missing)}): "
                "restore them or migrate a fresh database."
            )

    def _schema_state(self) -> tuple[str | None, frozenset[str]]:
        read: Callable[[], tuple[str | None, frozenset[str]]] | None = getattr(
            self._store, "schema_state", None
        )
        if read is not None:
            return read()
        # A store without its own reader (a wrapper): ask over a connection of our own.
        from tabpfn_gateway.migrate import current_revision, missing_tables
        from tabpfn_gateway.store import schema

        present = frozenset(schema.metadata.tables) - set(missing_tables(self._settings))
        return current_revision(self._settings), present
