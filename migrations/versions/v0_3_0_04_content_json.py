"""Content as JSON, not JSONB, on PostgreSQL: the calls' messages, outputs and tool definitions.

Revision ID: v0_3_0_04
Revises: v0_3_0_03
Create Date: 2026-11-26

These columns are written once, read whole (by the scorer and the report) and never searched
inside by SQL. JSONB parses each value and builds its binary form on insert, which was a quarter
of the server's CPU per stored call; JSON checks the text and keeps it as the writer sent it.
Reads give the same Python values. The change rewrites the calls table (one pass, under an
exclusive lock: plan it for a quiet moment on a large database) and sets LZ4 again where the
server has it (a new column type starts with the default compression). Nothing to do on SQLite,
where JSON is text already. Self-contained on purpose (no imports from wasteaudit).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_3_0_04"
down_revision: str | None = "v0_3_0_03"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "wasteaudit_calls"
COLUMNS = ("input_messages", "system_instructions", "choices", "tool_definitions")


def _lz4_available() -> bool:
    return bool(
        op.get_bind().execute(
            sa.text(
                "SELECT count(*) FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
            )
        ).scalar()
    )


def _retype(sql_type: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    table = op.get_context().dialect.identifier_preparer.quote(TABLE)
    retype = (f'ALTER COLUMN "{column}" TYPE {sql_type} USING "{column}"::{sql_type}' for column in COLUMNS)
    op.execute(f"ALTER TABLE {table} {', '.join(retype)}")
    if _lz4_available():  # after the rewrite: values written from now on
        compress = (f'ALTER COLUMN "{column}" SET COMPRESSION lz4' for column in COLUMNS)
        op.execute(f"ALTER TABLE {table} {', '.join(compress)}")


def upgrade() -> None:
    _retype("json")


def downgrade() -> None:
    _retype("jsonb")
