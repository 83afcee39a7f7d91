"""The report's rollups: per-day sums kept exact by the database, re-aggregated where stale.

Four tables (``wasteaudit.storage.models``), all at the grain of one UTC day:

* ``wasteaudit_rollup_calls`` — call sums per day × function × provider × request and response
  model (the call cube of :func:`metrics.call_cube`, summed per day instead of per period);
* ``wasteaudit_rollup_waste`` — current-finding sums per day × cell × kind × subkind × tier;
* ``wasteaudit_rollup_runs`` — per day × run × provider × model: the run's call sums there
  (output tokens, cost, priced/scored counts, confirmed waste) and the run's quality ``q``,
  failed flag and observable use;
* ``wasteaudit_rollup_top`` — the day's 10 calls with the most confirmed waste.

Triggers (migration ``v0_3_0_02``) append the days whose sums a write changed to
``wasteaudit_rollup_dirty``: a call inserted, updated (figures, scoring, repricing) or deleted
(pruning); a finding written or removed; a run or score written or removed (every day its
calls fall on). On SQLite a call insert has no trigger (it would cost ~20 µs per row): the
refresh finds those days by comparing each day's call count with the rollup's. :func:`refresh` re-aggregates the dirty days of a span from the base tables
and deletes the markers it consumed, by id, in one transaction: a change committed after the
recompute read has a marker of its own, so nothing is lost (docs/report.md §12).

The report uses the rollups when its periods start and end at UTC midnight and the refresh
succeeds (or has nothing to do); otherwise — periods not aligned to days, a read-only or
busy database, an older schema, ``--by tag`` — it reads the base tables as before. Both give
the same figures (tested): the rollups hold the same sums, grouped one step earlier.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import numpy as np
from sqlalchemy import Date, Float, and_, case, cast, delete, func, insert, literal, or_, select, text
from sqlalchemy.engine import Connection, Engine

from wasteaudit.report import metrics
from wasteaudit.storage.models import RollupCallRow, RollupDirtyRow, RollupRunRow, RollupTopRow, RollupWasteRow

__all__ = ("aligned", "available", "refresh", "call_cube", "waste_cube", "daily_waste", "top_ranking", "run_arrays", "run_rows", "TOP_PER_DAY")

dirty = RollupDirtyRow.__table__
r_calls = RollupCallRow.__table__
r_waste = RollupWasteRow.__table__
r_runs = RollupRunRow.__table__
r_top = RollupTopRow.__table__
#: Calls kept per day in the top-waste rollup: a report's top list can be at most this long.
TOP_PER_DAY = 10
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
    """Whether the database has the rollup tables (schema ``v0_3_0_02`` or later)."""
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
    for table in (r_calls, r_waste, r_runs, r_top):
        conn.execute(delete(table).where(table.c.day >= first, table.c.day <= last))
    day_ = first
    while day_ <= last:  # each day's top calls by confirmed waste (metrics.top_ranking)
        ranked = conn.execute(metrics.top_ranking(_midnight(day_), _midnight(day_ + timedelta(days=1)), TOP_PER_DAY)).all()
        if ranked:
            conn.execute(insert(r_top), [{"day": day_, "call_id": r[0], "tokens": r[1], "cost_usd": r[2]} for r in ranked])
        day_ += timedelta(days=1)
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
            *metrics.run_sum_columns(call_waste),
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


def _days_with_new_calls(conn: Connection, start: datetime | None, end: datetime | None) -> set[date]:
    """SQLite: the days in ``[start, end)`` whose count of (non-judge) calls differs from their
    rollup's — days with calls inserted since their last refresh. (SQLite has no insert trigger
    on calls; deletes and updates mark their days, so an equal count means nothing new.) One
    index-only range count per day."""
    c = calls.c
    if start is None or end is None:
        bounds = conn.execute(select(func.min(c.started_at), func.max(c.started_at))).one()
        if bounds[0] is None:
            return set()
        first = _day_of(bounds[0] if start is None else start)
        stop = (_day_of(bounds[1]) + timedelta(days=1)) if end is None else _day_of(end)
    else:
        first, stop = _day_of(start), _day_of(end)
    rolled = dict(
        conn.execute(
            select(r_calls.c.day, func.sum(r_calls.c.calls)).where(r_calls.c.day >= first, r_calls.c.day < stop).group_by(r_calls.c.day)
        ).all()
    )
    rolled = {d if isinstance(d, date) else date.fromisoformat(str(d)): int(n or 0) for d, n in rolled.items()}
    out = set()
    day = first
    while day < stop:
        n = conn.execute(
            select(func.count()).select_from(calls)
            .where(c.started_at >= _midnight(day), c.started_at < _midnight(day + timedelta(days=1)), _not_judge())
        ).scalar_one()
        if n != rolled.get(day, 0):
            out.add(day)
        day += timedelta(days=1)
    return out


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
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            else:
                # Take the write lock first: the markers read below are then the final word.
                conn.execute(delete(dirty).where(dirty.c.id < 0))
            where = []
            if start is not None:
                where.append(dirty.c.day >= _day_of(start))
            if end is not None:
                where.append(dirty.c.day < _day_of(end) + timedelta(days=1 if _midnight(_day_of(end)) < end else 0))
            marks = conn.execute(select(dirty.c.id, dirty.c.day).where(*where)).all()
            found = {m.day if isinstance(m.day, date) else date.fromisoformat(str(m.day)) for m in marks}
            if conn.dialect.name == "sqlite":
                found |= _days_with_new_calls(conn, start, end)
            if not found:
                return 0
            days = sorted(found)
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


def _waste_sums() -> list[Any]:
    t = r_waste.c
    return [
        func.sum(t.tokens).label("tokens"), func.sum(t.cost_usd).label("cost_usd"),
        func.sum(t.findings).label("n"), func.sum(t.priced_findings).label("priced"),
    ]


def waste_cube(conn: Connection, span: metrics.Span) -> list[metrics.WasteRow]:
    """:func:`metrics.waste_cube` from the waste rollup, summed over the days of each period
    (:func:`daily_waste` gives the days)."""
    dialect = conn.dialect.name
    t = r_waste.c
    period, keys = _period(r_waste, span), _keys(r_waste, dialect)
    stmt = (
        select(period, *keys, t.kind, t.subkind, t.tier, *_waste_sums())
        .where(_span_where(r_waste, span))
        .group_by(period, *keys, t.kind, t.subkind, t.tier)
    )
    return [metrics._waste_row(metrics._cell_key(m), m) for m in conn.execute(stmt).mappings()]


def daily_waste(conn: Connection, span: metrics.Span) -> list[metrics.WasteRow]:
    """Finding sums per day × kind × tier of the current period (the daily chart)."""
    dialect = conn.dialect.name
    t = r_waste.c
    day = _day_text(r_waste, dialect)
    stmt = (
        select(day, t.kind, t.tier, *_waste_sums())
        .where(t.day >= _day_of(span.split), t.day < _day_of(span.end))
        .group_by(day, t.kind, t.tier)
    )
    return [
        metrics.WasteRow((), m["kind"], "", m["tier"], int(m["tokens"] or 0), metrics._float(m["cost_usd"]), int(m["n"] or 0),
                         int(m["priced"] or 0), 1, m["day"])
        for m in conn.execute(stmt).mappings()
    ]


def top_ranking(conn: Connection, start: datetime, end: datetime, limit: int) -> list[Any] | None:
    """:func:`metrics.top_ranking` from the days' tops (None when ``limit`` exceeds what is kept)."""
    if limit > TOP_PER_DAY:
        return None
    t = r_top.c
    stmt = (
        select(t.call_id, t.tokens, t.cost_usd)
        .where(t.day >= _day_of(start), t.day < _day_of(end))
        .order_by(func.coalesce(t.cost_usd, 0.0).desc(), t.tokens.desc(), t.call_id)
        .limit(limit)
    )
    return [dict(m) for m in conn.execute(stmt).mappings()]


