"""Assemble the ``wasteaudit.report/v1`` document from the SQL aggregates (see docs/report.md).

Call-level figures come from the cubes (:func:`metrics.call_cube`, :func:`metrics.waste_cube`)
added up per function, model, provider and in total — so the function rows always add up to
the totals. Run-level figures (quality, efficiency) come from :class:`efficiency.RunTable`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy.engine import Connection, Engine

from wasteaudit.report import alarms as alarm_rules
from wasteaudit.report import metrics, rollups
from wasteaudit.report.bootstrap import Gate, noninferiority
from wasteaudit.report.efficiency import RunTable, Settings
from wasteaudit.report.period import Period

_log = logging.getLogger("wasteaudit.report")

__all__ = ("SCHEMA_ID", "KINDS", "SUBKINDS", "BY_CHOICES", "parse_by", "build")

SCHEMA_ID = "wasteaudit.report/v1"
KINDS = ("redundant", "unused", "failed")
#: DESIGN §3 (kept here, not imported from the scorer, so the report contract does not move with it).
SUBKINDS = {
    "error": "failed",
    "truncated": "failed",
    "refusal": "failed",
    "invalid_output": "failed",
    "discarded_retry": "failed",
    "extra_choice": "unused",
    "not_in_result": "unused",
    "abandoned_stream": "unused",
    "repetition": "redundant",
    "prompt_echo": "redundant",
    "filler": "redundant",
    "duplicate_call": "redundant",
}
BY_CHOICES = ("function", "model", "provider", "tag")

DROPPED_NOTE = (
    "dropped_records: records the writers dropped in this period (buffer full, refused by the database, "
    "not convertible, submitted after shutdown, or still in memory when a process was killed: those are "
    "counted by the next writer on the same host), as counted per UTC hour by every writer and stored in "
    "this database with its batches; drops during an outage are stored once the database is back. Not "
    "known here: drops of a process that never reached this database after them (it exited or was killed "
    "while the database was unreachable)."
)
DROPPED_UNKNOWN_NOTE = (
    "dropped_records: this database has no drop counts yet (its schema predates migration v0_3_0_03; "
    "run `wasteaudit db upgrade`), so dropped_records is null (unknown), not 0. A caller that knows the "
    "count passes build_report(..., dropped_records=n)."
)
MISSED_CACHE_METHOD = (
    "Upper-bound estimate, input side only: calls of the period are grouped by function, provider and "
    "model, keeping prompts of at least 1,024 tokens (the providers' smallest cacheable prefix). A function "
    "repeats a prefix when its first and last four such calls of the period all start with the same system "
    "instructions (or the same leading system/developer message). Then every call after the first could have read "
    "that prefix from the provider's cache: missed tokens = (calls - 1) x prefix tokens - cache reads "
    "already billed, priced at the model's input rate minus its cache-read rate, less one cache write. "
    "Prefix tokens = min(smallest prompt, prefix characters / 4). Cache lifetimes (minutes) are not "
    "modelled, so repeats far apart in time count too; hashed/none content modes give no estimate."
)


def parse_by(by: str | None) -> tuple[str, str | None]:
    """``function|model|provider|tag|tag:KEY`` → ``(dimension, tag key or None)``."""
    from wasteaudit.exceptions import ConfigError

    text = (by or "function").strip()
    dim, _, key = text.partition(":")
    dim = dim.lower()
    if dim not in BY_CHOICES or (key and dim != "tag"):
        raise ConfigError(f"--by must be one of function, model, provider, tag or tag:KEY; got {by!r}")
    return dim, (key or None)


# --- sums of cube rows ---------------------------------------------------------------------------

_CUBE_FIELDS = (
    "calls",
    "attempts",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "priced_calls",
    "unpriced_calls",
    "partially_priced_calls",
    "scored_calls",
    "scored_output_tokens",
)
_NULLABLE = {"input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "scored_output_tokens"}


def _add(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


@dataclass
class _Cell:
    """Call sums and finding sums of one report row (a sum of cube cells)."""

    calls: dict[str, Any] = field(default_factory=lambda: {k: (None if k in _NULLABLE else 0) for k in _CUBE_FIELDS})
    # (tier, subkind) -> [tokens, cost, findings, priced findings]
    waste: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)

    def add_calls(self, row: metrics.CubeRow) -> None:
        for name in _CUBE_FIELDS:
            self.calls[name] = _add(self.calls[name], getattr(row, name))

    def add_waste(self, row: metrics.WasteRow) -> None:
        slot = self.waste.setdefault((row.tier, row.kind, row.subkind), [0, None, 0, 0])
        slot[0] += row.tokens
        slot[1] = _add(slot[1], row.cost_usd)
        slot[2] += row.findings
        slot[3] += row.priced_findings


def _cells(
    cube: Iterable[metrics.CubeRow], waste: Iterable[metrics.WasteRow], key: Callable[[tuple[str, ...]], Any]
) -> dict[Any, _Cell]:
    out: dict[Any, _Cell] = {}
    for rows, add in ((cube, _Cell.add_calls), (waste, _Cell.add_waste)):
        for row in rows:
            k = key(row.key)
            cell = out.get(k)
            if cell is None:  # (not setdefault: a _Cell per row would be built and dropped)
                cell = out[k] = _Cell()
            add(cell, row)  # type: ignore[arg-type]
    return out


def _pair(tokens: int, cost: float | None, findings: int, priced: int) -> dict[str, Any]:
    if tokens == 0:
        return {"tokens": 0, "cost_usd": 0.0}
    return {"tokens": int(tokens), "cost_usd": float(cost) if priced and cost is not None else None}


def _pair_sum(slots: list[list[Any]]) -> dict[str, Any]:
    tokens = sum(s[0] for s in slots)
    cost = None
    for s in slots:
        cost = _add(cost, s[1])
    return _pair(tokens, cost, sum(s[2] for s in slots), sum(s[3] for s in slots))


def _waste_block(cell: _Cell) -> dict[str, Any]:
    confirmed = {k: v for k, v in cell.waste.items() if k[0] == "confirmed"}
    possible = {k: v for k, v in cell.waste.items() if k[0] != "confirmed"}
    subkinds = list(SUBKINDS) + sorted({k[2] for k in cell.waste} - set(SUBKINDS))
    kinds = list(KINDS) + sorted({k[1] for k in cell.waste} - set(KINDS))
    return {
        **_pair_sum(list(confirmed.values())),
        "by_kind": {kind: _pair_sum([v for k, v in confirmed.items() if k[1] == kind]) for kind in kinds},
        "by_subkind": {sub: _pair_sum([v for k, v in confirmed.items() if k[2] == sub]) for sub in subkinds},
        "possible": {
            **_pair_sum(list(possible.values())),
            "by_subkind": {
                sub: _pair_sum([v for k, v in possible.items() if k[2] == sub])
                for sub in subkinds
                if any(k[2] == sub for k in possible)
            },
        },
    }


def _ratio(numerator: Any, denominator: Any) -> float | None:
    if numerator is None or not denominator:
        return None
    return float(numerator) / float(denominator)


def _block(
    cell: _Cell | None, figures: dict[str, Any] | None, empty_figures: dict[str, Any], observable: float = 0.0
) -> dict[str, Any]:
    cell = cell or _Cell()
    figures = figures or empty_figures
    c = cell.calls
    n_calls = c["calls"]
    waste = _waste_block(cell)
    if n_calls == 0:
        tokens = {k: 0 for k in ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")}
        cost: float | None = 0.0
    else:
        tokens = {k: (None if c[k] is None else int(c[k])) for k in ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")}
        cost = float(c["cost_usd"]) if c["priced_calls"] and c["cost_usd"] is not None else None
    utr = None
    if c["scored_output_tokens"]:
        utr = min(1.0, max(0.0, 1.0 - waste["tokens"] / float(c["scored_output_tokens"])))
    efficiency = dict(figures["efficiency"])
    efficiency = {
        "value_per_dollar": efficiency["value_per_dollar"],
        "quality_weighted_yield": efficiency["quality_weighted_yield"],
        "cost_per_success": efficiency["cost_per_success"],
        "length_controlled": efficiency["length_controlled"],
        "useful_token_rate": utr,
        "runs": efficiency["runs"],
        "coverage": efficiency["coverage"],
    }
    return {
        "runs": int(figures["runs"]),
        "calls": int(n_calls),
        "attempts": int(c["attempts"]),
        **tokens,
        "cost_usd": cost,
        "unpriced_calls": int(c["unpriced_calls"]),
        "partially_priced_calls": int(c["partially_priced_calls"]),
        "scored_calls": int(c["scored_calls"]),
        "waste": waste,
        "unused_coverage": min(1.0, _ratio(observable, c["output_tokens"])) if n_calls and c["output_tokens"] else None,
        "quality": dict(figures["quality"]),
        "efficiency": efficiency,
        "_hidden": dict(figures.get("_hidden") or {}),
    }


def _public(block: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if not k.startswith("_")}


def _sort_rows(rows: list[dict[str, Any]], name: Callable[[dict[str, Any]], str]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (-(r["cost_usd"] if r["cost_usd"] is not None else -1.0), -r["calls"], name(r)))


# --- one period ----------------------------------------------------------------------------------


@dataclass
class _PeriodData:
    period: Period
    cube: list[metrics.CubeRow]
    waste: list[metrics.WasteRow]
    runs: RunTable
    tag_cube: list[metrics.CubeRow] | None = None
    tag_waste: list[metrics.WasteRow] | None = None
    daily_cube: list[metrics.CubeRow] = field(default_factory=list)
    daily_waste: list[metrics.WasteRow] = field(default_factory=list)

    def blocks(self) -> dict[str, dict[Any, dict[str, Any]]]:
        empty = _EMPTY_FIGURES
        out: dict[str, dict[Any, dict[str, Any]]] = {}
        keyers: dict[str, Callable[[tuple[str, ...]], Any]] = {
            "total": lambda k: "total",
            "function": lambda k: k[0],
            "model": lambda k: (k[1], k[2]),
            "provider": lambda k: k[1],
        }
        for dim, keyer in keyers.items():
            cells = _cells(self.cube, self.waste, keyer)
            figures = self.runs.figures(dim)
            observable = self.runs.observable_tokens(dim)
            keys = {"total"} if dim == "total" else set(cells) | set(figures)
            out[dim] = {key: _block(cells.get(key), figures.get(key), empty, observable.get(key, 0.0)) for key in keys}
        if self.tag_cube is not None:
            cells = _cells(self.tag_cube, self.tag_waste or [], lambda k: (k[0], k[1]))
            figures = self.runs.figures("tag")
            observable = self.runs.observable_tokens("tag")
            keys = set(cells) | set(figures)
            out["tag"] = {key: _block(cells.get(key), figures.get(key), empty, observable.get(key, 0.0)) for key in keys}
        return out


def _collapse_days(rows: list[metrics.CubeRow]) -> list[metrics.CubeRow]:
    """Cube rows summed over days: one per cell."""
    out: dict[tuple[str, ...], metrics.CubeRow] = {}
    for row in rows:
        slot = out.get(row.key)
        if slot is None:
            out[row.key] = metrics.CubeRow(**{name: getattr(row, name) for name in metrics.CubeRow.__dataclass_fields__})
            out[row.key].day = None
            continue
        for name in _CUBE_FIELDS + ("cacheable_calls", "cacheable_cache_read"):
            setattr(slot, name, _add(getattr(slot, name), getattr(row, name)))
        if row.cacheable_min_input is not None:
            slot.cacheable_min_input = row.cacheable_min_input if slot.cacheable_min_input is None else min(slot.cacheable_min_input, row.cacheable_min_input)
    return list(out.values())


def _collapse_waste_days(rows: list[metrics.WasteRow]) -> list[metrics.WasteRow]:
    out: dict[tuple[Any, ...], metrics.WasteRow] = {}
    for row in rows:
        key = (row.key, row.kind, row.subkind, row.tier)
        slot = out.get(key)
        if slot is None:
            out[key] = metrics.WasteRow(row.key, row.kind, row.subkind, row.tier, row.tokens, row.cost_usd, row.findings, row.priced_findings, row.period)
            continue
        slot.tokens += row.tokens
        slot.cost_usd = _add(slot.cost_usd, row.cost_usd)
        slot.findings += row.findings
        slot.priced_findings += row.priced_findings
    return list(out.values())


def _empty_figures() -> dict[str, Any]:
    return {
        "runs": 0,
        "quality": {"mean": None, "coverage": None, "success_rate": None, "runs": 0, "failed_runs": 0},
        "efficiency": {
            "value_per_dollar": None,
            "quality_weighted_yield": None,
            "cost_per_success": None,
            "length_controlled": None,
            "runs": 0,
            "coverage": None,
        },
        "_hidden": {"cost_per_run": None, "output_tokens_per_run": None},
    }


_EMPTY_FIGURES = _empty_figures()


@contextlib.contextmanager
def _reading(engine: Engine) -> Iterator[Connection]:
    """A connection in one read transaction, tuned for analytic queries."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # One snapshot for every query made on this connection.
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            _tune(conn)
            yield conn


