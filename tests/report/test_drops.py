"""``dropped_records``: the drops the writers stored per UTC hour (``wasteaudit_drops``), summed
exactly over the report's period, on SQLite and PostgreSQL; shown by every renderer."""

from __future__ import annotations

import html
from datetime import datetime, timedelta
from typing import Any

import jsonschema
import pytest
import sqlalchemy as sa
from builders import PRICES, Dataset, monday
from storage.conftest import pg_url  # noqa: F401 - fixture reuse

from wasteaudit.report import build_report, render, schema
from wasteaudit.storage import writer as writer_module
from wasteaudit.storage.engine import create_engine_for
from wasteaudit.storage.models import DropRow
from wasteaudit.storage.schema import upgrade
from wasteaudit.storage.writer import Writer

W46, W47, W48 = monday("2026-W46"), monday("2026-W47"), monday("2026-W48")
NOW = W48 + timedelta(days=2)
H = timedelta(hours=1)

#: (hour, reason, records) per writer: hours at and around the periods' edges.
DROPS = [
    [(W47, "queue_full", 5), (W47 + 5 * H, "queue_full", 7), (W48 - H, "db_error", 1), (W48, "queue_full", 1000)],
    [(W47, "queue_full", 3), (W47 + 5 * H, "closed", 2), (W47 - H, "queue_full", 40), (W46, "invalid", 100)],
    [(W47 + 5 * H, "queue_full", 11), (W46 - H, "queue_full", 10_000), (W47 + 2 * 24 * H, "unclean_exit", 6)],
]


def _expected(start: datetime, end: datetime) -> int:
    return sum(n for writer in DROPS for hour, _, n in writer if start <= hour < end)


@pytest.fixture(scope="module")
def url(backend_url: str) -> str:
    ds = Dataset()
    ds.run("summarize", at=W47 + 3 * H, quality=0.9, model="model-mid", output_tokens=100)
    ds.run("summarize", at=W46 + 3 * H, quality=0.9, model="model-mid", output_tokens=100)
    ds.write(backend_url)
    # Each writer counts its drops at its hours and stores them as it does after an outage.
    clock = [0.0]
    patch = pytest.MonkeyPatch()
    patch.setattr(writer_module, "_clock", lambda: clock[0])
    try:
        for drops in DROPS:
            w = Writer(backend_url, queue_size=10)
            w.shutdown(timeout=0)
            w._connect()
            try:
                for hour, reason, records in drops:
                    clock[0] = (hour + timedelta(minutes=59)).timestamp()
                    with w._cond:
                        w._count_drops(reason, records)
                clock[0] = NOW.timestamp()
                w._write_drops()
                assert w._unwritten_drops() == {} and not w._drops_broken
            finally:
                w._engine.dispose()
    finally:
        patch.undo()
    return backend_url


def _report(url: str, **period: Any) -> dict[str, Any]:
    report = build_report(url, now=NOW, price_overrides=PRICES, **period)
    jsonschema.validate(report, schema())
    return report


def _note(report: dict[str, Any]) -> str:
    notes = [n for n in report["notes"] if n.startswith("dropped_records:")]
    assert len(notes) == 1
    return notes[0]


def test_the_week_sums_exactly_the_drops_of_its_hours(url: str) -> None:
    report = _report(url)  # the default: 2026-W47
    assert report["dropped_records"] == _expected(W47, W48) == 5 + 7 + 1 + 3 + 2 + 11 + 6
    (alarm,) = [a for a in report["alarms"] if a["kind"] == "drops"]
    assert alarm["details"] == {
        "dropped_records": 35,
        "previous_dropped_records": 140,
        "by_reason": {"closed": 2, "db_error": 1, "queue_full": 26, "unclean_exit": 6},
    }
    assert _expected(W46, W47) == 140
    note = _note(report)
    assert "Previous period: 140." in note and "never reached this database" in note and "whole UTC hours" not in note

    previous = _report(url, week="2026-W46")
    assert previous["dropped_records"] == 140
    assert _report(url, week="2026-W48")["dropped_records"] == 1000
    assert _report(url, week="2026-W45")["dropped_records"] == 10_000


@pytest.mark.parametrize(
    "since, until",
    [
        (W47 + 5 * H, W47 + 6 * H),  # one hour: three writers' rows add up
        (W47 + H, W48),
        (W47 - H, W47 + H),
        (W47 + 6 * H, W47 + 2 * 24 * H),  # an empty range is 0, not null
    ],
)
def test_ranges_on_whole_hours_sum_exactly(url: str, since: datetime, until: datetime) -> None:
    report = _report(url, since=since, until=until)
    assert report["dropped_records"] == _expected(since, until)
    assert "whole UTC hours" not in _note(report)


def test_a_range_inside_hours_counts_each_hour_in_the_period_where_it_starts(url: str) -> None:
    since, until = W47 + 30 * timedelta(minutes=1), W47 + 5 * H + timedelta(minutes=1)
    report = _report(url, since=since, until=until)
    assert report["dropped_records"] == 7 + 2 + 11  # the 05:00 hour is in; the 00:00 hour started before
    assert "an hour's drops count in the period where that hour starts" in _note(report)
    (alarm,) = [a for a in report["alarms"] if a["kind"] == "drops"]
    # The previous period, [W47 - 4:01, W47 + 0:30), has the hours W47 - 4:00 .. W47 + 0:00.
    assert alarm["details"]["previous_dropped_records"] == 40 + 5 + 3


def test_every_renderer_shows_the_count_its_reasons_and_the_previous_period(url: str) -> None:
    report = _report(url)
    line = "records dropped by the writer: 35 (after shutdown 2, refused by the database 1, buffer full 26, lost in a killed process 6; previous period 140)"
    assert line in render(report, "text", width=400)
    assert line in render(report, "md")
    assert html.escape(line) in render(report, "html")
    none = _report(url, since=W47 + 6 * H, until=W47 + 7 * H)
    assert none["dropped_records"] == 0 and not [a for a in none["alarms"] if a["kind"] == "drops"]
    assert "records dropped by the writer: 0" in render(none, "text", width=400)


def test_a_count_the_caller_passes_overrides_the_database(url: str) -> None:
    report = build_report(url, now=NOW, price_overrides=PRICES, dropped_records=3)
    assert report["dropped_records"] == 3
    (alarm,) = [a for a in report["alarms"] if a["kind"] == "drops"]
    assert alarm["details"] == {"dropped_records": 3}
    assert not any(note.startswith("dropped_records:") for note in report["notes"])
    jsonschema.validate(report, schema())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def old_schema_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    url = f"sqlite:///{tmp_path / 'old.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = create_engine_for(url)
    try:
        upgrade(engine, "v0_3_0_02")  # before the drop counts
        assert not sa.inspect(engine).has_table(DropRow.__tablename__)
    finally:
        engine.dispose()
    return url


def test_a_database_without_drop_counts_says_unknown_not_zero(old_schema_url: str) -> None:
    report = _report(old_schema_url)
    assert report["dropped_records"] is None
    assert "wasteaudit db upgrade" in _note(report)
    assert "records dropped by the writer: unknown" in render(report, "text", width=400)
