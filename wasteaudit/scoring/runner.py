"""Scoring off the request path: lease unscored calls from the database, score them, store findings.

The protocol (DESIGN §2) lets any number of worker processes share one PostgreSQL database
without a queue service: a worker claims a batch with

    UPDATE wasteaudit_calls SET claimed_by = :worker, lease_until = :until
    WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT :n)

commits, scores, then, in one transaction, sets ``scored_version`` on the calls it still holds
(``... AND claimed_by = :worker RETURNING id``) and replaces the findings of exactly those, keyed
by (call id, scorer version): a worker that stalled past its lease and lost its calls writes
nothing, so a call is never scored twice. A worker that dies leaves its lease to expire; another
takes the calls over. ``score_attempts`` counts the leases: a call that keeps killing its worker
is leased alone after ``ISOLATE_AFTER`` leases and marked after ``MAX_SCORE_ATTEMPTS``. SQLite has no
``SKIP LOCKED``: there the same UPDATE runs plainly (``claimed_by IS NULL OR lease_until <
now``) and SQLite's single writer serializes the claims.

A call is ready when its run has ended, when it has no run, or when it is older than
``run_timeout_s`` (runs that never end). A call whose scoring crashes gets ``score_error`` and
is not retried; the batch carries on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from wasteaudit.scoring import SCORER_VERSION
from wasteaudit.scoring.duplicates import load_rows
from wasteaudit.scoring.findings import CallCoverage, Finding
from wasteaudit.scoring.records_io import call_from_row, epoch, run_from_row, score_from_row

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from wasteaudit.records import CallRecord
    from wasteaudit.scoring.engine import Scorer

__all__ = ("score_pending", "run_worker", "claim", "unscored", "score_errors", "scored_elsewise", "RUN_TIMEOUT_S", "MAX_SCORE_ATTEMPTS")

log = logging.getLogger("wasteaudit.scoring")

#: Calls of a run that never ended are scored anyway after this long.
RUN_TIMEOUT_S = 3600.0
#: Leases a call may take before it is marked unscorable (its worker died on it each time).
MAX_SCORE_ATTEMPTS = 4
#: From this many leases on, a call is leased alone (it may be what kills its worker).
ISOLATE_AFTER = 2
#: Cap on window rows loaded per batch (the duplicate look-back), to bound memory.
WINDOW_ROWS_CAP = 100_000
_WINDOW_COLUMNS = (
    "id", "started_at", "request_model", "request_params", "response_format", "tool_definitions", "input_messages",
    "system_instructions", "choices", "finish_category", "error_type", "content_mode", "output_type", "provider",
    "operation", "api", "run_id",
)

_scorers: dict[int, Any] = {}
_windows: dict[int, dict[str, float]] = {}


def _worker_id(worker_id: str | None) -> str:
    if worker_id:
        return worker_id[:64]
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _engine(url_or_engine: Any) -> "Engine":
    from wasteaudit.storage.engine import create_engine_for
    from wasteaudit.storage.schema import ensure_schema

    engine = url_or_engine if hasattr(url_or_engine, "dialect") else create_engine_for(url_or_engine)
    ensure_schema(engine)
    return engine


def score_pending(
    url_or_engine: Any,
    *,
    batch_size: int = 200,
    worker_id: str | None = None,
    lease_s: float = 300.0,
    progress: Callable[[int], Any] | None = None,
    scorer: "Scorer | None" = None,
    run_timeout_s: float = RUN_TIMEOUT_S,
    max_batches: int | None = None,
) -> int:
    """Score every ready, unscored call; returns how many calls were scored (errors included).

    ``progress(n)`` is called after each batch with the running total. One :class:`Scorer`
    per engine is kept for the process (model, embedding cache and duplicate window persist)
    unless ``scorer`` is given.
    """
    engine = _engine(url_or_engine)
    if scorer is None:
        scorer = _scorers.get(id(engine))
        if scorer is None:
            from wasteaudit.scoring.engine import Scorer

            scorer = _scorers[id(engine)] = Scorer()
    worker = _worker_id(worker_id)
    window = _windows.setdefault(id(scorer), {})
    total = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        ids = claim(engine, worker, batch_size, lease_s, run_timeout_s)
        if not ids:
            break
        total += _score_claimed(engine, scorer, worker, ids, window)
        batches += 1
        if progress is not None:
            progress(total)
    return total


def claim(engine: "Engine", worker: str, limit: int, lease_s: float, run_timeout_s: float = RUN_TIMEOUT_S) -> list[str]:
    """Lease up to ``limit`` ready calls to ``worker``; returns their ids (committed).

    Every lease adds one to the call's ``score_attempts``. A call leased before whose lease ran
    out (its worker died) is retried in the next normal batch; after ``ISOLATE_AFTER`` such
    leases it is leased alone, so a call that kills its worker cannot take a batch of innocent
    calls down with it; after ``MAX_SCORE_ATTEMPTS`` it is marked with ``score_error``.
    """
    from sqlalchemy import and_, func, or_, select, update

    from wasteaudit.storage.models import CallRow, RunRow

    calls, runs = CallRow.__table__, RunRow.__table__
    now = datetime.now(timezone.utc)
    until = datetime.fromtimestamp(now.timestamp() + lease_s, timezone.utc)
    cutoff = datetime.fromtimestamp(now.timestamp() - run_timeout_s, timezone.utc)
    postgres = engine.dialect.name == "postgresql"
    free = and_(calls.c.scored_version.is_(None), calls.c.score_error.is_(None), or_(calls.c.claimed_by.is_(None), calls.c.lease_until < now))

    def ready(n: int, *conditions: Any) -> Any:
        stmt = (
            select(calls.c.id)
            .select_from(calls.outerjoin(runs, runs.c.id == calls.c.run_id))
            .where(free, or_(calls.c.run_id.is_(None), runs.c.ended_at.is_not(None), calls.c.started_at < cutoff), *conditions)
            .order_by(calls.c.started_at)
            .limit(n)
        )
        return stmt.with_for_update(of=calls, skip_locked=True) if postgres else stmt

    attempts = func.coalesce(calls.c.score_attempts, 0)
    with engine.begin() as conn:
        poison = select(calls.c.id).where(free, attempts >= MAX_SCORE_ATTEMPTS)
        if postgres:
            poison = poison.with_for_update(skip_locked=True)
        gave_up = f"not scored after {MAX_SCORE_ATTEMPTS} leases: the worker scoring it stopped each time (crash, kill or timeout)"
        conn.execute(update(calls).where(calls.c.id.in_(poison.scalar_subquery())).values(score_error=gave_up, claimed_by=None, lease_until=None))
        for n, condition in ((1, attempts >= ISOLATE_AFTER), (limit, attempts < ISOLATE_AFTER)):
            stmt = update(calls).where(calls.c.id.in_(ready(n, condition).scalar_subquery())).values(
                claimed_by=worker, lease_until=until, score_attempts=attempts + 1
            )
            if postgres:
                ids = [row[0] for row in conn.execute(stmt.returning(calls.c.id))]
            else:
                conn.execute(stmt)
                mine = select(calls.c.id).where(calls.c.claimed_by == worker, calls.c.lease_until == until, calls.c.scored_version.is_(None))
                ids = [row[0] for row in conn.execute(mine)]
            if ids:
                return ids
    return []


def _rows(conn: Any, stmt: Any) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in conn.execute(stmt)]


def _score_claimed(engine: "Engine", scorer: "Scorer", worker: str, ids: Sequence[str], window: dict[str, float]) -> int:
    from sqlalchemy import select

    from wasteaudit.storage.models import CallRow, RunRow, ScoreRow

    calls, runs, scores = CallRow.__table__, RunRow.__table__, ScoreRow.__table__
    with engine.connect() as conn:
        rows = _rows(conn, select(calls).where(calls.c.id.in_(list(ids)), calls.c.claimed_by == worker))
        run_ids = sorted({r["run_id"] for r in rows if r["run_id"]})
        run_rows = _rows(conn, select(runs).where(runs.c.id.in_(run_ids))) if run_ids else []
        score_rows = _rows(conn, select(scores).where(scores.c.run_id.in_(run_ids))) if run_ids else []
        context_rows = _rows(conn, select(calls).where(calls.c.run_id.in_(run_ids), calls.c.id.not_in(list(ids)))) if run_ids else []
        _load_window(conn, scorer, rows, window)

    records: list[CallRecord] = []
    errors: dict[str, str] = {}
    for row in rows:
        try:
            records.append(call_from_row(row))
        except Exception as exc:
            errors[row["id"]] = f"unreadable row: {type(exc).__name__}: {exc}"[:500]
    runs_by_id = {}
    for row in run_rows:
        try:
            runs_by_id[row["id"]] = run_from_row(row)
        except Exception:
            log.warning("run %s unreadable; its calls are scored without use evidence", row.get("id"))
    score_records = []
    for row in score_rows:
        try:
            score_records.append(score_from_row(row))
        except Exception:
            continue
    context = []
    for row in context_rows:
        try:
            context.append(call_from_row(row))
        except Exception:
            continue

    findings: list[Finding] = []
    coverage: dict[str, CallCoverage] = {}
    try:
        result = scorer.score(records, runs_by_id, score_records, context_calls=context)
        findings, errors = result.findings, {**errors, **result.errors}
        coverage = {c.call_id: c for c in result.coverage}
    except Exception as exc:  # isolate the call that breaks the batch
        log.exception("batch scoring failed; retrying call by call")
        for rec in records:
            try:
                one = scorer.score([rec], runs_by_id, score_records, context_calls=context)
                findings += one.findings
                errors.update(one.errors)
                coverage.update((c.call_id, c) for c in one.coverage)
            except Exception as inner:
                errors[rec.id] = f"{type(inner).__name__}: {inner}"[:500] or repr(exc)
    by_id = {r.id: r for r in records}
    scored_ids = [r.id for r in records if r.id not in errors]
    return _write(engine, worker, scored_ids, errors, [f for f in findings if f.call_id not in errors], by_id, coverage, _fingerprint(scorer))


def _fingerprint(scorer: "Scorer") -> str | None:
    try:
        return str(scorer.fingerprint)
    except Exception:  # a stand-in scorer without one: the column stays empty
        return None


def _load_window(conn: Any, scorer: "Scorer", rows: list[dict[str, Any]], window: dict[str, float]) -> None:
    """Add the duplicate look-back window of this batch's calls to the scorer's index (incrementally)."""
    from sqlalchemy import select

    from wasteaudit.storage.models import CallRow

    if not rows:
        return
    calls = CallRow.__table__
    starts = [epoch(r["started_at"]) for r in rows if r.get("started_at") is not None]
    if not starts:
        return
    lo = min(starts) - scorer.config.dup_window_s
    hi = max(starts)
    have_lo, have_hi = window.get("lo"), window.get("hi")
    ranges = []
    if have_lo is None or have_hi is None:
        ranges.append((lo, hi))
    else:
        if lo < have_lo:
            ranges.append((lo, have_lo))
        if hi > have_hi:
            ranges.append((have_hi, hi))
    models = sorted({r["request_model"] for r in rows if r.get("request_model")})
    columns = [calls.c[name] for name in _WINDOW_COLUMNS]
    for a, b in ranges:
        stmt = (
            select(*columns)
            .where(calls.c.started_at >= datetime.fromtimestamp(a, timezone.utc), calls.c.started_at <= datetime.fromtimestamp(b, timezone.utc))
            .order_by(calls.c.started_at)
            .limit(WINDOW_ROWS_CAP)
        )
        if models:
            stmt = stmt.where(calls.c.request_model.in_(models))
        unreadable = 0
        for r in conn.execute(stmt):
            try:
                load_rows(scorer.index, (dict(r._mapping),))
            except Exception:  # a pathological row is marked when its own batch reads it; it must not stop the others
                unreadable += 1
        if unreadable:
            log.warning("duplicate window: %d unreadable calls skipped", unreadable)
    window["lo"] = lo if have_lo is None else min(lo, have_lo)
    window["hi"] = hi if have_hi is None else max(hi, have_hi)


def _write(engine: "Engine", worker: str, scored: list[str], errors: dict[str, str], findings: list[Finding], records: dict[str, Any],
           coverage: dict[str, CallCoverage] | None = None, fingerprint: str | None = None) -> int:
    """Store one batch's results; returns how many calls this worker marked (scored or failed)."""
    from sqlalchemy import bindparam, delete, insert, update

    from wasteaudit.storage.models import CallRow, FindingRow

    calls, table = CallRow.__table__, FindingRow.__table__
    now = datetime.now(timezone.utc)
    # Prices only for calls with findings: pricing a call twice costs more than scoring it.
    with_findings = {f.call_id for f in findings}
    rates = {cid: _output_rate(rec) for cid, rec in records.items() if cid in with_findings}
    values = [
        {
            "call_id": f.call_id,
            "run_id": f.run_id,
            "scorer_version": SCORER_VERSION,
            "kind": f.kind,
            "subkind": f.subkind,
            "tier": f.tier,
            "tokens": f.tokens,
            "cost_usd": (rates[f.call_id] * f.tokens) if rates.get(f.call_id) is not None else None,
            "confidence": f.confidence,
            "choice_index": f.choice_index,
            "segment_start": f.segment_start,
            "segment_end": f.segment_end,
            "evidence": f.evidence,
            "created_at": now,
        }
        for f in findings
    ]
    with engine.begin() as conn:
        # The lease fences the write: mark first (row locks), then write findings only for the calls
        # still ours. A worker whose lease expired and was taken over writes nothing, so a call is
        # never scored twice and two workers never interleave their findings.
        mine = _mark(conn, calls, worker, scored, {"scored_version": SCORER_VERSION, "score_error": None, "scorer_config": fingerprint})
        values = [v for v in values if v["call_id"] in mine]
        if mine:
            conn.execute(delete(table).where(table.c.call_id.in_(sorted(mine)), table.c.scorer_version == SCORER_VERSION))
            if values:
                conn.execute(insert(table), values)
        if mine and coverage:
            # One statement for the batch, one parameter set per call (its coverage differs).
            conn.execute(
                update(calls)
                .where(calls.c.id == bindparam("b_id"))
                .values(use_observed=bindparam("b_observed"), use_coverage=bindparam("b_coverage")),
                [{"b_id": cid, "b_observed": cov.use_observable if (cov := coverage.get(cid)) else None,
                  "b_coverage": cov.use_coverage if cov else None} for cid in sorted(mine)],
            )
        failed = 0
        for cid, message in errors.items():
            failed += len(_mark(conn, calls, worker, [cid], {"score_error": message[:2000]}))
        lost = len(scored) - len(mine) + len(errors) - failed
        if lost:
            log.warning("worker %s: %d calls of its batch were taken over after its lease expired; their results are discarded", worker, lost)
    if values:
        # Newly written findings only: metrics and trace events for the observability stack.
        try:
            from wasteaudit.export import export_findings

            export_findings(values, records)
        except Exception as exc:
            log.warning("exporting findings failed (counted, scoring unaffected): %r", exc)
    return len(mine) + failed


