"""The classic gaming case (waste-methods.md §2.3), end to end through the database and the report.

A: good but wordy — 400 output tokens, 100 of them confirmed waste, quality 0.80 (success 85%).
G: short and vague — 80 output tokens, no waste, quality 0.35 (success 20%).
Cost is proportional to output tokens (both models: $10 per million output tokens, input free).

Naive ratios prefer G (quality per dollar 437.5 vs 200; ungated cost per success $0.0040 vs
$0.0047). Every headline figure of the report must prefer A, and a team that switches its
function from A to G must get alarms.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from builders import Dataset, monday

from wasteaudit.report import build_report

W46, W47 = monday("2026-W46"), monday("2026-W47")
RUNS = 60  # per model and week; multiples of 20 give the exact rates below


def _quality_a(i: int) -> float:
    # 17 in 20 runs succeed at 0.85, 3 fail at 0.5167: mean 0.80, success rate 0.85.
    return 0.85 if i % 20 < 17 else (0.80 * 20 - 0.85 * 17) / 3


def _quality_g(i: int) -> float:
    # 4 in 20 runs succeed at 0.75, 16 fail at 0.25: mean 0.35, success rate 0.20.
    return 0.75 if i % 20 < 4 else 0.25


def _a(ds: Dataset, function: str, at: Any, i: int) -> None:
    ds.run(function, at=at, quality=_quality_a(i), model="model-good", input_tokens=300, output_tokens=400,
           waste=(("redundant", "repetition", 60), ("redundant", "prompt_echo", 40)))


def _g(ds: Dataset, function: str, at: Any, i: int) -> None:
    ds.run(function, at=at, quality=_quality_g(i), model="model-vague", input_tokens=300, output_tokens=80)


@pytest.fixture(scope="module")
def url(backend_url: str) -> str:
    ds = Dataset()
    for i in range(RUNS):
        # Week 47, function "answer": both models serve the same traffic (an A/B test).
        _a(ds, "answer", W47 + timedelta(minutes=97 * i), i)
        _g(ds, "answer", W47 + timedelta(minutes=97 * i + 30), i)
        # Function "support" switched from A (week 46) to G (week 47).
        _a(ds, "support", W46 + timedelta(minutes=97 * i + 10), i)
        _g(ds, "support", W47 + timedelta(minutes=97 * i + 40), i)
    ds.write(backend_url)
    return backend_url


@pytest.fixture(scope="module")
def report(url: str) -> dict[str, Any]:
    return build_report(url, week="2026-W47", by="model")


def _ab_rows(report: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    rows = {r["model"]: r for r in report["value_per_dollar_by_model"]["rows"]}
    return rows["model-good"], rows["model-vague"]


def test_naive_ratios_would_pick_the_vague_model(url: str) -> None:
    # The A/B test alone (function "answer"): the ungated ratios are gamed, as in the reference table.
    report = build_report(url, week="2026-W47", by="model")
    answer = [r for r in report["by_function"] if r["name"] == "answer"][0]
    assert answer["runs"] == 2 * RUNS
    a, g = _ab_rows(report)
    assert g["efficiency"]["value_per_dollar"] > a["efficiency"]["value_per_dollar"]  # ungated: G "wins"
    assert g["cost_per_run"] < a["cost_per_run"]


def test_every_headline_figure_ranks_the_good_model_first(report: dict[str, Any]) -> None:
    table = report["value_per_dollar_by_model"]
    a, g = _ab_rows(report)
    assert table["reference"]["model"] == "model-good"
    assert a["verdict"] == "reference" and g["verdict"] == "cheaper_but_worse"
    assert g["gate"]["non_inferior"] is False and g["gate"]["delta_quality"] < -0.4
    # Value per dollar (gated) and cost per successful run (gated by the success rate): G is unranked.
    assert a["ranks"]["value_per_dollar"] == 1 and g["ranks"]["value_per_dollar"] is None
    assert a["ranks"]["cost_per_success"] == 1 and g["ranks"]["cost_per_success"] is None
    # QUY and LCQE are capped by quality, so they rank A first without a gate.
    assert a["ranks"]["quality_weighted_yield"] == 1 and g["ranks"]["quality_weighted_yield"] == 2
    assert a["ranks"]["length_controlled"] == 1 and g["ranks"]["length_controlled"] == 2
    assert table["rows"][0]["model"] == "model-good"
    # The reference numbers of waste-methods.md §2.3.
    assert a["efficiency"]["quality_weighted_yield"] == pytest.approx(0.80 * 300 / 400)
    assert g["efficiency"]["quality_weighted_yield"] == pytest.approx(0.35)
    assert a["quality"]["success_rate"] == pytest.approx(0.85) and g["quality"]["success_rate"] == pytest.approx(0.20)
    assert a["efficiency"]["length_controlled"] > 0.69 > 0.35 == pytest.approx(g["efficiency"]["length_controlled"])


def test_a_model_comparison_alarm_says_cheaper_but_worse(report: dict[str, Any]) -> None:
    alarms = [a for a in report["alarms"] if a["scope"] == "model" and a["kind"] == "cheaper_but_worse"]
    assert [a["subject"] for a in alarms] == ["openai/model-vague vs openai/model-good"]


def test_switching_to_the_vague_model_raises_alarms(report: dict[str, Any]) -> None:
    support = {a["kind"] for a in report["alarms"] if a["scope"] == "function" and a["subject"] == "support"}
    assert {"quality_down_efficiency_up", "cheaper_but_worse", "shorter_more_failures"} <= support
    message = next(a["message"] for a in report["alarms"] if a["subject"] == "support" and a["kind"] == "quality_down_efficiency_up")
    assert "value per dollar" in message and "not a win" in message
    # The A/B-tested function has no previous week to compare with: no week-over-week alarm.
    assert not [a for a in report["alarms"] if a["subject"] == "answer" and a["kind"] != "coverage_down"]
