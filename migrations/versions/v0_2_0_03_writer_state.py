"""Writer state: one row per running writer, updated with each batch it commits.

Revision ID: v0_2_0_03
Revises: v0_2_0_02
Create Date: 2026-11-25

A process killed without shutting down (SIGKILL, OOM killer, power loss) cannot say how many
records it still held in memory; its row can. The next writer on the same host finds rows of
processes that no longer exist, reports them (log and ``status()``) and removes them.
Self-contained on purpose (no imports from wasteaudit).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_2_0_03"
down_revision: str | None = "v0_2_0_02"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "wasteaudit_writer_state",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.Column("written", sa.BigInteger(), nullable=False),
        sa.Column("dropped", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wasteaudit_writer_state")),
    )


def downgrade() -> None:
    op.drop_table("wasteaudit_writer_state")
