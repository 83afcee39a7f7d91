"""Goodhart alarms: a closed list of kinds, week over week and model against model.

Each alarm is ``{kind, scope, subject, message, details}``; ``scope`` is ``total``,
``function`` or ``model``; ``subject`` names it (``all``, the function name, or
``provider/model``, or ``provider/model vs provider/model`` for a model comparison).

* ``quality_down_efficiency_up`` — quality is worse than in the previous period (the bootstrap
  gate failed, and the change in mean quality or success rate is below -δ with its one-sided
  upper bound below 0) while an efficiency figure improved: the improvement is not a win.
* ``cheaper_but_worse`` — cost per run fell but quality is worse (as above); week over week,
  or a model that is cheaper than the reference model on the same functions but worse.
* ``shorter_more_failures`` — output tokens per run fell by at least 10% while the success
  rate fell (below -δ, upper bound below 0) or the share of failed runs (raised / rejected by
  a validator) rose by more than δ.
* ``coverage_down`` — quality coverage, efficiency coverage or unused-coverage fell by at
  least 0.10: fewer runs can be judged, so the figures mean less.
* ``unpriced_up`` — the share of calls without a price rose by at least 0.01 (new model,
  missing override): cost and every per-dollar figure silently cover less.
* ``drops`` — the writer dropped records, so every figure undercounts.

An alarm that needs a gate is raised only when the gate could be computed (enough scored
runs on both sides) and shows a drop beyond the margin; a gate that fails from noise alone
raises nothing (but never lets a "win" count either).
"""

from __future__ import annotations

from typing import Any

from wasteaudit.report.bootstrap import Gate
from wasteaudit.report.efficiency import Settings

__all__ = ("ALARM_KINDS", "needs_gate", "week_over_week", "model_alarms", "drops_alarm", "sort_alarms")

ALARM_KINDS = (
    "quality_down_efficiency_up",
    "cheaper_but_worse",
    "shorter_more_failures",
    "coverage_down",
    "unpriced_up",
    "drops",
)

_EFFICIENCY_UP = (
    ("value_per_dollar", "value per dollar", 1),
    ("quality_weighted_yield", "quality-weighted yield", 1),
    ("length_controlled", "LCQE", 1),
    ("useful_token_rate", "useful-token rate", 1),
    ("cost_per_success", "cost per successful run", -1),
)


def _alarm(kind: str, scope: str, subject: str, message: str, **details: Any) -> dict[str, Any]:
    assert kind in ALARM_KINDS
    return {"kind": kind, "scope": scope, "subject": subject, "message": message, "details": _clean(details)}


def _clean(details: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, float):
            value = round(value, 6)
        out[key] = value
    return out


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if abs(value) < 0.01 and value != 0:
        return f"{value:.3g}"
    return f"{value:.{digits}f}"


def _gate_text(gate: Gate, delta: float) -> str:
    return (
        f"quality {gate.delta_quality:+.3f} (95% lower bound {gate.delta_quality_lower:+.3f}), "
        f"success rate {gate.delta_success:+.3f} (lower bound {gate.delta_success_lower:+.3f}); margin -{delta:g}"
    )


def needs_gate(current: dict[str, Any], previous: dict[str, Any] | None, settings: Settings) -> bool:
    """Whether any gated alarm could fire: an efficiency figure improved, or cost or length per run fell.

    The bootstrap is the expensive part of a report; it is skipped where its answer cannot matter.
    """
    if not previous:
        return False
    e_cur, e_prev = current["efficiency"], previous.get("efficiency") or {}
    for key, _, direction in _EFFICIENCY_UP:
        a, b = e_prev.get(key), e_cur.get(key)
        if a is not None and b is not None and (b - a) * direction > 1e-12 * max(abs(a), 1.0):
            return True
    h_cur, h_prev = current.get("_hidden", {}), previous.get("_hidden", {})
    c_cur, c_prev = h_cur.get("cost_per_run"), h_prev.get("cost_per_run")
    if c_cur is not None and c_prev is not None and c_cur < c_prev * 0.99:
        return True
    t_cur, t_prev = h_cur.get("output_tokens_per_run"), h_prev.get("output_tokens_per_run")
    return bool(t_cur is not None and t_prev and t_cur <= t_prev * (1 - settings.shorter_by))


