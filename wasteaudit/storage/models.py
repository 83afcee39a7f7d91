"""The SQL schema: ``wasteaudit_*`` tables that can live inside an app's own database.

Six hold the records, one the writers' drop counts per hour (``wasteaudit_drops``); five more
are the weekly report's rollups (derived, kept exact by the triggers of migration ``v0_3_0_02``;
see docs/report.md §12).

Columns mirror the record dataclasses in ``wasteaudit.records`` one to one (list and dict
fields as JSON), plus what the writer and the scorer add: pricing status and the lease
columns workers use to claim unscored calls. There are deliberately no foreign keys from
calls to runs: a run's record may arrive after its calls (the run is upserted when it ends).

The initial Alembic revision in ``migrations/versions`` must produce exactly this schema;
``tests/storage/test_models_and_migrations.py`` compares the two.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSON as PG_JSON
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = (
    "TABLE_PREFIX",
    "metadata",
    "Base",
    "RunRow",
    "CallRow",
    "AttemptRow",
    "FindingRow",
    "ScoreRow",
    "WriterStateRow",
    "DropRow",
    "RollupDirtyRow",
    "RollupCallRow",
    "RollupWasteRow",
    "RollupRunRow",
    "RollupTopRow",
    "UTCDateTime",
    "JSONType",
    "ContentJSONType",
)

TABLE_PREFIX = "wasteaudit_"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQL NULL (not JSON 'null') for None, so "IS NULL" means "not recorded"; JSONB on PostgreSQL.
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# A call's content (messages, outputs, tool definitions): JSON, not JSONB, on PostgreSQL. It is
# written once, read whole by the scorer and the report, never searched inside by SQL; JSON
# keeps the writer's text as it is, where JSONB parses and rebuilds it (a quarter of the
# server's work per stored call, measured by bench/bench_ingest.py).
ContentJSONType = JSON(none_as_null=True).with_variant(PG_JSON(none_as_null=True), "postgresql")

# SQLite only auto-increments an INTEGER PRIMARY KEY.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite keeps no zone, so values are written as naive UTC and tagged UTC on the way out;
    PostgreSQL stores ``timestamptz``. Binds accept aware or naive (taken as UTC) datetimes
    and epoch seconds, the form records carry.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, (int, float)):
            value = datetime.fromtimestamp(value, timezone.utc)
        elif value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        else:
            value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = metadata


class RunRow(Base):
    """One ``@audit`` run (``RunRecord``); upserted, since it is re-sent when the run ends."""

    __tablename__ = "wasteaudit_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    parent_id: Mapped[str | None] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String)
    tags: Mapped[dict[str, str] | None] = mapped_column(JSONType)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    error_type: Mapped[str | None] = mapped_column(String)
    validation: Mapped[bool | None] = mapped_column(Boolean)
    return_value: Mapped[str | None] = mapped_column(Text)
    return_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    used_values: Mapped[list[str] | None] = mapped_column(JSONType)
    trace_id: Mapped[str | None] = mapped_column(String(32))
    span_id: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (Index("ix_wasteaudit_runs_started_at", "started_at"),)


class CallRow(Base):
    """One SDK call (``CallRecord``), priced by the writer, later leased and scored by workers."""

    __tablename__ = "wasteaudit_calls"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    provider: Mapped[str] = mapped_column(String)
    operation: Mapped[str] = mapped_column(String)
    api: Mapped[str] = mapped_column(String)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    run_id: Mapped[str | None] = mapped_column(String(32))
    function: Mapped[str | None] = mapped_column(String)
    method: Mapped[str] = mapped_column(String)
    request_model: Mapped[str | None] = mapped_column(String)
    response_model: Mapped[str | None] = mapped_column(String)
    response_id: Mapped[str | None] = mapped_column(String)
    server_address: Mapped[str | None] = mapped_column(String)
    server_port: Mapped[int | None] = mapped_column(Integer)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_s: Mapped[float | None] = mapped_column(Double)
    time_to_first_chunk_s: Mapped[float | None] = mapped_column(Double)
    request_params: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    output_type: Mapped[str | None] = mapped_column(String)
    usage_source: Mapped[str] = mapped_column(String(16))
    input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    input_cache_read_tokens: Mapped[int | None] = mapped_column(BigInteger)
    input_cache_write_tokens: Mapped[int | None] = mapped_column(BigInteger)
    output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    output_reasoning_tokens: Mapped[int | None] = mapped_column(BigInteger)
    usage_details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    service_tier: Mapped[str | None] = mapped_column(String)
    finish_reasons: Mapped[list[str | None] | None] = mapped_column(JSONType)
    finish_category: Mapped[str | None] = mapped_column(String(16))
    stream_state: Mapped[str | None] = mapped_column(String(16))
    chunks: Mapped[int | None] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error_type: Mapped[str | None] = mapped_column(String)
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    input_messages: Mapped[Any] = mapped_column(ContentJSONType, nullable=True)
    system_instructions: Mapped[Any] = mapped_column(ContentJSONType, nullable=True)
    choices: Mapped[list[dict[str, Any]] | None] = mapped_column(ContentJSONType)
    tool_definitions: Mapped[Any] = mapped_column(ContentJSONType, nullable=True)
    response_format: Mapped[Any] = mapped_column(JSONType, nullable=True)
    content_mode: Mapped[str] = mapped_column(String(16))
    content_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    trace_id: Mapped[str | None] = mapped_column(String(32))
    span_id: Mapped[str | None] = mapped_column(String(16))
    gaps: Mapped[list[str] | None] = mapped_column(JSONType)
    # pricing (writer)
    cost_usd: Mapped[float | None] = mapped_column(Double)
    price_version: Mapped[str | None] = mapped_column(String(64))
    priced: Mapped[str] = mapped_column(String(16))  # 'priced' | 'unpriced' | 'partial'
    # scoring bookkeeping (workers lease with claimed_by/lease_until; scored_version NULL = not scored)
    scored_version: Mapped[int | None] = mapped_column(Integer)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    score_error: Mapped[str | None] = mapped_column(Text)
    score_attempts: Mapped[int | None] = mapped_column(Integer)  # leases taken; NULL = never leased
    # what the scorer could measure (NULL until scored): use observable at all, share of billed
    # output tokens whose use was judged, and the fingerprint of the settings that scored the call
    use_observed: Mapped[bool | None] = mapped_column(Boolean)
    use_coverage: Mapped[float | None] = mapped_column(Double)
    scorer_config: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (
        # The report's covering index (its prefix also serves every started_at range).
        Index(
            "ix_wasteaudit_calls_report",
            "started_at", "function", "provider", "request_model", "response_model", "run_id", "scored_version", "id",
            "attempts", "input_tokens", "input_cache_read_tokens", "output_tokens", "output_reasoning_tokens", "cost_usd",
            "priced",
        ),
        Index("ix_wasteaudit_calls_run_id", "run_id"),
        Index("ix_wasteaudit_calls_function_started_at", "function", "started_at"),
        Index("ix_wasteaudit_calls_request_model", "request_model"),
        # Small by construction: only calls still waiting for the scorer are in it.
        Index(
            "ix_wasteaudit_calls_unscored",
            "started_at",
            sqlite_where=text("scored_version IS NULL"),
            postgresql_where=text("scored_version IS NULL"),
        ),
    )


class AttemptRow(Base):
    """One HTTP attempt of a call (``AttemptRecord``); written in the call's transaction."""

    __tablename__ = "wasteaudit_attempts"

    call_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("wasteaudit_calls.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_s: Mapped[float | None] = mapped_column(Double)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error_type: Mapped[str | None] = mapped_column(String)
    request_id: Mapped[str | None] = mapped_column(String)


class FindingRow(Base):
    """One waste finding on a call, keyed by scorer version so rescoring replaces, never mixes."""

    __tablename__ = "wasteaudit_findings"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(32), ForeignKey("wasteaudit_calls.id", ondelete="CASCADE"))
    run_id: Mapped[str | None] = mapped_column(String(32))
    scorer_version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # failed | unused | redundant
    subkind: Mapped[str] = mapped_column(String(32))
    tier: Mapped[str] = mapped_column(String(16))  # confirmed | possible
    tokens: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[float | None] = mapped_column(Double)
    confidence: Mapped[float] = mapped_column(Double)
    choice_index: Mapped[int | None] = mapped_column(Integer)
    segment_start: Mapped[int | None] = mapped_column(Integer)
    segment_end: Mapped[int | None] = mapped_column(Integer)
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    # Covering for the report (its prefix also serves lookups by call and scorer version).
    __table_args__ = (
        Index("ix_wasteaudit_findings_report", "call_id", "scorer_version", "tier", "kind", "subkind", "tokens", "cost_usd"),
    )


