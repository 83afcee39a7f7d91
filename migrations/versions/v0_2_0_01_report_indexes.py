"""Report indexes: covering indexes for the weekly report's passes.

Revision ID: v0_2_0_01
Revises: v0_1_0_02
Create Date: 2026-11-25

The report aggregates a period's calls, their current findings and their runs' scores. With
these indexes every pass reads narrow index entries only, never the wide call rows (whose
content columns sit in overflow pages on SQLite). Each replaces an index that is its prefix,
so the writer maintains no more indexes than before. The same key columns on SQLite and
PostgreSQL (SQLite has no ``INCLUDE``; PostgreSQL answers from the index alone too).

Self-contained on purpose (no imports from wasteaudit).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "v0_2_0_01"
down_revision: str | None = "v0_1_0_02"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CALLS_REPORT = [
    "started_at", "function", "provider", "request_model", "response_model", "run_id", "scored_version", "id",
    "attempts", "input_tokens", "input_cache_read_tokens", "output_tokens", "output_reasoning_tokens", "cost_usd", "priced",
]
FINDINGS_REPORT = ["call_id", "scorer_version", "tier", "kind", "subkind", "tokens", "cost_usd"]
SCORES_REPORT = ["run_id", "name", "value"]


def upgrade() -> None:
    op.create_index("ix_wasteaudit_calls_report", "wasteaudit_calls", CALLS_REPORT)
    op.drop_index("ix_wasteaudit_calls_started_at", table_name="wasteaudit_calls")
    op.create_index("ix_wasteaudit_findings_report", "wasteaudit_findings", FINDINGS_REPORT)
    op.drop_index("ix_wasteaudit_findings_call_id_scorer_version", table_name="wasteaudit_findings")
    op.create_index("ix_wasteaudit_scores_report", "wasteaudit_scores", SCORES_REPORT)
    op.drop_index("ix_wasteaudit_scores_run_id", table_name="wasteaudit_scores")


def downgrade() -> None:
    op.create_index("ix_wasteaudit_scores_run_id", "wasteaudit_scores", ["run_id"])
    op.drop_index("ix_wasteaudit_scores_report", table_name="wasteaudit_scores")
    op.create_index("ix_wasteaudit_findings_call_id_scorer_version", "wasteaudit_findings", ["call_id", "scorer_version"])
    op.drop_index("ix_wasteaudit_findings_report", table_name="wasteaudit_findings")
    op.create_index("ix_wasteaudit_calls_started_at", "wasteaudit_calls", ["started_at"])
    op.drop_index("ix_wasteaudit_calls_report", table_name="wasteaudit_calls")