def week_over_week(
    scope: str,
    subject: str,
    current: dict[str, Any],
    previous: dict[str, Any] | None,
    gate: Gate | None,
    settings: Settings,
) -> list[dict[str, Any]]:
    """Alarms for one subject, comparing this period's block with the previous period's."""
    alarms: list[dict[str, Any]] = []
    if previous is None:
        previous = {}
    hidden_cur, hidden_prev = current.get("_hidden", {}), previous.get("_hidden", {})
    worse = gate is not None and gate.worse
    q_cur, q_prev = current["quality"]["mean"], (previous.get("quality") or {}).get("mean")

    if worse:
        assert gate is not None
        improved = []
        e_cur, e_prev = current["efficiency"], previous.get("efficiency") or {}
        for key, label, direction in _EFFICIENCY_UP:
            a, b = e_prev.get(key), e_cur.get(key)
            if a is not None and b is not None and (b - a) * direction > 1e-12 * max(abs(a), 1.0):
                improved.append((key, label, a, b))
        if improved:
            changes = ", ".join(f"{label} {_fmt(a, 4)} → {_fmt(b, 4)}" for _, label, a, b in improved)
            alarms.append(
                _alarm(
                    "quality_down_efficiency_up",
                    scope,
                    subject,
                    f"{changes}, but mean quality fell {_fmt(q_prev, 2)} → {_fmt(q_cur, 2)} and is not non-inferior "
                    f"({_gate_text(gate, settings.delta)}): not a win.",
                    improved=[key for key, *_ in improved],
                    gate=gate.to_json(),
                )
            )
        c_cur, c_prev = hidden_cur.get("cost_per_run"), hidden_prev.get("cost_per_run")
        if c_cur is not None and c_prev is not None and c_cur < c_prev * 0.99:
            alarms.append(
                _alarm(
                    "cheaper_but_worse",
                    scope,
                    subject,
                    f"cost per run fell ${_fmt(c_prev, 4)} → ${_fmt(c_cur, 4)}, but quality is worse: mean "
                    f"{_fmt(q_prev, 2)} → {_fmt(q_cur, 2)} ({_gate_text(gate, settings.delta)}).",
                    cost_per_run_previous=c_prev,
                    cost_per_run=c_cur,
                    gate=gate.to_json(),
                )
            )

    t_cur, t_prev = hidden_cur.get("output_tokens_per_run"), hidden_prev.get("output_tokens_per_run")
    if t_cur is not None and t_prev and t_cur <= t_prev * (1 - settings.shorter_by):
        reasons = []
        if (
            gate is not None
            and gate.delta_success is not None
            and gate.delta_success < -settings.delta
            and gate.delta_success_upper is not None
            and gate.delta_success_upper < 0
        ):
            reasons.append(
                f"success rate fell {_fmt(previous['quality'].get('success_rate'), 2)} → "
                f"{_fmt(current['quality']['success_rate'], 2)} (95% bounds {gate.delta_success_lower:+.3f} to {gate.delta_success_upper:+.3f})"
            )
        runs_cur, runs_prev = current.get("runs") or 0, previous.get("runs") or 0
        if runs_cur >= settings.min_runs and runs_prev >= settings.min_runs:
            f_cur = current["quality"]["failed_runs"] / runs_cur
            f_prev = (previous.get("quality") or {}).get("failed_runs", 0) / runs_prev
            if f_cur - f_prev > settings.delta:
                reasons.append(f"failed runs {f_prev:.1%} → {f_cur:.1%}")
        if reasons:
            alarms.append(
                _alarm(
                    "shorter_more_failures",
                    scope,
                    subject,
                    f"output tokens per run fell {t_prev:,.0f} → {t_cur:,.0f} while " + " and ".join(reasons) + ".",
                    output_tokens_per_run_previous=t_prev,
                    output_tokens_per_run=t_cur,
                )
            )

    if scope in ("total", "function") and (previous.get("runs") or 0) >= settings.min_runs:
        drops = []
        for label, a, b in (
            ("quality coverage", (previous.get("quality") or {}).get("coverage"), current["quality"]["coverage"]),
            ("efficiency coverage", (previous.get("efficiency") or {}).get("coverage"), current["efficiency"]["coverage"]),
            ("unused-coverage", previous.get("unused_coverage"), current.get("unused_coverage")),
        ):
            if a is not None and b is not None and a - b >= settings.coverage_drop:
                drops.append((label, a, b))
        if drops:
            alarms.append(
                _alarm(
                    "coverage_down",
                    scope,
                    subject,
                    "; ".join(f"{label} fell {a:.0%} → {b:.0%}" for label, a, b in drops)
                    + ": fewer runs can be judged, so the figures cover less of the traffic.",
                    coverage=[{"figure": label, "previous": a, "current": b} for label, a, b in drops],
                )
            )

    if scope in ("total", "model"):
        calls_cur, calls_prev = current.get("calls") or 0, previous.get("calls") or 0
        share_cur = current["unpriced_calls"] / calls_cur if calls_cur else None
        share_prev = previous.get("unpriced_calls", 0) / calls_prev if calls_prev else 0.0
        if share_cur is not None and current["unpriced_calls"] > 0 and share_cur - share_prev >= settings.unpriced_rise:
            alarms.append(
                _alarm(
                    "unpriced_up",
                    scope,
                    subject,
                    f"{current['unpriced_calls']:,} call{'s' if current['unpriced_calls'] != 1 else ''} ({share_cur:.1%}) {'have' if current['unpriced_calls'] != 1 else 'has'} no price, up from {share_prev:.1%}: "
                    "cost and every per-dollar figure leave them out (add a price override).",
                    unpriced_calls=current["unpriced_calls"],
                    share=share_cur,
                    share_previous=share_prev,
                )
            )
    return alarms