def _read_rollup_runs(engine: Engine, span: metrics.Span, settings: Settings, period: int) -> RunTable:
    table = RunTable(settings, period=period)
    with _reading(engine) as conn:
        for arrays in rollups.run_arrays(conn, span, period=period):
            table.add_arrays(arrays)
    return table


def _read_runs(
    engine: Engine, span: metrics.Span, settings: Settings, with_tags: bool, tag_key: str | None, from_rollups: bool = False
) -> tuple[RunTable, RunTable]:
    current_runs = RunTable(settings, tag_key=tag_key, with_tags=with_tags, period=1)
    previous_runs = RunTable(settings, tag_key=tag_key, with_tags=with_tags, period=0)
    with _reading(engine) as conn:
        if from_rollups:
            for arrays in rollups.run_arrays(conn, span):
                current_runs.add_arrays(arrays)
                previous_runs.add_arrays(arrays)
        else:
            for chunk in metrics.run_rows(conn, span, with_tags=with_tags):
                current_runs.add_chunk(chunk)
                previous_runs.add_chunk(chunk)
    return current_runs, previous_runs


def _read_calls(
    engine: Engine, period: Period, previous: Period, span: metrics.Span, settings: Settings, with_tags: bool,
    tag_key: str | None, overrides: Any, from_rollups: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with _reading(engine) as conn:
        source = rollups if from_rollups else metrics
        out["cube"] = source.call_cube(conn, span)
        out["waste"] = source.waste_cube(conn, span)
        if from_rollups:
            out["daily_waste"] = rollups.daily_waste(conn, span)
        if with_tags:
            out["tags"] = metrics.tag_cube(conn, span, tag_key)
            out["tag_waste"] = metrics.tag_waste_cube(conn, span, tag_key)
        ranked = rollups.top_ranking(conn, period.start, period.end, settings.top_findings) if from_rollups else None
        out["top"] = _top_findings(conn, period, settings.top_findings, ranked)
        out["judge"] = _judge(conn, period)
        out["drops"] = _drops(conn, period, previous)
        cube_now = _collapse_days([r for r in out["cube"] if r.period == 1])
        probe = _PeriodData(period, cube_now, [], RunTable(settings))
        out["missed"] = _missed_cache(conn, probe, overrides)
    return out


def _use_rollups(engine: Engine, span: metrics.Span, with_tags: bool) -> bool:
    """Whether this report can read the rollups: periods aligned to UTC days, not by tag, the
    rollup tables present, and the span's dirty days re-aggregated (a read-only or busy
    database, or any error, means reading the base tables instead: same figures, slower)."""
    if with_tags or not rollups.aligned(span):
        return False
    try:
        with engine.connect() as conn:
            if not rollups.available(conn):
                return False
        rollups.refresh(engine, span.start, span.end)
    except Exception as exc:  # noqa: BLE001 - the base tables give the same figures
        _log.info("report rollups not used (%s: %s); reading the calls instead", type(exc).__name__, exc)
        return False
    return True


def _collect(
    engine: Engine, period: Period, previous: Period, settings: Settings, by: str, tag_key: str | None, overrides: Any,
    use_rollups: bool = True,
) -> tuple[_PeriodData, _PeriodData, dict[str, Any]]:
    """Both periods, read together: one pass over calls, one over findings, one for runs.

    The run pass and the call passes run at the same time on two connections (two threads:
    the database drivers release the GIL while the database works), unless the engine has a
    single connection. Each pass reads one consistent snapshot (one transaction); the two
    snapshots can differ by records written in between, which only matters for a live database.
    """
    with_tags = by == "tag"
    span = metrics.Span(previous.start, period.start, period.end)
    from sqlalchemy.pool import SingletonThreadPool, StaticPool

    fast = use_rollups and _use_rollups(engine, span, with_tags)
    if isinstance(engine.pool, (SingletonThreadPool, StaticPool)):
        current_runs, previous_runs = _read_runs(engine, span, settings, with_tags, tag_key, fast)
        side = _read_calls(engine, period, previous, span, settings, with_tags, tag_key, overrides, fast)
    else:
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="wasteaudit-report") as pool:
            if fast:  # each period's runs on its own connection (the rollup rows split by day)
                current_job = pool.submit(_read_rollup_runs, engine, span, settings, 1)
                previous_job = pool.submit(_read_rollup_runs, engine, span, settings, 0)
            else:
                runs_job = pool.submit(_read_runs, engine, span, settings, with_tags, tag_key, fast)
            side = _read_calls(engine, period, previous, span, settings, with_tags, tag_key, overrides, fast)
            if fast:
                current_runs, previous_runs = current_job.result(), previous_job.result()
            else:
                current_runs, previous_runs = runs_job.result()
    cube, waste = side["cube"], side["waste"]
    cur = _PeriodData(period, [r for r in cube if r.period == 1], [w for w in waste if w.period == 1], current_runs)
    prev = _PeriodData(previous, [r for r in cube if r.period == 0], [w for w in waste if w.period == 0], previous_runs)
    cur.daily_cube, cur.daily_waste = cur.cube, side.get("daily_waste", cur.waste)
    cur.cube, cur.waste = _collapse_days(cur.cube), _collapse_waste_days(cur.waste)
    prev.cube, prev.waste = _collapse_days(prev.cube), _collapse_waste_days(prev.waste)
    if with_tags:
        tags, tag_waste = side["tags"], side["tag_waste"]
        cur.tag_cube, cur.tag_waste = [r for r in tags if r.period == 1], [w for w in tag_waste if w.period == 1]
        prev.tag_cube, prev.tag_waste = [r for r in tags if r.period == 0], [w for w in tag_waste if w.period == 0]
    return cur, prev, side


