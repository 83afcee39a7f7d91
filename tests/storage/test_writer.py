"""The background writer: exactly-once storage, flush semantics, fail-open buffering, odd content."""

from __future__ import annotations

import copy
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from wasteaudit.records import AttemptRecord, ChoiceContent
from wasteaudit.storage.convert import GAP_NUMBER_REPLACED, GAP_TEXT_REPLACED
from wasteaudit.storage.engine import create_engine_for
from wasteaudit.storage.models import AttemptRow, CallRow, DropRow, RunRow, ScoreRow
from wasteaudit.storage.writer import Writer, _hostname


@pytest.fixture
def writer(db_url: str) -> Any:
    writers: list[Writer] = []

    def make(url: str = db_url, **options: Any) -> Writer:
        options.setdefault("flush_interval", 0.02)
        created = Writer(url, **options)
        writers.append(created)
        return created

    yield make
    for created in writers:
        created.shutdown(timeout=2)


def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _count(db_url: str, table: Any, *where: Any) -> int:
    engine = create_engine_for(db_url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()
    finally:
        engine.dispose()


def _rows(db_url: str, statement: Any) -> list[Any]:
    engine = create_engine_for(db_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(statement).all())
    finally:
        engine.dispose()


def test_records_from_eight_threads_are_each_written_exactly_once(db_url: str, writer: Any, call: Any) -> None:
    w = writer(batch_size=200)
    per_thread = 250
    ids: list[list[str]] = [[] for _ in range(8)]

    def produce(slot: int) -> None:
        for _ in range(per_thread):
            record = call()
            ids[slot].append(record.id)
            assert w.submit(record)

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert w.flush(30)

    stored = [row[0] for row in _rows(db_url, sa.select(CallRow.id))]
    assert len(stored) == 8 * per_thread
    assert set(stored) == {i for slot in ids for i in slot}
    assert _count(db_url, AttemptRow) == 8 * per_thread
    stats = w.stats()
    assert stats["submitted"] == stats["written"] == 8 * per_thread
    assert stats["pending"] == 0
    assert stats["dropped_queue_full"] == stats["dropped_db_error"] == 0
    assert stats["last_write_at"] is not None


def test_flush_returns_once_everything_submitted_before_it_is_stored(db_url: str, writer: Any, call: Any) -> None:
    w = writer(flush_interval=30)  # nothing would be written for 30 s without the flush
    for _ in range(25):
        w.submit(call())

    started = time.monotonic()
    assert w.flush(10)
    assert time.monotonic() - started < 5
    assert _count(db_url, CallRow) == 25
    assert w.flush(0)  # nothing pending: immediate


def test_flush_times_out_while_the_database_is_unreachable(tmp_path: Path, call: Any) -> None:
    w = Writer(f"sqlite:///{tmp_path}/missing-dir/a.db", flush_interval=0.01)
    try:
        w.submit(call())
        started = time.monotonic()
        assert w.flush(0.3) is False
        assert time.monotonic() - started < 2
    finally:
        w.shutdown(timeout=0.1)


def test_records_buffered_while_the_database_is_unreachable_are_written_once_it_is_back(
    tmp_path: Path, call: Any, run: Any
) -> None:
    directory = tmp_path / "not-yet"
    url = f"sqlite:///{directory}/wasteaudit.db"
    w = Writer(url, flush_interval=0.01)
    try:
        parent = run(status="ok", ended_at=time.time())
        assert w.submit(parent)
        for _ in range(40):
            assert w.submit(call(run_id=parent.id))
        _wait_for(lambda: w.stats()["last_error"] is not None)  # it tried, and failed
        time.sleep(0.2)
        stats = w.stats()
        assert stats["written"] == 0 and stats["pending"] == 41
        assert "retrying" in stats["last_error"]

        directory.mkdir()
        assert w.flush(15)
        assert _count(url, CallRow) == 40
        assert _count(url, RunRow) == 1
        assert w.stats()["dropped_db_error"] == 0
    finally:
        w.shutdown(timeout=1)


def test_a_full_buffer_refuses_the_newest_records_and_counts_them(tmp_path: Path, call: Any) -> None:
    w = Writer(f"sqlite:///{tmp_path}/missing-dir/a.db", queue_size=100, batch_size=30, flush_interval=0.01)
    try:
        accepted = [w.submit(call()) for _ in range(250)]
        _wait_for(lambda: w.stats()["last_error"] is not None)  # a batch is in flight, being retried
        accepted += [w.submit(call()) for _ in range(10)]

        assert accepted[:100] == [True] * 100
        assert not any(accepted[100:])
        stats = w.stats()
        assert stats["dropped_queue_full"] == 160
        assert stats["pending"] == 100  # queued plus the batch being retried: never more than queue_size
    finally:
        w.shutdown(timeout=0.1)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://nobody:pw@127.0.0.1:1/nothing",
        "mysql://nobody:pw@127.0.0.1/nothing",
        "postgresql+nodriver://h/d",
        "sqlite:////proc/no/such/dir/a.db",
    ],
)
def test_a_dead_url_never_raises_into_the_caller(url: str, call: Any, run: Any, score: Any) -> None:
    w = Writer(url, flush_interval=0.01)
    try:
        parent = run()
        for record in (parent, call(run_id=parent.id), score(parent.id)):
            assert w.submit(record) in (True, False)
        assert w.flush(0.2) in (True, False)
    finally:
        assert w.shutdown(timeout=0.2) in (True, False)
    stats = w.stats()
    assert stats["written"] == 0
    assert stats["submitted"] == 3


