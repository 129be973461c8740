"""Spend governance: policies, team membership, budget and rate counters, daily usage roll-ups,
and the credits of each usage event.

Revision ID: 0004
Revises: 0001
Create Date: 2026-12-01

A frozen copy of the governance tables of tabpfn_gateway.store.schema as of this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text() -> sa.types.TypeEngine[str]:
    return sa.String().with_variant(postgresql.VARCHAR(collation="C"), "postgresql")


def _timestamp() -> sa.types.TypeEngine[object]:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(sa.Column("credits", sa.BigInteger(), nullable=True))

    op.create_table(
        "usage_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("key_id", _text(), nullable=False),
        sa.Column("owner_id", _text(), nullable=False),
        sa.Column("operation", _text(), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "key_id", "owner_id", "operation", name=op.f("pk_usage_daily")
        ),
    )

    op.create_table(
        "policies",
        sa.Column("target_id", _text(), nullable=False),
        sa.Column("target_type", _text(), nullable=False),
        sa.Column("requests_per_minute", sa.BigInteger(), nullable=True),
        sa.Column("requests_per_hour", sa.BigInteger(), nullable=True),
        sa.Column("max_concurrent_fits", sa.BigInteger(), nullable=True),
        sa.Column("budget_credits", sa.BigInteger(), nullable=True),
        sa.Column("budget_period", _text(), nullable=False),
        sa.Column("budget_window", _text(), nullable=False),
        sa.Column("budget_mode", _text(), nullable=False),
        sa.Column("alert_thresholds", sa.Text(), nullable=False),
        sa.Column("allowed_cidrs", sa.Text(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("target_id", name=op.f("pk_policies")),
    )

    op.create_table(
        "team_memberships",
        sa.Column("team_id", _text(), nullable=False),
        sa.Column("user_id", _text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"], ["principals.id"], name=op.f("fk_team_memberships_team_id_principals")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["principals.id"], name=op.f("fk_team_memberships_user_id_principals")
        ),
        sa.PrimaryKeyConstraint("team_id", "user_id", name=op.f("pk_team_memberships")),
    )
    op.create_index(op.f("ix_team_memberships_user_id"), "team_memberships", ["user_id"])

    op.create_table(
        "budget_counters",
        sa.Column("subject_id", _text(), nullable=False),
        sa.Column("bucket", _text(), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.Column("reserved", sa.BigInteger(), nullable=False),
        sa.Column("alerted", sa.Integer(), nullable=False),
        sa.Column("expires_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("subject_id", "bucket", name=op.f("pk_budget_counters")),
    )

    op.create_table(
        "rate_counters",
        sa.Column("name", _text(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rate_counters")),
    )
    op.create_index(op.f("ix_rate_counters_expires_at"), "rate_counters", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_rate_counters_expires_at"), table_name="rate_counters")
    op.drop_table("rate_counters")
    op.drop_table("budget_counters")
    op.drop_index(op.f("ix_team_memberships_user_id"), table_name="team_memberships")
    op.drop_table("team_memberships")
    op.drop_table("policies")
    op.drop_table("usage_daily")
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("credits")
