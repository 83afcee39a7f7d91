"""The report's SQL: every aggregate is a GROUP BY in the database (SQLAlchemy Core).

The same statements run on SQLite and PostgreSQL; the few dialect differences (JSON array
length, the UTC day of a timestamp, expanding a JSON object of tags) are isolated in the
``_dialect_*`` helpers. Nothing here returns a row per call:

* The report period and the previous one are read together (:class:`Span`, one pass each).
* :func:`call_cube` and :func:`waste_cube` aggregate calls and findings at the finest report
  grain (period × day × function × provider × model, a few thousand rows at most); the Python
  side adds those rows up into functions, models, providers, days and totals, so the totals
  reconcile by construction.
* :func:`tag_cube` / :func:`tag_waste_cube` do the same for ``--by tag`` (a run's tags live on
  the run row, as JSON).
* :func:`run_rows` yields rows per **run** and model (bounded by runs, streamed in chunks), which
  the run-level figures need: quality, the efficiency ratios and the bootstrap gates.
* :func:`top_wasteful_calls`, :func:`prefix_samples`, :func:`judge_usage` are small: the
  evidence list, the missed-cache estimate and the judge's own cost.

Cells are grouped on raw columns (function, provider, request and response model) and
normalized in Python (no function → ``(none)``; model = the request's, else the response's):
grouping on expressions costs several times more on SQLite. On PostgreSQL the text keys are
compared bytewise (``COLLATE "C"``): grouping needs equality, not the database's collation.

Findings count only when written by the scorer version the call was last scored with
(``findings.scorer_version = calls.scored_version``): a rescore replaces, never adds.
Calls made by the LLM judge (function ``wasteaudit.judge``) are left out of every figure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from wasteaudit.storage.models import CallRow, FindingRow, RunRow, ScoreRow

__all__ = (
    "JUDGE_FUNCTION",
    "NO_FUNCTION",
    "UNKNOWN_MODEL",
    "UNTAGGED",
    "CubeRow",
    "WasteRow",
    "RunChunk",
    "RunArrays",
    "Span",
    "call_cube",
    "waste_cube",
    "tag_cube",
    "tag_waste_cube",
    "run_rows",
    "top_wasteful_calls",
    "prefix_samples",
    "judge_usage",
)

JUDGE_FUNCTION = "wasteaudit.judge"
NO_FUNCTION = "(none)"
UNKNOWN_MODEL = "(unknown)"
UNTAGGED = "(untagged)"

calls = CallRow.__table__
runs = RunRow.__table__
findings = FindingRow.__table__
scores = ScoreRow.__table__


# --- shared expressions --------------------------------------------------------------------------


def _function(dialect: str = "") -> ColumnElement[str]:
    return _bytewise(func.coalesce(calls.c.function, literal(NO_FUNCTION)), dialect).label("function")


def _model(dialect: str = "") -> ColumnElement[str]:
    # The recorded request name (what the team chose), else what the response said.
    return _bytewise(func.coalesce(calls.c.request_model, calls.c.response_model, literal(UNKNOWN_MODEL)), dialect).label("model")


def model_key(request_model: str | None, response_model: str | None) -> str:
    """The model a call is reported under: the request's name, else the response's."""
    return request_model or response_model or UNKNOWN_MODEL


def function_key(function: str | None) -> str:
    return function or NO_FUNCTION


def _raw_keys(dialect: str) -> list[Any]:
    """The cell's grouping columns, raw (cheaper to group on than expressions; normalized in Python)."""
    c = calls.c
    return [
        _bytewise(c.function, dialect).label("function"),
        _bytewise(c.provider, dialect).label("provider"),
        _bytewise(c.request_model, dialect).label("request_model"),
        _bytewise(c.response_model, dialect).label("response_model"),
    ]


def _cell_key(m: Any) -> tuple[str, str, str]:
    return (function_key(m["function"]), m["provider"], model_key(m["request_model"], m["response_model"]))


def _key_or(*columns: Any) -> Any:
    """``a or b or ... or default`` in SQL (empty strings count as missing, as in Python):
    the key normalization of :func:`function_key` / :func:`model_key`; ``None`` entries are skipped."""
    parts = [func.nullif(c, "") for c in columns[:-1] if c is not None]
    return func.coalesce(*parts, literal(columns[-1]))


