"""Finish calls off the app's request path: one background thread runs queued "finish" jobs.

When an SDK call returns, the calling thread only stamps its timing and queues a job; the job
reads the (immutable in practice) response into the record, writes the span's end attributes,
ends the span with the call's real end time, and hands the record to the sinks and the writer.
That moves most of the per-call work off the app's thread.

Guarantees:

* Order: jobs run in submission order (one worker); :func:`submit_or_run` runs the job inline
  while earlier jobs are queued only through the queue, so records reach sinks in call order.
* Nothing is lost: :func:`drain` runs every queued job in the caller's thread and waits for the
  one in flight; ``flush()``, ``shutdown()``, the test kit's readers and interpreter exit drain
  first. Past ``MAX_QUEUED`` queued jobs the caller finishes its own call inline (backpressure,
  never a drop).
* A forked child starts empty (the parent finishes its own calls) and starts its worker lazily.
* Fail-open: a job's error is counted by :func:`internal_error` inside the job; under the test
  suite (``WASTEAUDIT_RAISE_INTERNAL=1``) an error that escapes a job is re-raised by the next
  :func:`drain` in the draining thread, so our bugs still fail our tests.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Callable

Job = Callable[[], None]

#: Queued jobs beyond which the calling thread finishes its own call inline (backpressure).
MAX_QUEUED = 10_000
#: How long the worker lets calls queue up after a wake-up before finishing them as one batch.
BATCH_DELAY_S = 0.01


class _State:
    __slots__ = ("lock", "cond", "jobs", "worker", "idle", "running", "failure")

    def __init__(self) -> None:
        # Submitting takes no lock (a deque append is atomic); the lock orders the worker, the
        # drainers and the wake-up of an idle worker.
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.jobs: deque[Job] = deque()
        self.worker: threading.Thread | None = None
        self.idle = False  # the worker waits for work (a submit must wake it)
        self.running = False  # a job is running (one runner at a time keeps call order)
        self.failure: BaseException | None = None


_state = _State()
_enabled = True


def set_enabled(enabled: bool) -> None:
    """Switch deferral off (every job then runs inline): for diagnostics and A/B measurement."""
    global _enabled
    if not enabled:
        drain()
    _enabled = enabled


def enabled() -> bool:
    return _enabled


def submit(job: Job) -> bool:
    """Queue ``job`` for the worker; False when the caller must run it inline (queue full)."""
    state = _state
    jobs = state.jobs
    if len(jobs) >= MAX_QUEUED:
        return False
    jobs.append(job)
    if state.idle or state.worker is None:
        _wake(state)
    return True


def _wake(state: _State) -> None:
    with state.lock:
        if state.worker is None:
            worker = threading.Thread(target=_work, args=(state,), name="wasteaudit-finisher", daemon=True)
            state.worker = worker
            worker.start()
            _hook_exit()
        elif state.idle:
            state.idle = False
            state.cond.notify_all()


def submit_or_run(job: Job) -> None:
    """Queue ``job``, or run it now when deferral is off or the queue is full."""
    if not (_enabled and submit(job)):
        _run(job)


def pending() -> bool:
    """Whether queued or running jobs exist (a record emitted now must queue behind them)."""
    state = _state
    return bool(state.jobs) or state.running


def _run(job: Job) -> None:
    from wasteaudit._internal.safety import internal_error

    try:
        job()
    except Exception as exc:  # a job counts its own errors; this is the last guard
        internal_error("deferred.job", exc)


def _work(state: _State) -> None:
    while True:
        with state.lock:
            while True:
                # Marked idle before looking at the queue (and again after every wake-up: a drain
                # may have taken what woke us): a submit appends before it reads the mark, so
                # either we see its call or it sees the mark and wakes us.
                state.idle = True
                if state.jobs:
                    break
                state.cond.wait()
            state.idle = False
        # Let the calls of the next few milliseconds queue up and finish them as one batch; keep
        # polling at that pace while calls keep coming, and sleep for good (needing a wake-up)
        # only after a quiet interval: the app's thread then rarely pays for a wake-up, and the
        # GIL changes hands once per batch instead of once per call.
        while True:
            time.sleep(BATCH_DELAY_S)
            if not _run_batch(state):
                break


def _run_batch(state: _State) -> bool:
    """Run what is queued, in order; False when nothing was."""
    jobs = state.jobs
    ran = False
    while True:
        with state.lock:
            while state.running:  # a drain() in another thread is running one
                state.cond.wait()
            if not jobs:
                return ran
            job = jobs.popleft()
            state.running = True
        ran = True
        try:
            _run(job)
        except BaseException as exc:  # raise mode (tests): hand it to the next drain()
            state.failure = exc
        with state.lock:
            state.running = False
            state.cond.notify_all()


def drain(timeout: float | None = None) -> bool:
    """Run every queued job in this thread (in order, one runner at a time) and wait for the one
    in flight; True when none is left."""
    state = _state
    jobs = state.jobs
    deadline = None if timeout is None else time.monotonic() + timeout
    on_worker = threading.current_thread() is state.worker
    if not jobs and not state.running:
        return _raise_failure(state)
    while True:
        with state.lock:
            while state.running and not on_worker:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                state.cond.wait(remaining)
            if state.running and not on_worker:
                break  # timed out behind the job in flight
            if not jobs:
                break
            job = jobs.popleft()
            running_before = state.running
            state.running = True
        try:
            _run(job)
        finally:
            with state.lock:
                state.running = running_before
                state.cond.notify_all()
    return _raise_failure(state) and not jobs and (on_worker or not state.running)


def _raise_failure(state: _State) -> bool:
    failure, state.failure = state.failure, None
    if failure is not None:
        raise failure
    return True


_exit_hooked = False


def _hook_exit() -> None:
    """Drain when the main thread ends, before threads are joined and atexit runs: the writer
    may still start its threads then (Python 3.12+ refuses new threads during atexit)."""
    global _exit_hooked
    if _exit_hooked:
        return
    _exit_hooked = True
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(_drain_at_exit)
        except RuntimeError:  # already shutting down: the atexit drains still run
            pass


def _drain_at_exit() -> None:
    try:
        drain(timeout=5.0)
    except BaseException:  # at exit there is no one left to tell
        pass


def _after_fork_in_child() -> None:
    # The parent's queued jobs are the parent's calls: the parent finishes them.
    global _state
    _state = _State()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
