"""Initial schema: principals, upstream credentials, gateway keys, fitted models, usage, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

A frozen copy of tabpfn_gateway.store.schema as of this revision (migrations never import the
application's current tables: those move on, a revision must not).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text() -> sa.types.TypeEngine[str]:
    # Byte-order collation on PostgreSQL so ordering matches SQLite and Python.
    return sa.String().with_variant(postgresql.VARCHAR(collation="C"), "postgresql")


def _timestamp() -> sa.types.TypeEngine[object]:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "principals",
        sa.Column("id", _text(), nullable=False),
        sa.Column("name", _text(), nullable=False),
        sa.Column("kind", _text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_principals")),
        sa.UniqueConstraint("name", name=op.f("uq_principals_name")),
    )
    op.create_index(op.f("ix_principals_created_at_id"), "principals", ["created_at", "id"])

    op.create_table(
        "upstream_credentials",
        sa.Column("id", _text(), nullable=False),
        sa.Column("owner_id", _text(), nullable=False),
        sa.Column("label", _text(), nullable=False),
        sa.Column("encrypted_token", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("verified_at", _timestamp(), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["principals.id"],
            name=op.f("fk_upstream_credentials_owner_id_principals"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upstream_credentials")),
    )
    op.create_index(
        op.f("ix_upstream_credentials_owner_id_created_at_id"),
        "upstream_credentials",
        ["owner_id", "created_at", "id"],
    )
    op.create_index(
        op.f("ix_upstream_credentials_created_at_id"), "upstream_credentials", ["created_at", "id"]
    )

    op.create_table(
        "api_keys",
        sa.Column("key_id", _text(), nullable=False),
        sa.Column("name", _text(), nullable=False),
        sa.Column("owner_id", _text(), nullable=False),
        sa.Column("credential_id", _text(), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("secret_hash", _text(), nullable=False),
        sa.Column("hash_scheme", _text(), nullable=False),
        sa.Column("display_prefix", _text(), nullable=False),
        sa.Column("last4", _text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("expires_at", _timestamp(), nullable=True),
        sa.Column("revoked_at", _timestamp(), nullable=True),
        sa.Column("disabled_at", _timestamp(), nullable=True),
        sa.Column("last_used_at", _timestamp(), nullable=True),
        sa.Column("previous_secret_hash", _text(), nullable=True),
        sa.Column("previous_hash_scheme", _text(), nullable=True),
        sa.Column("previous_valid_until", _timestamp(), nullable=True),
        sa.Column("rotated_at", _timestamp(), nullable=True),
        sa.Column("rotation_request_id", _text(), nullable=True),
        sa.Column("rotation_ciphertext", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["principals.id"], name=op.f("fk_api_keys_owner_id_principals")
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_api_keys")),
    )
    op.create_index(
        op.f("ix_api_keys_owner_id_created_at_key_id"),
        "api_keys",
        ["owner_id", "created_at", "key_id"],
    )
    op.create_index(op.f("ix_api_keys_created_at_key_id"), "api_keys", ["created_at", "key_id"])

    op.create_table(
        "fitted_models",
        sa.Column("id", _text(), nullable=False),
        sa.Column("owner_id", _text(), nullable=False),
        sa.Column("credential_id", _text(), nullable=False),
        sa.Column("key_id", _text(), nullable=False),
        sa.Column("task", _text(), nullable=False),
        sa.Column("n_rows", sa.BigInteger(), nullable=True),
        sa.Column("n_cols", sa.BigInteger(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fitted_models")),
    )
    op.create_index(
        op.f("ix_fitted_models_owner_id_created_at_id"),
        "fitted_models",
        ["owner_id", "created_at", "id"],
    )
    op.create_index(op.f("ix_fitted_models_created_at_id"), "fitted_models", ["created_at", "id"])

    op.create_table(
        "usage_events",
        sa.Column("id", _text(), nullable=False),
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
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_events")),
    )
    op.create_index(
        op.f("ix_usage_events_key_id_created_at"), "usage_events", ["key_id", "created_at"]
    )
    op.create_index(
        op.f("ix_usage_events_owner_id_created_at"), "usage_events", ["owner_id", "created_at"]
    )
    op.create_index(op.f("ix_usage_events_created_at_id"), "usage_events", ["created_at", "id"])

    op.create_table(
        "audit_events",
        sa.Column("id", _text(), nullable=False),
        sa.Column("actor", _text(), nullable=False),
        sa.Column("action", _text(), nullable=False),
        sa.Column("target_type", _text(), nullable=False),
        sa.Column("target_id", _text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(
        op.f("ix_audit_events_target_id_created_at"), "audit_events", ["target_id", "created_at"]
    )
    op.create_index(op.f("ix_audit_events_created_at_id"), "audit_events", ["created_at", "id"])


def downgrade() -> None:
    # Dropping a table drops its indexes; children before the principals they point at.
    for table in (
        "audit_events",
        "usage_events",
        "fitted_models",
        "api_keys",
        "upstream_credentials",
        "principals",
    ):
        op.drop_table(table)
