"""Units of the report: periods, a run's quality, the efficiency formulas, the bootstrap gate."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wasteaudit.exceptions import ConfigError
from wasteaudit.report.bootstrap import noninferiority
from wasteaudit.report.efficiency import RunTable, Settings
from wasteaudit.report.metrics import RunChunk
from wasteaudit.report.period import parse_week, resolve_period
from wasteaudit.report.quality import run_quality

UTC = timezone.utc


# --- periods ---------------------------------------------------------------------------------------


def test_iso_week_is_monday_to_monday_utc_half_open() -> None:
    period = parse_week("2026-W47")
    assert (period.start, period.end, period.label) == (
        datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC), "2026-W47",
    )
    assert period.previous().label == "2026-W46"
    assert period.previous().end == period.start
    # Week 1 of 2027 starts in 2027-01-04; 2026 has 53 ISO weeks.
    assert parse_week("2026-W53").start == datetime(2026, 12, 28, tzinfo=UTC)
    assert parse_week("2027-W01").previous().label == "2026-W53"


def test_default_is_the_last_full_iso_week_before_now() -> None:
    wednesday = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)
    assert resolve_period(now=wednesday).label == "2026-W47"
    monday_midnight = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
    assert resolve_period(now=monday_midnight).label == "2026-W47"
    sunday_late = datetime(2026, 11, 22, 23, 59, tzinfo=UTC)
    assert resolve_period(now=sunday_late).label == "2026-W46"


def test_since_until_ranges_and_errors() -> None:
    period = resolve_period(since="2026-11-01", until="2026-11-04T12:00:00+02:00")
    assert period.start == datetime(2026, 11, 1, tzinfo=UTC)
    assert period.end == datetime(2026, 11, 4, 10, tzinfo=UTC)
    assert period.previous().end == period.start and period.previous().length == period.length
    assert resolve_period(since="2026-11-16", until="2026-11-23").label == "2026-W47"
    assert resolve_period(since="2026-11-20", now=datetime(2026, 11, 21, tzinfo=UTC)).end == datetime(2026, 11, 21, tzinfo=UTC)
    for bad in (dict(week="2026-47"), dict(week="2026-W54"), dict(since="yesterday"), dict(since="2026-11-05", until="2026-11-01"),
                dict(week="2026-W47", since="2026-11-01")):
        with pytest.raises(ConfigError):
            resolve_period(**bad)


# --- a run's quality --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("ok", None, 0.8, 0.5, None), 0.8),  # the score named quality wins
        (("ok", None, None, 0.6, None), 0.6),  # else the mean of all scores
        (("ok", None, None, None, None), None),  # no signal: unknown, not 0
        (("failed", None, 0.9, 0.9, None), 0.0),  # raised
        (("ok", False, 0.9, 0.9, None), 0.0),  # validation failed (run row)
        (("ok", None, 0.9, 0.9, 0.0), 0.0),  # validation failed (score arrived before the run row)
        (("ok", True, None, 1.0, 1.0), 1.0),
        (("running", None, 1.7, None, None), 1.0),  # clamped
    ],
)
def test_run_quality_rule(args: tuple, expected: float | None) -> None:
    assert run_quality(*args) == expected


# --- efficiency formulas -----------------------------------------------------------------------------


def _chunk(rows: list[dict]) -> RunChunk:
    def col(name: str, default=None) -> list:
        return [r.get(name, default) for r in rows]

    return RunChunk(
        period=[1] * len(rows),
        primary=[True] * len(rows),
        cell_output_tokens=col("t"),
        observable=[True] * len(rows),
        run_id=[str(i) for i in range(len(rows))],
        function=col("function", "f"),
        model=col("model", "m"),
        provider=col("provider", "p"),
        output_tokens=col("t"),
        cost_usd=col("c"),
        waste_tokens=col("w"),
        status=col("status", "ok"),
        validation=col("validation"),
        quality_score=col("q"),
        mean_score=col("mean"),
        validation_score=col("vs"),
        tags=None,
    )


def test_formulas_on_the_reference_gaming_case() -> None:
    # waste-methods.md §2.3: A 400 tokens (100 waste), q 0.80, SR 0.85; G 80 tokens, q 0.35, SR 0.20.
    rows = []
    for i in range(20):
        rows.append({"function": "answer", "model": "A", "t": 400, "c": 400e-5, "w": 100, "q": 0.85 if i < 17 else (0.80 * 20 - 0.85 * 17) / 3})
        rows.append({"function": "answer", "model": "G", "t": 80, "c": 80e-5, "w": 0, "q": 0.75 if i < 4 else 0.25})
    table = RunTable(Settings()).ingest([_chunk(rows)])
    figs = table.figures("model")
    a, g = figs[("p", "A")], figs[("p", "G")]
    assert a["quality"]["mean"] == pytest.approx(0.80) and a["quality"]["success_rate"] == pytest.approx(0.85)
    assert g["quality"]["mean"] == pytest.approx(0.35) and g["quality"]["success_rate"] == pytest.approx(0.20)
    # QUY = Σ q·U / Σ T
    assert a["efficiency"]["quality_weighted_yield"] == pytest.approx(0.80 * 300 / 400)
    assert g["efficiency"]["quality_weighted_yield"] == pytest.approx(0.35)
    # value per dollar = Σq/Σ$ (ungated, G is higher: that is why it must be gated)
    assert a["efficiency"]["value_per_dollar"] == pytest.approx(0.80 / 400e-5)
    assert g["efficiency"]["value_per_dollar"] == pytest.approx(0.35 / 80e-5)
    # cost per successful run, and (ungated) G looks cheaper per success
    assert a["efficiency"]["cost_per_success"] == pytest.approx(400e-5 / 0.85)
    assert g["efficiency"]["cost_per_success"] == pytest.approx(80e-5 / 0.20)
    # LCQE: L* = median output of the 21 successful runs of "answer" (17 × 400, 4 × 80) = 400
    assert table.lstar()[0] == 400
    assert a["efficiency"]["length_controlled"] == pytest.approx(0.80)
    assert g["efficiency"]["length_controlled"] == pytest.approx(0.35)


def test_lcqe_is_null_below_twenty_successful_runs_and_caps_short_answers() -> None:
    rows = [{"function": "f", "t": 100, "c": 1.0, "w": 0, "q": 1.0} for _ in range(19)]
    table = RunTable(Settings()).ingest([_chunk(rows)])
    assert table.figures("total")["total"]["efficiency"]["length_controlled"] is None
    rows.append({"function": "f", "t": 400, "c": 1.0, "w": 0, "q": 0.8})  # L* stays 100; this run is 4x too long
    rows.append({"function": "f", "t": 100, "c": 1.0, "w": 0, "q": 1.0})
    table = RunTable(Settings()).ingest([_chunk(rows)])
    assert table.lstar()[0] == 100
    expected = (20 * 1.0 + 0.8 * (100 / 400) ** 0.5) / 21
    assert table.figures("total")["total"]["efficiency"]["length_controlled"] == pytest.approx(expected)


def test_unknown_cost_quality_or_scoring_leave_runs_out_of_the_figures_that_need_them() -> None:
    rows = [
        {"t": 100, "c": 1.0, "w": 10, "q": 0.5},
        {"t": 100, "c": None, "w": 0, "q": 1.0},  # unpriced: quality yes, efficiency no
        {"t": 100, "c": 1.0, "w": None, "q": 1.0},  # not fully scored: not in QUY
        {"t": 100, "c": 1.0, "w": 0, "q": None},  # no quality
        {"t": 100, "c": 1.0, "w": 0, "status": "failed"},  # raised: q = 0
    ]
    total = RunTable(Settings()).ingest([_chunk(rows)]).figures("total")["total"]
    assert total["runs"] == 5
    assert total["quality"] == {"mean": pytest.approx(2.5 / 4), "coverage": 0.8, "success_rate": 0.5, "runs": 4, "failed_runs": 1}
    e = total["efficiency"]
    assert e["runs"] == 3 and e["coverage"] == pytest.approx(0.6)
    assert e["value_per_dollar"] == pytest.approx((0.5 + 1.0 + 0.0) / 3.0)
    assert e["quality_weighted_yield"] == pytest.approx((0.5 * 90 + 0.0) / 200)
    assert e["cost_per_success"] == pytest.approx(3.0 / 1)


def test_empty_groups_give_null_never_zero() -> None:
    total = RunTable(Settings()).ingest([_chunk([{"t": 0, "c": 0.0, "w": 0, "q": None}])]).figures("total")["total"]
    assert total["quality"]["mean"] is None and total["quality"]["success_rate"] is None
    assert all(total["efficiency"][k] is None for k in ("value_per_dollar", "quality_weighted_yield", "cost_per_success", "length_controlled"))


def test_past_max_runs_sums_stay_exact_and_a_sample_is_kept() -> None:
    rng = np.random.default_rng(1)
    rows = [{"function": f"f{i % 3}", "t": int(rng.integers(10, 500)), "c": float(rng.random()), "w": 0, "q": float(rng.random())} for i in range(3000)]
    exact = RunTable(Settings()).ingest([_chunk(rows[i : i + 500]) for i in range(0, 3000, 500)])
    small = RunTable(Settings(max_runs=400)).ingest([_chunk(rows[i : i + 500]) for i in range(0, 3000, 500)])
    assert small.sampled and not exact.sampled
    assert small.store.size == 400
    a, b = exact.figures("function"), small.figures("function")
    for key in a:
        for figure in ("value_per_dollar", "quality_weighted_yield", "cost_per_success"):
            assert b[key]["efficiency"][figure] == pytest.approx(a[key]["efficiency"][figure])
        assert b[key]["quality"] == a[key]["quality"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2000), st.floats(0, 1), st.integers(0, 2000), st.floats(1e-6, 1.0)), min_size=1, max_size=60))
def test_quality_weighted_figures_never_exceed_quality(runs: list[tuple[int, float, int, float]]) -> None:
    rows = [{"t": t, "q": q, "w": min(w, t), "c": c} for t, q, w, c in runs]
    total = RunTable(Settings(lcqe_min_successes=1)).ingest([_chunk(rows)]).figures("total")["total"]
    q_max = max(q for _, q, _, _ in runs)
    e = total["efficiency"]
    assert e["quality_weighted_yield"] <= q_max + 1e-12
    assert e["quality_weighted_yield"] <= total["quality"]["mean"] * 1.0 + q_max  # sanity
    if e["length_controlled"] is not None:
        assert e["length_controlled"] <= total["quality"]["mean"] + 1e-12


# --- bootstrap gate ---------------------------------------------------------------------------------


def test_gate_is_deterministic_and_separates_equal_from_worse() -> None:
    rng = np.random.default_rng(7)
    a = rng.uniform(0.72, 1.0, 400)  # every run a success: the success-rate bound is exactly 0
    same = rng.uniform(0.72, 1.0, 400)
    worse = rng.uniform(0.5, 0.9, 400)
    strata = np.array(["f"] * 400)
    g1 = noninferiority(a, strata, same, strata, key="x")
    g2 = noninferiority(a, strata, same, strata, key="x")
    assert g1.to_json() == g2.to_json()
    assert g1.non_inferior is True
    bad = noninferiority(a, strata, worse, strata, key="x")
    assert bad.non_inferior is False and bad.delta_quality_lower < -0.02
    assert bad.worse is True and g1.worse is False


def test_a_noisy_success_rate_is_not_shown_non_inferior_but_is_not_called_worse() -> None:
    # Same distribution straddling tau: with 300 runs a side the success-rate bound is about -0.06.
    rng = np.random.default_rng(3)
    a = rng.uniform(0.5, 1.0, 300)
    b = a[::-1].copy()  # the same runs: every point estimate is exactly 0
    strata = np.array(["f"] * 300)
    gate = noninferiority(a, strata, b, strata, key="noisy")
    assert gate.non_inferior is False and gate.worse is False


def test_gate_is_stratified_so_a_shift_in_the_mix_is_not_a_quality_change() -> None:
    # Both sides: easy function at 0.9, hard one at 0.5; B simply has more hard traffic.
    a = np.array([0.9] * 80 + [0.5] * 20)
    sa = np.array(["easy"] * 80 + ["hard"] * 20)
    b = np.array([0.9] * 20 + [0.5] * 80)
    sb = np.array(["easy"] * 20 + ["hard"] * 80)
    gate = noninferiority(a, sa, b, sb, key="mix")
    assert gate.non_inferior is True and gate.delta_quality == pytest.approx(0.0)
    assert sorted(gate.strata) == ["easy", "hard"]


def test_gate_is_unknown_without_enough_runs_or_shared_functions() -> None:
    gate = noninferiority(np.array([0.9] * 5), np.array(["f"] * 5), np.array([0.1] * 5), np.array(["f"] * 5), key="few")
    assert gate.non_inferior is None and "too few" in gate.reason
    gate = noninferiority(np.array([0.9] * 50), np.array(["f"] * 50), np.array([0.1] * 50), np.array(["g"] * 50), key="apart")
    assert gate.non_inferior is None and gate.strata == []


def test_the_normal_limit_for_large_sides_matches_plain_resampling(monkeypatch: pytest.MonkeyPatch) -> None:
    from wasteaudit.report import bootstrap

    rng = np.random.default_rng(11)
    a = np.clip(rng.normal(0.75, 0.2, 3000), 0, 1)
    b = np.clip(rng.normal(0.74, 0.2, 2500), 0, 1)
    sa, sb = np.array(["f", "g"] * 1500), np.array(["f", "g"] * 1250)
    fast = noninferiority(a, sa, b, sb, key="k")
    monkeypatch.setattr(bootstrap, "NORMAL_FROM", 10**9)
    exact = noninferiority(a, sa, b, sb, key="k")
    assert fast.delta_quality == exact.delta_quality
    assert fast.delta_quality_lower == pytest.approx(exact.delta_quality_lower, abs=0.002)
    assert fast.delta_success_lower == pytest.approx(exact.delta_success_lower, abs=0.004)


def test_functions_as_integer_codes_in_name_order_give_the_same_gate_as_names() -> None:
    # The report passes strata as codes (name order) with their names: same strata, same draws.
    rng = np.random.default_rng(5)
    names = ["zeta", "alpha", "mid", "beta"]
    a_names = rng.choice(names, 900)
    b_names = rng.choice(names[:3], 700)  # "beta" only on one side: not a shared stratum
    a = np.clip(rng.normal(0.75, 0.2, 900), 0, 1)
    b = np.clip(rng.normal(0.70, 0.2, 700), 0, 1)
    order = sorted(names)
    code = {name: i for i, name in enumerate(order)}
    by_name = noninferiority(a, a_names, b, b_names, key="codes")
    by_code = noninferiority(
        a, np.array([code[n] for n in a_names]), b, np.array([code[n] for n in b_names]), key="codes", strata_names=order
    )
    assert by_code.to_json() == by_name.to_json()
    assert by_name.strata == ["alpha", "mid", "zeta"] and by_name.delta_quality_lower is not None
