"""The report's rollups: per-day sums kept exact by the database, re-aggregated where stale.

Three tables (``wasteaudit.storage.models``), all at the grain of one UTC day:

* ``wasteaudit_rollup_calls`` — call sums per day × function × provider × request and response
  model (the call cube of :func:`metrics.call_cube`, summed per day instead of per period);
* ``wasteaudit_rollup_waste`` — current-finding sums per day × cell × kind × subkind × tier;
* ``wasteaudit_rollup_runs`` — per day × run × provider × model: the run's call sums there
  (output tokens, cost, priced/scored counts, confirmed waste) and the run's quality ``q``,
  failed flag and observable use.

Triggers (migration ``v0_3_0_01``) append the days whose sums a write changed to
``wasteaudit_rollup_dirty``: a call inserted, updated (figures, scoring, repricing) or deleted
(pruning); a finding written or removed; a run or score written or removed (every day its
calls fall on). :func:`refresh` re-aggregates the dirty days of a span from the base tables
and deletes the markers it consumed, by id, in one transaction: a change committed after the
recompute read has a marker of its own, so nothing is lost (docs/report.md §12).

The report uses the rollups when its periods start and end at UTC midnight and the refresh
succeeds (or has nothing to do); otherwise — periods not aligned to days, a read-only or
busy database, an older schema, ``--by tag`` — it reads the base tables as before. Both give
the same figures (tested): the rollups hold the same sums, grouped one step earlier.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import BigInteger, Date, Float, and_, case, cast, delete, func, insert, literal, or_, select
from sqlalchemy.engine import Connection, Engine

from wasteaudit.report import metrics
from wasteaudit.storage.models import RollupCallRow, RollupDirtyRow, RollupRunRow, RollupWasteRow

__all__ = ("aligned", "refresh", "call_cube", "waste_cube", "run_rows", "available")

log = logging.getLogger(__name__)

dirty = RollupDirtyRow.__table__
r_calls = RollupCallRow.__table__
r_waste = RollupWasteRow.__table__
r_runs = RollupRunRow.__table__
calls, findings, runs, scores = metrics.calls, metrics.findings, metrics.runs, metrics.scores

# pg_advisory_xact_lock key: one refresh at a time (b"wa-rollu" as a signed 64-bit integer).
_PG_LOCK_KEY = int.from_bytes(b"wa-rollu", "big", signed=True)


def aligned(span: metrics.Span) -> bool:
    """Whether every boundary of the span is a UTC midnight (the rollups' grain)."""
    for moment in (span.start, span.split, span.end):
        utc = moment.astimezone(timezone.utc) if moment.tzinfo else moment
        if utc.time() != time(0):
            return False
    return True


def _day_of(moment: datetime) -> date:
    return (moment.astimezone(timezone.utc) if moment.tzinfo else moment).date()


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), timezone.utc)


def available(conn: Connection) -> bool:
    """Whether the database has the rollup tables (schema ``v0_3_0_01`` or later)."""
    from sqlalchemy import inspect

    return bool(inspect(conn).has_table(dirty.name))


# --- refresh ---------------------------------------------------------------------------------------


def _call_day(dialect: str) -> Any:
    """The UTC day of a call, in the form the ``Date`` columns store."""
    if dialect == "postgresql":
        return cast(func.timezone("UTC", calls.c.started_at), Date)
    return func.substr(calls.c.started_at, 1, 10)  # SQLite: naive UTC text 'YYYY-MM-DD HH:MM:SS...'


def _not_judge() -> Any:
    return or_(calls.c.function.is_(None), calls.c.function != metrics.JUDGE_FUNCTION)