def _bytewise(column: Any, dialect: str) -> Any:
    """A grouping key compared byte by byte: PostgreSQL sorts text by the database's collation
    (several times slower); grouping only needs equality. SQLite compares bytes already."""
    return column.collate("C") if dialect == "postgresql" else column


def _in_period(start: datetime, end: datetime) -> ColumnElement[bool]:
    return and_(
        calls.c.started_at >= start,
        calls.c.started_at < end,
        or_(calls.c.function.is_(None), calls.c.function != JUDGE_FUNCTION),
    )


def _call_ids_in(span: "Span") -> Any:
    other = calls.alias("span_calls")
    return select(other.c.id).where(other.c.started_at >= span.start, other.c.started_at < span.end)


def _current_findings() -> ColumnElement[bool]:
    return and_(findings.c.call_id == calls.c.id, findings.c.scorer_version == calls.c.scored_version)


def _dialect_nonempty_array(column: Any, dialect: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        return func.jsonb_array_length(column) > 0
    return func.json_array_length(column) > 0


def _dialect_day(column: Any, dialect: str) -> ColumnElement[str]:
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), literal("YYYY-MM-DD"), type_=String)
    # SQLite stores naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'.
    return func.substr(column, 1, 10, type_=String)


def _use_observable(dialect: str) -> ColumnElement[bool]:
    return or_(
        runs.c.return_value.is_not(None),
        and_(runs.c.used_values.is_not(None), _dialect_nonempty_array(runs.c.used_values, dialect)),
    )


# --- call and waste cubes ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """Two adjacent periods read in one pass: previous ``[start, split)`` and current ``[split, end)``."""

    start: datetime
    split: datetime
    end: datetime


def _period_index(span: Span) -> ColumnElement[bool]:
    """True (1) for the current period, false (0) for the previous one (a plain comparison:
    grouping on it is much cheaper on SQLite than on a CASE expression)."""
    return (calls.c.started_at >= span.split).label("period")


def _day(dialect: str) -> ColumnElement[str]:
    """The UTC day of a call (the daily chart)."""
    return _dialect_day(calls.c.started_at, dialect).label("day")


@dataclass(slots=True)
class CubeRow:
    """Call-level sums for one cell: ``key`` = (function, provider, model), or (tag key, tag value)."""

    key: tuple[str, ...]
    calls: int
    attempts: int
    input_tokens: int | None
    cached_input_tokens: int | None
    output_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    priced_calls: int
    unpriced_calls: int
    partially_priced_calls: int
    scored_calls: int
    scored_output_tokens: int | None
    period: int = 1
    day: str | None = None
    # Prompts long enough to cache (>= MIN_CACHEABLE_TOKENS): count, smallest, cache reads billed.
    cacheable_calls: int = 0
    cacheable_min_input: int | None = None
    cacheable_cache_read: int | None = None


def _cube_columns() -> list[Any]:
    c = calls.c
    cacheable = c.input_tokens >= MIN_CACHEABLE_TOKENS
    return [
        func.count().label("calls"),
        func.sum(c.attempts).label("attempts"),
        func.sum(c.input_tokens).label("input_tokens"),
        func.sum(c.input_cache_read_tokens).label("cached_input_tokens"),
        func.sum(c.output_tokens).label("output_tokens"),
        func.sum(c.output_reasoning_tokens).label("reasoning_tokens"),
        func.sum(c.cost_usd).label("cost_usd"),
        func.count(c.cost_usd).label("priced_calls"),
        func.sum(case((c.priced == "unpriced", 1), else_=0)).label("unpriced_calls"),
        func.sum(case((c.priced == "partial", 1), else_=0)).label("partially_priced_calls"),
        func.count(c.scored_version).label("scored_calls"),
        func.sum(case((c.scored_version.is_not(None), c.output_tokens), else_=None)).label("scored_output_tokens"),
        func.sum(case((cacheable, 1), else_=0)).label("cacheable_calls"),
        func.min(case((cacheable, c.input_tokens), else_=None)).label("cacheable_min_input"),
        func.sum(case((cacheable, func.coalesce(c.input_cache_read_tokens, 0)), else_=None)).label("cacheable_cache_read"),
    ]


