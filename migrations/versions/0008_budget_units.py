"""Budget units: a policy's budget counts TabPFN credits, cells (rows x columns) or calls.

Revision ID: 0008
Revises: 0003
Create Date: 2026-12-02

Adds ``budget_unit`` to ``policies`` (existing rows are ``credits``). A frozen copy of that
column of tabpfn_gateway.store.schema as of this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text() -> sa.types.TypeEngine[str]:
    return sa.String().with_variant(postgresql.VARCHAR(collation="C"), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("policies") as batch:
        # The default fills existing rows; it is dropped again so the application always
        # says which unit it writes.
        batch.add_column(
            sa.Column("budget_unit", _text(), nullable=False, server_default="credits")
        )
    with op.batch_alter_table("policies") as batch:
        batch.alter_column("budget_unit", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("policies") as batch:
        batch.drop_column("budget_unit")
