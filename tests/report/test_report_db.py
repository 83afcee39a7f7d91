"""The report on a realistic week, on SQLite and PostgreSQL: figures, reconciliation, contract, CLI."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import Any

import jsonschema
import pytest
import sqlalchemy as sa
from builders import PRICES, Dataset, monday
from oracle import figures as oracle_figures

from wasteaudit.exceptions import StorageError
from wasteaudit.report import build_report, render, schema
from wasteaudit.report import metrics
from wasteaudit.report.cli import add_parser, run
from wasteaudit.storage.engine import create_engine_for
from wasteaudit.storage.models import FindingRow

W47 = monday("2026-W47")
W46 = monday("2026-W46")
W48 = monday("2026-W48")
NOW = W48 + timedelta(days=2, hours=9)  # Wednesday of W48: the default report is W47
SYSTEM = [{"type": "text", "text": "You extract invoices. " * 400}]  # ~8,800 characters: a cacheable prefix


def build_dataset() -> Dataset:
    ds = Dataset()
    # summarize: 30 runs, one call each; 20 scored 0.9, 10 without a quality score; 10 return nothing
    # but marked values as used (use is still observable).
    for i in range(30):
        at = W47 + timedelta(hours=5 * i + 1)
        ds.run(
            "summarize",
            at=at,
            quality=0.9 if i < 20 else None,
            tags={"team": "cx"},
            return_value=None if i >= 20 else "summary",
            used_values=["summary"] if i >= 20 else None,
            model="model-mid",
            input_tokens=1000,
            output_tokens=200,
            waste=(("redundant", "repetition", 20),),
            possible=(("redundant", "filler", 10),),
            stale=(("failed", "truncated", 200),) if i == 0 else (),  # an older scorer version: ignored
        )
        ds.run("summarize", at=W46 + timedelta(hours=5 * i + 1), quality=0.9, model="model-mid", input_tokens=1000, output_tokens=200,
               waste=(("redundant", "repetition", 20),), tags={"team": "cx"})
    # extract: 12 runs on model-big, an invalid first answer and a re-ask; validators decide quality.
    for i in range(12):
        at = W47 + timedelta(hours=13 * i + 2)
        ds.run(
            "extract",
            at=at,
            validation=i % 3 != 0,  # 4 rejected -> q = 0, 8 accepted -> q = 1
            tags={"team": "data", "tier": "gold"},
            model="model-big",
            provider="anthropic",
            calls=[
                {"model": "model-big", "provider": "anthropic", "input_tokens": 2000, "cached": 0, "output_tokens": 300, "attempts": 2,
                 "waste": (("failed", "invalid_output", 300),), "system": SYSTEM},
                {"model": "model-big", "provider": "anthropic", "input_tokens": 2000, "cached": 500, "output_tokens": 150, "system": SYSTEM},
            ],
        )
    # chat: raised (q = 0 despite a good score), not scored by the scorer yet, no observable use.
    for i in range(5):
        ds.run("chat", at=W47 + timedelta(days=2, hours=i), status="failed", quality=0.9, return_value=None, model="model-mid",
               output_tokens=100, scored=False)
    # experimental: a model without a price.
    for i in range(2):
        ds.run("experimental", at=W47 + timedelta(days=3, hours=i), quality=0.5, model="mystery-model", output_tokens=100)
    # batch: one run with 300 calls (the report must still return one row for it).
    ds.run("batch", at=W47 + timedelta(days=4), quality=0.8, calls=[{"model": "model-mid", "output_tokens": 10} for _ in range(300)])
    # run-less calls, one exactly at the period's start (in) and one exactly at its end (out).
    ds.call(at=W47, model="model-mid", output_tokens=50)
    for i in range(3):
        ds.call(at=W47 + timedelta(days=5, hours=i), model="model-mid", output_tokens=50)
    ds.call(at=W48, model="model-mid", output_tokens=5000)
    # The LLM judge's own calls: kept out of every figure.
    for i in range(4):
        ds.call(at=W47 + timedelta(days=1, hours=i), function="wasteaudit.judge", model="model-mid", output_tokens=60,
                waste=(("redundant", "filler", 60),))
    return ds


DATASET = build_dataset()


@pytest.fixture(scope="module")
def url(backend_url: str) -> str:
    DATASET.write(backend_url)
    return backend_url


@pytest.fixture(scope="module")
def report(url: str) -> dict[str, Any]:
    return build_report(url, now=NOW, price_overrides=PRICES)


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in report["by_function"]}


# --- figures -----------------------------------------------------------------------------------------


def test_default_period_is_last_full_iso_week(report: dict[str, Any]) -> None:
    assert report["period"] == {"start": "2026-11-16T00:00:00Z", "end": "2026-11-23T00:00:00Z", "label": "2026-W47"}
    assert report["previous_period"]["label"] == "2026-W46"
    assert report["schema"] == "wasteaudit.report/v1"


def test_totals_and_every_function_match_a_naive_second_implementation(report: dict[str, Any]) -> None:
    expected = oracle_figures(DATASET, W47, W48)
    rows = _rows(report)
    assert set(rows) == set(expected["by_function"])
    for name, exp in [*expected["by_function"].items(), ("TOTAL", expected["totals"])]:
        got = report["totals"] if name == "TOTAL" else rows[name]
        assert got["calls"] == exp["calls"], name
        assert got["attempts"] == exp["attempts"], name
        assert got["output_tokens"] == exp["output_tokens"], name
        assert got["input_tokens"] == exp["input_tokens"], name
        assert got["unpriced_calls"] == exp.get("unpriced_calls", 0), name
        if exp["calls"] == exp.get("unpriced_calls", 0):
            assert got["cost_usd"] is None, name
        else:
            assert got["cost_usd"] == pytest.approx(exp["cost_usd"], rel=1e-9), name
        assert got["waste"]["tokens"] == exp.get("waste", 0), name
        assert got["waste"]["possible"]["tokens"] == exp.get("possible", 0), name
        assert got["runs"] == exp["runs"], name
        for key, path in (
            ("quality_mean", ("quality", "mean")),
            ("coverage", ("quality", "coverage")),
            ("success_rate", ("quality", "success_rate")),
            ("value_per_dollar", ("efficiency", "value_per_dollar")),
            ("quality_weighted_yield", ("efficiency", "quality_weighted_yield")),
            ("cost_per_success", ("efficiency", "cost_per_success")),
            ("length_controlled", ("efficiency", "length_controlled")),
        ):
            value = got[path[0]][path[1]]
            if exp[key] is None:
                assert value is None, (name, key)
            else:
                assert value == pytest.approx(exp[key], rel=1e-9), (name, key)


def test_numbers_reconcile(report: dict[str, Any]) -> None:
    totals = report["totals"]
    additive = ("runs", "calls", "attempts", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens",
                "unpriced_calls", "partially_priced_calls", "scored_calls")
    for breakdown in ("by_function", "by_model"):
        rows = report[breakdown]
        for key in additive:
            assert sum(r[key] or 0 for r in rows) == (totals[key] or 0), (breakdown, key)
        assert sum(r["cost_usd"] or 0 for r in rows) == pytest.approx(totals["cost_usd"], rel=1e-9)
        assert sum(r["waste"]["tokens"] for r in rows) == totals["waste"]["tokens"]
        assert sum(r["waste"]["possible"]["tokens"] for r in rows) == totals["waste"]["possible"]["tokens"]
        assert sum(r["waste"]["cost_usd"] or 0 for r in rows) == pytest.approx(totals["waste"]["cost_usd"], rel=1e-9)
        assert sum(r["quality"]["runs"] for r in rows) == totals["quality"]["runs"]
        assert sum(r["efficiency"]["runs"] for r in rows) == totals["efficiency"]["runs"]
    for block in [totals, report["previous"], *report["by_function"], *report["by_model"]]:
        waste = block["waste"]
        assert waste["tokens"] <= (block["output_tokens"] or 0)
        assert waste["tokens"] + waste["possible"]["tokens"] <= (block["output_tokens"] or 0)
        assert sum(p["tokens"] for p in waste["by_kind"].values()) == waste["tokens"]
        assert sum(p["tokens"] for p in waste["by_subkind"].values()) == waste["tokens"]
        assert sum(p["tokens"] for p in waste["possible"]["by_subkind"].values()) == waste["possible"]["tokens"]
        assert block["scored_calls"] <= block["calls"] <= block["attempts"]
    days = report["daily"]
    assert [d["date"] for d in days] == [(W47 + timedelta(days=i)).date().isoformat() for i in range(7)]
    assert sum(d["calls"] for d in days) == totals["calls"]
    assert sum(sum(d["waste"].values()) for d in days) == totals["waste"]["tokens"]
    assert sum(d["possible_tokens"] for d in days) == totals["waste"]["possible"]["tokens"]


def test_quality_signals_and_coverage(report: dict[str, Any]) -> None:
    rows = _rows(report)
    summarize, extract, chat = rows["summarize"], rows["extract"], rows["chat"]
    assert summarize["quality"] == {"mean": pytest.approx(0.9), "coverage": pytest.approx(20 / 30), "success_rate": 1.0, "runs": 20, "failed_runs": 0}
    # Validators: 8 accepted (q = 1), 4 rejected (q = 0).
    assert extract["quality"]["mean"] == pytest.approx(8 / 12) and extract["quality"]["failed_runs"] == 4
    # A run that raised has q = 0 whatever its scores say.
    assert chat["quality"]["mean"] == 0.0 and chat["quality"]["failed_runs"] == 5
    # Unused coverage: summarize is observable everywhere (return value or marked values), chat nowhere.
    assert summarize["unused_coverage"] == 1.0 and chat["unused_coverage"] == 0.0
    # Run-less calls: a (none) row with calls but no runs and no quality.
    none = rows["(none)"]
    assert (none["runs"], none["calls"], none["quality"]["mean"], none["efficiency"]["value_per_dollar"]) == (0, 4, None, None)
    # Not yet scored: no waste claimed, and no useful-token rate (null, not 100%).
    assert chat["scored_calls"] == 0 and chat["waste"]["tokens"] == 0 and chat["efficiency"]["useful_token_rate"] is None
    assert chat["efficiency"]["quality_weighted_yield"] is None
    # Every attempt counts: extract's first call was retried once.
    assert extract["attempts"] == 36 and extract["calls"] == 24
    assert extract["waste"]["by_subkind"]["invalid_output"] == {"tokens": 3600, "cost_usd": pytest.approx(3600 * 15e-6)}
    assert extract["efficiency"]["useful_token_rate"] == pytest.approx(1 - 3600 / 5400)


def test_judge_calls_stale_findings_and_period_boundaries_are_excluded(report: dict[str, Any]) -> None:
    rows = _rows(report)
    assert "wasteaudit.judge" not in rows
    assert report["judge"] == {"calls": 4, "input_tokens": 800, "output_tokens": 240, "cost_usd": pytest.approx(4 * (200e-6 + 60 * 4e-6))}
    assert all(r["model"] != "wasteaudit.judge" for r in report["by_model"])
    assert report["totals"]["waste"]["by_subkind"]["truncated"]["tokens"] == 0  # the stale finding
    assert report["totals"]["waste"]["by_subkind"]["filler"]["tokens"] == 0  # the judge's
    assert any("judge" in note for note in report["notes"])
    assert rows["(none)"]["output_tokens"] == 200  # the call at the start counts, the one at the end does not


def test_unpriced_calls_are_counted_and_kept_out_of_money_figures(report: dict[str, Any]) -> None:
    exp = _rows(report)["experimental"]
    assert exp["unpriced_calls"] == 2 and exp["cost_usd"] is None
    assert exp["quality"]["mean"] == 0.5 and exp["efficiency"]["value_per_dollar"] is None and exp["efficiency"]["runs"] == 0
    assert exp["efficiency"]["coverage"] == 0.0
    kinds = {(a["kind"], a["scope"], a["subject"]) for a in report["alarms"]}
    assert ("unpriced_up", "model", "openai/mystery-model") in kinds
    # 2 of 365 calls: a 0.5-point rise in the total share, under the 1-point threshold.
    assert ("unpriced_up", "total", "all") not in kinds


def test_by_model_rows_and_value_table(report: dict[str, Any]) -> None:
    models = {(r["provider"], r["model"]): r for r in report["by_model"]}
    assert models[("anthropic", "model-big")]["calls"] == 24 and models[("anthropic", "model-big")]["runs"] == 12
    table = report["value_per_dollar_by_model"]
    ranked = [r for r in table["rows"] if r["rank"] is not None]
    assert all(r["verdict"] in ("reference", "non_inferior") for r in ranked)
    assert table["reference"]["model"] == "model-mid"  # the highest-quality model with enough scored runs


def test_one_row_per_run_never_per_call(url: str) -> None:
    engine = create_engine_for(url)
    try:
        with engine.connect() as conn:
            span = metrics.Span(W46, W47, W48)
            rows = [chunk for chunk in metrics.run_rows(conn, span)]
            batch = [(f, t) for chunk in rows for f, t in zip(chunk.function, chunk.output_tokens) if f == "batch"]
            cube = [r for r in metrics.call_cube(conn, span) if r.key[0] == "batch"]
    finally:
        engine.dispose()
    assert batch == [("batch", 3000)]
    assert len(cube) == 1 and cube[0].calls == 300  # one cell: one day, one function, one model


def test_missed_cache_savings_estimate(report: dict[str, Any]) -> None:
    # extract: 24 calls share an ~2,200-token system prompt; min prompt 2,000 tokens -> prefix 2,000.
    # (24 - 1) x 2,000 - 12 x 500 cached = 40,000 tokens at (5.00 - 0.50) USD/M.
    assert report["missed_cache"]["groups"] == 1 and report["missed_cache"]["tokens"] == 40_000
    assert report["missed_cache_savings_usd"] == pytest.approx(40_000 * 4.5e-6)


def test_json_follows_the_shipped_schema_for_every_breakdown(url: str, report: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())
    for by in ("function", "model", "provider", "tag", "tag:team"):
        data = report if by == "function" else build_report(url, week="2026-W47", by=by, now=NOW, price_overrides=PRICES)
        document = json.loads(render(data, "json"))
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
        assert not errors, [(list(e.path), e.message) for e in errors[:5]]
    # The schema has teeth: a missing or misspelt field fails it.
    broken = json.loads(render(report, "json"))
    del broken["totals"]["efficiency"]["value_per_dollar"]
    broken["by_function"][0]["cost"] = 1
    assert len(list(validator.iter_errors(broken))) >= 2


def test_tag_breakdown(url: str) -> None:
    by_tag = build_report(url, week="2026-W47", by="tag", now=NOW)["by_tag"]
    rows = {r["name"]: r for r in by_tag}
    assert rows["team=cx"]["runs"] == 30 and rows["team=cx"]["calls"] == 30
    assert rows["team=data"]["runs"] == 12 and rows["tier=gold"]["calls"] == 24
    assert rows["(untagged)"]["calls"] == 5 + 2 + 300 + 4
    by_team = {r["value"]: r for r in build_report(url, week="2026-W47", by="tag:team", now=NOW)["by_tag"]}
    assert set(by_team) == {"cx", "data", "(untagged)"}
    assert sum(r["calls"] for r in by_team.values()) == 30 + 24 + 5 + 2 + 300 + 4


def test_dropped_records_are_the_stored_drop_counts_with_a_note_unless_the_caller_knows_them(
    url: str, report: dict[str, Any]
) -> None:
    # The dataset's writer dropped nothing: a real 0 read from wasteaudit_drops (tests/report/test_drops.py
    # has drops), with a note on what the count covers; a database without the table says null.
    assert report["dropped_records"] == 0 and type(report["dropped_records"]) is int
    notes = [note for note in report["notes"] if note.startswith("dropped_records:")]
    assert len(notes) == 1 and "never reached this database" in notes[0] and "Previous period: 0." in notes[0]
    assert "drops" not in [a["kind"] for a in report["alarms"]]
    assert "records dropped by the writer: 0" in render(report, "text")
    jsonschema.validate(report, schema())
    known = build_report(url, now=NOW, price_overrides=PRICES, dropped_records=3)
    assert known["dropped_records"] == 3
    assert [a["kind"] for a in known["alarms"]].count("drops") == 1
    assert not any(note.startswith("dropped_records:") for note in known["notes"])
    assert "records dropped by the writer: 3" in render(known, "text")
    jsonschema.validate(known, schema())


def test_previous_period_block_and_no_false_alarms(report: dict[str, Any]) -> None:
    previous = report["previous"]
    assert previous["runs"] == 30 and previous["calls"] == 30 and previous["quality"]["mean"] == pytest.approx(0.9)
    summarize_alarms = [a for a in report["alarms"] if a["subject"] == "summarize"]
    # Summarize lost quality coverage (100% -> 67%): that is the only thing to say about it.
    assert [a["kind"] for a in summarize_alarms] == ["coverage_down"]


# --- renderers and CLI ----------------------------------------------------------------------------


def test_text_and_markdown_show_efficiency_beside_quality_and_nulls_as_dashes(report: dict[str, Any]) -> None:
    text = render(report, "text", width=220)
    md = render(report, "md")
    for out in (text, md):
        assert "2026-W47" in out and "value per dollar" in out and "quality coverage" in out
        assert "summarize" in out and "mystery-model" in out
        assert "—" in out  # the nulls
    header = next(line for line in md.splitlines() if line.startswith("| name |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols.index("quality") < cols.index("value/$") and "q cov" in cols


def _args(**kw: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    argv = ["--database-url", kw.pop("database_url"), "report"]
    for key, value in kw.items():
        argv += [f"--{key.replace('_', '-')}", value] if key != "output" else ["-o", value]
    return parser.parse_args(argv)


def test_cli_writes_each_format(url: str, tmp_path: Any, capsys: Any) -> None:
    for fmt in ("json", "md", "html", "text"):
        out = tmp_path / f"report.{fmt}"
        assert run(_args(database_url=url, week="2026-W47", format=fmt, output=str(out))) == 0
        assert out.stat().st_size > 500
    assert json.loads((tmp_path / "report.json").read_text())["period"]["label"] == "2026-W47"
    assert run(_args(database_url=url, week="2026-W47", format="json", by="model")) == 0
    assert json.loads(capsys.readouterr().out)["by"] == "model"
    assert run(_args(database_url=url, week="2026-47")) == 2
    assert run(_args(database_url=url, by="colour")) == 2


def test_stored_findings_of_other_versions_do_not_leak(url: str) -> None:
    engine = create_engine_for(url)
    try:
        with engine.connect() as conn:
            versions = set(conn.execute(sa.select(FindingRow.scorer_version).distinct()).scalars())
    finally:
        engine.dispose()
    assert versions == {1, 3}


# --- the database must exist ---------------------------------------------------------------------------


def test_missing_database_is_an_error_naming_the_path_and_is_not_created(tmp_path: Any, capsys: Any) -> None:
    path = tmp_path / "nowhere" / "audit.db"
    with pytest.raises(StorageError, match=str(path)):
        build_report(f"sqlite:///{path}")
    assert not path.exists() and not path.parent.exists()
    assert run(_args(database_url=f"sqlite:///{path}")) == 1
    assert str(path) in capsys.readouterr().err
    assert not path.exists()


def test_a_database_without_wasteaudit_tables_is_an_error(tmp_path: Any) -> None:
    import sqlite3

    path = tmp_path / "app.db"
    sqlite3.connect(path).execute("create table app (x)").connection.close()
    with pytest.raises(StorageError, match="no wasteaudit tables"):
        build_report(f"sqlite:///{path}")
    assert {r[0] for r in sqlite3.connect(path).execute("select name from sqlite_master")} == {"app"}


def test_opening_a_database_for_a_report_reads_its_revision_without_importing_alembic(url: str) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from wasteaudit.report import open_report_engine\n"
        "from wasteaudit.storage.schema import head_revision\n"
        f"engine = open_report_engine({url!r})\n"
        "assert 'alembic' not in sys.modules, 'alembic imported'\n"
        "from wasteaudit.storage.schema import current_revision\n"
        "assert current_revision(engine) == head_revision()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_both_lookup_strategies_give_the_same_run_rows(url: str) -> None:
    engine = create_engine_for(url)
    try:
        with engine.connect() as conn:
            span = metrics.Span(W46, W47, W48)

            def rows(strategy: str) -> list[tuple]:
                out = []
                for chunk in metrics.run_rows(conn, span, with_tags=True, lookups=strategy):
                    out.extend(zip(*[getattr(chunk, name) for name in metrics.RunChunk.__dataclass_fields__ if name != "tags"]))
                return sorted(out, key=repr)

            assert rows("join") == rows("correlated")
    finally:
        engine.dispose()