def test_a_configuration_error_drops_records_instead_of_buffering_them(call: Any) -> None:
    w = Writer("mysql://nobody@127.0.0.1/nothing", flush_interval=0.01)
    try:
        w.submit(call())
        assert w.flush(5)
        stats = w.stats()
        assert stats["dropped_db_error"] == 1 and stats["pending"] == 0
        assert "unsupported database" in stats["last_error"]
    finally:
        w.shutdown(timeout=0.2)


def test_odd_text_is_stored_intact_or_cleanly_and_noted_in_gaps(db_url: str, writer: Any, call: Any) -> None:
    big = "".join(chr(0x20 + i % 90) for i in range(1_000_000))  # 1 MB of text
    unicode_text = "naïve café — 日本語 — עברית — 😀👍🏽 — \u200b zero-width — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢"
    clean = call(choices=[ChoiceContent(index=0, text=big), ChoiceContent(index=1, text=unicode_text)])
    nul = call(
        error_message="bad\x00byte",
        input_messages=[{"role": "user", "content": "a\x00b", "k\x00": "v"}],
        choices=[ChoiceContent(index=0, text="lone \ud800 surrogate")],
        request_params={"temperature": float("nan")},
    )
    w = writer(content_policy=None)  # as it arrives: the configured policy would cap the 1 MB text
    assert w.submit(clean) and w.submit(nul)
    assert w.flush(30)

    assert w.stats()["written"] == 2
    rows = {row.id: row for row in _rows(db_url, sa.select(CallRow))}
    stored_clean = rows[clean.id]
    assert stored_clean.choices[0]["text"] == big
    assert stored_clean.choices[1]["text"] == unicode_text
    assert stored_clean.gaps == []

    stored_nul = rows[nul.id]
    assert stored_nul.error_message == "bad\ufffdbyte"
    assert stored_nul.input_messages == [{"role": "user", "content": "a\ufffdb", "k\ufffd": "v"}]
    assert stored_nul.choices[0]["text"] == "lone \ufffd surrogate"
    assert stored_nul.request_params == {"temperature": None}
    assert GAP_TEXT_REPLACED in stored_nul.gaps and GAP_NUMBER_REPLACED in stored_nul.gaps


def test_a_run_arriving_after_its_calls_is_upserted(db_url: str, writer: Any, call: Any, run: Any) -> None:
    w = writer()
    parent = run(status="running")
    w.submit(call(run_id=parent.id))
    w.submit(call(run_id=parent.id))
    assert w.flush(10)
    w.submit(parent)
    assert w.flush(10)
    parent.status, parent.ended_at, parent.return_value = "ok", time.time(), "done"
    parent.tags = {"team": "search"}
    w.submit(parent)
    assert w.flush(10)

    stored = _rows(db_url, sa.select(RunRow))
    assert len(stored) == 1
    assert (stored[0].status, stored[0].return_value, stored[0].tags) == ("ok", "done", {"team": "search"})
    assert stored[0].ended_at is not None
    assert _count(db_url, CallRow, CallRow.run_id == parent.id) == 2