class ScoreRow(Base):
    """A quality signal on a run (``ScoreRecord``); may arrive before or long after the run."""

    __tablename__ = "wasteaudit_scores"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String)
    value: Mapped[float] = mapped_column(Double)
    source: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    raw_value: Mapped[Any] = mapped_column(JSONType, nullable=True)

    __table_args__ = (Index("ix_wasteaudit_scores_report", "run_id", "name", "value"),)


class WriterStateRow(Base):
    """One running writer: what it still held in memory as of its last committed batch.

    Updated in each batch's transaction and deleted at a clean shutdown, so a row whose process
    is gone is the trace of an unclean exit (SIGKILL, OOM) and says how many records were lost.
    """

    __tablename__ = "wasteaudit_writer_state"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    pending: Mapped[int] = mapped_column(Integer)
    written: Mapped[int] = mapped_column(BigInteger)
    dropped: Mapped[int] = mapped_column(BigInteger)


class DropRow(Base):
    """Records one writer dropped in one UTC hour for one reason (migration ``v0_3_0_03``).

    ``reason``: ``queue_full``, ``db_error``, ``invalid``, ``closed`` (the ``dropped_*`` of
    ``Writer.stats()``) or ``unclean_exit`` (what a killed process still held, added by the next
    writer on its host). ``records`` is the writer's total for the hour, written as
    ``max(stored, new)``: a retried batch cannot count twice. The report sums it per period.
    """

    __tablename__ = "wasteaudit_drops"

    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)  # the start of the UTC hour
    reason: Mapped[str] = mapped_column(String(16), primary_key=True)
    writer_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    records: Mapped[int] = mapped_column(BigInteger)