def _cube_row(key: tuple[str, ...], m: Any) -> CubeRow:
    return CubeRow(
        key=key,
        calls=int(m["calls"] or 0),
        attempts=int(m["attempts"] or 0),
        input_tokens=_int(m["input_tokens"]),
        cached_input_tokens=_int(m["cached_input_tokens"]),
        output_tokens=_int(m["output_tokens"]),
        reasoning_tokens=_int(m["reasoning_tokens"]),
        cost_usd=_float(m["cost_usd"]),
        priced_calls=int(m["priced_calls"] or 0),
        unpriced_calls=int(m["unpriced_calls"] or 0),
        partially_priced_calls=int(m["partially_priced_calls"] or 0),
        scored_calls=int(m["scored_calls"] or 0),
        scored_output_tokens=_int(m["scored_output_tokens"]),
        period=int(bool(m["period"])) if "period" in m else 1,
        day=m["day"] if "day" in m else None,
        cacheable_calls=int(m["cacheable_calls"] or 0),
        cacheable_min_input=_int(m["cacheable_min_input"]),
        cacheable_cache_read=_int(m["cacheable_cache_read"]),
    )


def call_cube(conn: Connection, span: Span) -> list[CubeRow]:
    """Call sums per (period, day, function, provider, model): one pass over calls.

    Reads only narrow columns of ``wasteaudit_calls`` (a covering index on ``started_at`` and
    these columns lets SQLite answer it from the index alone; see docs/report.md).
    """
    dialect = conn.dialect.name
    keys = _raw_keys(dialect)
    period, day = _period_index(span), _day(dialect)
    stmt = (
        select(period, day, *keys, *_cube_columns())
        .where(_in_period(span.start, span.end))
        .group_by(period, day, *keys)
    )
    return [_cube_row(_cell_key(m), m) for m in conn.execute(stmt).mappings()]


@dataclass(slots=True)
class WasteRow:
    """Finding sums for one cell and one (kind, subkind, tier)."""

    key: tuple[str, ...]
    kind: str
    subkind: str
    tier: str
    tokens: int
    cost_usd: float | None
    findings: int
    priced_findings: int
    period: int = 1
    day: str | None = None


def run_sum_columns(call_waste: Any) -> list[Any]:
    """A run's call sums per model (t, n, c, n_priced, n_scored, w): one definition for the run pass
    over the base tables and for the run rollups, so both add up exactly the same figures."""
    c = calls.c
    return [
        cast(func.sum(c.output_tokens), BigInteger).label("t"),
        func.count().label("n"),
        func.sum(c.cost_usd).label("c"),
        func.count(c.cost_usd).label("n_priced"),
        func.count(c.scored_version).label("n_scored"),
        cast(func.sum(func.coalesce(call_waste, 0)), BigInteger).label("w"),
    ]


def _waste_columns() -> list[Any]:
    f = findings.c
    return [
        f.kind,
        f.subkind,
        f.tier,
        func.sum(f.tokens).label("tokens"),
        func.sum(f.cost_usd).label("cost_usd"),
        func.count().label("n"),
        func.count(f.cost_usd).label("priced"),
    ]


def _waste_row(key: tuple[str, ...], m: Any) -> WasteRow:
    return WasteRow(
        key=key,
        kind=m["kind"],
        subkind=m["subkind"],
        tier=m["tier"],
        tokens=int(m["tokens"] or 0),
        cost_usd=_float(m["cost_usd"]),
        findings=int(m["n"] or 0),
        priced_findings=int(m["priced"] or 0),
        period=int(bool(m["period"])) if "period" in m else 1,
        day=m["day"] if "day" in m else None,
    )


def waste_cube(conn: Connection, span: Span) -> list[WasteRow]:
    """Finding sums per (period, day, function, provider, model, kind, subkind, tier)."""
    dialect = conn.dialect.name
    keys = _raw_keys(dialect)
    period, day = _period_index(span), _day(dialect)
    f = findings.c
    stmt = (
        select(period, day, *keys, *_waste_columns())
        .select_from(calls.join(findings, _current_findings()))
        .where(_in_period(span.start, span.end))
        .group_by(period, day, *keys, f.kind, f.subkind, f.tier)
    )
    return [_waste_row(_cell_key(m), m) for m in conn.execute(stmt).mappings()]


