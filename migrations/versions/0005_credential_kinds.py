"""Credential kinds: cloud (a TabPFN token) or hosted (a self-hosted inference container).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Adds ``kind`` (existing rows are ``cloud``), the per-credential ``endpoint_url`` and the
per-credential timeouts to ``upstream_credentials``. A frozen copy of those columns of
tabpfn_gateway.store.schema as of this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text() -> sa.types.TypeEngine[str]:
    return sa.String().with_variant(postgresql.VARCHAR(collation="C"), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("upstream_credentials") as batch:
        # The default fills existing rows; it is dropped again so the application always
        # says which kind it writes.
        batch.add_column(sa.Column("kind", _text(), nullable=False, server_default="cloud"))
        batch.add_column(sa.Column("endpoint_url", _text(), nullable=True))
        batch.add_column(sa.Column("timeout_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("connect_timeout_seconds", sa.Float(), nullable=True))
    with op.batch_alter_table("upstream_credentials") as batch:
        batch.alter_column("kind", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("upstream_credentials") as batch:
        batch.drop_column("connect_timeout_seconds")
        batch.drop_column("timeout_seconds")
        batch.drop_column("endpoint_url")
        batch.drop_column("kind")
