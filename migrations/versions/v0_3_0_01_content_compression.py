"""Content compression: LZ4 for the calls' content columns on PostgreSQL.

Revision ID: v0_3_0_01
Revises: v0_2_0_03
Create Date: 2026-11-26

A call's content (request messages, outputs, tool definitions) is usually past PostgreSQL's
2 kB TOAST threshold, so every stored call is compressed; the default pglz compressor was a
quarter of the server's work per ingested call, LZ4 costs a fraction of that and decompresses
faster for the scorer and the report. Only newly written values are affected (no rewrite, a
brief lock). Skipped on servers built without LZ4 and on SQLite. Self-contained on purpose
(no imports from wasteaudit).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_3_0_01"
down_revision: str | None = "v0_2_0_03"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "wasteaudit_calls"
COLUMNS = ("input_messages", "system_instructions", "choices", "tool_definitions", "response_format", "error_message")


def _lz4_available() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    return bool(
        bind.execute(
            sa.text(
                "SELECT count(*) FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
            )
        ).scalar()
    )


def _set(method: str) -> None:
    table = op.get_context().dialect.identifier_preparer.quote(TABLE)
    clauses = ", ".join(f'ALTER COLUMN "{column}" SET COMPRESSION {method}' for column in COLUMNS)
    op.execute(f"ALTER TABLE {table} {clauses}")


def upgrade() -> None:
    if _lz4_available():
        _set("lz4")


def downgrade() -> None:
    if _lz4_available():
        _set("default")
