"""The background writer: records in, rows out, without ever slowing or failing the app.

``submit`` is the only part on the app's hot path: an O(1) append to a bounded deque under a
lock, no I/O, no SQLAlchemy (this module imports it only inside the writer threads). Two daemon
threads form a pipeline: the converter drains the deque in batches, applies the content policy,
prices calls and encodes rows (calls and attempts as lists in table column order); the database
thread writes each converted batch in one transaction, so a crash never leaves half a call
(call + attempts). On PostgreSQL calls and attempts go in by COPY (far less server work than
one INSERT per row); everything else, and any batch COPY fails on, goes through Core
``insert()`` statements compiled once and run with the driver's executemany (on SQLite, one
multi-row INSERT per table and batch instead, so the database thread takes the GIL back a few
times per batch rather than once per row). The database's own work (SQLite's B-trees,
PostgreSQL's round trips) runs outside the GIL, so converting the next batch overlaps it.

Fail-open: when the database is unreachable or locked, the in-flight batch is kept and retried
with capped exponential backoff while new records keep queueing. The buffer (queued plus in
flight) never exceeds ``queue_size``; when it is full the *newest* record is refused
(``submit`` returns False, counted as ``dropped_queue_full``): what was accepted keeps its
order, so a run's calls are never lost in favour of later ones. A record the database refuses
for its content is isolated and dropped alone (``dropped_db_error``). Nothing here raises into
the caller; problems are logged on ``logging.getLogger("wasteaudit")`` at most once a minute
per kind, and ``stats()`` reports them.

Each batch's transaction also updates this writer's row in ``wasteaudit_writer_state`` (records
still held in memory, written, dropped); a clean shutdown deletes it. A process killed without
shutting down leaves its row behind, and the next writer on that host reports it (log and
``stats()["previous_unclean_exits"]``): how many records the dead process still held.

Drops are also counted per UTC hour and reason in memory and written to ``wasteaudit_drops``
with the next batch that commits (or on their own once the writer is idle, and at shutdown), so
drops during an outage reach the database, in the hour they happened, once it is back; the
weekly report sums them. Each row is this writer's total for its hour and reason, written as
``max(stored, new)``: a batch retried after an ambiguous commit cannot count a drop twice, and
writers never update each other's rows. A failure to write them never costs a record.

Writes are idempotent, so a batch retried after an ambiguous failure cannot duplicate rows:
runs are upserted by id (a run is re-sent when it ends, possibly after its calls), calls,
attempts and scores are inserted with ON CONFLICT DO NOTHING. COPY has no ON CONFLICT: a COPY
that meets a row already stored fails as a whole and the batch is written again at once with
those INSERTs.
"""

from __future__ import annotations

import atexit
import logging
import math
import operator
import os
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from itertools import chain
from typing import TYPE_CHECKING, Any

from wasteaudit.exceptions import ConfigError, MissingExtraError, StorageError
from wasteaudit.records import CallRecord, RunRecord, ScoreRecord
from wasteaudit.storage.engine import resolve_url
from wasteaudit.storage.pricing import validate_overrides

_chain = chain.from_iterable

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ("Writer", "configured_content_policy")

logger = logging.getLogger("wasteaudit")

Record = CallRecord | RunRecord | ScoreRecord

HOUR_S = 3600
BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 5.0
LOG_INTERVAL_S = 60.0
ATEXIT_TIMEOUT_S = 5.0


_clock = time.time  # the wall clock drops are counted by (tests move it)

READY_BATCHES = 2  # converted batches waiting for the database thread (memory stays bounded by queue_size)
# While the database thread is writing, the converter steps aside (sleeps, releasing the GIL)
# every this many records. Each time the database thread comes back from the driver's C code
# (a COPY, a statement, a commit: several per batch) it needs the GIL; if the converter holds it
# and never lets go, it waits a whole switch interval (5 ms by default), and those waits were
# half of its time per batch. Stepping aside every ~16 records bounds each wait to about a
# millisecond, for a few percent of the converter's time; the interval itself is process-wide
# and the app's, so it is not changed.
YIELD_EVERY_RECORDS = 16
YIELD_S = 50e-6


class _Batch:
    """Records taken off the queue together; converted once, retried until settled."""

    __slots__ = ("records", "units", "invalid")

    def __init__(self, records: list[Any]) -> None:
        self.records = records
        # ("call", id, row, attempt rows) | ("run", id, row) | ("score", id, row); rows driver-encoded
        self.units: list[tuple[Any, ...]] | None = None
        self.invalid = 0  # records conversion dropped; settled by the database thread, in batch order


def configured_content_policy(record: Record) -> None:
    """The configured content policy (secret scrubbing, size caps, content mode), applied in place
    to a call's content, a run's return and used values, and a score's raw value.

    Runs in the writer thread: the request path only keeps references to the content, and the
    policy's regexes and copies are too costly to run there (see ``wasteaudit._internal.content``).
    """
    from wasteaudit._internal import content
    from wasteaudit.config import get_settings

    kind = type(record)
    if kind is CallRecord:
        content.apply_content_policy(record, get_settings())  # type: ignore[arg-type]
    elif kind is RunRecord:
        content.apply_run_policy(record, get_settings())  # type: ignore[arg-type]
    elif kind is ScoreRecord:
        content.apply_score_policy(record, get_settings())  # type: ignore[arg-type]


def _text_passing_settings() -> Any:
    """The settings, when their content mode keeps text as it is once scrubbed and capped."""
    from wasteaudit._internal.content import passes_text_unchanged
    from wasteaudit.config import get_settings

    settings = get_settings()
    return settings if passes_text_unchanged(settings) else None