def _tag_each(dialect: str) -> Any:
    """The run's tags as a table of (key, value) rows, joined laterally to each call's run."""
    each_fn = func.jsonb_each_text if dialect == "postgresql" else func.json_each
    return each_fn(runs.c.tags).table_valued("key", "value").alias("tag")


def _tag_columns(each: Any) -> tuple[Any, Any]:
    return (
        func.coalesce(cast(each.c.key, String), literal(UNTAGGED)).label("tag_key"),
        func.coalesce(cast(each.c.value, String), literal(UNTAGGED)).label("tag_value"),
    )


def _tag_source(base: Any, dialect: str, tag_key: str | None) -> tuple[Any, Any, Any, list[Any]]:
    """``(FROM, key column, value column, GROUP BY)`` expanding each call's run tags."""
    source = base.outerjoin(runs, runs.c.id == calls.c.run_id)
    if tag_key is not None:
        k = literal(tag_key).label("tag_key")
        v = func.coalesce(runs.c.tags[tag_key].as_string(), literal(UNTAGGED)).label("tag_value")
        return source, k, v, [v]
    each = _tag_each(dialect)
    k, v = _tag_columns(each)
    return source.outerjoin(each, literal_column("1") == 1), k, v, [k, v]


def tag_cube(conn: Connection, span: Span, tag_key: str | None = None) -> list[CubeRow]:
    """Call sums per (period, run tag key, value); untagged runs and run-less calls under ``(untagged)``.

    With ``tag_key``, rows per value of that key only. A run with several tags counts in each
    of its tag rows, so tag rows need not add up to the totals.
    """
    dialect = conn.dialect.name
    period = _period_index(span)
    source, k, v, group = _tag_source(calls, dialect, tag_key)
    stmt = select(period, k, v, *_cube_columns()).select_from(source).where(_in_period(span.start, span.end)).group_by(period, *group)
    return [_cube_row((m["tag_key"], m["tag_value"]), m) for m in conn.execute(stmt).mappings()]


def tag_waste_cube(conn: Connection, span: Span, tag_key: str | None = None) -> list[WasteRow]:
    f = findings.c
    dialect = conn.dialect.name
    period = _period_index(span)
    source, k, v, group = _tag_source(calls.join(findings, _current_findings()), dialect, tag_key)
    stmt = (
        select(period, k, v, *_waste_columns())
        .select_from(source)
        .where(_in_period(span.start, span.end))
        .group_by(period, *group, f.kind, f.subkind, f.tier)
    )
    return [_waste_row((m["tag_key"], m["tag_value"]), m) for m in conn.execute(stmt).mappings()]


# --- one row per run ------------------------------------------------------------------------------


@dataclass(slots=True)
class RunChunk:
    """Run rows, column by column (plain lists, ready for numpy).

    One row per (run, provider, model) the run used: ``primary`` marks the run's primary model
    (most output tokens; ties by name), the row that carries the run's totals and quality
    signals for the run-level figures. The other rows only carry their cell's output tokens
    (``cell_output_tokens``), for unused-coverage per model.
    """

    period: list[int]
    run_id: list[str]
    function: list[str]
    model: list[str]
    provider: list[str]
    primary: list[bool]
    cell_output_tokens: list[int | None]
    observable: list[bool | None]
    output_tokens: list[int | None]
    cost_usd: list[float | None]  # None unless every call of the run is priced
    waste_tokens: list[int | None]  # confirmed waste; None unless every call of the run is scored
    status: list[str | None]
    validation: list[bool | None]
    quality_score: list[float | None]  # mean of scores named "quality"
    mean_score: list[float | None]  # mean of all the run's scores
    validation_score: list[float | None]  # lowest "validation" score (0 = a validator rejected)
    tags: list[Any] | None
    # The run's q and failed flag, computed by the database with the rule of
    # :func:`wasteaudit.report.quality.run_quality` (None: computed from the signals in Python).
    q: list[float | None] | None = None
    failed: list[bool] | None = None