# --- gates ----------------------------------------------------------------------------------------


def _gate(
    a: RunTable, a_dim: str, a_key: Any, b: RunTable, b_dim: str, b_key: Any, settings: Settings, label: str,
    *, bound: bool = True,
) -> Gate:
    # The resamples draw runs by position: the runs come in a canonical order (function name, q),
    # so the bounds do not depend on the order the database returned the runs in.
    qa, fa = a.quality_sample(a_dim, a_key, canonical=True)
    qb, fb = b.quality_sample(b_dim, b_key, canonical=True)
    # Strata are functions, compared by name across the two tables: one integer code per name,
    # in name order (the order the strata are drawn in).
    names_a = [str(n) for n in a.keys("function")]
    names_b = [str(n) for n in b.keys("function")]
    names = sorted(set(names_a) | set(names_b))
    code = {name: i for i, name in enumerate(names)}
    sa = np.array([code[n] for n in names_a], dtype=np.int64)[fa] if len(fa) else np.zeros(0, dtype=np.int64)
    sb = np.array([code[n] for n in names_b], dtype=np.int64)[fb] if len(fb) else np.zeros(0, dtype=np.int64)
    return noninferiority(
        qa,
        sa,
        qb,
        sb,
        key=label,
        strata_names=names,
        tau=settings.tau,
        delta=settings.delta,
        confidence=settings.confidence,
        resamples=settings.resamples,
        seed=settings.seed,
        min_runs=settings.min_runs,
        bound=bound,
    )