def _recompute(conn: Connection, first: date, last: date) -> None:
    """Replace the rollup rows of days ``[first, last]`` with sums over the base tables."""
    dialect = conn.dialect.name
    c, f, s, r = calls.c, findings.c, scores.c, runs.c
    lo, hi = _midnight(first), _midnight(last + timedelta(days=1))
    for table in (r_calls, r_waste, r_runs):
        conn.execute(delete(table).where(table.c.day >= first, table.c.day <= last))
    day = _call_day(dialect).label("day")
    keys = [c.function, c.provider, c.request_model, c.response_model]
    where = and_(c.started_at >= lo, c.started_at < hi, _not_judge())
    cube = [col for col in metrics._cube_columns()]
    conn.execute(
        insert(r_calls).from_select(
            ["day", "function", "provider", "request_model", "response_model", *[col.name for col in cube]],
            select(day, *keys, *cube).where(where).group_by(day, *keys),
        )
    )
    waste = metrics._waste_columns()[3:]  # tokens, cost_usd, n, priced
    conn.execute(
        insert(r_waste).from_select(
            ["day", "function", "provider", "request_model", "response_model", "kind", "subkind", "tier",
             "tokens", "cost_usd", "findings", "priced_findings"],
            select(day, *keys, f.kind, f.subkind, f.tier, *waste)
            .select_from(calls.join(findings, metrics._current_findings()))
            .where(where)
            .group_by(day, *keys, f.kind, f.subkind, f.tier),
        )
    )
    # Runs: per (day, run, provider, model), with the run's quality signals.
    call_waste = select(func.sum(f.tokens)).where(metrics._current_findings(), f.tier == "confirmed").scalar_subquery()
    per_model = (
        select(
            day,
            c.run_id.label("run_id"),
            func.min(c.function).label("function"),
            c.provider.label("provider"),
            c.request_model.label("request_model"),
            c.response_model.label("response_model"),
            cast(func.sum(c.output_tokens), BigInteger).label("t"),
            func.count().label("n"),
            func.sum(c.cost_usd).label("c"),
            func.count(c.cost_usd).label("n_priced"),
            func.count(c.scored_version).label("n_scored"),
            cast(func.sum(func.coalesce(call_waste, 0)), BigInteger).label("w"),
        )
        .where(where, c.run_id.is_not(None))
        .group_by(day, c.run_id, c.provider, c.request_model, c.response_model)
        .subquery("per_model")
    )
    pm = per_model.c

    def score_of(*conditions: Any, agg: Any = func.avg) -> Any:
        return select(agg(s.value)).where(s.run_id == pm.run_id, *conditions).scalar_subquery()

    q_quality, q_mean = score_of(s.name == "quality"), score_of()
    q_validation = score_of(s.name == "validation", agg=func.min)
    failed = or_(r.status == "failed", r.validation.is_(False), and_(q_validation.is_not(None), q_validation < 0.5))
    signal = func.coalesce(q_quality, q_mean)
    clamped = case((signal > 1.0, 1.0), (signal < 0.0, 0.0), else_=signal)
    conn.execute(
        insert(r_runs).from_select(
            ["day", "run_id", "function", "provider", "request_model", "response_model", "t", "n", "c", "n_priced",
             "n_scored", "w", "observable", "q", "failed"],
            select(
                pm.day, pm.run_id, pm.function, pm.provider, pm.request_model, pm.response_model, pm.t, pm.n, pm.c,
                pm.n_priced, pm.n_scored, pm.w,
                metrics._use_observable(dialect),
                cast(case((failed, 0.0), else_=clamped), Float),
                case((failed, True), else_=False),
            ).select_from(per_model.outerjoin(runs, r.id == pm.run_id)),
        )
    )


def _ranges(days: list[date]) -> Iterator[tuple[date, date]]:
    """Consecutive runs of days, as ``(first, last)``."""
    start = prev = None
    for day in sorted(set(days)):
        if start is None:
            start = prev = day
        elif day == prev + timedelta(days=1):  # type: ignore[operator]
            prev = day
        else:
            yield start, prev  # type: ignore[misc]
            start = prev = day
    if start is not None:
        yield start, prev  # type: ignore[misc]


