"""Formatting shared by the text, Markdown and HTML renderers (plain strings, no markup).

Every renderer shows the same tables with the same columns, so each efficiency figure is
always printed in a row that also carries the quality mean and its coverage.
A null figure prints as an em dash, never as 0.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = (
    "DASH",
    "money",
    "tokens",
    "pct",
    "num",
    "headline_rows",
    "breakdown_columns",
    "breakdown_title",
    "breakdown_rows",
    "model_columns",
    "model_rows",
    "subkind_rows",
    "finding_rows",
    "side_lines",
    "title",
    "VERDICT_LABELS",
)

DASH = "—"

VERDICT_LABELS = {
    "reference": "reference",
    "non_inferior": "non-inferior",
    "cheaper_but_worse": "cheaper but worse",
    "worse": "worse",
    "inconclusive": "not shown non-inferior",
    "not_comparable": "not comparable",
    "insufficient_data": "too few scored runs",
}


def money(value: float | None) -> str:
    if value is None:
        return DASH
    if value == 0:
        return "$0"
    if abs(value) < 0.01:
        import math

        decimals = min(8, max(4, 2 - math.floor(math.log10(abs(value)))))
        return f"${value:.{decimals}f}"
    if abs(value) < 1000:
        return f"${value:,.2f}"
    return f"${value:,.0f}"


def tokens(value: int | None) -> str:
    return DASH if value is None else f"{int(value):,}"


def pct(value: float | None, digits: int = 0) -> str:
    return DASH if value is None else f"{value * 100:.{digits}f}%"


def num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return DASH
    if value != 0 and abs(value) < 10 ** (-digits):
        return f"{value:.2g}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _pct1(value: float | None) -> str:
    return pct(value, 1)


def _share(part: int | None, whole: int | None) -> str:
    if part is None or not whole:
        return DASH
    return pct(part / whole, 1)


def title(report: dict[str, Any]) -> str:
    period, previous = report["period"], report["previous_period"]
    return (
        f"wasteaudit report {period['label']} ({period['start']} to {period['end']}, UTC, end excluded); "
        f"compared with {previous['label']}"
    )


def _delta(cur: float | None, prev: float | None, fmt: Callable[[Any], str]) -> str:
    if cur is None or prev is None:
        return DASH
    diff = cur - prev
    if diff == 0:
        return "="
    return ("+" if diff > 0 else "−") + fmt(abs(diff))


def headline_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(figure, this period, previous period, change)`` rows of the summary table."""
    t, p = report["totals"], report["previous"]

    def row(label: str, get: Callable[[dict[str, Any]], Any], fmt: Callable[[Any], str]) -> tuple[str, str, str, str]:
        cur, prev = get(t), get(p)
        # Shares change in percentage points, not in percent.
        delta_fmt = (lambda v: f"{v * 100:.1f} pp") if fmt in (pct, _pct1) else fmt
        return (label, fmt(cur), fmt(prev), _delta(cur, prev, delta_fmt))

    def waste_share(b: dict[str, Any]) -> float | None:
        out = b["output_tokens"]
        return b["waste"]["tokens"] / out if out else None

    return [
        row("cost", lambda b: b["cost_usd"], money),
        row("runs", lambda b: b["runs"], tokens),
        row("calls", lambda b: b["calls"], tokens),
        row("attempts (incl. SDK retries)", lambda b: b["attempts"], tokens),
        row("output tokens", lambda b: b["output_tokens"], tokens),
        row("confirmed waste, tokens", lambda b: b["waste"]["tokens"], tokens),
        row("confirmed waste, share of output", waste_share, _pct1),
        row("confirmed waste, dollars", lambda b: b["waste"]["cost_usd"], money),
        row("possible waste (not in headline), tokens", lambda b: b["waste"]["possible"]["tokens"], tokens),
        row("unused-coverage (output where use is observable)", lambda b: b["unused_coverage"], pct),
        row("quality, mean q", lambda b: b["quality"]["mean"], num),
        row("quality coverage (runs with q)", lambda b: b["quality"]["coverage"], pct),
        row("success rate (q ≥ τ)", lambda b: b["quality"]["success_rate"], pct),
        row("value per dollar (Σq/Σ$, gated)", lambda b: b["efficiency"]["value_per_dollar"], num),
        row("quality-weighted yield QUY", lambda b: b["efficiency"]["quality_weighted_yield"], lambda v: num(v, 3)),
        row("cost per successful run", lambda b: b["efficiency"]["cost_per_success"], money),
        row("length-controlled quality efficiency LCQE", lambda b: b["efficiency"]["length_controlled"], lambda v: num(v, 3)),
        row("useful-token rate (diagnostic)", lambda b: b["efficiency"]["useful_token_rate"], pct),
        row("efficiency coverage (runs with q and cost)", lambda b: b["efficiency"]["coverage"], pct),
        row("unpriced calls", lambda b: b["unpriced_calls"], tokens),
    ]