# --- value per dollar by model --------------------------------------------------------------------


def _model_name(key: tuple[str, str]) -> str:
    return f"{key[0]}/{key[1]}"


def _value_reference(model_blocks: dict[Any, dict[str, Any]], settings: Settings) -> tuple[dict[Any, dict[str, Any]], Any]:
    """The models with runs, and the reference model (highest mean quality with enough scored runs)."""
    candidates = {k: b for k, b in model_blocks.items() if b["runs"] > 0}
    scored = [k for k, b in candidates.items() if b["quality"]["runs"] >= settings.min_runs and b["quality"]["mean"] is not None]
    reference = None
    if scored:
        reference = max(scored, key=lambda k: (candidates[k]["quality"]["mean"], candidates[k]["quality"]["runs"], _model_name(k)))
    return candidates, reference


def _value_gates(data: _PeriodData, model_blocks: dict[Any, dict[str, Any]], settings: Settings, gate: Callable[..., Any]) -> dict[Any, Any]:
    """Start the value table's gates (each model against the reference) with ``gate``."""
    candidates, reference = _value_reference(model_blocks, settings)
    if reference is None:
        return {}
    return {
        key: gate(data.runs, "model", reference, data.runs, "model", key, settings, f"model:{_model_name(reference)}->{_model_name(key)}")
        for key, block in candidates.items()
        if key != reference and block["quality"]["runs"] >= settings.min_runs
    }