def refresh(engine: Engine, start: datetime | None = None, end: datetime | None = None) -> int:
    """Re-aggregate the dirty days in ``[start, end)`` (default: all); returns how many.

    One transaction: on SQLite the first statement takes the write lock (writers wait, and
    none can commit between the recompute and the markers' removal); on PostgreSQL refreshes
    are serialized by an advisory lock, and a write committed after the recompute read has
    its own marker (markers are only ever appended), which stays.
    """
    with engine.connect() as conn:
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
            else:
                # Take the write lock first: the markers read below are then the final word.
                conn.execute(delete(dirty).where(dirty.c.id < 0))
            where = []
            if start is not None:
                where.append(dirty.c.day >= _day_of(start))
            if end is not None:
                where.append(dirty.c.day < _day_of(end) + timedelta(days=1 if _midnight(_day_of(end)) < end else 0))
            marks = conn.execute(select(dirty.c.id, dirty.c.day).where(*where)).all()
            if not marks:
                return 0
            days = sorted({m.day if isinstance(m.day, date) else date.fromisoformat(str(m.day)) for m in marks})
            for first, last in _ranges(days):
                _recompute(conn, first, last)
            ids = [m.id for m in marks]
            for i in range(0, len(ids), 900):
                conn.execute(delete(dirty).where(dirty.c.id.in_(ids[i : i + 900])))
            return len(days)


# --- reading -----------------------------------------------------------------------------------------


def _span_where(table: Any, span: metrics.Span) -> Any:
    return and_(table.c.day >= _day_of(span.start), table.c.day < _day_of(span.end))


def _period(table: Any, span: metrics.Span) -> Any:
    return (table.c.day >= _day_of(span.split)).label("period")


def _keys(table: Any, dialect: str) -> list[Any]:
    return [metrics._bytewise(table.c[name], dialect).label(name) for name in ("function", "provider", "request_model", "response_model")]


def _day_text(table: Any, dialect: str) -> Any:
    if dialect == "postgresql":
        return func.to_char(table.c.day, literal("YYYY-MM-DD")).label("day")
    return cast(table.c.day, metrics.String).label("day")


def call_cube(conn: Connection, span: metrics.Span) -> list[metrics.CubeRow]:
    """:func:`metrics.call_cube` from the call rollup (a few rows per day and cell)."""
    dialect = conn.dialect.name
    t = r_calls.c
    period, day, keys = _period(r_calls, span), _day_text(r_calls, dialect), _keys(r_calls, dialect)
    sums = [
        func.sum(t.calls).label("calls"),
        *[func.sum(t[name]).label(name) for name in (
            "attempts", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "priced_calls",
            "unpriced_calls", "partially_priced_calls", "scored_calls", "scored_output_tokens", "cacheable_calls",
            "cacheable_cache_read")],
        func.min(t.cacheable_min_input).label("cacheable_min_input"),
    ]
    stmt = select(period, day, *keys, *sums).where(_span_where(r_calls, span)).group_by(period, day, *keys)
    return [metrics._cube_row(metrics._cell_key(m), m) for m in conn.execute(stmt).mappings()]


def waste_cube(conn: Connection, span: metrics.Span) -> list[metrics.WasteRow]:
    """:func:`metrics.waste_cube` from the waste rollup."""
    dialect = conn.dialect.name
    t = r_waste.c
    period, day, keys = _period(r_waste, span), _day_text(r_waste, dialect), _keys(r_waste, dialect)
    stmt = (
        select(
            period, day, *keys, t.kind, t.subkind, t.tier,
            func.sum(t.tokens).label("tokens"), func.sum(t.cost_usd).label("cost_usd"),
            func.sum(t.findings).label("n"), func.sum(t.priced_findings).label("priced"),
        )
        .where(_span_where(r_waste, span))
        .group_by(period, day, *keys, t.kind, t.subkind, t.tier)
    )
    return [metrics._waste_row(metrics._cell_key(m), m) for m in conn.execute(stmt).mappings()]


