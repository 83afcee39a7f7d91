"""The database fails under a running app: the app's results never change, and every record is
either stored once or counted as dropped (``wasteaudit.status()``).

Complements tests/storage/test_writer.py (missing SQLite directory at start, full buffer, dead
URLs, configuration errors, forked multiprocessing children) with outages an app meets:
a PostgreSQL server gone and back behind a real TCP connection, locks held by another process,
a full disk, SIGKILL mid-write, and a bare ``os.fork()``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import wasteaudit
from reliability_support import ask, check_answer, openai_client, stored_markers, wait_for

pytestmark = pytest.mark.slow


@pytest.mark.postgres
@pytest.mark.parametrize("down_at_start", [True, False], ids=["unreachable-at-start", "gone-mid-run"])
def test_postgresql_going_away_keeps_the_buffer_and_writes_it_when_back(
    echo_server: Any, audited: Any, pg_proxy_url: Any, down_at_start: bool
) -> None:
    url, proxy = pg_proxy_url
    audited(database_url=url, queue_size=120, batch_size=25)
    client = openai_client(echo_server)
    before = [f"before-{i}" for i in range(20)]
    if down_at_start:
        proxy.cut()
        before = []
    for marker in before:
        check_answer(ask(client, marker), marker)
    assert wasteaudit.flush(30)
    proxy.cut()

    during = [f"during-{i}" for i in range(200)]
    outage_started = time.time()
    for marker in during:
        check_answer(ask(client, marker), marker)  # the app sees every answer, untouched
    wait_for(lambda: wasteaudit.status()["last_error"] is not None)
    status = wasteaudit.status()
    assert status["pending"] == 120  # the bounded buffer: queued plus the batch being retried
    assert status["dropped_queue_full"] == 80  # the newest were refused, and counted
    assert "retrying" in status["last_error"]

    proxy.restore()
    assert wasteaudit.flush(60)
    stored = stored_markers(url)
    assert sorted(stored) == sorted(before + during[:120])  # kept: the oldest, each exactly once
    status = wasteaudit.status()
    assert status["written"] == len(before) + 120 and status["pending"] == 0
    assert status["dropped_db_error"] == 0 and status["dropped_queue_full"] == 80
    # The drops counted during the outage reached the database with the batch that got through,
    # in the UTC hour they happened (the clock may have crossed an hour meanwhile).
    wait_for(lambda: _stored_drops(url)[0] == 80)
    total, hours, reasons = _stored_drops(url)
    assert reasons == {"queue_full"}
    assert all(outage_started - outage_started % 3600 <= h <= time.time() for h in hours)

    after = [f"after-{i}" for i in range(10)]  # and it carries on as before
    for marker in after:
        check_answer(ask(client, marker), marker)
    assert wasteaudit.flush(30)
    assert len(stored_markers(url)) == len(before) + 120 + 10


def _stored_drops(url: str) -> tuple[int, list[float], set[str]]:
    """(records, the hours as epoch seconds, the reasons) in ``wasteaudit_drops``."""
    import sqlalchemy as sa

    from wasteaudit.storage.engine import create_engine_for
    from wasteaudit.storage.models import DropRow

    engine = create_engine_for(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(DropRow.hour, DropRow.reason, DropRow.records)).all()
    finally:
        engine.dispose()
    return sum(r.records for r in rows), [r.hour.timestamp() for r in rows], {r.reason for r in rows}


def test_a_sqlite_file_locked_by_another_process_delays_writes_but_loses_nothing(
    echo_server: Any, audited: Any, tmp_path: Path
) -> None:
    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}"
    audited(database_url=url, batch_size=20)
    client = openai_client(echo_server)
    check_answer(ask(client, "first"), "first")
    assert wasteaudit.flush(30)  # schema created, file in WAL mode

    # Another process takes the write lock, and holds it past the writer's 5 s busy timeout
    # until told to let go (at most 60 s).
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import select, sqlite3, sys
            db = sqlite3.connect({str(path)!r}, isolation_level=None)
            db.execute("BEGIN EXCLUSIVE")
            print("locked", flush=True)
            select.select([sys.stdin], [], [], 60)
            db.execute("ROLLBACK")
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        markers = [f"locked-{i}" for i in range(60)]
        for marker in markers:
            check_answer(ask(client, marker), marker)  # answered while the file is locked
        wait_for(lambda: "locked" in (wasteaudit.status()["last_error"] or ""), timeout=30)  # busy timeout hit
        status = wasteaudit.status()
        assert holder.poll() is None and status["written"] == 1 and status["pending"] == 60
    finally:
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.close()
        holder.wait(30)
    assert wasteaudit.flush(60)
    assert sorted(stored_markers(url)) == sorted(["first", *markers])
    status = wasteaudit.status()
    assert status["dropped_db_error"] == status["dropped_queue_full"] == 0


@pytest.mark.postgres
def test_a_postgresql_table_locked_by_another_session_delays_writes_but_loses_nothing(
    echo_server: Any, audited: Any, pg_url: str
) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    audited(database_url=pg_url, batch_size=20)
    client = openai_client(echo_server)
    check_answer(ask(client, "first"), "first")
    assert wasteaudit.flush(30)

    # A long statement elsewhere (a migration, VACUUM FULL) holds the table: inserts wait on it.
    dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as blocker:
        blocker.execute("LOCK TABLE wasteaudit_calls IN ACCESS EXCLUSIVE MODE")
        markers = [f"slow-{i}" for i in range(60)]
        for marker in markers:
            check_answer(ask(client, marker), marker)
        time.sleep(0.5)
        status = wasteaudit.status()
        assert status["written"] == 1 and status["pending"] == 60  # waiting on the lock, not lost
        blocker.rollback()
    assert wasteaudit.flush(60)
    assert sorted(stored_markers(pg_url)) == sorted(["first", *markers])
    assert wasteaudit.status()["dropped_db_error"] == wasteaudit.status()["dropped_queue_full"] == 0


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Any:
    """A 16 MB tmpfs (root only): a disk that fills up."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_keeps_records_buffered_until_space_returns(
    echo_server: Any, audited: Any, tiny_disk: Path
) -> None:
    url = f"sqlite:///{tiny_disk / 'audit.db'}"
    audited(database_url=url, batch_size=20, queue_size=100)
    client = openai_client(echo_server)
    check_answer(ask(client, "first"), "first")
    assert wasteaudit.flush(30)

    filler = tiny_disk / "filler"
    try:
        with open(filler, "wb") as handle:  # fill every remaining block
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
    except OSError:
        pass
    markers = [f"full-{i}" for i in range(150)]
    for marker in markers:
        check_answer(ask(client, marker), marker)
    wait_for(lambda: "full" in (wasteaudit.status()["last_error"] or ""))
    status = wasteaudit.status()
    assert status["pending"] == 100 and status["dropped_queue_full"] == 50

    filler.unlink()
    assert wasteaudit.flush(60)
    assert sorted(stored_markers(url)) == sorted(["first", *markers[:100]])
    assert wasteaudit.status()["dropped_db_error"] == 0
    with sqlite3.connect(tiny_disk / "audit.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


_STREAM = """
import sys, time
from wasteaudit.storage.writer import Writer
sys.path.insert(0, {tests!r})
from storage.conftest import make_call
writer = Writer({url!r}, batch_size=50, flush_interval=0.01, content_policy=None)
i = 0
while True:
    for _ in range(50):
        writer.submit(make_call(response_id=f"m-{{i}}", input_messages=[{{"role": "user", "content": "x" * 2000}}]))
        i += 1
    time.sleep(0.001)
"""


def test_sigkill_mid_write_leaves_a_consistent_database_and_the_next_start_reports_what_was_pending(
    tmp_path: Path,
) -> None:
    path = tmp_path / "killed.db"
    url = f"sqlite:///{path}"
    tests = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tests).parent), tests])}
    child = subprocess.Popen([sys.executable, "-c", _STREAM.format(url=url, tests=tests)], env=env)
    try:
        def written() -> int:
            try:
                with sqlite3.connect(path, timeout=5) as db:
                    return db.execute("SELECT count(*) FROM wasteaudit_calls").fetchone()[0]
            except sqlite3.Error:
                return 0

        wait_for(lambda: written() >= 2000, timeout=60)  # a steady stream, batches committing
    finally:
        child.send_signal(signal.SIGKILL)
        killed_at = time.time()
        child.wait(10)
    assert child.returncode == -signal.SIGKILL

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        calls = db.execute("SELECT count(*) FROM wasteaudit_calls").fetchone()[0]
        orphans = db.execute(  # a call without its attempt would be half a record
            "SELECT count(*) FROM wasteaudit_calls c WHERE NOT EXISTS "
            "(SELECT 1 FROM wasteaudit_attempts a WHERE a.call_id = c.id)"
        ).fetchone()[0]
        ids = [row[0] for row in db.execute("SELECT response_id FROM wasteaudit_calls")]
    assert calls >= 2000 and orphans == 0
    assert len(set(ids)) == len(ids)

    # The next writer on this database says how many records the killed one still held.
    from wasteaudit.storage.writer import Writer

    from storage.conftest import make_call

    successor = Writer(url, flush_interval=0.01)
    try:
        assert successor.submit(make_call()) and successor.flush(30)  # its first batch meets the trace
        (previous,) = successor.stats()["previous_unclean_exits"]
        assert previous["pid"] == child.pid
        assert previous["written"] == calls  # the state row commits with each batch
        assert killed_at - 60 < previous["last_batch_at"] <= killed_at
        assert 0 <= previous["pending"] <= 10_000  # what the killed process still held: lost, and said so
    finally:
        successor.shutdown()
    second = Writer(url, flush_interval=0.01)  # reported once, not at every start
    try:
        assert second.submit(make_call()) and second.flush(30)
        assert second.stats()["previous_unclean_exits"] == []
    finally:
        second.shutdown()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_bare_fork_after_configure_records_in_parent_and_child_exactly_once(
    echo_server: Any, audited: Any, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'fork.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    audited(database_url=url)
    client = openai_client(echo_server)
    parent_before = [f"parent-{i}" for i in range(10)]
    for marker in parent_before:
        check_answer(ask(client, marker), marker)
    assert wasteaudit.flush(30)
    for marker in ("parent-pending-0", "parent-pending-1"):  # queued in the parent at fork time
        check_answer(ask(client, marker), marker)

    pid = os.fork()
    if pid == 0:  # the child: its own writer, none of the parent's queue; leaves through atexit
        code = 1
        try:
            child_client = openai_client(echo_server)
            for i in range(15):
                check_answer(ask(child_client, f"child-{i}"), f"child-{i}")
            code = 0 if wasteaudit.flush(30) and wasteaudit.status()["written"] == 15 else 2
        finally:
            os._exit(code)
    for marker in (f"parent-after-{i}" for i in range(5)):
        check_answer(ask(client, marker), marker)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert wasteaudit.flush(30)

    expected = parent_before + ["parent-pending-0", "parent-pending-1"]
    expected += [f"child-{i}" for i in range(15)] + [f"parent-after-{i}" for i in range(5)]
    assert sorted(stored_markers(url)) == sorted(expected)