def test_resubmitted_records_are_not_duplicated(db_url: str, writer: Any, call: Any, run: Any, score: Any) -> None:
    w = writer()
    parent = run()
    record = call(
        run_id=parent.id,
        attempts=[
            AttemptRecord(index=0, started_at=time.time() - 2, status_code=529, error_type="OverloadedError"),
            AttemptRecord(index=1, started_at=time.time() - 1, status_code=200, request_id="req_1"),
        ],
    )
    quality = score(parent.id, raw_value={"judge": "ok"})
    for _ in range(2):
        for item in (parent, record, quality):
            w.submit(item)
        assert w.flush(10)

    assert _count(db_url, CallRow) == 1
    assert _count(db_url, ScoreRow) == 1
    attempts = _rows(db_url, sa.select(AttemptRow).order_by(AttemptRow.index))
    assert [(a.index, a.status_code, a.error_type) for a in attempts] == [(0, 529, "OverloadedError"), (1, 200, None)]
    call_row = _rows(db_url, sa.select(CallRow))[0]
    assert call_row.attempts == 2
    assert _rows(db_url, sa.select(ScoreRow.raw_value)) == [({"judge": "ok"},)]


def test_a_record_the_database_refuses_is_dropped_alone(db_url: str, writer: Any, call: Any) -> None:
    w = writer(flush_interval=5)
    good_before, bad, good_after = call(), call(provider=None), call()  # provider is NOT NULL
    for record in (good_before, bad, good_after):
        w.submit(record)
    assert w.flush(10)

    assert {row[0] for row in _rows(db_url, sa.select(CallRow.id))} == {good_before.id, good_after.id}
    stats = w.stats()
    assert stats["written"] == 2 and stats["dropped_db_error"] == 1
    assert w.submit(call()) and w.flush(10)  # and the writer carries on


def test_calls_are_priced_by_the_writer(db_url: str, writer: Any, call: Any) -> None:
    w = writer(price_overrides={"my-finetune": {"input": 1.0, "output": 2.0}})
    table = call()  # gpt-4o-2024-08-06: 800 x $2.50 + 200 x $1.25 + 500 x $10 per MTok
    custom = call(request_model="my-finetune", response_model=None, input_cache_read_tokens=None)
    unknown = call(request_model="no-such-model", response_model=None)
    for record in (table, custom, unknown):
        w.submit(record)
    assert w.flush(10)

    rows = {row.id: row for row in _rows(db_url, sa.select(CallRow))}
    assert rows[table.id].cost_usd == pytest.approx(0.00725, rel=1e-12)
    assert rows[table.id].priced == "priced"
    assert rows[table.id].price_version.startswith("genai-prices==")
    assert table.cost_usd == pytest.approx(0.00725, rel=1e-12)  # filled on the record too
    assert rows[custom.id].cost_usd == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6, rel=1e-12)
    assert rows[custom.id].price_version.startswith("override:")
    assert (rows[unknown.id].cost_usd, rows[unknown.id].priced) == (None, "unpriced")


def test_shutdown_is_idempotent_and_later_records_are_refused(db_url: str, call: Any) -> None:
    w = Writer(db_url, flush_interval=5)
    w.submit(call())
    assert w.shutdown(timeout=None) is True  # None: however long it takes
    assert w.shutdown(timeout=10) is True
    assert w.submit(call()) is False
    assert _count(db_url, CallRow) == 1
    assert w.stats()["dropped_closed"] == 1


def test_problems_are_logged_at_most_once_a_minute(tmp_path: Path, call: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="wasteaudit")
    w = Writer(f"sqlite:///{tmp_path}/missing-dir/a.db", flush_interval=0.01)
    try:
        w.submit(call())
        _wait_for(lambda: w.stats()["last_error"] is not None)
        time.sleep(0.5)  # more retries (0.1 s, 0.2 s backoff)
    finally:
        w.shutdown(timeout=0.1)
    messages = [r.getMessage() for r in caplog.records if r.name == "wasteaudit" and "retrying" in r.getMessage()]
    assert len(messages) == 1


def test_a_forked_child_records_through_its_own_writer(db_url: str, call: Any) -> None:
    w = Writer(db_url, flush_interval=0.01)
    try:
        w.submit(call())
        assert w.flush(10)
        child_records = [call() for _ in range(20)]
        context = multiprocessing.get_context("fork")
        child = context.Process(target=_submit_in_child, args=(w, child_records))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        assert _count(db_url, CallRow) == 21  # the child's records were flushed at its exit
        assert w.submit(call()) and w.flush(10)  # the parent's writer is unaffected
        assert w.stats()["written"] == 2
    finally:
        w.shutdown()