@dataclass
class RunArrays:
    """Runs as numpy columns (what :class:`~wasteaudit.report.efficiency.RunTable` reads without
    a Python step per run): one entry per run, keyed by its primary model, and one per (run,
    provider, model) for unused-coverage. Names are small lists; the arrays hold indexes into them.

    Per run: ``period`` (0 previous, 1 current), ``function`` and ``model`` (indexes into
    ``functions`` and ``models``, the primary model's), ``q``, ``cost`` (NaN unless every call is
    priced), ``t`` (output tokens), ``w`` (confirmed waste; NaN unless every call is scored) —
    NaN is missing — ``failed``, and ``primary`` (the index of its primary (run, model) entry).
    Per (run, model): ``cell_run`` (index of the run), ``cell_function``, ``cell_model``,
    ``cell_tokens`` (NaN: missing) and ``cell_observable``.
    """

    functions: list[str]
    models: list[tuple[str, str]]  # (provider, model)
    period: Any
    function: Any
    model: Any
    q: Any
    cost: Any
    t: Any
    w: Any
    failed: Any
    primary: Any
    cell_run: Any
    cell_function: Any
    cell_model: Any
    cell_tokens: Any
    cell_observable: Any


def run_rows(
    conn: Connection,
    span: Span,
    *,
    with_tags: bool = False,
    chunk_size: int = 20_000,
    lookups: str | None = None,
) -> Iterator[RunChunk]:
    """Yield the runs of both periods in chunks: rows per (run, model), never one per call.

    Calls are summed per (period, run, provider, model); window sums give the run's totals and
    rank its models. A run's cost and tokens are those of all its calls in the period (every
    attempt and re-ask); a run whose calls straddle the two periods is split between them.
    Quality signals come from ``wasteaudit_runs`` (status, validation) and ``wasteaudit_scores``;
    confirmed waste per run from the current findings of its calls.

    ``lookups`` picks how a call's waste and a run's scores are found — the results are the
    same, the plans are not: ``"correlated"`` (index lookups per call and per run; SQLite's
    default, whose planner may not index a joined subquery) or ``"join"`` (grouped subqueries,
    hash-joined; PostgreSQL's default, where a lookup per row costs more than a hash join).
    """
    c, f, s, r = calls.c, findings.c, scores.c, runs.c
    dialect = conn.dialect.name
    joins = (lookups or ("join" if dialect == "postgresql" else "correlated")) == "join"
    run_id = _bytewise(c.run_id, dialect).label("run_id")
    provider = _bytewise(c.provider, dialect).label("provider")
    request_model = _bytewise(c.request_model, dialect).label("request_model")
    response_model = _bytewise(c.response_model, dialect).label("response_model")
    period = _period_index(span)
    in_span = and_(_in_period(span.start, span.end), c.run_id.is_not(None))
    source: Any = calls
    if joins:
        # Confirmed waste per call, grouped once and hash-joined.
        call_waste_q = (
            select(f.call_id.label("call_id"), f.scorer_version.label("version"), func.sum(f.tokens).label("w"))
            .where(f.tier == "confirmed", f.call_id.in_(_call_ids_in(span)))
            .group_by(f.call_id, f.scorer_version)
            .subquery("call_waste")
        )
        cw = call_waste_q.c
        source = calls.outerjoin(call_waste_q, and_(cw.call_id == c.id, cw.version == c.scored_version))
        call_waste: Any = cw.w
    else:
        # Confirmed waste of each call (current scorer version), looked up by the findings index.
        call_waste = select(func.sum(f.tokens)).where(_current_findings(), f.tier == "confirmed").scalar_subquery()
    per_model = (
        select(
            period,
            run_id,
            func.min(c.function).label("function"),
            provider,
            request_model,
            response_model,
            *run_sum_columns(call_waste),
        )
        .select_from(source)
        .where(in_span)
        .group_by(period, run_id, provider, request_model, response_model)
        .subquery("per_model")
    )
    pm = per_model.c
    part = (pm.period, pm.run_id)
    whole = lambda col: func.sum(col).over(partition_by=part)  # noqa: E731
    ranked = select(
        pm.period,
        pm.run_id,
        pm.function,
        pm.provider,
        pm.request_model,
        pm.response_model,
        pm.t.label("cell_t"),
        cast(whole(pm.t), BigInteger).label("t"),
        whole(pm.n).label("n"),
        whole(pm.c).label("c"),
        whole(pm.n_priced).label("n_priced"),
        whole(pm.n_scored).label("n_scored"),
        cast(whole(pm.w), BigInteger).label("w"),
        func.row_number()
        .over(partition_by=part, order_by=(func.coalesce(pm.t, 0).desc(), pm.request_model, pm.response_model, pm.provider))
        .label("rn"),
    ).subquery("ranked")
    rk = ranked.c
    primary = rk.rn == 1

    def only_primary(value: Any) -> Any:
        return case((primary, value), else_=None)

    if joins:
        # The runs' scores, grouped once and hash-joined (scores are small rows; filtering them by
        # the span's runs first costs more than it saves).
        run_scores = (
            select(
                s.run_id.label("run_id"),
                func.avg(case((s.name == "quality", s.value), else_=None)).label("q_quality"),
                func.avg(s.value).label("q_mean"),
                func.min(case((s.name == "validation", s.value), else_=None)).label("q_validation"),
            )
            .group_by(s.run_id)
            .subquery("run_scores")
        )
        score_columns = {name: only_primary(run_scores.c[name]) for name in ("q_quality", "q_mean", "q_validation")}
    else:

        def score_of(*where: Any, agg: Any = func.avg) -> Any:
            return only_primary(select(agg(s.value)).where(s.run_id == rk.run_id, *where).scalar_subquery())

        score_columns = {
            "q_quality": score_of(s.name == "quality"),
            "q_mean": score_of(),
            "q_validation": score_of(s.name == "validation", agg=func.min),
        }

    # The run's quality q and failed flag (rule of quality.run_quality; scores are finite, the
    # writer refuses others), so Python receives numbers instead of five signals per run.
    failed = or_(
        r.status == "failed",
        r.validation.is_(False),
        and_(score_columns["q_validation"].is_not(None), score_columns["q_validation"] < 0.5),
    )
    signal = func.coalesce(score_columns["q_quality"], score_columns["q_mean"])
    clamped = case((signal > 1.0, 1.0), (signal < 0.0, 0.0), else_=signal)
    q = only_primary(case((failed, 0.0), else_=clamped))
    failed_flag = only_primary(case((failed, 1), else_=0))
    columns = [
        rk.period,
        rk.run_id,
        _key_or(rk.function, NO_FUNCTION),
        _key_or(rk.request_model, None, rk.response_model, UNKNOWN_MODEL),
        rk.response_model,
        rk.provider,
        primary.label("primary"),
        rk.cell_t,
        _use_observable(dialect).label("observable"),
        only_primary(rk.t).label("t"),
        only_primary(case((rk.n_priced == rk.n, rk.c), else_=None)).label("cost"),
        only_primary(case((rk.n_scored == rk.n, rk.w), else_=None)).label("waste"),
        r.status,
        r.validation,
        score_columns["q_quality"].label("q_quality"),
        score_columns["q_mean"].label("q_mean"),
        score_columns["q_validation"].label("q_validation"),
    ]
    columns += [cast(q, Float).label("q"), failed_flag.label("failed")]
    if with_tags:
        columns.append(only_primary(r.tags).label("tags"))
    source_runs = ranked.outerjoin(runs, r.id == rk.run_id)
    if joins:
        source_runs = source_runs.outerjoin(run_scores, run_scores.c.run_id == rk.run_id)
    stmt = select(*columns).select_from(source_runs)
    result = conn.execution_options(stream_results=True, yield_per=chunk_size).execute(stmt)
    try:
        for part_rows in result.partitions(chunk_size):
            if not part_rows:
                continue
            cols = list(zip(*part_rows))
            yield RunChunk(
                period=list(map(int, map(bool, cols[0]))),
                run_id=list(cols[1]),
                function=list(cols[2]),
                model=list(cols[3]),
                provider=list(cols[5]),
                primary=list(map(bool, cols[6])),
                cell_output_tokens=list(cols[7]),
                observable=list(cols[8]),
                output_tokens=list(cols[9]),
                cost_usd=list(cols[10]),
                waste_tokens=list(cols[11]),
                status=list(cols[12]),
                validation=list(cols[13]),
                quality_score=list(cols[14]),
                mean_score=list(cols[15]),
                validation_score=list(cols[16]),
                q=list(cols[17]),
                failed=list(cols[18]),
                tags=list(cols[19]) if with_tags else None,
            )
    finally:
        result.close()