def run_rows(conn: Connection, span: metrics.Span, *, chunk_size: int = 50_000) -> Iterator[metrics.RunChunk]:
    """:func:`metrics.run_rows` from the run rollup: the same rows, q and failed included."""
    dialect = conn.dialect.name
    t = r_runs.c
    period = _period(r_runs, span)
    run_id = metrics._bytewise(t.run_id, dialect).label("run_id")
    provider, request_model, response_model = _keys(r_runs, dialect)[1:]
    per_model = (
        select(
            period, run_id, func.min(t.function).label("function"), provider, request_model, response_model,
            cast(func.sum(t.t), BigInteger).label("t"), func.sum(t.n).label("n"), func.sum(t.c).label("c"),
            func.sum(t.n_priced).label("n_priced"), func.sum(t.n_scored).label("n_scored"),
            cast(func.sum(t.w), BigInteger).label("w"),
            func.max(case((t.observable, 1), else_=0)).label("observable"),
            func.max(t.q).label("q"), func.max(case((t.failed, 1), else_=0)).label("failed"),
        )
        .where(_span_where(r_runs, span))
        .group_by(period, run_id, provider, request_model, response_model)
        .subquery("per_model")
    )
    pm = per_model.c
    part = (pm.period, pm.run_id)
    whole = lambda col: func.sum(col).over(partition_by=part)  # noqa: E731
    rn = func.row_number().over(
        partition_by=part, order_by=(func.coalesce(pm.t, 0).desc(), pm.request_model, pm.response_model, pm.provider)
    )
    ranked = select(
        pm.period, pm.run_id, pm.function, pm.provider, pm.request_model, pm.response_model, pm.observable, pm.q, pm.failed,
        pm.t.label("cell_t"), cast(whole(pm.t), BigInteger).label("t"), whole(pm.n).label("n"), whole(pm.c).label("c"),
        whole(pm.n_priced).label("n_priced"), whole(pm.n_scored).label("n_scored"), cast(whole(pm.w), BigInteger).label("w"),
        rn.label("rn"),
    ).subquery("ranked")
    rk = ranked.c
    primary = rk.rn == 1

    def only_primary(value: Any) -> Any:
        return case((primary, value), else_=None)

    stmt = select(
        rk.period,
        metrics._key_or(rk.function, metrics.NO_FUNCTION),
        metrics._key_or(rk.request_model, None, rk.response_model, metrics.UNKNOWN_MODEL),
        rk.provider,
        primary.label("primary"),
        rk.cell_t,
        rk.observable,
        only_primary(rk.t),
        only_primary(case((rk.n_priced == rk.n, rk.c), else_=None)),
        only_primary(case((rk.n_scored == rk.n, rk.w), else_=None)),
        only_primary(rk.q),
        only_primary(rk.failed),
    )
    result = conn.execution_options(stream_results=True, yield_per=chunk_size).execute(stmt)
    try:
        for part_rows in result.partitions(chunk_size):
            if not part_rows:
                continue
            cols = list(zip(*part_rows))
            n = len(part_rows)
            nothing: list[Any] = [None] * n
            yield metrics.RunChunk(
                period=list(map(int, map(bool, cols[0]))),
                run_id=nothing,
                function=list(cols[1]),
                model=list(cols[2]),
                provider=list(cols[3]),
                primary=list(map(bool, cols[4])),
                cell_output_tokens=list(cols[5]),
                observable=list(cols[6]),
                output_tokens=list(cols[7]),
                cost_usd=list(cols[8]),
                waste_tokens=list(cols[9]),
                status=nothing,
                validation=nothing,
                quality_score=nothing,
                mean_score=nothing,
                validation_score=nothing,
                tags=None,
                q=list(cols[10]),
                failed=list(cols[11]),
            )
    finally:
        result.close()