def _submit_in_child(w: Writer, records: list[Any]) -> None:
    assert w.stats()["submitted"] == 0  # a fresh queue and counters, not the parent's
    for record in records:
        assert w.submit(record)
    # no flush: leaving through multiprocessing's exit must still write them


def test_importing_the_writer_does_not_import_sqlalchemy() -> None:
    code = (
        "import sys, wasteaudit.storage, wasteaudit.storage.writer, wasteaudit.storage.convert, "
        "wasteaudit.storage.pricing, wasteaudit.storage.engine\n"
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy imported'\n"
        "assert 'genai_prices' not in sys.modules, 'genai_prices imported'\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_bad_arguments_fail_at_construction() -> None:
    from wasteaudit.exceptions import ConfigError

    with pytest.raises(ConfigError):
        Writer("sqlite://", queue_size=0)
    with pytest.raises(ConfigError, match="cache_reed"):
        Writer("sqlite://", price_overrides={"m": {"cache_reed": 1}})


def test_json_columns_hold_plain_json(db_url: str, writer: Any, call: Any) -> None:
    """Other tools (and SQL json functions) read the content columns as ordinary JSON."""
    w = writer()
    record = call(tool_definitions=[{"type": "function", "function": {"name": "lookup"}}], request_params={})
    w.submit(record)
    assert w.flush(10)
    engine = create_engine_for(db_url)
    try:
        with engine.connect() as connection:
            raw = connection.exec_driver_sql("SELECT tool_definitions, request_params, usage_details FROM wasteaudit_calls").one()
    finally:
        engine.dispose()
    tools, params, usage = (json.loads(v) if isinstance(v, str) else v for v in raw)
    assert tools == [{"type": "function", "function": {"name": "lookup"}}]
    assert params == {}
    assert usage is None


def test_a_record_that_cannot_be_converted_is_dropped_and_counted(db_url: str, writer: Any, call: Any) -> None:
    w = writer()
    assert w.submit({"not": "a record"})  # type: ignore[arg-type]
    assert w.submit(call(function=object()))  # odd types in text columns are stored as str
    assert w.flush(10)
    stats = w.stats()
    assert (stats["dropped_invalid"], stats["written"]) == (1, 1)
    assert "could not convert" in stats["last_error"]


def test_the_configured_content_policy_is_applied_before_storage(db_url: str, writer: Any, call: Any) -> None:
    secret = "sk-proj-" + "a1B2c3D4e5F6g7H8i9J0" * 2
    w = writer()
    record = call(input_messages=[{"role": "user", "content": f"my key is {secret}"}],
                  choices=[ChoiceContent(index=0, text=f"echo {secret}")])
    w.submit(record)
    assert w.flush(10)

    stored = _rows(db_url, sa.select(CallRow.input_messages, CallRow.choices))[0]
    assert secret not in json.dumps(stored.input_messages) and secret not in json.dumps(stored.choices)
    assert "my key is" in stored.input_messages[0]["content"]


def test_a_record_the_content_policy_fails_on_is_dropped_not_stored_unfiltered(
    db_url: str, writer: Any, call: Any
) -> None:
    def broken(record: Any) -> None:
        raise RuntimeError("policy bug")

    w = writer(content_policy=broken)
    w.submit(call())
    assert w.flush(10)
    assert w.stats()["dropped_invalid"] == 1
    assert _count(db_url, CallRow) == 0


def test_sqlite_timestamps_match_what_sqlalchemy_stores() -> None:
    """The writer's cached epoch-to-text conversion is the text SQLAlchemy's DATETIME would store."""
    import random
    from datetime import datetime, timezone

    from wasteaudit.storage.writer import _sqlite_time

    now = time.time()
    values = [now + random.uniform(-1e7, 1e7) for _ in range(20_000)]
    values += [now + k / 2e6 for k in range(-2_000, 2_000)]  # half-microsecond ties round to even
    values += [1_700_000_000.9999995, 1_700_000_000.0000005, 0.0, 1, 1.5e-7]
    for value in values:
        expected = datetime.fromtimestamp(value, timezone.utc).isoformat(" ", "microseconds")[:26]
        assert _sqlite_time(value) == expected, value
    aware = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    assert _sqlite_time(aware) == "2026-01-02 03:04:05.000006"


def test_a_writer_that_exited_without_shutting_down_is_reported_once_by_the_next(db_url: str, call: Any) -> None:
    tests = str(Path(__file__).resolve().parents[1])
    code = (
        "import os, sys\n"
        f"sys.path.insert(0, {tests!r})\n"
        "from storage.conftest import make_call\n"
        "from wasteaudit.storage.writer import Writer\n"
        f"w = Writer({db_url!r}, flush_interval=0.01, queue_size=100)\n"
        "assert w.submit(make_call()) and w.flush(30)\n"
        "w._closed = True  # refuse the rest, as a process about to be killed would not\n"
        "os._exit(0)  # no shutdown, no atexit: like SIGKILL after a committed batch\n"
    )
    root = Path(__file__).resolve().parents[2]
    child = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(root)})
    assert child.returncode == 0, child.stderr

    clean = Writer(db_url, flush_interval=0.01)  # a clean writer leaves no trace behind
    assert clean.submit(call()) and clean.flush(30)
    assert [e["written"] for e in clean.stats()["previous_unclean_exits"]] == [1]
    assert clean.shutdown(timeout=10)

    later = Writer(db_url, flush_interval=0.01)
    try:
        assert later.submit(call()) and later.flush(30)
        assert later.stats()["previous_unclean_exits"] == []  # reported once; the clean one left nothing
    finally:
        later.shutdown(timeout=10)