def _value_table(
    data: _PeriodData, model_blocks: dict[Any, dict[str, Any]], settings: Settings, started: dict[Any, Any] | None = None
) -> dict[str, Any]:
    """The value-per-dollar table; ``started``: its gates, already running (:func:`_value_gates`)."""
    candidates, reference = _value_reference(model_blocks, settings)
    started = started or {}
    rows = []
    for key, block in candidates.items():
        hidden = block["_hidden"]
        row: dict[str, Any] = {
            "provider": key[0],
            "model": key[1],
            "runs": block["runs"],
            "calls": block["calls"],
            "cost_usd": block["cost_usd"],
            "cost_per_run": hidden.get("cost_per_run"),
            "quality": {k: block["quality"][k] for k in ("mean", "coverage", "success_rate")},
            "efficiency": {
                k: block["efficiency"][k]
                for k in ("value_per_dollar", "quality_weighted_yield", "cost_per_success", "length_controlled", "useful_token_rate", "coverage")
            },
            "verdict": None,
            "gate": None,
            "rank": None,
            "ranks": {},
        }
        if key == reference:
            row["verdict"] = "reference"
        elif block["quality"]["runs"] < settings.min_runs or reference is None:
            row["verdict"] = "insufficient_data"
        else:
            gate = started[key].result() if key in started else _gate(
                data.runs, "model", reference, data.runs, "model", key, settings,
                f"model:{_model_name(reference)}->{_model_name(key)}",
            )
            row["gate"] = gate.to_json()
            if gate.non_inferior is None:
                row["verdict"] = "not_comparable"
            elif gate.non_inferior:
                row["verdict"] = "non_inferior"
            elif not gate.worse:
                row["verdict"] = "inconclusive"  # not shown non-inferior, but no drop beyond the margin
            else:
                ref_hidden = candidates[reference]["_hidden"]
                ref_vpd = candidates[reference]["efficiency"]["value_per_dollar"]
                cheaper = (
                    row["cost_per_run"] is not None
                    and ref_hidden.get("cost_per_run") is not None
                    and row["cost_per_run"] < ref_hidden["cost_per_run"]
                ) or (
                    row["efficiency"]["value_per_dollar"] is not None
                    and ref_vpd is not None
                    and row["efficiency"]["value_per_dollar"] > ref_vpd
                )
                row["verdict"] = "cheaper_but_worse" if cheaper else "worse"
        rows.append(row)

    eligible = [r for r in rows if r["verdict"] in ("reference", "non_inferior")]
    _rank(eligible, "value_per_dollar", reverse=True)
    _rank(eligible, "cost_per_success", reverse=False)
    _rank(rows, "quality_weighted_yield", reverse=True)
    _rank(rows, "length_controlled", reverse=True)
    for r in rows:
        for figure in ("value_per_dollar", "quality_weighted_yield", "cost_per_success", "length_controlled"):
            r["ranks"].setdefault(figure, None)
        r["rank"] = r["ranks"]["value_per_dollar"]
    order = {"reference": 0, "non_inferior": 0, "cheaper_but_worse": 1, "worse": 2, "inconclusive": 3, "not_comparable": 4, "insufficient_data": 5}
    rows.sort(
        key=lambda r: (
            r["rank"] is None,
            r["rank"] or 0,
            order[r["verdict"]],
            -(r["efficiency"]["value_per_dollar"] or 0.0),
            r["provider"],
            r["model"],
        )
    )
    ref_json = None
    if reference is not None:
        ref_block = candidates[reference]
        ref_json = {
            "provider": reference[0],
            "model": reference[1],
            "quality_mean": ref_block["quality"]["mean"],
            "cost_per_run": ref_block["_hidden"].get("cost_per_run"),
            "reason": f"highest mean quality among models with at least {settings.min_runs} scored runs",
        }
    return {
        "reference": ref_json,
        "rows": rows,
        "gate": (
            f"a model ranks on value per dollar and cost per successful run only if its quality is non-inferior to the "
            f"reference's on the same functions (one-sided {settings.confidence:.0%} bootstrap bound, margin {settings.delta:g}); "
            "otherwise it is unranked: cheaper_but_worse or worse when its quality drop exceeds the margin, inconclusive when "
            "the runs are too few or too noisy to show non-inferiority"
        ),
    }


def _rank(rows: list[dict[str, Any]], figure: str, *, reverse: bool) -> None:
    valued = [r for r in rows if r["efficiency"].get(figure) is not None]
    valued.sort(key=lambda r: r["efficiency"][figure], reverse=reverse)
    for position, r in enumerate(valued, 1):
        r["ranks"][figure] = position


# --- side lines -----------------------------------------------------------------------------------


def _trim(value: Any, depth: int = 0) -> Any:
    """Evidence made small and JSON-safe (strings capped, lists shortened)."""
    if isinstance(value, str):
        return value if len(value) <= 400 else value[:400] + "…"
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (int, bool)) or value is None:
        return value
    if depth >= 4:
        return str(value)[:200]
    if isinstance(value, dict):
        return {str(k): _trim(v, depth + 1) for k, v in list(value.items())[:30]}
    if isinstance(value, (list, tuple)):
        return [_trim(v, depth + 1) for v in list(value)[:20]]
    return str(value)[:200]


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return str(value)