def run_arrays(
    conn: Connection, span: metrics.Span, *, chunk_size: int = 20_000, period: int | None = None
) -> Iterator[metrics.RunArrays]:
    """The runs of the span from the run rollup, as numpy columns (``period``: only that
    period's, 0 previous or 1 current): the runs and figures of :func:`metrics.run_rows`.

    The span's rollup rows come in run order (the database sorts them; no grouping, no window
    functions, which cost several times more on SQLite) as plain driver tuples, and numpy adds
    them up per (period, run, provider, model), sums each run's totals and picks its primary
    model, chunk by chunk: memory is bounded by the chunk, whatever the number of runs or calls.
    Nothing is done per row in Python beyond the driver's tuples.
    """
    dialect = conn.dialect.name
    t = r_runs.c
    run_id = metrics._bytewise(t.run_id, dialect)
    period_col = _period(r_runs, span)
    # Missing numbers come as -1 (tokens, costs and q are never negative): numpy converts whole
    # columns of plain numbers at C speed, while one None sends it through Python per value.
    # A row's cost (waste) is missing unless all its calls are priced (scored): a run's is then
    # missing if any of its rows' is, which a plain sum gives (NaN propagates).
    columns = [
        t.run_id, t.function, t.provider, t.request_model, t.response_model,
        func.coalesce(t.t, -1), case((t.n_priced == t.n, t.c), else_=-1.0), case((t.n_scored == t.n, t.w), else_=-1),
        func.coalesce(t.q, -1.0),
        case((t.failed, 2), else_=0) + case((t.observable, 1), else_=0),  # two flags, one small integer
    ]
    if period is not None:  # one period only (1: the current one): no period column
        split = _day_of(span.split)
        stmt = select(*columns).where(_span_where(r_runs, span), t.day >= split if period else t.day < split).order_by(run_id)
    else:
        stmt = select(*columns, period_col).where(_span_where(r_runs, span)).order_by(period_col, run_id)
    nulls_first = dialect != "postgresql"  # how ORDER BY ranks a missing model name (metrics.run_rows)
    last_of = (lambda row: row[0]) if period is not None else (lambda row: (row[-1], row[0]))  # noqa: E731
    carry: list[Any] = []
    for part in _raw_rows(conn, stmt, chunk_size):
        rows = carry + part if carry else part
        last = last_of(rows[-1])
        cut = len(rows)
        while cut > 0 and last_of(rows[cut - 1]) == last:
            cut -= 1  # the last run may go on in the next part
        rows, carry = rows[:cut], rows[cut:]
        if rows:
            yield _run_arrays(rows, nulls_first, period)
    if carry:
        yield _run_arrays(carry, nulls_first, period)