def _mark(conn: Any, calls: Any, worker: str, ids: Sequence[str], values: dict[str, Any]) -> set[str]:
    """Set ``values`` on the calls of ``ids`` that ``worker`` still holds, releasing them; returns those ids."""
    from sqlalchemy import select, update

    if not ids:
        return set()
    stmt = update(calls).where(calls.c.id.in_(list(ids)), calls.c.claimed_by == worker).values(claimed_by=None, lease_until=None, **values)
    if getattr(conn.dialect, "update_returning", False):  # PostgreSQL; SQLite >= 3.35
        return {row[0] for row in conn.execute(stmt.returning(calls.c.id))}
    held = {row[0] for row in conn.execute(select(calls.c.id).where(calls.c.id.in_(list(ids)), calls.c.claimed_by == worker))}
    conn.execute(stmt)
    return held


def _output_rate(record: "CallRecord") -> float | None:
    """USD per output token of this call (marginal, from the same price data the writer used)."""
    if not record.output_tokens:
        return None
    try:
        from wasteaudit.config import get_settings
        from wasteaudit.storage.pricing import price_call

        overrides = get_settings().price_overrides
        full, _, status = price_call(record, overrides)
        without, _, _ = price_call(dataclasses.replace(record, output_tokens=0, output_reasoning_tokens=0), overrides)
        if full is None or without is None or status == "unpriced":
            return None
        return max(0.0, (full - without) / record.output_tokens)
    except Exception:
        return None


