"""Scorer coverage per call: whether use was observable, how much output it judged, and the settings.

Revision ID: v0_2_0_02
Revises: v0_2_0_01
Create Date: 2026-11-25

``use_observed``: the app's use of the output could be seen (a run result, ``mark_used`` or
``track_json``); ``use_coverage``: share of the call's billed output tokens whose use the scorer
judged (0 where use was unknown); ``scorer_config``: fingerprint of the scorer version, thresholds
and embedding model that scored the call, so calls scored under other settings can be found.
Self-contained on purpose (no imports from wasteaudit).

Named ``v0_2_0_02`` rather than ``v0_2_0_s`` because the schema tests require
``vX_Y_Z_NN_name.py`` file names that start with the revision id.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_2_0_02"
down_revision: str | None = "v0_2_0_01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("wasteaudit_calls") as batch:
        batch.add_column(sa.Column("use_observed", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("use_coverage", sa.Double(), nullable=True))
        batch.add_column(sa.Column("scorer_config", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("wasteaudit_calls") as batch:
        batch.drop_column("scorer_config")
        batch.drop_column("use_coverage")
        batch.drop_column("use_observed")
