"""Scoring attempts: how many times workers leased a call (detects double scoring, stops poison calls).

Revision ID: v0_1_0_02
Revises: v0_1_0_01
Create Date: 2026-11-25

NULL means never leased. A worker increments it with every lease; a call whose leases keep
expiring (its worker died on it) is marked with ``score_error`` after a few, never retried forever.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_1_0_02"
down_revision: str | None = "v0_1_0_01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("wasteaudit_calls") as batch:
        batch.add_column(sa.Column("score_attempts", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("wasteaudit_calls") as batch:
        batch.drop_column("score_attempts")