# --- bulk writes (COPY on PostgreSQL, column-ordered rows) ----------------------------------------


def _offline_writer(url: str) -> Writer:
    """A writer whose statements and engine are driven from the test's thread."""
    w = Writer(url, queue_size=10)
    w.shutdown(timeout=0)
    w._connect()
    return w


def test_call_rows_are_built_in_the_tables_column_order() -> None:
    from wasteaudit.storage.convert import ATTEMPT_COLUMNS, CALL_COLUMNS

    assert CALL_COLUMNS == tuple(CallRow.__table__.columns.keys())
    assert ATTEMPT_COLUMNS == tuple(AttemptRow.__table__.columns.keys())


def test_bulk_and_row_by_row_writes_store_the_same_rows(db_url: str, call: Any) -> None:
    from wasteaudit.storage.writer import _Batch

    odd = 'tab\there\nnewline \\ backslash "quoted" \\N é 😀 \x00 \ud800'
    content = dict(
        input_messages=[{"role": "user", "content": odd, "n": 1.5, "flag": True, "none": None}],
        choices=[ChoiceContent(index=0, text=odd, finish_reason="stop")],
        error_message=odd,
        request_params={"temperature": float("nan"), "stop": ["\t", "\\"]},
        attempts=[AttemptRecord(index=0, started_at=time.time() - 1, status_code=200, request_id=odd)],
    )
    import copy

    from wasteaudit.records import new_id

    bulk = call(**content)
    single = copy.deepcopy(bulk)
    single.id = new_id()
    w = _offline_writer(db_url)
    try:
        w._insert(w._engine, w._prepare(_Batch([bulk])))
        w._insert(w._engine, w._prepare(_Batch([single])), bulk=False)
        assert w._bulk_retries == 0  # the bulk path (COPY on PostgreSQL) was taken and succeeded
    finally:
        w._engine.dispose()

    def stored(record_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        row = _rows(db_url, sa.select(CallRow.__table__).where(CallRow.id == record_id))[0]._asdict()
        attempts = [a._asdict() for a in _rows(db_url, sa.select(AttemptRow.__table__).where(AttemptRow.call_id == record_id))]
        for item in [row, *attempts]:
            item.pop("id", None)
            item.pop("call_id", None)
        return row, attempts

    bulk_row, single_row = stored(bulk.id), stored(single.id)
    assert bulk_row == single_row
    assert GAP_TEXT_REPLACED in bulk_row[0]["gaps"] and GAP_NUMBER_REPLACED in bulk_row[0]["gaps"]
    assert bulk_row[0]["input_messages"][0]["content"] == odd.replace("\x00", "\ufffd").replace("\ud800", "\ufffd")


def test_a_batch_written_again_after_its_commit_is_not_duplicated(db_url: str, call: Any) -> None:
    """A retry after an ambiguous failure (committed, but the client never heard) adds nothing."""
    from wasteaudit.storage.writer import _Batch

    records = [
        call(attempts=[AttemptRecord(index=i, started_at=time.time(), status_code=200) for i in range(2)])
        for _ in range(3)
    ]
    w = _offline_writer(db_url)
    try:
        units = w._prepare(_Batch(records))
        w._insert(w._engine, units)
        w._insert(w._engine, units)
        # PostgreSQL: the second COPY hits the stored ids and the batch goes through ON CONFLICT DO NOTHING.
        assert w._bulk_retries == (1 if w._statements.copy else 0)
    finally:
        w._engine.dispose()
    assert _count(db_url, CallRow) == 3
    assert _count(db_url, AttemptRow) == 6


def test_the_writers_sqlite_connections_keep_a_larger_cache_and_checkpoint_less_often(tmp_path: Path, call: Any) -> None:
    w = Writer(f"sqlite:///{tmp_path / 'w.db'}", flush_interval=0.01)
    try:
        assert w.submit(call()) and w.flush(10)
        with w._engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA cache_size").scalar() == -8192  # KiB
            assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 4000  # pages
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL, as everywhere
    finally:
        w.shutdown(timeout=5)
    other = create_engine_for(f"sqlite:///{tmp_path / 'w.db'}")  # other engines keep SQLite's defaults
    try:
        with other.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA cache_size").scalar() == -2000
    finally:
        other.dispose()


# --- drops per hour (wasteaudit_drops) ------------------------------------------------------------

HOUR = 3600.0
T0 = 1_795_000_000.0 - 1_795_000_000.0 % HOUR  # 2026-11-18 07:00 UTC: a fixed clock for the drops' hours


def _drops(url: str) -> dict[tuple[float, str], int]:
    """``{(hour as epoch seconds, reason): records}`` summed over writers."""
    table = DropRow.__table__
    out: dict[tuple[float, str], int] = {}
    for hour, reason, records in _rows(url, sa.select(table.c.hour, table.c.reason, table.c.records)):
        hour = hour if isinstance(hour, datetime) else datetime.fromisoformat(hour)
        key = (hour.replace(tzinfo=hour.tzinfo or timezone.utc).timestamp(), reason)
        out[key] = out.get(key, 0) + records
    return out


def test_drops_while_the_database_is_unreachable_are_stored_in_their_hour_once_it_is_back(
    tmp_path: Path, call: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wasteaudit.storage import writer as writer_module

    clock = [T0 + 20 * 60]  # 07:20
    monkeypatch.setattr(writer_module, "_clock", lambda: clock[0])
    directory = tmp_path / "not-yet"
    url = f"sqlite:///{directory}/wasteaudit.db"
    w = Writer(url, queue_size=10, batch_size=5, flush_interval=0.01)
    try:
        accepted = [w.submit(call()) for _ in range(25)]  # 15 refused at 07:20
        _wait_for(lambda: w.stats()["last_error"] is not None)
        clock[0] = T0 + HOUR + 59 * 60  # 08:59
        accepted += [w.submit(call()) for _ in range(4)]
        assert accepted.count(False) == 19 and w.stats()["dropped_queue_full"] == 19

        clock[0] = T0 + 3 * HOUR  # the database comes back at 10:00: the drops keep their own hours
        directory.mkdir()
        assert w.flush(15)
        _wait_for(lambda: _drops(url) == {(T0, "queue_full"): 15, (T0 + HOUR, "queue_full"): 4})
        assert _count(url, CallRow) == 10

        bad = call(provider=None)  # refused by the database at 10:00, written once idle
        assert w.submit(bad) and w.flush(15)
        _wait_for(lambda: _drops(url).get((T0 + 3 * HOUR, "db_error")) == 1)
    finally:
        assert w.shutdown(timeout=10)
    assert _drops(url) == {(T0, "queue_full"): 15, (T0 + HOUR, "queue_full"): 4, (T0 + 3 * HOUR, "db_error"): 1}


def test_a_batch_written_again_after_its_commit_does_not_count_its_drops_twice(
    db_url: str, call: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wasteaudit.storage import writer as writer_module
    from wasteaudit.storage.writer import _Batch

    monkeypatch.setattr(writer_module, "_clock", lambda: T0 + 60)
    w = _offline_writer(db_url)
    try:
        with w._cond:
            w._count_drops("queue_full", 7)
        units = w._prepare(_Batch([call()]))
        committed = w._drops_committed
        w._drops_committed = lambda totals: None  # the commit happened, the client never heard
        w._insert(w._engine, units)
        w._drops_committed = committed
        w._insert(w._engine, units)  # the retry
        assert _drops(db_url) == {(T0, "queue_full"): 7}

        with w._cond:
            w._count_drops("queue_full", 2)
        w._insert(w._engine, w._prepare(_Batch([call()])))
        w._insert(w._engine, units)  # nothing new to write: still 9
        assert _drops(db_url) == {(T0, "queue_full"): 9}
        assert w._unwritten_drops() == {}
    finally:
        w._engine.dispose()
    assert _count(db_url, CallRow) == 2


def test_concurrent_writers_drop_counts_add_up(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from wasteaudit.storage import writer as writer_module

    monkeypatch.setattr(writer_module, "_clock", lambda: T0 + 1800)
    writers = [_offline_writer(db_url) for _ in range(4)]
    start = threading.Barrier(len(writers))
    errors: list[BaseException] = []

    def drop_and_write(w: Writer, index: int) -> None:
        try:
            start.wait()
            for _ in range(25):  # 25 rounds of drops, each written at once: the writers' upserts interleave
                with w._cond:
                    w._count_drops("queue_full", index + 1)
                    w._count_drops("closed", 1)
                w._write_drops()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=drop_and_write, args=(w, i)) for i, w in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert all(w._unwritten_drops() == {} and not w._drops_broken for w in writers)
    finally:
        for w in writers:
            w._engine.dispose()
    assert _drops(db_url) == {(T0, "queue_full"): 25 * (1 + 2 + 3 + 4), (T0, "closed"): 25 * 4}
    assert _count(db_url, DropRow) == 8  # one row per writer and reason


def test_the_records_a_killed_writer_still_held_are_counted_as_drops_by_the_next(db_url: str, call: Any) -> None:
    from wasteaudit.storage.models import WriterStateRow

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    engine = create_engine_for(db_url)
    try:
        from wasteaudit.storage.schema import ensure_schema

        ensure_schema(engine)
        with engine.begin() as connection:
            connection.execute(sa.insert(WriterStateRow.__table__).values(
                id="d" * 32, host=_hostname(), pid=gone.pid, started_at=T0, updated_at=T0 + 2 * HOUR + 5,
                pending=7, written=3, dropped=0,
            ))
    finally:
        engine.dispose()
    for _ in range(2):  # reported, and counted, once
        w = Writer(db_url, flush_interval=0.01)
        try:
            assert w.submit(call()) and w.flush(30)
        finally:
            assert w.shutdown(timeout=10)
    assert _drops(db_url) == {(T0 + 2 * HOUR, "unclean_exit"): 7}



def test_the_converter_steps_aside_only_while_the_database_thread_writes(
    tmp_path: Path, call: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The converter lets the database thread have the GIL every YIELD_EVERY_RECORDS records while
    it writes (so it never waits a whole switch interval to come back from the driver), and
    never otherwise; the rows are the same either way."""
    from wasteaudit.storage import writer as writer_module
    from wasteaudit.storage.writer import YIELD_EVERY_RECORDS, YIELD_S, _Batch

    created = Writer(f"sqlite:///{tmp_path / 'w.db'}", queue_size=10)
    created.shutdown(timeout=0)
    created._connect()
    slept: list[float] = []
    monkeypatch.setattr(writer_module.time, "sleep", slept.append)
    count = 2 * YIELD_EVERY_RECORDS + 1

    template = []
    for index in range(count):
        record = call()
        record.id = f"{index:032x}"
        template.append(record)

    def rows(step_aside: bool, writing: bool) -> list[Any]:
        created._db_writing = writing
        return [unit[2] for unit in created._prepare(_Batch(copy.deepcopy(template)), step_aside=step_aside)]

    plain = rows(step_aside=False, writing=True)
    assert slept == []
    assert rows(step_aside=True, writing=False) == plain and slept == []
    assert rows(step_aside=True, writing=True) == plain
    assert slept == [YIELD_S] * 3  # records 0, 16 and 32
    created._engine.dispose()
