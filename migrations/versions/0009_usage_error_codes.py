"""Usage error codes: each refused or failed call keeps the error code it was answered with.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

Adds the nullable ``error_code`` to ``usage_events`` (existing rows keep none), so a rate-limit
refusal and a budget refusal (both 429) can be told apart. A frozen copy of that column of
tabpfn_gateway.store.schema as of this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text() -> sa.types.TypeEngine[str]:
    return sa.String().with_variant(postgresql.VARCHAR(collation="C"), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(sa.Column("error_code", _text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("error_code")
