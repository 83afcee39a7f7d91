"""Writer drops: records the writers dropped, per UTC hour, reason and writer.

Revision ID: v0_3_0_03
Revises: v0_3_0_02
Create Date: 2026-11-26

Each writer counts what it drops (buffer full, refused by the database, not convertible, after
shutdown) per UTC hour in memory and writes its counts here with its batches, keyed by
``(hour, reason, writer_id)``: a row holds that writer's *total* for the hour, written as
``max(stored, new)``, so a batch retried after an ambiguous commit cannot count twice and
concurrent writers never touch each other's rows. The weekly report sums ``records`` over the
hours of its period (``dropped_records``). The records a killed process still held
(``wasteaudit_writer_state.pending``) are added by the next writer on its host, reason
``unclean_exit``. Self-contained on purpose (no imports from wasteaudit).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_3_0_03"
down_revision: str | None = "v0_3_0_02"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "wasteaudit_drops",
        sa.Column("hour", TIMESTAMP, nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("writer_id", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "reason", "writer_id", name=op.f("pk_wasteaudit_drops")),
    )


def downgrade() -> None:
    op.drop_table("wasteaudit_drops")