def run_rows(
    conn: Connection, span: metrics.Span, *, chunk_size: int = 20_000, period: int | None = None
) -> Iterator[metrics.RunChunk]:
    """:func:`run_arrays` as :func:`metrics.run_rows` chunks (the same rows, q and failed
    included; run values read on primary rows): for comparing the two passes."""
    for arrays in run_arrays(conn, span, chunk_size=chunk_size, period=period):
        yield _as_chunk(arrays)


def _as_chunk(a: metrics.RunArrays) -> metrics.RunChunk:
    run = a.cell_run
    primary = np.zeros(len(run), dtype=bool)
    primary[a.primary] = True
    nothing: list[Any] = [None] * len(run)
    return metrics.RunChunk(
        period=a.period[run].astype(int).tolist(),
        run_id=run.tolist(),  # a run number (the report never needs the id itself)
        function=[a.functions[i] for i in a.cell_function.tolist()],
        model=[a.models[i][1] for i in a.cell_model.tolist()],
        provider=[a.models[i][0] for i in a.cell_model.tolist()],
        primary=primary.tolist(),
        cell_output_tokens=a.cell_tokens.tolist(),  # NaN: missing
        observable=a.cell_observable.tolist(),
        output_tokens=a.t[run].tolist(),
        cost_usd=a.cost[run].tolist(),
        waste_tokens=a.w[run].tolist(),
        status=nothing,
        validation=nothing,
        quality_score=nothing,
        mean_score=nothing,
        validation_score=nothing,
        tags=None,
        q=a.q[run].tolist(),
        failed=a.failed[run].astype(np.float64).tolist(),
    )


