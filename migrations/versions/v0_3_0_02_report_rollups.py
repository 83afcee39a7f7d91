"""Report rollups: per-day sums of calls, current findings and runs, kept exact by triggers.

Revision ID: v0_3_0_02
Revises: v0_3_0_01
Create Date: 2026-11-26

The weekly report reads these instead of aggregating every call of two weeks (docs/report.md
§12). The database keeps them honest: triggers on calls, findings, runs and scores append the
UTC days whose sums changed to ``wasteaudit_rollup_dirty`` (row-level on SQLite, adding a marker
only when the day has none; statement-level with transition tables on PostgreSQL, skipping only a
marker the same transaction wrote), and the report re-aggregates the dirty days of its span
before reading. SQLite has no trigger on call inserts (any insert trigger on that table costs
~20 µs a row): the refresh compares each day's call count with its rollup's instead. Every existing day is
marked dirty here; the first report (or ``wasteaudit.report.rollups.refresh``) fills them.
Self-contained on purpose (no imports from wasteaudit).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_3_0_02"
down_revision: str | None = "v0_3_0_01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DIRTY = "wasteaudit_rollup_dirty"
TABLES = ("wasteaudit_rollup_calls", "wasteaudit_rollup_waste", "wasteaudit_rollup_runs", "wasteaudit_rollup_top")
#: Call columns the report's figures read: an update of any other (leases, content) marks nothing.
CALL_COLUMNS = (
    "started_at", "function", "provider", "request_model", "response_model", "run_id", "scored_version",
    "attempts", "input_tokens", "input_cache_read_tokens", "output_tokens", "output_reasoning_tokens", "cost_usd", "priced",
)
FINDING_COLUMNS = ("call_id", "scorer_version", "kind", "subkind", "tier", "tokens", "cost_usd")
RUN_COLUMNS = ("id", "status", "validation", "return_value", "used_values")


def _id() -> sa.Column:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True)


def _cell() -> list[sa.Column]:
    return [
        sa.Column("day", sa.Date(), nullable=True),
        sa.Column("function", sa.String(), nullable=True),
        sa.Column("provider", sa.String(), nullable=True),
        sa.Column("request_model", sa.String(), nullable=True),
        sa.Column("response_model", sa.String(), nullable=True),
    ]


def _big(*names: str) -> list[sa.Column]:
    return [sa.Column(name, sa.BigInteger(), nullable=True) for name in names]


def upgrade() -> None:
    op.create_table(
        DIRTY, _id(),
        sa.Column("day", sa.Date(), nullable=True),
        sa.Column("tx", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{DIRTY}")),
    )
    op.create_table(
        "wasteaudit_rollup_calls", _id(), *_cell(),
        *_big("calls", "attempts", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens"),
        sa.Column("cost_usd", sa.Double(), nullable=True),
        *_big("priced_calls", "unpriced_calls", "partially_priced_calls", "scored_calls", "scored_output_tokens",
              "cacheable_calls", "cacheable_min_input", "cacheable_cache_read"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wasteaudit_rollup_calls")),
    )
    op.create_table(
        "wasteaudit_rollup_waste", _id(), *_cell(),
        sa.Column("kind", sa.String(length=16), nullable=True),
        sa.Column("subkind", sa.String(length=32), nullable=True),
        sa.Column("tier", sa.String(length=16), nullable=True),
        *_big("tokens"),
        sa.Column("cost_usd", sa.Double(), nullable=True),
        *_big("findings", "priced_findings"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wasteaudit_rollup_waste")),
    )
    op.create_table(
        "wasteaudit_rollup_runs", _id(),
        sa.Column("day", sa.Date(), nullable=True),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("function", sa.String(), nullable=True),
        sa.Column("provider", sa.String(), nullable=True),
        sa.Column("request_model", sa.String(), nullable=True),
        sa.Column("response_model", sa.String(), nullable=True),
        *_big("t", "n"),
        sa.Column("c", sa.Double(), nullable=True),
        *_big("n_priced", "n_scored", "w"),
        sa.Column("observable", sa.Boolean(), nullable=True),
        sa.Column("q", sa.Double(), nullable=True),
        sa.Column("failed", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wasteaudit_rollup_runs")),
    )
    op.create_table(
        "wasteaudit_rollup_top", _id(),
        sa.Column("day", sa.Date(), nullable=True),
        sa.Column("call_id", sa.String(length=32), nullable=True),
        *_big("tokens"),
        sa.Column("cost_usd", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wasteaudit_rollup_top")),
    )
    op.create_index(f"ix_{DIRTY}_day_tx", DIRTY, ["day", "tx"])
    for table in TABLES:
        op.create_index(f"ix_{table}_day", table, ["day"])
    bind = op.get_bind()
    statements = _postgresql_triggers() if bind.dialect.name == "postgresql" else _sqlite_triggers()
    for statement in statements:
        op.execute(statement)
    # Backfill: every day that has calls is stale until the first refresh aggregates it.
    # (On PostgreSQL the markers carry no transaction: tx is only for the triggers' dedupe.)
    day = "(started_at AT TIME ZONE 'UTC')::date" if bind.dialect.name == "postgresql" else "substr(started_at, 1, 10)"
    op.execute(f"INSERT INTO {DIRTY} (day) SELECT DISTINCT {day} FROM wasteaudit_calls")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table, _ in _PG_SOURCES:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS wasteaudit_rollup_{table}_{event} ON wasteaudit_{table}")
        op.execute("DROP FUNCTION IF EXISTS wasteaudit_rollup_mark()")
    else:
        for table in ("calls", "findings", "runs", "scores"):
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS wasteaudit_rollup_{table}_{event}")
    op.drop_index(f"ix_{DIRTY}_day_tx", table_name=DIRTY)
    op.drop_table(DIRTY)
    for table in TABLES:
        op.drop_index(f"ix_{table}_day", table_name=table)
        op.drop_table(table)


# --- SQLite: row-level triggers ---------------------------------------------------------------------


def _sqlite_mark(days_sql: str) -> str:
    """Append each day of ``days_sql`` (a SELECT of ``d``) not marked yet (SQLite has one writer
    at a time and a report consumes markers inside its write transaction, so any marker will do)."""
    return (
        f"INSERT INTO {DIRTY} (day) SELECT d FROM ({days_sql}) "
        f"WHERE d IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {DIRTY} x WHERE x.day = d);"
    )


def _sqlite_triggers() -> list[str]:
    def call_day(ref: str) -> str:
        return _sqlite_mark(f"SELECT substr({ref}.started_at, 1, 10) AS d")

    def finding_day(ref: str) -> str:
        return _sqlite_mark(f"SELECT substr(started_at, 1, 10) AS d FROM wasteaudit_calls WHERE id = {ref}.call_id")

    def run_days(ref: str) -> str:
        return _sqlite_mark(f"SELECT DISTINCT substr(started_at, 1, 10) AS d FROM wasteaudit_calls WHERE run_id = {ref}")

    out = []

    def trigger(table: str, event: str, body: str, columns: Sequence[str] = (), when: str = "") -> None:
        of = f" OF {', '.join(columns)}" if columns else ""
        condition = f" WHEN {when}" if when else ""
        out.append(
            f"CREATE TRIGGER wasteaudit_rollup_{table}_{event} AFTER {event.upper()}{of} ON wasteaudit_{table}"
            f"{condition} BEGIN {body} END"
        )

    def changed(columns: Sequence[str]) -> str:
        return " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns)

    # No INSERT trigger on calls: on SQLite any insert trigger on that table (even a no-op) costs
    # ~20 µs per row with its several indexes. A refresh finds days with new calls by comparing
    # each day's call count with its rollup's (docs/report.md §12); deletes and updates mark.
    # An update marks the old row's day(s) only when its key moved; the new row's always.
    trigger("calls", "delete", call_day("OLD"))
    trigger("calls", "update", call_day("NEW") + " " + call_day("OLD").replace(
        "WHERE d IS NOT NULL", "WHERE d IS NOT NULL AND OLD.started_at IS NOT NEW.started_at"), CALL_COLUMNS, changed(CALL_COLUMNS))
    trigger("findings", "insert", finding_day("NEW"))
    trigger("findings", "delete", finding_day("OLD"))
    trigger("findings", "update", finding_day("NEW") + " " + finding_day("OLD").replace(
        "WHERE d IS NOT NULL", "WHERE d IS NOT NULL AND OLD.call_id IS NOT NEW.call_id"), FINDING_COLUMNS)
    trigger("runs", "insert", run_days("NEW.id"))
    trigger("runs", "delete", run_days("OLD.id"))
    # A run re-sent unchanged (the writer upserts it when it ends) marks nothing.
    trigger("runs", "update", run_days("NEW.id") + " " + run_days("OLD.id").replace(
        "WHERE d IS NOT NULL", "WHERE d IS NOT NULL AND OLD.id IS NOT NEW.id"), RUN_COLUMNS,
        changed(("id", "status", "validation", "used_values")) + " OR (OLD.return_value IS NULL) IS NOT (NEW.return_value IS NULL)")
    trigger("scores", "insert", run_days("NEW.run_id"))
    trigger("scores", "delete", run_days("OLD.run_id"))
    trigger("scores", "update", run_days("NEW.run_id") + " " + run_days("OLD.run_id").replace(
        "WHERE d IS NOT NULL", "WHERE d IS NOT NULL AND OLD.run_id IS NOT NEW.run_id"))
    return out


# --- PostgreSQL: statement-level triggers with transition tables --------------------------------------

# (table, how the changed rows lead to calls: "self" | "call_id" | "id" (a run) | "run_id")
_PG_SOURCES = (("calls", "self"), ("findings", "call_id"), ("runs", "id"), ("scores", "run_id"))

# Append-only: a marker is skipped only when this transaction already wrote it. (Skipping on
# another transaction's marker would lose changes committed while a report consumes that marker.)
_MARK = (
    "INSERT INTO wasteaudit_rollup_dirty (day, tx) SELECT s.d, txid_current() FROM ({days}) s "
    "WHERE s.d IS NOT NULL AND NOT EXISTS "
    "(SELECT 1 FROM wasteaudit_rollup_dirty x WHERE x.day = s.d AND x.tx = txid_current());"
)
_DAY = "(started_at AT TIME ZONE 'UTC')::date"


def _pg_function() -> str:
    """One trigger function; ``TG_ARGV[0]`` says how the changed rows lead to their calls' days."""
    old = ", ".join(f"o.{c}" for c in CALL_COLUMNS)
    new = ", ".join(f"n.{c}" for c in CALL_COLUMNS)
    changed = (
        "SELECT DISTINCT v.d FROM old_rows o JOIN new_rows n ON n.id = o.id, "
        f"LATERAL (VALUES ((o.started_at AT TIME ZONE 'UTC')::date), ((n.started_at AT TIME ZONE 'UTC')::date)) AS v(d) "
        f"WHERE ({old}) IS DISTINCT FROM ({new})"
    )

    def via(column: str, link: str, rows: str) -> str:
        return _MARK.format(days=f"SELECT DISTINCT {_DAY} AS d FROM wasteaudit_calls WHERE {column} IN (SELECT {link} FROM {rows})")

    body = []
    body.append("IF link = 'self' THEN")
    body.append("  IF TG_OP = 'INSERT' THEN " + _MARK.format(days=f"SELECT DISTINCT {_DAY} AS d FROM new_rows"))
    body.append("  ELSIF TG_OP = 'DELETE' THEN " + _MARK.format(days=f"SELECT DISTINCT {_DAY} AS d FROM old_rows"))
    body.append("  ELSE " + _MARK.format(days=changed))
    body.append("  END IF;")
    for link, column in (("call_id", "id"), ("id", "run_id"), ("run_id", "run_id")):
        body.append(f"ELSIF link = '{link}' THEN")
        body.append(f"  IF TG_OP IN ('INSERT', 'UPDATE') THEN {via(column, link, 'new_rows')} END IF;")
        body.append(f"  IF TG_OP IN ('DELETE', 'UPDATE') THEN {via(column, link, 'old_rows')} END IF;")
    body.append("END IF;")
    return (
        "CREATE OR REPLACE FUNCTION wasteaudit_rollup_mark() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "DECLARE link text := TG_ARGV[0];\nBEGIN\n" + "\n".join(body) + "\nRETURN NULL;\nEND $$"
    )


def _postgresql_triggers() -> list[str]:
    out = [_pg_function()]
    for table, link in _PG_SOURCES:
        for event, refs in (("insert", "NEW TABLE AS new_rows"), ("delete", "OLD TABLE AS old_rows"),
                            ("update", "OLD TABLE AS old_rows NEW TABLE AS new_rows")):
            out.append(
                f"CREATE TRIGGER wasteaudit_rollup_{table}_{event} AFTER {event.upper()} ON wasteaudit_{table} "
                f"REFERENCING {refs} FOR EACH STATEMENT EXECUTE FUNCTION wasteaudit_rollup_mark('{link}')"
            )
    return out
