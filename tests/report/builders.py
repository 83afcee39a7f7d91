"""Test data for reports, built through the project's own records and writer.

Runs, calls and scores are ``wasteaudit.records`` objects stored by the real
``wasteaudit.storage.writer.Writer`` (so they are converted and priced exactly as in
production, here with price overrides); findings — the scorer's output — are inserted with a
Core ``insert`` on ``FindingRow``, and the calls they belong to marked scored. Every
timestamp comes from an explicit clock: no sleeps, no wall time.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from wasteaudit.records import AttemptRecord, CallRecord, ChoiceContent, RunRecord, ScoreRecord
from wasteaudit.storage.engine import create_engine_for
from wasteaudit.storage.models import CallRow, FindingRow
from wasteaudit.storage.writer import Writer

#: USD per million tokens; the gaming-test models cost only by output, 1 USD per 100k tokens.
PRICES: dict[str, dict[str, float]] = {
    "model-good": {"input": 0.0, "output": 10.0},
    "model-vague": {"input": 0.0, "output": 10.0},
    "model-mid": {"input": 1.0, "output": 4.0},
    "model-big": {"input": 5.0, "output": 15.0, "cache_read": 0.5},
}
SCORER_VERSION = 3

_ids = itertools.count(1)


def next_id(prefix: str = "") -> str:
    return f"{prefix}{next(_ids):0{32 - len(prefix)}x}"[:32]


class Clock:
    """An injectable clock: ``clock()`` is the current instant, ``advance(...)`` moves it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now = self.now + timedelta(**delta)
        return self.now


@dataclass
class Dataset:
    calls: list[CallRecord] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)
    scores: list[ScoreRecord] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    scored: set[str] = field(default_factory=set)

    # --- building -------------------------------------------------------------------------

    def call(
        self,
        *,
        at: datetime,
        run_id: str | None = None,
        function: str | None = None,
        model: str = "model-mid",
        provider: str = "openai",
        output_tokens: int | None = 100,
        input_tokens: int | None = 200,
        cached: int | None = 0,
        reasoning: int | None = 0,
        attempts: int = 1,
        usage_source: str = "provider",
        waste: tuple[tuple[str, str, int], ...] = (),
        possible: tuple[tuple[str, str, int], ...] = (),
        stale: tuple[tuple[str, str, int], ...] = (),
        scored: bool = True,
        evidence: dict[str, Any] | None = None,
        text: str = "An answer.",
        system: Any = None,
        messages: Any = None,
    ) -> str:
        cid = next_id("c")
        ts = at.timestamp()
        self.calls.append(
            CallRecord(
                id=cid,
                provider=provider,
                operation="chat",
                api="chat.completions",
                started_at=ts,
                ended_at=ts + 1.0,
                duration_s=1.0,
                run_id=run_id,
                function=function,
                request_model=model,
                response_model=model,
                usage_source=usage_source,  # type: ignore[arg-type]
                input_tokens=input_tokens,
                input_cache_read_tokens=cached,
                output_tokens=output_tokens,
                output_reasoning_tokens=reasoning,
                finish_reasons=["stop"],
                finish_category="stop",
                status_code=200,
                attempts=[AttemptRecord(index=i, started_at=ts, duration_s=0.5, status_code=200 if i == attempts - 1 else 429) for i in range(attempts)],
                choices=[ChoiceContent(index=0, text=text, finish_reason="stop")],
                input_messages=messages if messages is not None else [{"role": "user", "content": "question"}],
                system_instructions=system,
                trace_id=f"{next(_ids):032x}",
                span_id=f"{next(_ids):016x}",
            )
        )
        if scored:
            self.scored.add(cid)
        for tier, items, version in (("confirmed", waste, SCORER_VERSION), ("possible", possible, SCORER_VERSION), ("confirmed", stale, 1)):
            for kind, subkind, tokens in items:
                self.findings.append(
                    {
                        "call_id": cid,
                        "run_id": run_id,
                        "scorer_version": version,
                        "kind": kind,
                        "subkind": subkind,
                        "tier": tier,
                        "tokens": tokens,
                        "cost_usd": None,  # filled from the call's price at write time
                        "confidence": 0.9,
                        "evidence": evidence or {"rule": f"{subkind} test rule"},
                        "created_at": at,
                    }
                )
        return cid

    def run(
        self,
        function: str,
        *,
        at: datetime,
        quality: float | None = None,
        scores: dict[str, float] | None = None,
        status: str = "ok",
        validation: bool | None = None,
        tags: dict[str, str] | None = None,
        return_value: str | None = "the result",
        used_values: list[str] | None = None,
        calls: list[dict[str, Any]] | None = None,
        **call_fields: Any,
    ) -> str:
        rid = next_id("r")
        ts = at.timestamp()
        self.runs.append(
            RunRecord(
                id=rid,
                name=function,
                started_at=ts,
                ended_at=ts + 5,
                status=status,  # type: ignore[arg-type]
                tags=dict(tags or {}),
                validation=validation,
                return_value=return_value,
                used_values=list(used_values or []),
            )
        )
        for i, fields in enumerate(calls or [call_fields]):
            self.call(at=at + timedelta(seconds=i), run_id=rid, function=function, **fields)
        if quality is not None:
            self.scores.append(ScoreRecord(id=next_id("s"), run_id=rid, name="quality", value=quality, created_at=ts + 10))
        for name, value in (scores or {}).items():
            self.scores.append(ScoreRecord(id=next_id("s"), run_id=rid, name=name, value=value, created_at=ts + 10))
        if validation is not None:
            self.scores.append(
                ScoreRecord(id=next_id("s"), run_id=rid, name="validation", value=1.0 if validation else 0.0, source="validator", created_at=ts + 6)
            )
        return rid

    # --- storing --------------------------------------------------------------------------

    def write(self, url: str, *, prices: dict[str, dict[str, float]] | None = None) -> None:
        writer = Writer(url, batch_size=2000, flush_interval=0.0, price_overrides=prices or PRICES)
        try:
            for record in [*self.runs, *self.calls, *self.scores]:
                assert writer.submit(record)
            assert writer.flush(60), writer.stats()
            stats = writer.stats()
            assert stats["dropped_db_error"] == 0 and stats["dropped_invalid"] == 0, stats
        finally:
            writer.shutdown(timeout=10)
        engine = create_engine_for(url)
        try:
            with engine.begin() as conn:
                priced = dict(conn.execute(sa.select(CallRow.id, CallRow.cost_usd)).all())
                models = {c.id: c.request_model for c in self.calls}
                table = prices or PRICES
                rows = []
                for f in self.findings:
                    row = dict(f)
                    model = models.get(f["call_id"])
                    # The scorer prices waste at the call's output rate.
                    known = priced.get(f["call_id"]) is not None and model in table
                    row["cost_usd"] = f["tokens"] * table[model]["output"] / 1e6 if known else None
                    rows.append(row)
                if rows:
                    conn.execute(sa.insert(FindingRow.__table__), rows)
                scored = sorted(self.scored)
                for i in range(0, len(scored), 500):
                    conn.execute(
                        sa.update(CallRow.__table__).where(CallRow.id.in_(scored[i : i + 500])).values(scored_version=SCORER_VERSION)
                    )
        finally:
            engine.dispose()


def monday(week: str) -> datetime:
    year, w = week.split("-W")
    from datetime import date

    return datetime.combine(date.fromisocalendar(int(year), int(w), 1), datetime.min.time(), timezone.utc)