# --- the report's rollups (docs/report.md §12): derived data, kept exact by triggers ----------------


class RollupDirtyRow(Base):
    """A UTC day whose rollups are stale: appended by triggers on calls, findings, runs and scores.

    Append-only (no unique key), so concurrent writers never wait on each other; the report
    re-aggregates the dirty days of its span and deletes the markers it consumed, by id.
    """

    __tablename__ = "wasteaudit_rollup_dirty"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    day: Mapped[date | None] = mapped_column(Date)
    tx: Mapped[int | None] = mapped_column(BigInteger)  # PostgreSQL: the writing transaction (dedupe within it)

    __table_args__ = (Index("ix_wasteaudit_rollup_dirty_day_tx", "day", "tx"),)


class RollupCallRow(Base):
    """Call sums per UTC day × function × provider × request and response model (judge excluded)."""

    __tablename__ = "wasteaudit_rollup_calls"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    day: Mapped[date | None] = mapped_column(Date)
    function: Mapped[str | None] = mapped_column(String)
    provider: Mapped[str | None] = mapped_column(String)
    request_model: Mapped[str | None] = mapped_column(String)
    response_model: Mapped[str | None] = mapped_column(String)
    calls: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int | None] = mapped_column(BigInteger)
    input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cached_input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cost_usd: Mapped[float | None] = mapped_column(Double)
    priced_calls: Mapped[int | None] = mapped_column(BigInteger)
    unpriced_calls: Mapped[int | None] = mapped_column(BigInteger)
    partially_priced_calls: Mapped[int | None] = mapped_column(BigInteger)
    scored_calls: Mapped[int | None] = mapped_column(BigInteger)
    scored_output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cacheable_calls: Mapped[int | None] = mapped_column(BigInteger)
    cacheable_min_input: Mapped[int | None] = mapped_column(BigInteger)
    cacheable_cache_read: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_wasteaudit_rollup_calls_day", "day"),)


class RollupWasteRow(Base):
    """Current-finding sums per UTC day × call cell × kind × subkind × tier (judge excluded)."""

    __tablename__ = "wasteaudit_rollup_waste"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    day: Mapped[date | None] = mapped_column(Date)
    function: Mapped[str | None] = mapped_column(String)
    provider: Mapped[str | None] = mapped_column(String)
    request_model: Mapped[str | None] = mapped_column(String)
    response_model: Mapped[str | None] = mapped_column(String)
    kind: Mapped[str | None] = mapped_column(String(16))
    subkind: Mapped[str | None] = mapped_column(String(32))
    tier: Mapped[str | None] = mapped_column(String(16))
    tokens: Mapped[int | None] = mapped_column(BigInteger)
    cost_usd: Mapped[float | None] = mapped_column(Double)
    findings: Mapped[int | None] = mapped_column(BigInteger)
    priced_findings: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_wasteaudit_rollup_waste_day", "day"),)


class RollupRunRow(Base):
    """Per UTC day × run × provider × model: the run's call sums there, and its quality signals.

    ``q`` and ``failed`` are the run's (the rule of ``wasteaudit.report.quality``), repeated on
    each of its rows; ``observable`` says whether the run's use of its output was observable.
    """

    __tablename__ = "wasteaudit_rollup_runs"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    day: Mapped[date | None] = mapped_column(Date)
    run_id: Mapped[str | None] = mapped_column(String(32))
    function: Mapped[str | None] = mapped_column(String)
    provider: Mapped[str | None] = mapped_column(String)
    request_model: Mapped[str | None] = mapped_column(String)
    response_model: Mapped[str | None] = mapped_column(String)
    t: Mapped[int | None] = mapped_column(BigInteger)  # output tokens
    n: Mapped[int | None] = mapped_column(BigInteger)  # calls
    c: Mapped[float | None] = mapped_column(Double)  # cost of the priced calls
    n_priced: Mapped[int | None] = mapped_column(BigInteger)
    n_scored: Mapped[int | None] = mapped_column(BigInteger)
    w: Mapped[int | None] = mapped_column(BigInteger)  # confirmed waste tokens of current findings
    observable: Mapped[bool | None] = mapped_column(Boolean)
    q: Mapped[float | None] = mapped_column(Double)
    failed: Mapped[bool | None] = mapped_column(Boolean)

    __table_args__ = (Index("ix_wasteaudit_rollup_runs_day", "day"),)


class RollupTopRow(Base):
    """Per UTC day, the calls with the most confirmed waste (dollars, then tokens): the top
    calls of any period of whole days are among the union of its days' tops."""

    __tablename__ = "wasteaudit_rollup_top"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    day: Mapped[date | None] = mapped_column(Date)
    call_id: Mapped[str | None] = mapped_column(String(32))
    tokens: Mapped[int | None] = mapped_column(BigInteger)
    cost_usd: Mapped[float | None] = mapped_column(Double)

    __table_args__ = (Index("ix_wasteaudit_rollup_top_day", "day"),)
