"""A deliberately naive second implementation of the report's figures: Python loops over records.

The SQL path must agree with it on every dataset the tests build (it is only ever run on a
few hundred records, which is what makes the loops acceptable here).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime
from typing import Any

from builders import PRICES, SCORER_VERSION, Dataset

from wasteaudit.report.quality import run_quality

TAU = 0.7
JUDGE = "wasteaudit.judge"


def call_cost(call: Any) -> float | None:
    prices = PRICES.get(call.request_model)
    if prices is None or call.usage_source == "missing":
        return None
    cached = call.input_cache_read_tokens or 0
    fresh = (call.input_tokens or 0) - cached
    return (fresh * prices["input"] + cached * prices.get("cache_read", prices["input"]) + (call.output_tokens or 0) * prices["output"]) / 1e6


def figures(ds: Dataset, start: datetime, end: datetime) -> dict[str, Any]:
    s, e = start.timestamp(), end.timestamp()
    calls = [c for c in ds.calls if s <= c.started_at < e and c.function != JUDGE]
    findings = defaultdict(list)
    for f in ds.findings:
        findings[f["call_id"]].append(f)
    runs = {r.id: r for r in ds.runs}
    scores = defaultdict(list)
    for sc in ds.scores:
        scores[sc.run_id].append(sc)

    def empty() -> dict[str, Any]:
        return defaultdict(float)

    by_function: dict[str, dict[str, Any]] = defaultdict(empty)
    run_calls: dict[str, list[Any]] = defaultdict(list)
    for c in calls:
        row = by_function[c.function or "(none)"]
        row["calls"] += 1
        row["attempts"] += len(c.attempts)
        row["output_tokens"] += c.output_tokens or 0
        row["input_tokens"] += c.input_tokens or 0
        cost = call_cost(c)
        if cost is None:
            row["unpriced_calls"] += 1
        else:
            row["cost_usd"] += cost
        if c.id in ds.scored:
            for f in findings[c.id]:
                if f["scorer_version"] != SCORER_VERSION:
                    continue
                key = "waste" if f["tier"] == "confirmed" else "possible"
                row[key] += f["tokens"]
        if c.run_id is not None:
            run_calls[c.run_id].append(c)

    per_run = []
    for rid, cs in run_calls.items():
        run = runs.get(rid)
        sc = scores.get(rid, [])
        quality = [x.value for x in sc if x.name == "quality"]
        validation = [x.value for x in sc if x.name == "validation"]
        q = run_quality(
            run.status if run else None,
            run.validation if run else None,
            sum(quality) / len(quality) if quality else None,
            sum(x.value for x in sc) / len(sc) if sc else None,
            min(validation) if validation else None,
        )
        costs = [call_cost(c) for c in cs]
        t = sum(c.output_tokens or 0 for c in cs)
        if all(c.id in ds.scored for c in cs):
            w = sum(f["tokens"] for c in cs for f in findings[c.id] if f["tier"] == "confirmed" and f["scorer_version"] == SCORER_VERSION)
        else:
            w = None
        per_run.append(
            {"function": cs[0].function, "q": q, "c": None if None in costs else sum(costs), "t": t, "w": w}
        )

    lstar = {}
    for fn in {r["function"] for r in per_run}:
        ok = [r["t"] for r in per_run if r["function"] == fn and r["q"] is not None and r["q"] >= TAU]
        lstar[fn] = statistics.median(ok) if len(ok) >= 20 else None

    def run_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
        scored = [r for r in rows if r["q"] is not None]
        eff = [r for r in scored if r["c"] is not None]
        quy = [r for r in eff if r["w"] is not None]
        lc = [r for r in eff if lstar.get(r["function"]) is not None]
        success = [r for r in eff if r["q"] >= TAU]
        return {
            "runs": len(rows),
            "quality_mean": sum(r["q"] for r in scored) / len(scored) if scored else None,
            "coverage": len(scored) / len(rows) if rows else None,
            "success_rate": sum(r["q"] >= TAU for r in scored) / len(scored) if scored else None,
            "value_per_dollar": sum(r["q"] for r in eff) / sum(r["c"] for r in eff) if eff and sum(r["c"] for r in eff) > 0 else None,
            "quality_weighted_yield": (
                sum(r["q"] * (r["t"] - r["w"]) for r in quy) / sum(r["t"] for r in quy) if quy and sum(r["t"] for r in quy) else None
            ),
            "cost_per_success": sum(r["c"] for r in eff) / len(success) if success else None,
            "length_controlled": (
                sum(r["q"] * min(1.0, lstar[r["function"]] / r["t"] if r["t"] else 1.0) ** 0.5 for r in lc) / len(lc) if lc else None
            ),
        }

    out = {"by_function": {}, "totals": run_figures(per_run)}
    for fn, row in by_function.items():
        out["by_function"][fn] = {**row, **run_figures([r for r in per_run if (r["function"] or "(none)") == fn])}
    total = defaultdict(float)
    for row in by_function.values():
        for key, value in row.items():
            total[key] += value
    out["totals"].update(total)
    return out
