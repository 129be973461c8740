"""The SQL schema (SQLAlchemy Core tables) the SQL store reads and Alembic migrations create."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

__all__ = [
    "UTCDateTime",
    "api_keys",
    "audit_events",
    "fitted_models",
    "metadata",
    "principals",
    "upstream_credentials",
    "usage_events",
]

# Stable constraint names: Alembic can compare, alter and drop them by name on every database.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp that goes in and comes out timezone-aware in UTC.

    PostgreSQL keeps the zone (timestamptz); SQLite keeps none, so values are stored as UTC
    wall time and the zone is put back on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to a UTC timestamp column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class StringTuple(sa.types.TypeDecorator[tuple[str, ...]]):
    """A tuple of strings stored as a JSON array in text, so equality (compare-and-set on
    ``scopes``) works on every database."""

    impl = sa.Text()
    cache_ok = True

    def process_bind_param(self, value: tuple[str, ...] | None, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(list(value), separators=(",", ":"))

    def process_result_value(self, value: str | None, dialect: Dialect) -> tuple[str, ...] | None:
        return None if value is None else tuple(json.loads(value))


def _text() -> sa.types.TypeEngine[str]:
    # Byte-order collation on PostgreSQL, so ordering and tie-breaks match SQLite and Python
    # (the default locale collation would order ids differently from the memory store).
    return sa.String().with_variant(postgresql.VARCHAR(collation="C"), "postgresql")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON()


def _created_at() -> sa.Column[datetime]:
    return sa.Column("created_at", UTCDateTime(), nullable=False)


principals = sa.Table(
    "principals",
    metadata,
    sa.Column("id", _text(), primary_key=True),
    sa.Column("name", _text(), nullable=False),
    sa.Column("kind", _text(), nullable=False),
    _created_at(),
    sa.UniqueConstraint("name"),
    sa.Index(None, "created_at", "id"),
)

upstream_credentials = sa.Table(
    "upstream_credentials",
    metadata,
    sa.Column("id", _text(), primary_key=True),
    sa.Column("owner_id", _text(), sa.ForeignKey("principals.id"), nullable=False),
    sa.Column("label", _text(), nullable=False),
    sa.Column("encrypted_token", sa.LargeBinary(), nullable=False),
    _created_at(),
    sa.Column("verified_at", UTCDateTime(), nullable=True),
    sa.Index(None, "owner_id", "created_at", "id"),
    sa.Index(None, "created_at", "id"),
)

# credential_id has no foreign key on purpose: deleting a credential leaves its keys in
# place (the core refuses them), see Store.delete_credential.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", _text(), primary_key=True),
    sa.Column("name", _text(), nullable=False),
    sa.Column("owner_id", _text(), sa.ForeignKey("principals.id"), nullable=False),
    sa.Column("credential_id", _text(), nullable=True),
    sa.Column("scopes", StringTuple(), nullable=False),
    sa.Column("secret_hash", _text(), nullable=False),
    sa.Column("hash_scheme", _text(), nullable=False),
    sa.Column("display_prefix", _text(), nullable=False),
    sa.Column("last4", _text(), nullable=False),
    _created_at(),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("disabled_at", UTCDateTime(), nullable=True),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
    sa.Column("previous_secret_hash", _text(), nullable=True),
    sa.Column("previous_hash_scheme", _text(), nullable=True),
    sa.Column("previous_valid_until", UTCDateTime(), nullable=True),
    sa.Column("rotated_at", UTCDateTime(), nullable=True),
    sa.Column("rotation_request_id", _text(), nullable=True),
    sa.Column("rotation_ciphertext", sa.LargeBinary(), nullable=True),
    sa.Index(None, "owner_id", "created_at", "key_id"),
    sa.Index(None, "created_at", "key_id"),
)

fitted_models = sa.Table(
    "fitted_models",
    metadata,
    sa.Column("id", _text(), primary_key=True),
    sa.Column("owner_id", _text(), nullable=False),
    sa.Column("credential_id", _text(), nullable=False),
    sa.Column("key_id", _text(), nullable=False),
    sa.Column("task", _text(), nullable=False),
    sa.Column("n_rows", sa.BigInteger(), nullable=True),
    sa.Column("n_cols", sa.BigInteger(), nullable=True),
    _created_at(),
    sa.Index(None, "owner_id", "created_at", "id"),
    sa.Index(None, "created_at", "id"),
)

usage_events = sa.Table(
    "usage_events",
    metadata,
    sa.Column("id", _text(), primary_key=True),
    sa.Column("key_id", _text(), nullable=False),
    sa.Column("owner_id", _text(), nullable=False),
    sa.Column("operation", _text(), nullable=False),
    sa.Column("status", sa.Integer(), nullable=False),
    sa.Column("latency_ms", sa.Float(), nullable=False),
    sa.Column("credential_id", _text(), nullable=True),
    sa.Column("rows", sa.BigInteger(), nullable=True),
    sa.Column("columns", sa.BigInteger(), nullable=True),
    sa.Column("bytes", sa.BigInteger(), nullable=True),
    sa.Column("upstream_trace_id", _text(), nullable=True),
    _created_at(),
    sa.Index(None, "key_id", "created_at"),
    sa.Index(None, "owner_id", "created_at"),
    sa.Index(None, "created_at", "id"),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", _text(), primary_key=True),
    sa.Column("actor", _text(), nullable=False),
    sa.Column("action", _text(), nullable=False),
    sa.Column("target_type", _text(), nullable=False),
    sa.Column("target_id", _text(), nullable=False),
    _created_at(),
    sa.Column("details", _json(), nullable=False),
    sa.Index(None, "target_id", "created_at"),
    sa.Index(None, "created_at", "id"),
)
