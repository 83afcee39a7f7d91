"""Initial schema: runs, calls, attempts, findings, scores.

Revision ID: v0_1_0_01
Revises:
Create Date: 2026-11-25

Self-contained on purpose (no imports from wasteaudit): a migration must keep meaning what it
meant when it was written, whatever the models become later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "v0_1_0_01"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
UNSCORED = sa.text("scored_version IS NULL")


def upgrade() -> None:
    op.create_table(
        "wasteaudit_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("parent_id", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("tags", JSON, nullable=True),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("ended_at", TIMESTAMP, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_type", sa.String(), nullable=True),
        sa.Column("validation", sa.Boolean(), nullable=True),
        sa.Column("return_value", sa.Text(), nullable=True),
        sa.Column("return_truncated", sa.Boolean(), nullable=False),
        sa.Column("used_values", JSON, nullable=True),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.Column("span_id", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wasteaudit_runs")),
    )
    op.create_index("ix_wasteaudit_runs_started_at", "wasteaudit_runs", ["started_at"])

    op.create_table(
        "wasteaudit_calls",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("operation", sa.String(), nullable=False),
        sa.Column("api", sa.String(), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("function", sa.String(), nullable=True),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("request_model", sa.String(), nullable=True),
        sa.Column("response_model", sa.String(), nullable=True),
        sa.Column("response_id", sa.String(), nullable=True),
        sa.Column("server_address", sa.String(), nullable=True),
        sa.Column("server_port", sa.Integer(), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("ended_at", TIMESTAMP, nullable=True),
        sa.Column("duration_s", sa.Double(), nullable=True),
        sa.Column("time_to_first_chunk_s", sa.Double(), nullable=True),
        sa.Column("request_params", JSON, nullable=True),
        sa.Column("output_type", sa.String(), nullable=True),
        sa.Column("usage_source", sa.String(length=16), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=True),
        sa.Column("input_cache_read_tokens", sa.BigInteger(), nullable=True),
        sa.Column("input_cache_write_tokens", sa.BigInteger(), nullable=True),
        sa.Column("output_tokens", sa.BigInteger(), nullable=True),
        sa.Column("output_reasoning_tokens", sa.BigInteger(), nullable=True),
        sa.Column("usage_details", JSON, nullable=True),
        sa.Column("service_tier", sa.String(), nullable=True),
        sa.Column("finish_reasons", JSON, nullable=True),
        sa.Column("finish_category", sa.String(length=16), nullable=True),
        sa.Column("stream_state", sa.String(length=16), nullable=True),
        sa.Column("chunks", sa.Integer(), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error_type", sa.String(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("input_messages", JSON, nullable=True),
        sa.Column("system_instructions", JSON, nullable=True),
        sa.Column("choices", JSON, nullable=True),
        sa.Column("tool_definitions", JSON, nullable=True),
        sa.Column("response_format", JSON, nullable=True),
        sa.Column("content_mode", sa.String(length=16), nullable=False),
        sa.Column("content_truncated", sa.Boolean(), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.Column("span_id", sa.String(length=16), nullable=True),
        sa.Column("gaps", JSON, nullable=True),
        sa.Column("cost_usd", sa.Double(), nullable=True),
        sa.Column("price_version", sa.String(length=64), nullable=True),
        sa.Column("priced", sa.String(length=16), nullable=False),
        sa.Column("scored_version", sa.Integer(), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("lease_until", TIMESTAMP, nullable=True),
        sa.Column("score_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wasteaudit_calls")),
    )
    op.create_index("ix_wasteaudit_calls_started_at", "wasteaudit_calls", ["started_at"])
    op.create_index("ix_wasteaudit_calls_run_id", "wasteaudit_calls", ["run_id"])
    op.create_index("ix_wasteaudit_calls_function_started_at", "wasteaudit_calls", ["function", "started_at"])
    op.create_index("ix_wasteaudit_calls_request_model", "wasteaudit_calls", ["request_model"])
    op.create_index(
        "ix_wasteaudit_calls_unscored",
        "wasteaudit_calls",
        ["started_at"],
        sqlite_where=UNSCORED,
        postgresql_where=UNSCORED,
    )

    op.create_table(
        "wasteaudit_attempts",
        sa.Column("call_id", sa.String(length=32), nullable=False),
        sa.Column("index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error_type", sa.String(), nullable=True),
        sa.Column("request_id", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["wasteaudit_calls.id"],
            name=op.f("fk_wasteaudit_attempts_call_id_wasteaudit_calls"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("call_id", "index", name=op.f("pk_wasteaudit_attempts")),
    )

    op.create_table(
        "wasteaudit_findings",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("scorer_version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subkind", sa.String(length=32), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Double(), nullable=True),
        sa.Column("confidence", sa.Double(), nullable=False),
        sa.Column("choice_index", sa.Integer(), nullable=True),
        sa.Column("segment_start", sa.Integer(), nullable=True),
        sa.Column("segment_end", sa.Integer(), nullable=True),
        sa.Column("evidence", JSON, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["wasteaudit_calls.id"],
            name=op.f("fk_wasteaudit_findings_call_id_wasteaudit_calls"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wasteaudit_findings")),
    )
    op.create_index(
        "ix_wasteaudit_findings_call_id_scorer_version", "wasteaudit_findings", ["call_id", "scorer_version"]
    )

    op.create_table(
        "wasteaudit_scores",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("raw_value", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wasteaudit_scores")),
    )
    op.create_index("ix_wasteaudit_scores_run_id", "wasteaudit_scores", ["run_id"])


def downgrade() -> None:
    # Dropping a table drops its indexes; children before parents for the foreign keys.
    for table in ("wasteaudit_scores", "wasteaudit_findings", "wasteaudit_attempts", "wasteaudit_calls", "wasteaudit_runs"):
        op.drop_table(table)