def model_alarms(table: dict[str, Any]) -> list[dict[str, Any]]:
    """``cheaper_but_worse`` for each model the value table found cheaper than the reference but worse."""
    reference = table.get("reference")
    if not reference:
        return []
    ref_name = f"{reference['provider']}/{reference['model']}"
    alarms = []
    for row in table.get("rows", []):
        if row.get("verdict") != "cheaper_but_worse":
            continue
        name = f"{row['provider']}/{row['model']}"
        gate = row.get("gate") or {}
        alarms.append(
            _alarm(
                "cheaper_but_worse",
                "model",
                f"{name} vs {ref_name}",
                f"{name} costs less per run than {ref_name} (${_fmt(row.get('cost_per_run'), 4)} vs "
                f"${_fmt(reference.get('cost_per_run'), 4)}) but its quality is worse on the same functions "
                f"(mean {_fmt(row['quality']['mean'], 2)} vs {_fmt(reference.get('quality_mean'), 2)}; quality change lower bound "
                f"{_fmt(gate.get('delta_quality_lower'))}): its higher value per dollar is not a win.",
                gate=gate,
            )
        )
    return alarms


def drops_alarm(
    dropped: int | None, *, previous: int | None = None, by_reason: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """``drops`` whenever the period has dropped records; with the previous period's count and
    the counts by reason when they come from the database (``wasteaudit_drops``)."""
    if not dropped or dropped <= 0:
        return []
    details: dict[str, Any] = {"dropped_records": dropped}
    if previous is not None:
        details["previous_dropped_records"] = previous
    if by_reason:
        details["by_reason"] = dict(by_reason)
    before = "" if previous is None else f" (previous period: {previous:,})"
    return [
        _alarm(
            "drops",
            "total",
            "writer",
            f"the writer dropped {dropped:,} records{before}: every figure undercounts.",
            **details,
        )
    ]


_SCOPE_ORDER = {"total": 0, "function": 1, "model": 2}


def sort_alarms(alarms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(alarms, key=lambda a: (ALARM_KINDS.index(a["kind"]), _SCOPE_ORDER[a["scope"]], a["subject"]))