def _top_findings(conn: Connection, period: Period, limit: int, ranked: list[Any] | None = None) -> list[dict[str, Any]]:
    rows, found = metrics.top_wasteful_calls(conn, period.start, period.end, limit, ranked)
    by_call: dict[str, list[dict[str, Any]]] = {}
    for f in found:
        by_call.setdefault(f["call_id"], []).append(
            {
                "kind": f["kind"],
                "subkind": f["subkind"],
                "tier": f["tier"],
                "tokens": int(f["tokens"] or 0),
                "cost_usd": None if f["cost_usd"] is None else float(f["cost_usd"]),
                "confidence": None if f["confidence"] is None else float(f["confidence"]),
                "choice_index": f["choice_index"],
                "evidence": _trim(f["evidence"]) if isinstance(f["evidence"], dict) else ({} if f["evidence"] is None else {"value": _trim(f["evidence"])}),
            }
        )
    out = []
    for row in rows:
        out.append(
            {
                "call_id": row["id"],
                "run_id": row["run_id"],
                "trace_id": row["trace_id"],
                "span_id": row["span_id"],
                "function": row["function"],
                "provider": row["provider"],
                "model": row["model"],
                "started_at": _iso(row["started_at"]),
                "output_tokens": None if row["output_tokens"] is None else int(row["output_tokens"]),
                "cost_usd": None if row["cost_usd"] is None else float(row["cost_usd"]),
                "waste_tokens": row["waste_tokens"],
                "waste_cost_usd": row["waste_cost_usd"],
                "findings": by_call.get(row["id"], [])[:8],
            }
        )
    return out


def _daily(data: _PeriodData) -> list[dict[str, Any]]:
    """Per UTC day of the period: calls, output tokens, cost, confirmed waste by kind, possible waste."""
    days = {d.isoformat(): {"date": d.isoformat(), "calls": 0, "output_tokens": 0, "cost_usd": 0.0,
                            "waste": {k: 0 for k in KINDS}, "waste_cost_usd": 0.0, "possible_tokens": 0}
            for d in data.period.days()}
    for row in data.daily_cube:
        day = days.get(str(row.day))
        if day is not None:
            day["calls"] += row.calls
            day["output_tokens"] += row.output_tokens or 0
            day["cost_usd"] += row.cost_usd or 0.0
    for w in data.daily_waste:
        day = days.get(str(w.day))
        if day is None:
            continue
        if w.tier == "confirmed":
            day["waste"][w.kind] = day["waste"].get(w.kind, 0) + w.tokens
            day["waste_cost_usd"] += w.cost_usd or 0.0
        else:
            day["possible_tokens"] += w.tokens
    return list(days.values())


def _configured_overrides() -> Any:
    try:
        from wasteaudit.config import get_settings

        return get_settings().price_overrides
    except Exception:
        return None


def _cache_rates(provider: str, model: str, at: datetime, overrides: Any) -> tuple[float, float] | None:
    """``(saving per cached token, premium per written token)`` in USD, or None when unpriced."""
    from wasteaudit.records import CallRecord
    from wasteaudit.storage.pricing import price_call, validate_overrides

    overrides = validate_overrides(overrides) or None
    million = 1_000_000

    def cost(**usage: int) -> float | None:
        record = CallRecord(
            id="0" * 32, provider=provider, operation="chat", api="report", started_at=at.timestamp(),
            request_model=model, usage_source="provider", output_tokens=0, **usage,
        )
        value, _, status = price_call(record, overrides)
        return None if status == "unpriced" else value

    base = cost(input_tokens=million)
    read = cost(input_tokens=million, input_cache_read_tokens=million)
    write = cost(input_tokens=million, input_cache_write_tokens=million)
    if base is None or read is None:
        return None
    premium = max(0.0, (write - base)) / million if write is not None else 0.0
    return max(0.0, base - read) / million, premium


def _prefix(system: Any, first: Any) -> Any:
    """The cacheable prefix of a prompt: its system instructions, else a leading system/developer message."""
    if system is not None:
        return system
    if isinstance(first, str):
        try:
            first = json.loads(first)
        except ValueError:
            return None
    if isinstance(first, dict) and first.get("role") in ("system", "developer"):
        return first
    return None


def _prefix_chars(prefix: Any) -> int:
    if isinstance(prefix, str):
        return len(prefix)
    if isinstance(prefix, dict):
        content = prefix.get("content", prefix.get("text"))
        if content is not None and content is not prefix:
            return _prefix_chars(content)
    if isinstance(prefix, list):
        return sum(_prefix_chars(part) for part in prefix)
    return len(json.dumps(prefix, ensure_ascii=False, default=str))