def breakdown_title(report: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    by = report.get("by", "function")
    if by == "model":
        return "By model", report["by_model"]
    if by == "provider":
        return "By provider", report.get("by_provider", [])
    if by.startswith("tag"):
        return "By tag", report.get("by_tag", [])
    return "By function", report["by_function"]


def row_name(row: dict[str, Any]) -> str:
    if "model" in row and "provider" in row and "name" not in row:
        return f"{row['provider']}/{row['model']}"
    return str(row.get("name", ""))


breakdown_columns = [
    "name",
    "runs",
    "calls",
    "output tok",
    "cost",
    "waste tok",
    "waste %",
    "waste $",
    "possible tok",
    "unused cov",
    "quality",
    "q cov",
    "success",
    "value/$",
    "QUY",
    "$/success",
    "LCQE",
    "useful",
]


def breakdown_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        q, e, w = r["quality"], r["efficiency"], r["waste"]
        out.append(
            [
                row_name(r),
                tokens(r["runs"]),
                tokens(r["calls"]),
                tokens(r["output_tokens"]),
                money(r["cost_usd"]),
                tokens(w["tokens"]),
                _share(w["tokens"], r["output_tokens"]),
                money(w["cost_usd"]),
                tokens(w["possible"]["tokens"]),
                pct(r["unused_coverage"]),
                num(q["mean"]),
                pct(q["coverage"]),
                pct(q["success_rate"]),
                num(e["value_per_dollar"]),
                num(e["quality_weighted_yield"], 3),
                money(e["cost_per_success"]),
                num(e["length_controlled"], 3),
                pct(e["useful_token_rate"]),
            ]
        )
    return out


model_columns = [
    "rank",
    "model",
    "verdict",
    "runs",
    "cost/run",
    "quality",
    "q cov",
    "success",
    "value/$",
    "QUY",
    "$/success",
    "LCQE",
    "Δq lower bound",
]


def model_rows(table: dict[str, Any]) -> list[list[str]]:
    out = []
    for r in table.get("rows", []):
        gate = r.get("gate") or {}
        out.append(
            [
                DASH if r["rank"] is None else str(r["rank"]),
                f"{r['provider']}/{r['model']}",
                VERDICT_LABELS.get(r["verdict"], str(r["verdict"])),
                tokens(r["runs"]),
                money(r["cost_per_run"]),
                num(r["quality"]["mean"]),
                pct(r["quality"]["coverage"]),
                pct(r["quality"]["success_rate"]),
                num(r["efficiency"]["value_per_dollar"]),
                num(r["efficiency"]["quality_weighted_yield"], 3),
                money(r["efficiency"]["cost_per_success"]),
                num(r["efficiency"]["length_controlled"], 3),
                DASH if gate.get("delta_quality_lower") is None else f"{gate['delta_quality_lower']:+.3f}",
            ]
        )
    return out


def subkind_rows(report: dict[str, Any]) -> list[list[str]]:
    """Confirmed waste by kind and subkind (non-zero only), then possible waste apart."""
    t = report["totals"]
    out = t["output_tokens"]
    from wasteaudit.report.build import SUBKINDS

    rows = []
    for sub, pair in t["waste"]["by_subkind"].items():
        if pair["tokens"]:
            rows.append([SUBKINDS.get(sub, "?"), sub, "confirmed", tokens(pair["tokens"]), money(pair["cost_usd"]), _share(pair["tokens"], out)])
    for sub, pair in t["waste"]["possible"].get("by_subkind", {}).items():
        if pair["tokens"]:
            rows.append([SUBKINDS.get(sub, "?"), sub, "possible", tokens(pair["tokens"]), money(pair["cost_usd"]), _share(pair["tokens"], out)])
    return rows


def _evidence_text(evidence: Any, limit: int = 160) -> str:
    if not evidence:
        return ""
    if isinstance(evidence, dict):
        parts = []
        for key, value in evidence.items():
            if isinstance(value, float):
                value = f"{value:.3g}"
            parts.append(f"{key}={value}")
        text = "; ".join(str(p) for p in parts)
    else:
        text = str(evidence)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def finding_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for f in report.get("top_findings", []):
        labels = ", ".join(f"{x['subkind']} {x['tokens']:,}" + ("" if x["tier"] == "confirmed" else " (possible)") for x in f["findings"])
        evidence = next((x.get("evidence") for x in f["findings"] if x.get("evidence")), None)
        rows.append(
            [
                str(f["function"]),
                f"{f['provider']}/{f['model']}",
                tokens(f["waste_tokens"]) + " / " + tokens(f["output_tokens"]),
                money(f["waste_cost_usd"]),
                labels,
                str(f.get("trace_id") or DASH),
                str(f["call_id"]),
                _evidence_text(evidence),
            ]
        )
    return rows


#: How the renderers name the writer's drop reasons (``wasteaudit_drops.reason``).
DROP_REASONS = {
    "queue_full": "buffer full",
    "db_error": "refused by the database",
    "invalid": "not convertible",
    "closed": "after shutdown",
    "unclean_exit": "lost in a killed process",
}


def _dropped_text(report: dict[str, Any]) -> str:
    """``dropped_records``, with its reasons and the previous period's count when the drops alarm has them."""
    dropped = report.get("dropped_records")
    if dropped is None:
        return "unknown (not in the database)"
    alarm = next((a for a in report.get("alarms", ()) if a.get("kind") == "drops"), None)
    details = (alarm or {}).get("details") or {}
    parts = []
    if details.get("by_reason"):
        parts.append(", ".join(f"{DROP_REASONS.get(r, r)} {n:,}" for r, n in details["by_reason"].items()))
    if details.get("previous_dropped_records") is not None:
        parts.append(f"previous period {details['previous_dropped_records']:,}")
    return f"{dropped:,}" + (f" ({'; '.join(parts)})" if parts else "")


def side_lines(report: dict[str, Any]) -> list[str]:
    judge = report.get("judge") or {}
    missed = report.get("missed_cache") or {}
    lines = [
        f"missed cache savings (input side, estimate): {money(report.get('missed_cache_savings_usd'))}"
        f" — {missed.get('tokens', 0):,} prompt tokens in {missed.get('groups', 0):,} repeated prefixes",
        "records dropped by the writer: " + _dropped_text(report),
    ]
    if judge.get("calls"):
        lines.append(
            f"LLM judge (excluded from every figure): {judge['calls']:,} calls, {money(judge.get('cost_usd'))}"
        )
    lines.extend(report.get("notes", []))
    return lines