def run_worker(url: Any, *, stop_event: threading.Event, poll_s: float = 2.0, batch_size: int = 200, worker_id: str | None = None,
               lease_s: float = 300.0, scorer: "Scorer | None" = None) -> int:
    """Score until ``stop_event`` is set, polling every ``poll_s`` seconds when idle; returns the
    calls this worker marked scored or failed (a batch taken over after its lease ran out is not counted)."""
    engine = _engine(url)
    total = 0
    worker = _worker_id(worker_id)
    log.info("scoring worker %s started (batch %d, lease %.0f s)", worker, batch_size, lease_s)
    while not stop_event.is_set():
        try:
            n = score_pending(engine, batch_size=batch_size, worker_id=worker, lease_s=lease_s, max_batches=1, scorer=scorer)
        except Exception:
            log.exception("scoring worker: batch failed; retrying after %.1f s", poll_s)
            n = 0
        total += n
        if n == 0:
            stop_event.wait(poll_s)
    return total


def unscored(engine: "Engine") -> int:
    """How many calls wait for the scorer (for status displays)."""
    from sqlalchemy import func, select

    from wasteaudit.storage.models import CallRow

    calls = CallRow.__table__
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(calls).where(calls.c.scored_version.is_(None), calls.c.score_error.is_(None))).scalar_one())


def score_errors(engine: "Engine", limit: int = 5) -> tuple[int, list[tuple[str, str]]]:
    """How many calls could not be scored, and the most recent ``limit`` of them as (call id, reason)."""
    from sqlalchemy import func, select

    from wasteaudit.storage.models import CallRow

    calls = CallRow.__table__
    failed = calls.c.score_error.is_not(None)
    with engine.connect() as conn:
        count = int(conn.execute(select(func.count()).select_from(calls).where(failed)).scalar_one())
        rows = conn.execute(select(calls.c.id, calls.c.score_error).where(failed).order_by(calls.c.started_at.desc()).limit(limit)).all()
    return count, [(row[0], row[1]) for row in rows]


def scored_elsewise(engine: "Engine", fingerprint: str) -> int:
    """How many scored calls were scored under other settings (version, thresholds or model) than ``fingerprint``."""
    from sqlalchemy import func, or_, select

    from wasteaudit.storage.models import CallRow

    calls = CallRow.__table__
    stale = or_(calls.c.scorer_config.is_(None), calls.c.scorer_config != fingerprint)
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(calls).where(calls.c.scored_version.is_not(None), stale)).scalar_one())