def _run_arrays(rows: list[tuple[Any, ...]], nulls_first: bool, period: int | None) -> metrics.RunArrays:
    """Rollup rows of whole runs, in (period, run) order, to runs and (run, model) entries
    (``period``: the rows' period, or None when it is their last column)."""
    cols = list(zip(*rows))
    count = len(rows)
    periods = np.full(count, period, dtype=np.int8) if period is not None else np.array(cols[10], dtype=np.int8)
    ids = np.array(cols[0], dtype=object)
    starts = np.ones(count, dtype=bool)
    starts[1:] = (ids[1:] != ids[:-1]) | (periods[1:] != periods[:-1])
    run_no = np.cumsum(starts) - 1
    # (function, provider, request model, response model) of each row, as a small integer.
    key_index: dict[tuple[Any, ...], int] = dict.fromkeys(zip(cols[1], cols[2], cols[3], cols[4]))  # type: ignore[arg-type]
    for i, k in enumerate(key_index):
        key_index[k] = i
    key = np.fromiter(map(key_index.__getitem__, zip(cols[1], cols[2], cols[3], cols[4])), dtype=np.int64, count=count)
    cell_index: dict[tuple[Any, ...], int] = {}
    function_index: dict[Any, int] = {}
    key_cell = np.array([cell_index.setdefault(k[1:], len(cell_index)) for k in key_index], dtype=np.int64)
    key_function = np.array([function_index.setdefault(k[0], len(function_index)) for k in key_index], dtype=np.int64)
    cells = list(cell_index)  # (provider, request model, response model)
    functions = list(function_index)
    col = {name: _nan(cols[i]) for name, i in (("t", 5), ("c", 6), ("w", 7), ("q", 8))}
    for name in ("t", "c", "w", "q"):
        col[name][col[name] < 0] = np.nan
    flags = np.array(cols[9], dtype=np.int8)
    obs = (flags & 1) > 0  # NULL (no run row) is False
    failed = (flags & 2) > 0
    # min(function) per group, by the functions' sort order (None after any name: SQL min skips NULL).
    named = sorted(f for f in functions if f is not None)
    f_rank = np.array([len(named) if f is None else named.index(f) for f in functions], dtype=np.int64)
    row_fn = f_rank[key_function[key]]
    row_cell = key_cell[key]
    if starts.all():
        # One row per run (one day, one model: the common case): the rows are the groups.
        g_run = run_no
        g_cell = row_cell
        g_t, cost, waste = col["t"], col["c"], col["w"]
        g_obs, g_failed, g_q, g_fn = obs, failed, col["q"], row_fn
        whole_t = g_t
        primary = np.arange(count)
    else:
        # Groups: (period, run, cell), as metrics.run_rows groups calls.
        groups, inverse = np.unique(run_no * len(cells) + row_cell, return_inverse=True)
        inverse = inverse.reshape(-1)
        g_run, g_cell = groups // len(cells), groups % len(cells)
        size = len(groups)

        def group_sum(values: np.ndarray) -> np.ndarray:
            total = np.bincount(inverse, weights=np.nan_to_num(values), minlength=size)
            return np.where(np.bincount(inverse, weights=~np.isnan(values), minlength=size) > 0, total, np.nan)

        g_t = group_sum(col["t"])
        g_obs = np.bincount(inverse, weights=obs, minlength=size) > 0
        g_failed = np.bincount(inverse, weights=failed, minlength=size) > 0
        g_q = np.full(size, np.nan)
        np.fmax.at(g_q, inverse, col["q"])
        g_fn = np.full(size, len(named), dtype=np.int64)
        np.minimum.at(g_fn, inverse, row_fn)
        # Per run: totals over its groups, and its primary group (groups are sorted by run).
        runs_n = int(g_run[-1]) + 1 if size else 0

        def run_sum(values: np.ndarray) -> np.ndarray:
            total = np.bincount(g_run, weights=np.nan_to_num(values), minlength=runs_n)
            return np.where(np.bincount(g_run, weights=~np.isnan(values), minlength=runs_n) > 0, total, np.nan)

        whole_t = run_sum(g_t)
        # NaN (a row not fully priced, or scored) propagates to the run's sum.
        cost = np.bincount(run_no, weights=col["c"], minlength=runs_n)
        waste = np.bincount(run_no, weights=col["w"], minlength=runs_n)
        order = np.lexsort((
            _ranks([c[0] for c in cells], nulls_first)[g_cell],
            _ranks([c[2] for c in cells], nulls_first)[g_cell],
            _ranks([c[1] for c in cells], nulls_first)[g_cell],
            -np.nan_to_num(g_t),
            g_run,
        ))
        # The first group of each run in that order (runs come in order, one each).
        primary = order[np.concatenate(([True], g_run[order][1:] != g_run[order][:-1]))]
    model_index: dict[tuple[str, str], int] = {}
    cell_model = np.array(
        [model_index.setdefault((c[0], c[1] or c[2] or metrics.UNKNOWN_MODEL), len(model_index)) for c in cells], dtype=np.int64
    )
    return metrics.RunArrays(
        functions=[f or metrics.NO_FUNCTION for f in named] + [metrics.NO_FUNCTION],
        models=list(model_index),
        period=periods[starts],
        function=g_fn[primary],
        model=cell_model[g_cell[primary]],
        q=g_q[primary],
        cost=cost,
        t=whole_t,
        w=waste,
        failed=g_failed[primary],
        primary=primary,
        cell_run=g_run,
        cell_function=g_fn,
        cell_model=cell_model[g_cell],
        cell_tokens=g_t,
        cell_observable=g_obs,
    )