def _missed_cache(conn: Connection, data: _PeriodData, overrides: Any) -> tuple[float | None, dict[str, Any]]:
    total = 0.0
    tokens = groups = n_calls = unpriced = 0
    priced_any = False
    period = data.period
    cells: dict[tuple[str, ...], list[Any]] = {}
    for row in data.cube:  # the period's rows are per day: add the days up per cell
        if not row.cacheable_calls:
            continue
        slot = cells.setdefault(row.key, [0, None, 0])
        slot[0] += row.cacheable_calls
        slot[1] = row.cacheable_min_input if slot[1] is None else min(slot[1], row.cacheable_min_input or slot[1])
        slot[2] += row.cacheable_cache_read or 0
    # One prefix per function, from a few of its calls: a function repeats a prefix when they all share it.
    prefixes: dict[str, Any] = {}
    for function in sorted({key[0] for key, slot in cells.items() if slot[0] >= 2}):
        samples = metrics.prefix_samples(conn, period.start, period.end, None if function == metrics.NO_FUNCTION else function)
        found = [_prefix(system, first) for _, _, system, first in samples]
        if found and all(p is not None for p in found) and len({json.dumps(p, sort_keys=True, default=str) for p in found}) == 1:
            prefixes[function] = found[0]
    rates_cache: dict[tuple[str, str], Any] = {}
    for (function, provider, model), (n, min_input, cache_read) in sorted(cells.items()):
        prefix = prefixes.get(function)
        if n < 2 or not min_input or prefix is None:
            continue
        prefix_tokens = min(min_input, _prefix_chars(prefix) // metrics.CHARS_PER_TOKEN)
        if prefix_tokens < metrics.MIN_CACHEABLE_TOKENS:
            continue
        missed = max(0, (n - 1) * prefix_tokens - cache_read)
        groups += 1
        n_calls += n
        tokens += missed
        if (provider, model) not in rates_cache:
            rates_cache[(provider, model)] = _cache_rates(provider, model, period.end, overrides)
        rates = rates_cache[(provider, model)]
        if rates is None:
            unpriced += 1
            continue
        priced_any = True
        saving, premium = rates
        total += max(0.0, missed * saving - prefix_tokens * premium)
    value: float | None = total if (priced_any or groups == 0) else None
    return value, {"tokens": tokens, "groups": groups, "calls": n_calls, "unpriced_groups": unpriced, "method": MISSED_CACHE_METHOD}


def _judge(conn: Connection, period: Period) -> dict[str, Any]:
    row = metrics.judge_usage(conn, period.start, period.end)
    calls = int(row["calls"] or 0)
    return {
        "calls": calls,
        "input_tokens": int(row["input_tokens"] or 0),
        "output_tokens": int(row["output_tokens"] or 0),
        "cost_usd": (float(row["cost_usd"]) if row["priced_calls"] else None) if calls else 0.0,
    }


def _drops(conn: Connection, period: Period, previous: Period) -> dict[str, Any] | None:
    """Records the writers dropped in each period (``wasteaudit_drops``, per UTC hour): an hour
    counts in the period where it starts. None when the database has no drop table."""
    from sqlalchemy import case, func, inspect, select

    from wasteaudit.storage.models import DropRow

    table = DropRow.__table__
    if not inspect(conn).has_table(table.name):
        return None
    current = case((table.c.hour >= period.start, 1), else_=0).label("current")
    rows = conn.execute(
        select(current, table.c.reason, func.sum(table.c.records))
        .where(table.c.hour >= previous.start, table.c.hour < period.end)
        .group_by(current, table.c.reason)
    ).all()
    out: dict[str, Any] = {"current": 0, "previous": 0, "by_reason": {}}
    for is_current, reason, records in rows:
        records = int(records or 0)
        if is_current:
            out["current"] += records
            out["by_reason"][reason] = out["by_reason"].get(reason, 0) + records
        else:
            out["previous"] += records
    out["by_reason"] = dict(sorted(out["by_reason"].items()))
    return out


def _dropped_note(drops: dict[str, Any], period: Period) -> str:
    note = DROPPED_NOTE + f" Previous period: {drops['previous']:,}."
    if not (_on_hour(period.start) and _on_hour(period.end)):
        note += (
            " This period does not start and end on whole UTC hours: an hour's drops count in the period "
            "where that hour starts."
        )
    return note


def _on_hour(value: datetime) -> bool:
    return value.minute == 0 and value.second == 0 and value.microsecond == 0


# --- the report -----------------------------------------------------------------------------------


def build(
    engine: Engine,
    period: Period,
    *,
    by: str = "function",
    tag_key: str | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
    dropped_records: int | None = None,
    price_overrides: Any = None,
    use_rollups: bool = True,
) -> dict[str, Any]:
    """The report document. ``use_rollups=False`` reads the base tables only (the figures are
    the same; tests compare the two)."""
    settings = settings or Settings()
    if price_overrides is None:
        price_overrides = _configured_overrides()
    previous_period = period.previous()
    generated = now if now is not None else datetime.now(timezone.utc)
    cur, prev, side = _collect(engine, period, previous_period, settings, by, tag_key, price_overrides, use_rollups)
    top, judge = side["top"], side["judge"]
    missed_usd, missed = side["missed"]
    daily = _daily(cur)

    cur_blocks = cur.blocks()
    prev_blocks = prev.blocks()
    totals = cur_blocks["total"]["total"]
    previous = prev_blocks["total"]["total"]
    drops = side.get("drops")
    if dropped_records is not None:  # the caller's count wins
        dropped = int(dropped_records)
    else:
        dropped = None if drops is None else int(drops["current"])

    # Week-over-week gates and alarms. A gate is computed only where an alarm could need it (an
    # efficiency figure moved the "good" way). The gates are independent (each seeds its own
    # generator from its name) and numpy's sampling releases the GIL: two run at a time.
    alarms: list[dict[str, Any]] = []
    for table in (cur.runs, prev.runs):
        table.quality_sample("total", "total", canonical=True)  # sort each table once, before the threads
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="wasteaudit-gates") as pool:

        def gate(*args: Any, **kwargs: Any) -> Any:
            return pool.submit(_gate, *args, **kwargs)

        total_gate = None
        if alarm_rules.needs_gate(totals, previous, settings):
            total_gate = gate(prev.runs, "total", "total", cur.runs, "total", "total", settings, "total", bound=False)
        wow: list[tuple[str, str, dict[str, Any], dict[str, Any] | None, Any]] = []
        for name, block in cur_blocks["function"].items():
            before = prev_blocks["function"].get(name)
            if before is None or block["runs"] == 0:
                continue
            g = None
            if alarm_rules.needs_gate(block, before, settings):
                g = gate(prev.runs, "function", name, cur.runs, "function", name, settings, f"function:{name}", bound=False)
            wow.append(("function", name, block, before, g))
        for key, block in cur_blocks["model"].items():
            before = prev_blocks["model"].get(key)
            g = None
            if before is not None and block["runs"] and before["runs"] and alarm_rules.needs_gate(block, before, settings):
                g = gate(prev.runs, "model", key, cur.runs, "model", key, settings, f"model:{_model_name(key)}", bound=False)
            wow.append(("model", _model_name(key), block, before, g))
        value_gates = _value_gates(cur, cur_blocks["model"], settings, gate)
        alarms += alarm_rules.week_over_week("total", "all", totals, previous, total_gate and total_gate.result(), settings)
        for dim, name, block, before, g in wow:
            alarms += alarm_rules.week_over_week(dim, name, block, before, g and g.result(), settings)
        value_table = _value_table(cur, cur_blocks["model"], settings, value_gates)
    alarms += alarm_rules.model_alarms(value_table)
    from_db = dropped_records is None and drops is not None
    alarms += alarm_rules.drops_alarm(
        dropped,
        previous=drops["previous"] if from_db else None,
        by_reason=drops["by_reason"] if from_db else None,
    )

    notes: list[str] = []
    if dropped_records is None:
        notes.append(DROPPED_UNKNOWN_NOTE if drops is None else _dropped_note(drops, period))
    if totals["scored_calls"] < totals["calls"]:
        notes.append(
            f"{totals['calls'] - totals['scored_calls']:,} of {totals['calls']:,} calls are not scored yet: "
            "waste counts scored calls only (run `wasteaudit score`)."
        )
    if cur.runs.sampled or prev.runs.sampled:
        notes.append(
            f"more than {settings.max_runs:,} runs: LCQE and the non-inferiority gates use a uniform sample of "
            f"{settings.max_runs:,} runs; every other figure is exact."
        )
    if judge["calls"]:
        notes.append(
            f"{judge['calls']:,} calls made by the LLM judge (function {metrics.JUDGE_FUNCTION}) are excluded from "
            "every figure; see `judge`."
        )

    def rows(dim: str, naming: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
        out = [{**naming(key), **_public(block)} for key, block in cur_blocks[dim].items()]
        return out

    by_function = _sort_rows(rows("function", lambda k: {"name": k}), lambda r: r["name"])
    by_model = _sort_rows(rows("model", lambda k: {"provider": k[0], "model": k[1]}), lambda r: f"{r['provider']}/{r['model']}")
    report: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "generated_at": _iso(generated),
        "wasteaudit_version": _version(),
        "period": period.to_json(),
        "previous_period": previous_period.to_json(),
        "by": by if tag_key is None else f"tag:{tag_key}",
        "settings": settings.to_json(),
        "totals": _public(totals),
        "previous": _public(previous),
        "by_function": by_function,
        "by_model": by_model,
    }
    if by == "provider":
        report["by_provider"] = _sort_rows(rows("provider", lambda k: {"name": k}), lambda r: r["name"])
    if by == "tag":
        report["by_tag"] = _sort_rows(
            rows("tag", lambda k: {"name": f"{k[0]}={k[1]}" if k[0] != metrics.UNTAGGED else metrics.UNTAGGED, "key": k[0], "value": k[1]}),
            lambda r: r["name"],
        )
    report.update(
        {
            "value_per_dollar_by_model": value_table,
            "alarms": alarm_rules.sort_alarms(alarms),
            "top_findings": top,
            "daily": daily,
            "dropped_records": dropped,
            "missed_cache_savings_usd": missed_usd,
            "missed_cache": missed,
            "judge": judge,
            "notes": notes,
        }
    )
    return report


def _tune(conn: Connection) -> None:
    """Session settings for one analytic read (transaction-scoped on PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        # Sorts and hashes of a week of calls fit in memory instead of spilling to temp files;
        # JIT compilation costs more than it saves on these one-off aggregates.
        conn.exec_driver_sql("SET LOCAL work_mem = '128MB'")
        conn.exec_driver_sql("SET LOCAL jit = off")
        # The planner cannot estimate how few cells a GROUP BY on the day and the text keys makes
        # (it assumes one per row), so it sorts half a million rows where hashing a few thousand
        # groups is 3x cheaper; sorts it cannot avoid (the run pass's windows) still happen.
        conn.exec_driver_sql("SET LOCAL enable_sort = off")


def _version() -> str:
    from wasteaudit._version import __version__

    return __version__

