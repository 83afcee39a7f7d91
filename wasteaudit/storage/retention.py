"""Retention: delete the content of old calls and runs, keep every figure the reports are built from.

``wasteaudit db prune --older-than 90d`` calls :func:`prune_content`. For calls that started
before the cutoff (or, with ``--run`` / ``--tag``, calls of the chosen runs and of their child
runs: an erasure request for one user's or one customer's tasks) it removes what the app sent and received — messages, system instructions,
outputs (text and tool-call arguments), tool definitions, response formats — and marks the call
``content_mode = 'pruned'``; it keeps the row with its tokens, cost, finish reasons, attempts and
scoring state, and keeps the findings with their tokens and cost, their evidence stripped to
numbers and the scorer's own words (:func:`strip_evidence`). Runs of that age lose their return
value and used values; a run whose use was observable keeps an empty return value, so the
report's unused coverage stays what it was. Scores lose their raw value (feedback text).
Figures without content are never touched, whatever their age: the report's rollups and the
writers' drop counts (``wasteaudit_drops``, the report's ``dropped_records``).

So a report of a pruned week gives the same totals, waste and efficiency as before; what it can
no longer give is what needs the text: the missed-cache estimate (from prompt prefixes) and text
in the evidence column. ``wasteaudit score --rescore`` leaves pruned calls alone.

Work is done in batches of ``batch_size`` calls (or runs), one short transaction each, so a
prune of months of data never holds locks for long and can be interrupted and run again (it is
idempotent: pruned rows are not selected twice).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable

from wasteaudit.exceptions import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ("PRUNED", "PruneResult", "parse_age", "parse_tags", "prune_content", "strip_evidence")

#: ``content_mode`` of a call whose content retention removed.
PRUNED = "pruned"

#: Evidence keys whose string values are the scorer's own words or ids, never app content.
_SAFE_STRING_KEYS = frozenset({
    "reason", "rule", "method", "match", "finish_reason", "error_type", "stream_state", "tokens_source", "content_mode",
    "limitation", "matching_call_id", "retried_by", "tail", "also", "kind", "subkind", "tier",
})

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What a prune touched (or, with ``dry_run``, would touch)."""

    cutoff: datetime | None  # None when no age was given (runs chosen by id or tag only)
    calls: int
    runs: int
    findings: int
    scores: int
    batches: int
    dry_run: bool


def parse_age(text: str) -> timedelta:
    """``90d``, ``12w``, ``36h``, ``45m``, ``30s`` -> a timedelta (a ConfigError otherwise)."""
    match = _AGE.match(text or "")
    if not match:
        raise ConfigError(f"--older-than takes an age such as 90d, 12w or 36h; got {text!r}")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def strip_evidence(evidence: Any) -> Any:
    """A finding's evidence without app text: numbers, booleans and the scorer's own strings stay."""
    if not isinstance(evidence, dict):
        return {"content_pruned": True} if evidence is not None else None
    out: dict[str, Any] = {}
    for key, value in evidence.items():
        kept = _keep(key, value)
        if kept is not _DROP:
            out[key] = kept
    out["content_pruned"] = True
    return out


_DROP = object()


