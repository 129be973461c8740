"""Security state: the shared secret's fingerprint and a change counter; upload id owners.

Revision ID: 0003
Revises: 0006
Create Date: 2026-12-01

``gateway_state`` holds named values the whole deployment shares (the fingerprint of the
active secret and pepper, written on first use; the change counter replicas poll to drop
cached authorisations). ``upload_owners`` records which principal prepared each upload id.
A frozen copy of those tables of tabpfn_gateway.store.schema as of this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text() -> sa.types.TypeEngine[str]:
    return sa.String().with_variant(postgresql.VARCHAR(collation="C"), "postgresql")


def _timestamp() -> sa.types.TypeEngine[object]:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gateway_state",
        sa.Column("name", _text(), nullable=False),
        sa.Column("value", _text(), nullable=True),
        sa.Column("counter", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_gateway_state")),
    )
    op.create_table(
        "upload_owners",
        sa.Column("upload_id", _text(), nullable=False),
        sa.Column("owner_id", _text(), nullable=False),
        sa.Column("kind", _text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("upload_id", "owner_id", name=op.f("pk_upload_owners")),
    )


def downgrade() -> None:
    op.drop_table("upload_owners")
    op.drop_table("gateway_state")