# --- small aggregates -----------------------------------------------------------------------------


def top_wasteful_calls(
    conn: Connection, start: datetime, end: datetime, limit: int = 10, ranked: list[Any] | None = None
) -> tuple[list[Any], list[Any]]:
    """The calls with the most confirmed waste (dollars, then tokens), and their current findings.

    ``ranked``: the ``(call_id, tokens, cost_usd)`` ranking when already known (the rollups).
    """
    f, c = findings.c, calls.c
    if ranked is None:
        ranked = conn.execute(top_ranking(start, end, limit)).mappings().all()
    ids = [row["call_id"] for row in ranked]
    if not ids:
        return [], []
    details = conn.execute(
        select(
            c.id,
            c.run_id,
            _function(),
            c.provider,
            _model(),
            c.response_model,
            c.started_at,
            c.output_tokens,
            c.cost_usd,
            c.trace_id,
            c.span_id,
            c.finish_reasons,
            c.scored_version,
        ).where(c.id.in_(ids))
    ).mappings().all()
    by_id = {row["id"]: dict(row) for row in details}
    rows = []
    for rank in ranked:
        detail = by_id.get(rank["call_id"])
        if detail is not None:
            detail["waste_tokens"] = int(rank["tokens"] or 0)
            detail["waste_cost_usd"] = _float(rank["cost_usd"])
            rows.append(detail)
    found = conn.execute(
        select(f.call_id, f.kind, f.subkind, f.tier, f.tokens, f.cost_usd, f.confidence, f.choice_index, f.evidence)
        .select_from(calls.join(findings, _current_findings()))
        .where(f.call_id.in_(ids))
        .order_by(f.call_id, f.tier, f.tokens.desc(), f.id)
    ).mappings().all()
    return rows, [dict(row) for row in found]