def _ids(index: dict[Any, int], values: Any, count: int) -> np.ndarray:
    """Dense small-integer ids of ``values`` (new values get the next id)."""
    out = np.empty(count, dtype=np.int64)
    get = index.get
    for i, value in enumerate(values):
        found = get(value)
        if found is None:
            found = index[value] = len(index)
        out[i] = found
    return out


def _raw_rows(conn: Connection, stmt: Any, size: int) -> Iterator[list[tuple[Any, ...]]]:
    """Rows of ``stmt`` as the driver returns them (plain tuples, no SQLAlchemy row objects),
    ``size`` at a time, on the connection's open transaction."""
    compiled = stmt.compile(dialect=conn.dialect)
    params = compiled.construct_params()
    processors = compiled._bind_processors
    processed = {k: (processors[k](v) if k in processors else v) for k, v in params.items()}
    if conn.dialect.positional:
        bound: Any = tuple(processed[k] for k in compiled.positiontup or ())
    else:
        bound = processed
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(compiled.string, bound)
        while True:
            rows = cursor.fetchmany(size)
            if not rows:
                return
            yield rows
    finally:
        cursor.close()


def _ranks(values: list[Any], nulls_first: bool) -> np.ndarray:
    """Sort ranks of strings (``None`` first or last), for ordering within a run."""
    present = sorted({v for v in values if v is not None})
    rank = {v: i for i, v in enumerate(present)}
    missing = -1 if nulls_first else len(present)
    return np.fromiter((missing if v is None else rank[v] for v in values), dtype=np.int64, count=len(values))


def _nan(values: Any) -> np.ndarray:
    """Numbers to float64, None to NaN."""
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        nan = float("nan")
        return np.fromiter((nan if v is None else v for v in values), dtype=np.float64, count=len(values))
