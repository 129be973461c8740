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
    "admin_sessions",
    "api_keys",
    "audit_events",
    "budget_counters",
    "fitted_models",
    "gateway_state",
    "metadata",
    "policies",
    "principals",
    "rate_counters",
    "team_memberships",
    "upload_owners",
    "upstream_credentials",
    "usage_daily",
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


class IntTuple(sa.types.TypeDecorator[tuple[int, ...]]):
    """A tuple of integers stored as a JSON array in text."""

    impl = sa.Text()
    cache_ok = True

    def process_bind_param(self, value: tuple[int, ...] | None, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps([int(v) for v in value])

    def process_result_value(self, value: str | None, dialect: Dialect) -> tuple[int, ...] | None:
        return None if value is None else tuple(int(v) for v in json.loads(value))


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
    sa.Column("kind", _text(), nullable=False),
    sa.Column("endpoint_url", _text(), nullable=True),
    sa.Column("timeout_seconds", sa.Float(), nullable=True),
    sa.Column("connect_timeout_seconds", sa.Float(), nullable=True),
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
    sa.Column("credits", sa.BigInteger(), nullable=True),
    sa.Column("error_code", _text(), nullable=True),
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

# Daily roll-ups of usage, written by prune before raw events go, so reports keep history.
usage_daily = sa.Table(
    "usage_daily",
    metadata,
    sa.Column("day", sa.Date(), nullable=False),
    sa.Column("key_id", _text(), nullable=False),
    sa.Column("owner_id", _text(), nullable=False),
    sa.Column("operation", _text(), nullable=False),
    sa.Column("calls", sa.BigInteger(), nullable=False),
    sa.Column("errors", sa.BigInteger(), nullable=False),
    sa.Column("rows", sa.BigInteger(), nullable=False),
    sa.Column("bytes", sa.BigInteger(), nullable=False),
    sa.Column("credits", sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint("day", "key_id", "owner_id", "operation"),
)

# One row per principal or key that has a policy (target ids are unique across both kinds).
policies = sa.Table(
    "policies",
    metadata,
    sa.Column("target_id", _text(), primary_key=True),
    sa.Column("target_type", _text(), nullable=False),
    sa.Column("requests_per_minute", sa.BigInteger(), nullable=True),
    sa.Column("requests_per_hour", sa.BigInteger(), nullable=True),
    sa.Column("max_concurrent_fits", sa.BigInteger(), nullable=True),
    sa.Column("budget_credits", sa.BigInteger(), nullable=True),
    sa.Column("budget_period", _text(), nullable=False),
    sa.Column("budget_window", _text(), nullable=False),
    sa.Column("budget_mode", _text(), nullable=False),
    sa.Column("budget_unit", _text(), nullable=False),
    sa.Column("alert_thresholds", IntTuple(), nullable=False),
    sa.Column("allowed_cidrs", StringTuple(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

team_memberships = sa.Table(
    "team_memberships",
    metadata,
    sa.Column("team_id", _text(), sa.ForeignKey("principals.id"), nullable=False),
    sa.Column("user_id", _text(), sa.ForeignKey("principals.id"), nullable=False),
    _created_at(),
    sa.PrimaryKeyConstraint("team_id", "user_id"),
    sa.Index(None, "user_id"),
)

# The reservation ledger: one row per subject and budget bucket; reserve is a conditional
# UPDATE on it (see Store.reserve_budget).
budget_counters = sa.Table(
    "budget_counters",
    metadata,
    sa.Column("subject_id", _text(), nullable=False),
    sa.Column("bucket", _text(), nullable=False),
    sa.Column("spent", sa.BigInteger(), nullable=False),
    sa.Column("reserved", sa.BigInteger(), nullable=False),
    sa.Column("alerted", sa.Integer(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint("subject_id", "bucket"),
)

# Shared request counters (rate-limit windows, fits in flight) when Redis is not configured.
rate_counters = sa.Table(
    "rate_counters",
    metadata,
    sa.Column("name", _text(), primary_key=True),
    sa.Column("count", sa.BigInteger(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index(None, "expires_at"),
)

# No foreign key to api_keys: a session is checked against its key on every request, and the
# row goes when it expires or its key is refused.
admin_sessions = sa.Table(
    "admin_sessions",
    metadata,
    sa.Column("id", _text(), primary_key=True),
    sa.Column("key_id", _text(), nullable=False),
    _created_at(),
    sa.Column("last_seen_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index(None, "key_id"),
    sa.Index(None, "expires_at"),
)


# Named values the whole deployment shares: the fingerprint of the active secret (and pepper),
# and the change counter every replica polls to drop cached authorisations within a second.
gateway_state = sa.Table(
    "gateway_state",
    metadata,
    sa.Column("name", _text(), primary_key=True),
    sa.Column("value", _text(), nullable=True),
    sa.Column("counter", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Which principal asked for each upload id (prepare_*_upload): only it may fit or predict on it.
upload_owners = sa.Table(
    "upload_owners",
    metadata,
    # One row per principal that may use the upload: the one that prepared it, and any other
    # that sent the same content and was answered the upstream's duplicate id.
    sa.Column("upload_id", _text(), primary_key=True),
    sa.Column("owner_id", _text(), primary_key=True),
    sa.Column("kind", _text(), nullable=False),
    _created_at(),
)