def top_ranking(start: datetime, end: datetime, limit: int) -> Any:
    """``(call_id, tokens, cost_usd)`` of the calls with the most confirmed waste in ``[start, end)``."""
    f = findings.c
    waste_cost = func.sum(f.cost_usd)
    waste_tokens = func.sum(f.tokens)
    return (
        select(f.call_id, waste_tokens.label("tokens"), waste_cost.label("cost_usd"))
        .select_from(calls.join(findings, _current_findings()))
        .where(_in_period(start, end), f.tier == "confirmed")
        .group_by(f.call_id)
        .order_by(func.coalesce(waste_cost, 0.0).desc(), waste_tokens.desc(), f.call_id)
        .limit(limit)
    )


#: Providers cache a prompt prefix only from about this many tokens on (OpenAI and Anthropic: 1,024).
MIN_CACHEABLE_TOKENS = 1024
#: Characters per token, to turn a prefix's length into tokens when the provider did not say.
CHARS_PER_TOKEN = 4


def prefix_samples(conn: Connection, start: datetime, end: datetime, function: str | None, per_end: int = 4) -> list[Any]:
    """The prompt prefixes of a few cacheable calls of one function in the period.

    The first and the last ``per_end`` such calls (through the function/time index), so only a
    handful of rows with content are read per function, however many calls it made. Returns
    ``(provider, model, system_instructions, first input message)`` rows as stored.
    """
    c = calls.c
    where = [
        c.function.is_(None) if function is None else c.function == function,
        c.started_at >= start,
        c.started_at < end,
        c.input_tokens >= MIN_CACHEABLE_TOKENS,
    ]
    out: list[Any] = []
    for order in (c.started_at.asc(), c.started_at.desc()):
        stmt = (
            select(c.provider, _model(), c.system_instructions, c.input_messages[0].label("first"))
            .where(*where)
            .order_by(order)
            .limit(per_end)
        )
        out.extend(tuple(row) for row in conn.execute(stmt))
    return out


def judge_usage(conn: Connection, start: datetime, end: datetime) -> dict[str, Any]:
    """What the LLM judge itself cost in the period (kept out of every other figure)."""
    c = calls.c
    row = conn.execute(
        select(
            func.count().label("calls"),
            func.sum(c.input_tokens).label("input_tokens"),
            func.sum(c.output_tokens).label("output_tokens"),
            func.sum(c.cost_usd).label("cost_usd"),
            func.count(c.cost_usd).label("priced_calls"),
        ).where(c.function == JUDGE_FUNCTION, c.started_at >= start, c.started_at < end)
    ).mappings().one()
    return dict(row)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)