def _keep(key: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if key in _SAFE_STRING_KEYS else _DROP
    if isinstance(value, (list, tuple)):
        items = [_keep(key, v) for v in value]
        kept = [v for v in items if v is not _DROP]
        return kept if len(kept) == len(items) else _DROP
    if isinstance(value, dict):
        return strip_evidence(value)
    return _DROP


def parse_tags(pairs: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """``["user=42", "env=prod"]`` -> ``{"user": "42", "env": "prod"}`` (a ConfigError otherwise)."""
    tags: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--tag takes KEY=VALUE; got {pair!r}")
        tags[key.strip()] = value
    return tags


def prune_content(
    url_or_engine: Any,
    older_than: timedelta | datetime | None = None,
    *,
    run_ids: list[str] | tuple[str, ...] | None = None,
    tags: dict[str, str] | None = None,
    batch_size: int = 1000,
    dry_run: bool = False,
    pause_s: float = 0.0,
    now: datetime | None = None,
) -> PruneResult:
    """Remove the content of calls, runs and scores, keeping rows, tokens, cost and findings; see
    the module docs. Every selector given must hold: ``older_than`` (an age, or a cutoff
    datetime), ``run_ids`` (any of these runs) and ``tags`` (runs carrying all of these tags);
    a chosen run brings its child runs (nested ``@audit``) along, whatever their own tags.
    ``pause_s`` sleeps between batches to leave room for the app's writes on a busy database."""
    from sqlalchemy import func, select

    from wasteaudit.storage.models import CallRow, FindingRow, RunRow, ScoreRow

    engine = _engine(url_or_engine)
    if isinstance(older_than, datetime):
        cutoff: datetime | None = older_than if older_than.tzinfo else older_than.replace(tzinfo=timezone.utc)
    elif older_than is not None:
        cutoff = (now or datetime.now(timezone.utc)) - older_than
    else:
        cutoff = None
    if batch_size < 1:
        raise ConfigError("batch_size must be at least 1")
    if cutoff is None and not run_ids and not tags:
        raise ConfigError("prune needs --older-than, --run or --tag: it never prunes everything by default")
    calls, runs, findings, scores = CallRow.__table__, RunRow.__table__, FindingRow.__table__, ScoreRow.__table__
    old_calls: tuple[Any, ...] = (calls.c.content_mode != PRUNED,)
    old_runs: tuple[Any, ...] = (_run_has_content(runs),)
    chosen_runs = select(runs.c.id)
    if cutoff is not None:
        old_calls += (calls.c.started_at < cutoff,)
        old_runs += (runs.c.started_at < cutoff,)
        chosen_runs = chosen_runs.where(runs.c.started_at < cutoff)
    if run_ids or tags:
        tree = _run_tree(runs, run_ids, tags)
        old_calls += (calls.c.run_id.in_(tree),)
        old_runs += (runs.c.id.in_(tree),)
        chosen_runs = chosen_runs.where(runs.c.id.in_(tree))
    old_scores = (scores.c.raw_value.is_not(None), scores.c.run_id.in_(chosen_runs))
    if dry_run:
        with engine.connect() as conn:
            n_calls = conn.execute(select(func.count()).select_from(calls).where(*old_calls)).scalar_one()
            n_findings = conn.execute(
                select(func.count()).select_from(findings.join(calls, calls.c.id == findings.c.call_id)).where(*old_calls)
            ).scalar_one()
            n_runs = conn.execute(select(func.count()).select_from(runs).where(*old_runs)).scalar_one()
            n_scores = conn.execute(select(func.count()).select_from(scores).where(*old_scores)).scalar_one()
        return PruneResult(cutoff, int(n_calls), int(n_runs), int(n_findings), int(n_scores), 0, True)

    (n_calls, n_findings), call_batches = _drain(engine, lambda conn: _prune_calls(conn, calls, findings, old_calls, batch_size), pause_s)
    (n_runs,), run_batches = _drain(engine, lambda conn: (_prune_runs(conn, runs, old_runs, batch_size),), pause_s)
    (n_scores,), score_batches = _drain(engine, lambda conn: (_prune_scores(conn, scores, old_scores, batch_size),), pause_s)
    return PruneResult(cutoff, n_calls, n_runs, n_findings, n_scores, call_batches + run_batches + score_batches, False)


def _run_tree(runs: Any, run_ids: list[str] | tuple[str, ...] | None, tags: dict[str, str] | None) -> Any:
    """``SELECT id`` of the runs chosen by id and tags, and of all their descendants (a recursive
    CTE over ``parent_id``, the same SQL on SQLite and PostgreSQL)."""
    from sqlalchemy import select

    where = [runs.c.id.in_(list(run_ids))] if run_ids else []
    where += [runs.c.tags[key].as_string() == value for key, value in (tags or {}).items()]
    tree = select(runs.c.id.label("id")).where(*where).cte("wasteaudit_prune_runs", recursive=True)
    child = runs.alias("child_run")
    tree = tree.union(select(child.c.id).where(child.c.parent_id == tree.c.id))
    return select(tree.c.id)


def _drain(engine: "Engine", step: Callable[[Any], tuple[int, ...]], pause_s: float) -> tuple[tuple[int, ...], int]:
    """Run ``step`` in its own short transaction until it touches no row; returns the summed
    counts and how many batches did work. Sleeps ``pause_s`` after each working batch."""
    totals: tuple[int, ...] = ()
    batches = 0
    while True:
        with engine.begin() as conn:
            counts = step(conn)
        totals = tuple(a + b for a, b in zip(totals, counts)) if totals else counts
        if not counts[0]:
            return totals, batches
        batches += 1
        if pause_s:
            time.sleep(pause_s)


def _engine(url_or_engine: Any) -> "Engine":
    from wasteaudit.storage.engine import create_engine_for
    from wasteaudit.storage.schema import ensure_schema

    engine = url_or_engine if hasattr(url_or_engine, "dialect") else create_engine_for(url_or_engine)
    ensure_schema(engine)
    return engine


def _run_has_content(runs: Any) -> Any:
    from sqlalchemy import and_, or_

    return or_(and_(runs.c.return_value.is_not(None), runs.c.return_value != ""), runs.c.used_values.is_not(None))


def _locked_ids(conn: Any, table: Any, where: tuple[Any, ...], order: Any, limit: int) -> list[Any]:
    """Ids of one batch, row-locked on PostgreSQL (skipping rows a worker holds right now)."""
    from sqlalchemy import select

    stmt = select(table.c.id).where(*where).order_by(order).limit(limit)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return [row[0] for row in conn.execute(stmt)]


def _prune_calls(conn: Any, calls: Any, findings: Any, where: tuple[Any, ...], limit: int) -> tuple[int, int]:
    from sqlalchemy import bindparam, select, update

    ids = _locked_ids(conn, calls, where, calls.c.started_at, limit)
    if not ids:
        return 0, 0
    conn.execute(
        update(calls)
        .where(calls.c.id.in_(ids))
        .values(input_messages=None, system_instructions=None, choices=None, tool_definitions=None, response_format=None, content_mode=PRUNED)
    )
    rows = conn.execute(select(findings.c.id, findings.c.evidence).where(findings.c.call_id.in_(ids))).all()
    if rows:
        stmt = update(findings).where(findings.c.id == bindparam("fid")).values(evidence=bindparam("ev"))
        conn.execute(stmt, [{"fid": row[0], "ev": strip_evidence(row[1])} for row in rows])
    return len(ids), len(rows)


def _prune_runs(conn: Any, runs: Any, where: tuple[Any, ...], limit: int) -> int:
    from sqlalchemy import select, update

    ids = _locked_ids(conn, runs, where, runs.c.started_at, limit)
    if not ids:
        return 0
    rows = conn.execute(select(runs.c.id, runs.c.return_value, runs.c.used_values).where(runs.c.id.in_(ids))).all()
    # Use stays observable (an empty return value) where it was: the report's unused coverage counts it.
    observable = [r[0] for r in rows if r[1] is not None or (isinstance(r[2], list) and r[2])]
    seen = set(observable)
    blind = [r[0] for r in rows if r[0] not in seen]
    if observable:
        conn.execute(update(runs).where(runs.c.id.in_(observable)).values(return_value="", used_values=None))
    if blind:
        conn.execute(update(runs).where(runs.c.id.in_(blind)).values(return_value=None, used_values=None))
    return len(ids)


def _prune_scores(conn: Any, scores: Any, where: tuple[Any, ...], limit: int) -> int:
    from sqlalchemy import update

    ids = _locked_ids(conn, scores, where, scores.c.created_at, limit)
    if ids:
        conn.execute(update(scores).where(scores.c.id.in_(ids)).values(raw_value=None))
    return len(ids)