class Writer:
    """Stores records from any thread, asynchronously, in batches, into SQLite or PostgreSQL.

    Args:
        url: database URL; ``None`` means ``$WASTEAUDIT_DATABASE_URL`` or ``sqlite:///wasteaudit.db``
            (resolved now, against the current directory).
        queue_size: most records held in memory (queued plus being written) before new ones are refused.
        batch_size: most records per transaction.
        flush_interval: seconds a record may wait for its batch to fill.
        auto_migrate: bring the schema to this package's version on first use; if False, wait
            (buffering, then dropping) until ``wasteaudit db upgrade`` has been run.
        price_overrides: ``{model: {"input": usd_per_mtok, "output": ..., "cache_read": ..., "cache_write": ...}}``.
        content_policy: applied to each record (call content not yet filtered, run return and
            used values, score raw values) before it is stored; the
            default is the configured one (``configured_content_policy``); ``None`` stores content
            as it arrives. A record the policy fails on is dropped, never stored unfiltered.

    Raises ``ConfigError`` only here, for bad arguments or an unparseable price override.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        auto_migrate: bool = True,
        price_overrides: Mapping[str, Mapping[str, float]] | None = None,
        content_policy: Callable[[Record], object] | None = configured_content_policy,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ConfigError("queue_size and batch_size must be at least 1")
        if not flush_interval >= 0:
            raise ConfigError("flush_interval must be >= 0 seconds")
        self.url = resolve_url(url)
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.auto_migrate = auto_migrate
        self._overrides = validate_overrides(price_overrides) or None
        self._content_policy = content_policy
        self._closed = False
        self._reset()
        _live_writers.add(self)
        _register_multiprocessing_exit(self)
        with self._cond:
            self._start_locked()

    # --- hot path ---------------------------------------------------------------------------

    def submit(self, record: Record) -> bool:
        """Queue a record for storage; never blocks on I/O, never raises.

        Returns False when the record was refused (buffer full, or the writer shut down).
        """
        try:
            with self._cond:
                if self._closed:
                    self._dropped_closed += 1
                    self._count_drops("closed", 1)
                    return False
                if self._size >= self.queue_size:
                    self._dropped_queue_full += 1
                    now = _clock()  # inline _count_drops: an overloaded app refuses many records
                    if not self._drop_hour <= now < self._drop_hour_end:
                        self._start_drop_hour(now)
                    self._queue_full_staged += 1
                    return False
                queue = self._queue
                queue.append(record)
                self._size += 1
                self._submitted += 1
                if self._thread is None:  # first use in a forked child
                    self._start_locked()
                depth = len(queue)
                if depth == 1 or depth == self.batch_size:
                    self._cond.notify_all()
            return True
        except Exception:  # pragma: no cover - defensive: the app's call must go on
            return False

    # --- control ----------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record submitted before this call is written or dropped.

        Returns False on timeout, or when the writer stopped first. With ``timeout=None`` and
        the database down, this waits until it is back: pass a timeout on shutdown paths.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            if self._finished >= target:
                return True
            if threading.current_thread() in (self._thread, self._converter):
                return False
            self._flush_requests += 1
            self._cond.notify_all()
            try:
                while self._finished < target:
                    thread = self._thread
                    if thread is None or not thread.is_alive():
                        return False
                    wait = 0.5
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            return False
                    self._cond.wait(wait)
                return True
            finally:
                self._flush_requests -= 1

    def shutdown(self, timeout: float | None = 5.0) -> bool:
        """Stop accepting records, write what is buffered (for at most ``timeout`` s), stop the thread.

        ``timeout=None`` waits for everything to be written, however long the database is down.
        Idempotent. Returns True when nothing was left unwritten.
        """
        with self._cond:
            self._closed = True
            if not self._stopping:
                self._stopping = True
                self._stop_deadline = math.inf if timeout is None else time.monotonic() + max(0.0, timeout)
            self._cond.notify_all()
            threads = (self._converter, self._thread)
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout) + 1.0
        for thread in threads:
            if thread is not None and thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        _live_writers.discard(self)
        with self._cond:
            return self._size == 0

    def stats(self) -> dict[str, Any]:
        """Counters for status pages and alarms (``dropped_*`` are records lost)."""
        with self._cond:
            return {
                "submitted": self._submitted,
                "written": self._written,
                "dropped_queue_full": self._dropped_queue_full,
                "dropped_db_error": self._dropped_db_error,
                "dropped_invalid": self._dropped_invalid,
                "dropped_closed": self._dropped_closed,
                "pending": self._size,
                "last_write_at": self._last_write_at,
                "last_error": self._last_error,
                "previous_unclean_exits": list(self._previous_unclean),
            }

    # --- state ------------------------------------------------------------------------------

    def _reset(self) -> None:
        """Fresh queue, counters and lock (at construction, and in a forked child)."""
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[Any] = deque()
        self._size = 0  # queued + in flight
        self._submitted = 0  # accepted by submit()
        self._finished = 0  # accepted, then written or dropped (FIFO, so flush can count)
        self._written = 0
        self._dropped_queue_full = 0
        self._dropped_db_error = 0
        self._dropped_invalid = 0
        self._dropped_closed = 0
        self._flush_requests = 0
        self._stopping = False
        self._stop_deadline = 0.0
        self._thread: threading.Thread | None = None  # the database thread
        self._converter: threading.Thread | None = None
        self._ready: deque[_Batch] = deque()  # converted, waiting for the database thread
        self._converter_done = False
        self._db_done = False
        self._db_writing = False  # the database thread is in _write (the converter steps aside now and then)
        self._engine_lock = threading.Lock()
        self._last_write_at: float | None = None
        self._last_error: str | None = None
        self._engine: Engine | None = None
        self._statements: _Statements | None = None
        self._schema_ready = False
        self._broken: str | None = None  # a permanent configuration error: every record is dropped
        self._logged_at: dict[str, float] = {}
        self._writer_id = uuid.uuid4().hex  # a forked child is a new writer
        self._started_wall = time.time()
        self._state_checked = False
        self._last_batch_ok = False
        self._previous_unclean: list[dict[str, Any]] = []
        self._bulk_retries = 0  # COPY batches written again with the idempotent INSERTs
        # Drops per (UTC hour as epoch seconds, reason): this writer's totals (under _cond), and
        # the totals the database holds (database thread); a key leaves both once written and old.
        self._drops: dict[tuple[int, str], int] = {}
        self._drops_staged: dict[str, int] = {}  # reason -> drops in [_drop_hour, _drop_hour_end), not in _drops yet
        self._queue_full_staged = 0  # the same for queue_full (the one reason counted at a high rate)
        self._drop_hour = self._drop_hour_end = 0
        self._drops_written: dict[tuple[int, str], int] = {}
        self._drops_broken = False  # the drop rows cannot be written (never at the cost of a record)

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here, its lock may be held forever, its queue
        # belongs to the parent (it will write those), and its pooled connections must not be
        # used or closed from this process.
        engine = self._engine
        closed = self._closed
        self._reset()
        self._closed = closed
        if engine is not None:
            try:
                engine.dispose(close=False)
            except Exception:  # pragma: no cover
                pass

    def _start_locked(self) -> None:
        if self._closed:
            return
        self._converter_done = self._db_done = False
        self._thread = threading.Thread(target=self._run, name="wasteaudit-writer", daemon=True)
        self._converter = threading.Thread(target=self._convert_loop, name="wasteaudit-convert", daemon=True)
        self._thread.start()
        self._converter.start()

    def _count_drops(self, reason: str, count: int) -> None:
        """Count drops in the current UTC hour (caller holds ``_cond``)."""
        now = _clock()
        if not self._drop_hour <= now < self._drop_hour_end:
            self._start_drop_hour(now)
        staged = self._drops_staged
        staged[reason] = staged.get(reason, 0) + count

    def _start_drop_hour(self, now: float) -> None:
        """Move the staged counts into ``_drops`` and stage the hour ``now`` falls in (holding ``_cond``)."""
        self._fold_staged_drops()
        self._drop_hour = _hour(now)
        self._drop_hour_end = self._drop_hour + HOUR_S

    def _fold_staged_drops(self) -> None:
        staged, drops, hour = self._drops_staged, self._drops, self._drop_hour
        if self._queue_full_staged:
            staged["queue_full"] = staged.get("queue_full", 0) + self._queue_full_staged
            self._queue_full_staged = 0
        for reason, count in staged.items():
            key = (hour, reason)
            drops[key] = drops.get(key, 0) + count
        staged.clear()

    def _settle(self, written: int = 0, db_error: int = 0, invalid: int = 0) -> None:
        with self._cond:
            self._written += written
            self._dropped_db_error += db_error
            self._dropped_invalid += invalid
            if db_error:
                self._count_drops("db_error", db_error)
            if invalid:
                self._count_drops("invalid", invalid)
            done = written + db_error + invalid
            self._finished += done
            self._size -= done
            if written:
                self._last_write_at = time.time()
            self._cond.notify_all()

    # --- writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # pragma: no cover - a bug; keep the app alive, say so
            self._report("crash", f"wasteaudit writer stopped unexpectedly: {exc!r}", logging.ERROR)
        finally:
            with self._engine_lock:
                engine, self._engine = self._engine, None
            if engine is not None and self._last_batch_ok and self._size == 0:
                self._forget_state(engine)  # a clean exit: nothing of this process is left unaccounted for
            if engine is not None:
                try:
                    engine.dispose()
                except Exception:  # pragma: no cover
                    pass
            with self._cond:
                self._db_done = True
                if self._size:
                    logger.warning("wasteaudit writer stopped with %d records not written", self._size)
                self._cond.notify_all()

    def _convert_loop(self) -> None:
        """Converter thread: batches off the queue, converted, handed to the database thread."""
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if self._broken is None:
                    try:
                        self._statements_for_encoding()
                        batch.units = self._prepare(batch, step_aside=True)
                    except Exception:  # the database thread retries the conversion or drops the batch
                        batch.units, batch.invalid = None, 0
                with self._cond:
                    while len(self._ready) >= READY_BATCHES and not self._db_done:
                        self._cond.wait()
                    if self._db_done:
                        return  # shut down before this batch could be written: it stays counted as pending
                    self._ready.append(batch)
                    self._cond.notify_all()
        except BaseException as exc:  # pragma: no cover - a bug; keep the app alive, say so
            self._report("crash", f"wasteaudit writer stopped unexpectedly: {exc!r}", logging.ERROR)
        finally:
            with self._cond:
                self._converter_done = True
                self._cond.notify_all()

    def _next_ready(self) -> _Batch | None:
        """A converted batch for the database thread; None once the converter has finished."""
        with self._cond:
            while not self._ready:
                if self._converter_done:
                    return None
                self._cond.wait()
            batch = self._ready.popleft()
            self._cond.notify_all()
            return batch

    def _loop(self) -> None:
        batch: _Batch | None = None
        backoff = 0.0
        while True:
            if batch is None:
                if self._last_batch_ok and not self._ready:
                    self._write_drops()  # idle: drops counted since the last commit
                batch = self._next_ready()
                if batch is None:
                    if self._last_batch_ok:
                        self._write_drops()  # shutting down: the drops counted meanwhile
                    return
            self._db_writing = True
            try:
                written = self._write(batch)
            finally:
                self._db_writing = False
            if written:
                batch, backoff = None, 0.0
                continue
            backoff = min(BACKOFF_MAX_S, max(BACKOFF_START_S, backoff * 2))
            if not self._sleep(backoff):
                return  # shutting down and out of time

    def _next_batch(self) -> _Batch | None:
        """Wait for a full batch, the flush interval, a flush() or shutdown; None means exit."""
        cond, queue = self._cond, self._queue
        with cond:
            first_seen: float | None = None
            while True:
                if queue:
                    if len(queue) >= self.batch_size or self._flush_requests or self._stopping:
                        break
                    now = time.monotonic()
                    if first_seen is None:
                        first_seen = now
                    remaining = first_seen + self.flush_interval - now
                    if remaining <= 0:
                        break
                    cond.wait(remaining)
                else:
                    if self._stopping:
                        return None
                    first_seen = None
                    cond.wait()
            count = min(self.batch_size, len(queue))
            return _Batch([queue.popleft() for _ in range(count)])

    def _sleep(self, seconds: float) -> bool:
        """Back off before a retry; False when shutdown's deadline has passed."""
        with self._cond:
            end = time.monotonic() + seconds
            while True:
                now = time.monotonic()
                if self._stopping:
                    if now >= self._stop_deadline:
                        return False
                    end = min(end, self._stop_deadline)
                if now >= end:
                    return True
                self._cond.wait(end - now)

    def _write(self, batch: _Batch) -> bool:
        """Try to store a batch; True when every record is settled (written or dropped)."""
        if self._broken is not None:
            self._drop(batch)
            return True
        try:
            engine = self._connect()
            if batch.units is None:
                batch.units = self._prepare(batch)
            if batch.units:
                self._insert(engine, batch.units, invalid=batch.invalid)
            self._last_batch_ok = True
            self._settle(written=len(batch.units), invalid=_take_invalid(batch))
            return True
        except Exception as exc:
            kind = _classify(exc)
            if kind == "permanent":
                self._broken = _describe(exc)
                self._report("config", f"wasteaudit cannot store records, dropping them: {self._broken}", logging.ERROR)
                self._drop(batch)
                return True
            self._last_batch_ok = False
            if kind == "transient" or batch.units is None:  # not yet connected: nothing to isolate
                self._on_transient(exc)
                return False
            self._settle(invalid=_take_invalid(batch))
            batch.units = self._isolate(batch.units)
            if not batch.units:
                self._write_drops()  # on their own: finds out whether the drop rows were what failed
            return not batch.units

    def _drop(self, batch: _Batch) -> None:
        count = len(batch.units) if batch.units is not None else len(batch.records)
        self._settle(db_error=count, invalid=_take_invalid(batch))

    def _statements_for_encoding(self) -> Engine:
        """The engine and its compiled statements (no connection yet: encoding needs only the dialect)."""
        with self._engine_lock:
            if self._engine is None:
                from wasteaudit.storage.engine import create_engine_for, tune_for_bulk_writes

                # No pre-ping (PostgreSQL's default here): it costs a round trip per batch, and a
                # batch that meets a dead pooled connection is retried on a fresh one (``_write``).
                engine = create_engine_for(self.url, pool_pre_ping=False)
                tune_for_bulk_writes(engine)
                self._statements = _Statements(engine)
                self._engine = engine
            return self._engine

    def _connect(self) -> Engine:
        engine = self._statements_for_encoding()
        if not self._schema_ready:
            from wasteaudit.storage.schema import ensure_schema

            ensure_schema(engine, auto_migrate=self.auto_migrate)
            self._schema_ready = True
        if not self._state_checked:
            self._report_unclean_exits(engine)
            self._state_checked = True
        return engine

    def _report_unclean_exits(self, engine: Engine) -> None:
        """Find writers on this host whose process is gone without a clean shutdown; report, remove."""
        import sqlalchemy as sa

        from wasteaudit.storage.models import WriterStateRow

        table = WriterStateRow.__table__
        host = _hostname()
        with engine.begin() as connection:
            rows = connection.execute(sa.select(table).where(table.c.host == host, table.c.id != self._writer_id)).all()
            for row in rows:
                if _process_alive(row.pid):
                    continue
                if connection.execute(sa.delete(table).where(table.c.id == row.id)).rowcount != 1:
                    continue  # another new writer reported it first
                if row.pending > 0:  # what it still held was lost: count it in the hour of its last batch
                    self._upsert_drops(connection, [self._drop_params(
                        _hour(_epoch(row.updated_at) or time.time()), "unclean_exit", row.pending,
                        writer_id=row.id, host=row.host, pid=row.pid,
                    )])
                exit_info = {
                    "pid": row.pid,
                    "pending": row.pending,
                    "written": row.written,
                    "dropped": row.dropped,
                    "last_batch_at": _epoch(row.updated_at),  # like last_write_at: epoch seconds
                }
                self._previous_unclean.append(exit_info)
                logger.warning(
                    "wasteaudit: a previous writer (pid %d) ended without shutting down; it still held "
                    "%d records in memory at its last committed batch, which were lost",
                    row.pid, row.pending,
                )

    def _state_row(self, batch_records: int) -> Any:
        statements = self._statements
        assert statements is not None
        now = time.time()
        return statements.upsert_state.encode({
            "id": self._writer_id,
            "host": _hostname(),
            "pid": os.getpid(),
            "started_at": self._started_wall,
            "updated_at": now,
            "pending": max(0, self._size - batch_records),
            "written": self._written + batch_records,
            "dropped": self._dropped_queue_full + self._dropped_db_error + self._dropped_invalid + self._dropped_closed,
        })

    # --- drops per hour ------------------------------------------------------------------------

    def _unwritten_drops(self) -> dict[tuple[int, str], int]:
        """This writer's drop totals that differ from what the database holds."""
        if self._drops_broken:
            return {}
        with self._cond:
            if self._drops_staged or self._queue_full_staged:
                self._fold_staged_drops()
            if not self._drops:
                return {}
            written = self._drops_written
            return {key: total for key, total in self._drops.items() if written.get(key) != total}

    def _drop_params(
        self, hour: int, reason: str, records: int, *, writer_id: str | None = None, host: str | None = None,
        pid: int | None = None,
    ) -> Any:
        statements = self._statements
        assert statements is not None
        return statements.upsert_drops.encode({
            "hour": float(hour),
            "reason": reason,
            "writer_id": writer_id or self._writer_id,
            "host": host or _hostname(),
            "pid": os.getpid() if pid is None else pid,
            "records": records,
        })

    def _drop_rows(self, totals: dict[tuple[int, str], int]) -> list[Any]:
        """This writer's rows for ``totals`` (per UTC hour and reason)."""
        return [self._drop_params(hour, reason, total) for (hour, reason), total in totals.items()]

    def _upsert_drops(self, connection: Any, params: list[Any]) -> None:
        statements = self._statements
        assert statements is not None
        connection.exec_driver_sql(statements.upsert_drops.sql, params)

    def _drops_committed(self, totals: dict[tuple[int, str], int]) -> None:
        """``totals`` are in the database now; forget keys of past hours that are fully written."""
        if not totals:
            return
        with self._cond:
            written, drops = self._drops_written, self._drops
            written.update(totals)
            # An hour two hours back gets no new drops (one hour of slack for a clock stepped back).
            old = _hour(_clock()) - HOUR_S
            for key in [key for key, total in written.items() if key[0] < old and drops.get(key) == total]:
                del written[key]
                del drops[key]

    def _write_drops(self) -> None:
        """Write the drop totals not in the database yet, in their own transaction (best effort)."""
        totals = self._unwritten_drops()
        engine = self._engine
        if not totals or engine is None or self._statements is None:
            return
        try:
            params = self._drop_rows(totals)
            with engine.begin() as connection:
                self._upsert_drops(connection, params)
        except Exception as exc:
            if _classify(exc) == "transient":
                self._on_transient(exc)  # they go with the next batch
                return
            self._drops_broken = True
            self._report(
                "drops", f"wasteaudit cannot write its drop counts, keeping them in memory only: {_describe(exc)}",
                logging.ERROR,
            )
            return
        self._drops_committed(totals)

    def _forget_state(self, engine: Engine) -> None:
        try:
            import sqlalchemy as sa

            from wasteaudit.storage.models import WriterStateRow

            table = WriterStateRow.__table__
            with engine.begin() as connection:
                connection.execute(sa.delete(table).where(table.c.id == self._writer_id))
        except Exception as exc:  # best effort at exit
            self._report("state", f"wasteaudit could not clear its writer state row: {_describe(exc)}", logging.WARNING)

    def _prepare(self, batch: _Batch, *, step_aside: bool = False) -> list[tuple[Any, ...]]:
        """Rows for each record; a record that cannot be converted is dropped alone (``batch.invalid``).

        ``step_aside`` (the converter thread): let the database thread have the GIL now and then
        while it writes (``YIELD_EVERY_RECORDS``).
        """
        from wasteaudit._internal.content import apply_content_policy
        from wasteaudit.storage.convert import call_values, content_checker, run_row, score_row
        from wasteaudit.storage.pricing import price_call

        statements = self._statements
        assert statements is not None
        encode_call, encode_attempt = statements.insert_call.encode_values, statements.insert_attempt.encode_values
        units: list[tuple[Any, ...]] = []
        invalid = 0
        overrides, policy = self._overrides, self._content_policy
        # The configured policy in a mode that keeps text: content it would not change is checked
        # as it is encoded and stored as encoded (``convert.content_checker``), the rest walked.
        settings = _text_passing_settings() if policy is configured_content_policy else None
        unchanged_content = (
            content_checker(settings.max_output_bytes, utf8=statements.insert_call.json_as_utf8)
            if settings is not None else None
        )
        sleep = time.sleep
        for position, record in enumerate(batch.records):
            if step_aside and not position % YIELD_EVERY_RECORDS and self._db_writing:
                sleep(YIELD_S)
            try:
                kind = type(record)
                encoded = None
                if policy is not None and not getattr(record, "policy_applied", False):
                    if unchanged_content is not None and kind is CallRecord:
                        encoded = unchanged_content(record)
                        apply_content_policy(record, settings, encoded)
                    else:
                        policy(record)  # a call's content, a run's return and used values, a score's raw value
                if kind is CallRecord:
                    cost, version, status = price_call(record, overrides)
                    record.cost_usd, record.price_version = cost, version  # "filled by the writer"
                    row, attempts = call_values(record, cost, version, status, encoded)
                    units.append(("call", record.id, encode_call(row), [encode_attempt(a) for a in attempts]))
                elif kind is RunRecord:
                    units.append(("run", record.id, statements.upsert_run.encode(run_row(record))))
                elif kind is ScoreRecord:
                    units.append(("score", record.id, statements.insert_score.encode(score_row(record))))
                else:
                    raise TypeError(f"not a wasteaudit record: {kind.__name__}")
            except Exception as exc:
                invalid += 1
                self._report("invalid", f"wasteaudit dropped a record it could not convert: {exc!r}", logging.ERROR)
        batch.invalid = invalid
        return units

    def _insert(
        self, engine: Engine, units: list[tuple[Any, ...]], *, invalid: int = 0, bulk: bool = True, drops: bool = True,
    ) -> None:
        """Write converted records, this writer's state row and (``drops``) its drop totals not
        in the database yet, in one transaction.

        On PostgreSQL calls and attempts go in with COPY (``bulk``): a fraction of the server
        work of one INSERT per row. COPY cannot skip rows already stored, so if it fails for
        any reason (a retry of a batch whose commit did happen, bad content, a lost
        connection) the batch is written again at once with the idempotent INSERTs, whose
        outcome is the batch's outcome.
        """
        runs: dict[str, Any] = {}
        calls: list[Any] = []
        attempts: list[Any] = []
        scores: list[Any] = []
        for unit in units:
            kind = unit[0]
            if kind == "call":
                calls.append(unit[2])
                attempts.extend(unit[3])
            elif kind == "run":
                runs[unit[1]] = unit[2]  # the last version of a run in a batch wins
            else:
                scores.append(unit[2])
        statements = self._statements
        assert statements is not None
        state = self._state_row(len(units) + invalid)
        totals = self._unwritten_drops() if drops else {}
        drop_params = self._drop_rows(totals)
        tables = (
            (statements.upsert_run, list(runs.values())),
            (statements.insert_call, calls),
            (statements.insert_attempt, attempts),
            (statements.insert_score, scores),
        )
        if bulk and calls and statements.copy:
            try:
                self._write_tables(engine, tables, state, drop_params, copy=True)
                self._drops_committed(totals)
                return
            except Exception:  # written again below; that attempt's error (if any) is the one classified
                self._bulk_retries += 1
        self._write_tables(engine, tables, state, drop_params, copy=False)
        self._drops_committed(totals)

    def _write_tables(self, engine: Engine, tables: Any, state: Any, drop_params: list[Any], *, copy: bool) -> None:
        """One transaction: each table's rows (with COPY where ``copy`` and the statement has
        column-ordered rows: calls and attempts), then this writer's state row and drop totals."""
        statements = self._statements
        assert statements is not None
        with engine.begin() as connection:
            for compiled, rows in tables:
                if not rows:
                    continue
                if copy and compiled.columns is not None:
                    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                    try:
                        _copy(cursor, compiled, rows)
                    finally:
                        cursor.close()
                elif compiled.multirow:
                    for sql, params in compiled.multirow_statements(rows, connection):
                        connection.exec_driver_sql(sql, params)
                else:
                    connection.exec_driver_sql(compiled.sql, compiled.params(rows))
            connection.exec_driver_sql(statements.upsert_state.sql, [state])
            if drop_params:
                self._upsert_drops(connection, drop_params)

    def _isolate(self, units: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Write one record per transaction to find and drop the ones the database refuses.

        Returns the units still to retry if the database became unreachable meanwhile.
        """
        engine = self._engine
        assert engine is not None
        for position, unit in enumerate(units):
            try:
                self._insert(engine, [unit], bulk=False, drops=False)
            except Exception as exc:
                if _classify(exc) == "transient":
                    self._on_transient(exc)
                    return units[position:]
                self._report(
                    "refused", f"wasteaudit dropped a {unit[0]} record the database refused: {_describe(exc)}",
                    logging.ERROR,
                )
                self._settle(db_error=1)
            else:
                self._settle(written=1)
        return []

    def _on_transient(self, exc: BaseException) -> None:
        self._report(
            "unavailable:" + type(exc).__name__,
            f"wasteaudit cannot write to the database yet, keeping records and retrying: {_describe(exc)}",
            logging.WARNING,
        )

    def _report(self, kind: str, message: str, level: int) -> None:
        """Record the problem for stats(); log it at most once a minute per kind."""
        self._last_error = message
        now = time.monotonic()
        last = self._logged_at.get(kind)
        if last is None or now - last >= LOG_INTERVAL_S:
            self._logged_at[kind] = now
            logger.log(level, message)


class _Statements:
    """The idempotent INSERTs for one engine, built with Core ``insert()`` and compiled once.

    Rows arrive encoded (JSON as text from ``convert``, timestamps turned into the driver's form
    here) and go to the driver's executemany through ``exec_driver_sql``: SQLAlchemy's per-row
    parameter processing cost more than the database itself. The encoding is what SQLAlchemy's
    own types store, so the models read the rows back unchanged.
    """

    def __init__(self, engine: Engine) -> None:
        from wasteaudit.storage.convert import ATTEMPT_COLUMNS, CALL_COLUMNS
        from wasteaudit.storage.models import AttemptRow, CallRow, DropRow, RunRow, ScoreRow, WriterStateRow

        from sqlalchemy import func

        dialect = engine.dialect
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert

        runs = RunRow.__table__
        run_insert = insert(runs)
        upsert = run_insert.on_conflict_do_update(
            index_elements=[runs.c.id],
            set_={column.name: run_insert.excluded[column.name] for column in runs.columns if column.name != "id"},
        )
        self.upsert_run = _Compiled(upsert, runs, dialect)
        self.insert_call = _Compiled(
            insert(CallRow.__table__).on_conflict_do_nothing(index_elements=["id"]),
            CallRow.__table__,
            dialect,
            CALL_COLUMNS,
        )
        self.insert_attempt = _Compiled(
            insert(AttemptRow.__table__).on_conflict_do_nothing(index_elements=["call_id", "index"]),
            AttemptRow.__table__,
            dialect,
            ATTEMPT_COLUMNS,
        )
        self.copy = dialect.name == "postgresql" and dialect.driver == "psycopg"
        state = WriterStateRow.__table__
        state_insert = insert(state)
        self.upsert_state = _Compiled(
            state_insert.on_conflict_do_update(
                index_elements=[state.c.id],
                set_={name: state_insert.excluded[name] for name in ("updated_at", "pending", "written", "dropped")},
            ),
            state,
            dialect,
        )
        self.insert_score = _Compiled(
            insert(ScoreRow.__table__).on_conflict_do_nothing(index_elements=["id"]), ScoreRow.__table__, dialect
        )
        # A writer's total for an hour and reason: never lowered, so a retried batch adds nothing.
        drops = DropRow.__table__
        drops_insert = insert(drops)
        larger = func.greatest if dialect.name == "postgresql" else func.max  # SQLite's two-argument max()
        self.upsert_drops = _Compiled(
            drops_insert.on_conflict_do_update(
                index_elements=[drops.c.hour, drops.c.reason, drops.c.writer_id],
                set_={"records": larger(drops.c.records, drops_insert.excluded.records)},
            ),
            drops,
            dialect,
        )


class _Compiled:
    """One compiled INSERT, and the encoders from ``convert``'s rows to the driver's parameters.

    Rows come as dicts (runs, scores, state) or, for calls and attempts, as lists in
    ``columns`` order (the table's), which COPY and qmark drivers take as they are.
    """

    def __init__(self, statement: Any, table: Any, dialect: Any, columns: tuple[str, ...] | None = None) -> None:
        from sqlalchemy import Boolean

        from wasteaudit.storage.models import UTCDateTime

        compiled = statement.compile(dialect=dialect, column_keys=[column.key for column in table.columns])
        self.sql: str = compiled.string
        self._times = tuple(c.name for c in table.columns if isinstance(c.type, UTCDateTime))
        self._time = _sqlite_time if dialect.name == "sqlite" else _aware_time
        # qmark drivers (sqlite3) take tuples in the compiled order; pyformat (psycopg) takes dicts.
        self._positional = bool(dialect.positional)
        self._order = operator.itemgetter(*compiled.positiontup) if dialect.positional else None
        self.columns = columns
        self.multirow = False
        self._variables: int | None = None
        if columns is not None:
            self._time_at = tuple(columns.index(name) for name in self._times)
            self._reorder: Callable[[list[Any]], Any] | None = None  # psycopg: lists (COPY) or dicts (params)
            if dialect.positional:  # sqlite3: tuples (SQLAlchemy's executemany takes no lists)
                order = tuple(compiled.positiontup)
                self._reorder = tuple if order == columns else operator.itemgetter(*(columns.index(k) for k in order))
            # SQLite: one multi-row INSERT per batch instead of executemany. Same rows, same
            # order, same CPU; but sqlite3 releases the GIL around each statement it steps, and
            # every time it wants the GIL back while the converter thread is busy it may wait a
            # whole switch interval (5 ms). One statement per batch waits once, not once a row.
            self.multirow = dialect.name == "sqlite"
            head, _, rest = self.sql.partition(" VALUES (")
            group, _, tail = rest.partition(")")
            self._multirow_parts = (head + " VALUES ", group.split(", "), tail)
            self._multirow_sql: dict[tuple[int, tuple[int, ...]], str] = {}
            # sqlite3 binds a bool (not exactly an int) the slow way, through its adapter lookup;
            # stored as 0/1 either way.
            self._bool_at = (
                tuple(columns.index(c.name) for c in table.columns if isinstance(c.type, Boolean))
                if dialect.name == "sqlite" else ()
            )
            preparer = dialect.identifier_preparer
            self.copy_sql = (
                f"COPY {preparer.format_table(table)} ({', '.join(preparer.quote(name) for name in columns)}) FROM STDIN"
            )
            # Binary COPY where every column has a binary form here: the server parses no text
            # for numbers and timestamps (a third less server CPU per call row, measured).
            self.copy_types: list[int] | None = None
            self._jsonb_at: tuple[int, ...] = ()
            self._json_at: tuple[int, ...] = ()
            if dialect.name == "postgresql" and dialect.driver == "psycopg":
                binary = _binary_copy_types(table, columns, dialect)
                if binary is not None:
                    self.copy_types, self._jsonb_at, self._json_at = binary
                    self.copy_sql += " (FORMAT BINARY)"
        # Whether JSON columns are sent as UTF-8 bytes (binary COPY): content encoded to bytes
        # at once is not turned into text and back.
        self.json_as_utf8 = bool(self._jsonb_at or self._json_at) if columns is not None else False

    def encode(self, row: dict[str, Any]) -> Any:
        to_time = self._time
        for name in self._times:
            value = row[name]
            if value is not None:
                row[name] = to_time(value)
        return self._order(row) if self._order is not None else row

    def encode_values(self, row: list[Any]) -> Any:
        """A row in ``columns`` order, timestamps in the driver's form (in place)."""
        to_time = self._time
        for at in self._time_at:
            value = row[at]
            if value is not None:
                row[at] = to_time(value)
        for at in self._bool_at:
            value = row[at]
            if value is not None:
                row[at] = 1 if value else 0
        for at in self._jsonb_at:  # JSONB's binary form: a version byte, then the JSON text
            value = row[at]
            if value is not None:
                row[at] = b"\x01" + (value if type(value) is bytes else value.encode())
        for at in self._json_at:  # JSON's binary form: the text
            value = row[at]
            if type(value) is str:
                row[at] = value.encode()
        return self._reorder(row) if self._reorder is not None else row

    def multirow_statements(self, rows: list[Any], connection: Any) -> list[tuple[str, tuple[Any, ...]]]:
        """``rows`` as few multi-row INSERTs (each within SQLite's limit on bound variables).

        A column that is NULL in every row of a statement is written as a literal NULL rather
        than bound: sqlite3 binds None the slow way (its adapter lookup, ~20 a row here, with the
        GIL held), and the writer's rows leave many columns NULL (the scorer's, an app's unused
        features). A few statement texts per row count, each prepared once by sqlite3's cache.
        """
        if self._variables is None:
            self._variables = _sqlite_variable_limit(connection)
        head, placeholders, tail = self._multirow_parts
        width = len(placeholders)
        per_statement = max(1, min(MULTIROW_MAX_ROWS, self._variables // width))
        statements = []
        for start in range(0, len(rows), per_statement):
            part = rows[start:start + per_statement]
            count = len(part)
            nulls = (None,) * count
            keep = tuple(at for at, values in enumerate(zip(*part)) if values != nulls)  # stops at a column's first value
            sql = self._multirow_sql.get((count, keep))
            if sql is None:
                if len(self._multirow_sql) >= 8:
                    self._multirow_sql.clear()
                kept = set(keep)
                group = "(" + ", ".join(mark if at in kept else "NULL" for at, mark in enumerate(placeholders)) + ")"
                sql = self._multirow_sql[(count, keep)] = head + ", ".join([group] * count) + tail
            if len(keep) == width:
                params = tuple(_chain(part))
            elif len(keep) > 1:
                params = tuple(_chain(map(operator.itemgetter(*keep), part)))
            else:
                params = tuple(row[at] for row in part for at in keep)
            statements.append((sql, params))
        return statements

    def params(self, rows: list[Any]) -> list[Any]:
        """``rows`` as executemany parameters (pyformat drivers take dicts)."""
        if self.columns is None or self._positional:
            return rows
        columns, jsonb_at, json_at = self.columns, self._jsonb_at, self._json_at
        if not jsonb_at and not json_at:
            return [dict(zip(columns, row)) for row in rows]
        params = []
        for row in rows:
            values = list(row)
            for at in jsonb_at:  # back from COPY's binary JSONB to its text
                value = values[at]
                if value is not None:
                    values[at] = value[1:].decode()
            for at in json_at:
                value = values[at]
                if value is not None:
                    values[at] = value.decode()
            params.append(dict(zip(columns, values)))
        return params


_SQLITE_DEFAULT_VARIABLES = 999  # SQLite before 3.32; newer ones allow 32766 (or what they were built with)
MULTIROW_MAX_ROWS = 1000  # rows per SQLite INSERT: ~170 KB of SQL for a call row, far below SQLite's 1 MB limit


def _sqlite_variable_limit(connection: Any) -> int:
    """Bound variables one SQLite statement may hold on this connection."""
    try:
        import sqlite3

        return max(1, int(connection.connection.dbapi_connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)))
    except Exception:  # Python < 3.11, another driver
        return _SQLITE_DEFAULT_VARIABLES


# SQL types of the writer's COPY columns -> the psycopg type each is sent as in binary COPY.
# JSON and JSONB go as bytea: their binary input is the JSON text (JSONB's after a version byte),
# which the rows carry as UTF-8.
_BINARY_COPY_TYPES = {
    "VARCHAR": "varchar", "TEXT": "text", "TIMESTAMP WITH TIME ZONE": "timestamptz", "DOUBLE PRECISION": "float8",
    "BIGINT": "int8", "INTEGER": "int4", "BOOLEAN": "bool", "JSONB": "bytea", "JSON": "bytea",
}


def _binary_copy_types(
    table: Any, columns: tuple[str, ...], dialect: Any
) -> tuple[list[int], tuple[int, ...], tuple[int, ...]] | None:
    """``(type oids, JSONB positions, JSON positions)`` for a binary COPY of ``columns``; None if
    one has no binary form here."""
    try:
        from psycopg import adapters

        oids: list[int] = []
        jsonb: list[int] = []
        json_: list[int] = []
        for at, name in enumerate(columns):
            sql_type = table.c[name].type.compile(dialect=dialect).split("(")[0]
            type_name = _BINARY_COPY_TYPES.get(sql_type)
            if type_name is None:
                return None
            info = adapters.types.get(type_name)
            if info is None:
                return None
            oids.append(info.oid)
            if sql_type == "JSONB":
                jsonb.append(at)
            elif sql_type == "JSON":
                json_.append(at)
        return oids, tuple(jsonb), tuple(json_)
    except Exception:  # pragma: no cover - text COPY then
        return None


def _copy(cursor: Any, compiled: _Compiled, rows: list[Any]) -> None:
    """COPY rows (in ``compiled.columns`` order) into the table (psycopg 3, binary where it can)."""
    with cursor.copy(compiled.copy_sql) as copy:
        if compiled.copy_types is not None:
            copy.set_types(compiled.copy_types)
        write_row = copy.write_row
        for row in rows:
            write_row(row)


def _epoch(value: Any) -> float | None:
    """A timestamp column read back raw (naive UTC text or datetime on SQLite, aware on PostgreSQL)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def _hour(epoch: float) -> int:
    """The start of the UTC hour ``epoch`` falls in, as epoch seconds."""
    return int(epoch // HOUR_S) * HOUR_S


def _hostname() -> str:
    return socket.gethostname()[:255]


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _take_invalid(batch: _Batch) -> int:
    """The records conversion dropped, counted once (with the batch's outcome, in batch order)."""
    invalid, batch.invalid = batch.invalid, 0
    return invalid


def _aware_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(value, timezone.utc)


_SQLITE_SECONDS: dict[int, str] = {}  # epoch second -> "YYYY-MM-DD HH:MM:SS" (records of a batch share a few)


def _sqlite_time(value: Any) -> str:
    # The text SQLAlchemy's SQLite DATETIME stores (naive UTC, always with microseconds), so the
    # models and SQL comparisons against bound datetimes agree with what the writer stored.
    if isinstance(value, datetime):
        value = value.astimezone(timezone.utc) if value.tzinfo is not None else value
        return value.isoformat(" ", "microseconds")[:26]
    # Epoch seconds, split the way datetime.fromtimestamp does (microseconds rounded half to even).
    second = int(value)  # toward zero, as math.modf splits
    micros = round((value - second) * 1e6)
    if micros >= 1_000_000:
        micros -= 1_000_000
        second += 1
    elif micros < 0:
        micros += 1_000_000
        second -= 1
    prefix = _SQLITE_SECONDS.get(second)
    if prefix is None:
        if len(_SQLITE_SECONDS) >= 4096:
            _SQLITE_SECONDS.clear()
        prefix = _SQLITE_SECONDS[second] = datetime.fromtimestamp(second, timezone.utc).isoformat(" ")[:19]
    return f"{prefix}.{micros:06d}"


def _classify(exc: BaseException) -> str:
    """'permanent' (bad configuration), 'transient' (retry later) or 'data' (this content)."""
    if isinstance(exc, (ConfigError, MissingExtraError)):
        return "permanent"
    if isinstance(exc, (StorageError, OSError)):
        return "transient"
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return "transient"
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        return "transient"
    return "data"


def _describe(exc: BaseException) -> str:
    from wasteaudit.storage.engine import describe_error

    if isinstance(exc, (ConfigError, MissingExtraError, StorageError)):
        return str(exc)
    return describe_error(exc)


# --- process lifecycle ------------------------------------------------------------------------

_live_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_live_writers):
        writer._after_fork_in_child()


def _shutdown_all(timeout: float = ATEXIT_TIMEOUT_S) -> None:
    """At exit: write what is buffered, bounded in time (the facade may have shut down already)."""
    deadline = time.monotonic() + timeout
    for writer in list(_live_writers):
        writer.shutdown(timeout=max(0.0, deadline - time.monotonic()))


def _register_multiprocessing_exit(writer: Writer) -> None:
    """multiprocessing's forked children leave through os._exit, skipping atexit: hook its own exit."""
    try:
        from multiprocessing import util
    except ImportError:  # pragma: no cover
        return
    ref = weakref.ref(writer)

    def in_child(_writer: Writer) -> None:
        def shutdown() -> None:
            live = ref()
            if live is not None:
                live.shutdown(timeout=ATEXIT_TIMEOUT_S)

        util.Finalize(None, shutdown, exitpriority=10)

    util.register_after_fork(writer, in_child)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown_all)
