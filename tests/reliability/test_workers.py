"""Scoring workers sharing one database: no call missed, none scored twice, dead workers taken over.

The scale-out and kill tests run real ``wasteaudit worker`` processes against PostgreSQL (the
claims are ``FOR UPDATE SKIP LOCKED``); the lease-fencing, poison-call and error-marking tests
run in-process on SQLite and PostgreSQL. Workers run ``--rules-only``: what is under test is the
claiming, not the detectors.
"""

from __future__ import annotations

import re
import resource
import threading
import time
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa
from storage.conftest import db_url, pg_database, pg_url  # noqa: F401 - fixtures, re-exported
from worker_support import Workers, build_workload, store, wait_until

from wasteaudit.cli import main
from wasteaudit.records import CallRecord
from wasteaudit.scoring import SCORER_VERSION
from wasteaudit.scoring import runner
from wasteaudit.scoring.engine import Scorer
from wasteaudit.scoring.runner import MAX_SCORE_ATTEMPTS, claim, score_pending, unscored
from wasteaudit.storage.engine import create_engine_for
from wasteaudit.storage.models import CallRow, FindingRow

calls_t, findings_t = CallRow.__table__, FindingRow.__table__


def _states(engine: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(calls_t.c.id, calls_t.c.scored_version, calls_t.c.score_error, calls_t.c.score_attempts,
                                           calls_t.c.claimed_by)))


def _duplicate_findings(engine: Any) -> list[Any]:
    """Findings that appear more than once for the same call and token span (a call scored twice)."""
    f = findings_t.c
    key = (f.call_id, f.scorer_version, f.kind, f.subkind, f.tier, f.choice_index, f.segment_start, f.segment_end)
    with engine.connect() as conn:
        return list(conn.execute(sa.select(*key, sa.func.count()).group_by(*key).having(sa.func.count() > 1)))


def _worker_counts(workers: Workers, names: list[str]) -> dict[str, int]:
    counts = {}
    for name in names:
        match = re.search(r"worker stopped: scored (\d+) calls", workers.output(name))
        assert match, workers.output(name)[-2000:]
        counts[name] = int(match.group(1))
    return counts


def _expire_leases(engine: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(calls_t).where(calls_t.c.claimed_by.is_not(None)).values(lease_until=time.time() - 1))


def _calls(records: list[Any]) -> list[CallRecord]:
    return [r for r in records if isinstance(r, CallRecord)]


@pytest.mark.slow
@pytest.mark.postgres
def test_four_worker_processes_score_10000_calls_each_exactly_once(pg_url, tmp_path):
    records = build_workload(10_000, start=time.time() - 2 * 86400)
    store(pg_url, records)
    engine = create_engine_for(pg_url)
    assert unscored(engine) == 10_000

    workers = Workers(pg_url, tmp_path)
    names = [f"w{i}" for i in range(4)]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    for name in names:
        workers.start(name, "--batch-size", "100")
    try:
        done = wait_until(lambda: unscored(engine) == 0, timeout=600, interval=0.5)
        elapsed = time.monotonic() - started
    finally:
        codes = workers.stop_all()
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime
    assert done, f"{unscored(engine)} calls left unscored"
    assert codes == {name: 0 for name in names}, {n: workers.output(n)[-1500:] for n in names}

    states = _states(engine)
    assert len(states) == 10_000
    assert all(s.scored_version == SCORER_VERSION and s.score_error is None and s.claimed_by is None for s in states)
    assert Counter(s.score_attempts for s in states) == {1: 10_000}  # each call leased once: scored once
    counts = _worker_counts(workers, names)
    assert sum(counts.values()) == 10_000, counts  # each worker counts only calls it marked itself
    assert all(n > 0 for n in counts.values()), counts  # the work was shared
    assert _duplicate_findings(engine) == []
    with engine.connect() as conn:
        kinds = {row[0] for row in conn.execute(sa.select(findings_t.c.subkind).distinct())}
    assert "truncated" in kinds  # findings were written (the workload has truncated, unused outputs)
    print(f"\n4 workers scored 10,000 calls in {elapsed:.1f} s ({10_000 / elapsed:.0f} calls/s); per worker: "
          + ", ".join(f"{n} {c} calls ({c / elapsed:.0f}/s)" for n, c in counts.items()) + f"; workers' CPU {cpu_s:.1f} s")


@pytest.mark.slow
@pytest.mark.postgres
def test_a_worker_killed_mid_batch_leaves_its_calls_to_the_others(pg_url, tmp_path):
    records = build_workload(1_500, start=time.time() - 86400)
    store(pg_url, records)
    engine = create_engine_for(pg_url)
    workers = Workers(pg_url, tmp_path)

    # One worker takes a big batch with a short lease; it is killed while scoring it.
    workers.start("doomed", "--batch-size", "1000", "--lease", "4")

    def leased() -> list[str]:
        return [s.id for s in _states(engine) if s.claimed_by is not None and s.scored_version is None]

    held = wait_until(leased, timeout=120, interval=0.05)
    workers.kill("doomed")
    held = leased()  # what the dead worker still held (it may have finished nothing)
    scored_before = sum(1 for s in _states(engine) if s.scored_version is not None)
    assert len(held) >= 100, "the worker was not caught mid-batch"

    names = ["a", "b"]
    for name in names:
        workers.start(name, "--batch-size", "200", "--lease", "120")
    try:
        done = wait_until(lambda: unscored(engine) == 0, timeout=300, interval=0.5)
    finally:
        codes = workers.stop_all()
    assert done and codes["a"] == 0 and codes["b"] == 0, (workers.output("a")[-1500:], workers.output("b")[-1500:])

    states = {s.id: s for s in _states(engine)}
    assert len(states) == 1_500 and all(s.scored_version == SCORER_VERSION and s.claimed_by is None for s in states.values())
    # The dead worker's calls were leased twice (once by it, once by a survivor); every other call once.
    assert {cid for cid, s in states.items() if s.score_attempts == 2} == set(held)
    assert all(s.score_attempts == 1 for cid, s in states.items() if cid not in set(held))
    counts = _worker_counts(workers, names)
    assert sum(counts.values()) + scored_before == 1_500, (counts, scored_before)
    assert _duplicate_findings(engine) == []


class _StalledScorer(Scorer):
    """A rules-only scorer that stalls (after scoring) until released: a worker stuck past its lease."""

    def __init__(self) -> None:
        super().__init__(embedder=None)
        self.scored = threading.Event()
        self.release = threading.Event()

    def score(self, *args: Any, **kwargs: Any) -> Any:
        result = super().score(*args, **kwargs)
        self.scored.set()
        assert self.release.wait(60)
        return result


def test_a_worker_whose_lease_was_taken_over_writes_nothing(db_url):
    records = build_workload(12, start=time.time() - 3600)
    store(db_url, records)
    engine = create_engine_for(db_url)
    slow_ids = claim(engine, "slow-worker", 100, lease_s=300)
    assert len(slow_ids) == 12
    stalled = _StalledScorer()
    result: list[int] = []
    slow = threading.Thread(target=lambda: result.append(runner._score_claimed(engine, stalled, "slow-worker", slow_ids, {})))
    slow.start()
    try:
        assert stalled.scored.wait(60)  # the slow worker has its results in hand ...
        _expire_leases(engine)  # ... but stalls past its lease, and another worker takes the calls over
        assert score_pending(engine, scorer=Scorer(embedder=None), worker_id="fast-worker") == 12
    finally:
        stalled.release.set()
        slow.join(60)
    with engine.connect() as conn:
        n_findings = conn.execute(sa.select(sa.func.count()).select_from(findings_t)).scalar_one()
    assert n_findings > 0
    assert result == [0]  # the late write marked nothing and wrote no findings
    assert _duplicate_findings(engine) == []
    assert all(s.score_attempts == 2 and s.scored_version == SCORER_VERSION and s.claimed_by is None for s in _states(engine))


def test_a_call_that_keeps_killing_its_worker_is_isolated_then_marked(db_url, capsys):
    records = build_workload(6, start=time.time() - 3600, calls_per_run=3, runless_every=10)
    store(db_url, records)
    engine = create_engine_for(db_url)
    first = claim(engine, "w1", 100, lease_s=300)
    assert len(first) == 6
    _expire_leases(engine)  # w1 died: the batch is retried whole once ...
    assert sorted(claim(engine, "w2", 100, lease_s=300)) == sorted(first)
    _expire_leases(engine)  # ... w2 died too: from now on the suspects are leased one at a time
    seen = []
    for attempt in range(3, MAX_SCORE_ATTEMPTS + 1):
        one = claim(engine, f"w{attempt}", 100, lease_s=300)
        assert len(one) == 1
        seen.append(one[0])
        _expire_leases(engine)
    assert len(set(seen)) == 1  # the oldest suspect, leased alone each time, died each time
    poison = seen[0]
    # The next claim marks it and goes on with the others (leased alone: they are suspects too).
    assert len(claim(engine, "w9", 100, lease_s=300)) == 1
    states = {s.id: s for s in _states(engine)}
    assert f"not scored after {MAX_SCORE_ATTEMPTS} leases" in states[poison].score_error
    assert states[poison].scored_version is None and states[poison].claimed_by is None

    assert main(["--database-url", db_url, "status"]) == 0
    out = capsys.readouterr().out
    assert "score errors    1 calls could not be scored" in out and poison in out


def test_a_call_that_breaks_the_scorer_is_marked_once_and_shown_by_status(db_url, monkeypatch, capsys):
    records = build_workload(30, start=time.time() - 3600)
    store(db_url, records)
    calls = _calls(records)
    unreadable, crashing = calls[4].id, calls[17].id
    engine = create_engine_for(db_url)
    with engine.begin() as conn:  # a pathological stored row: choices that are not objects
        conn.execute(sa.update(calls_t).where(calls_t.c.id == unreadable).values(choices=["not a choice object"]))
    real_score = Scorer.score
    attempts: Counter[str] = Counter()

    def score(self: Scorer, records: list[Any], *args: Any, **kwargs: Any) -> Any:
        for rec in records:
            attempts[rec.id] += 1
        if any(rec.id == crashing for rec in records):
            raise RuntimeError("detector bug on this call")
        return real_score(self, records, *args, **kwargs)

    monkeypatch.setattr(Scorer, "score", score)
    assert main(["--database-url", db_url, "score", "--rules-only", "--batch-size", "50"]) == 0
    assert "scored 30 calls" in capsys.readouterr().out
    states = {s.id: s for s in _states(engine)}
    assert "unreadable row" in states[unreadable].score_error and states[unreadable].scored_version is None
    assert "detector bug on this call" in states[crashing].score_error and states[crashing].scored_version is None
    good = [cid for cid in states if cid not in (unreadable, crashing)]
    assert all(states[cid].scored_version == SCORER_VERSION and states[cid].score_error is None for cid in good)

    # Not retried: a second pass has nothing to do, and the crashing call was not scored again.
    tried = attempts[crashing]
    assert main(["--database-url", db_url, "score", "--rules-only"]) == 0
    assert "scored 0 calls" in capsys.readouterr().out and attempts[crashing] == tried
    assert main(["--database-url", db_url, "status"]) == 0
    out = capsys.readouterr().out
    assert "0 unscored" in out and "score errors    2 calls could not be scored" in out
    assert unreadable in out and crashing in out


@pytest.mark.slow
@pytest.mark.postgres
def test_the_worker_benchmark_runs_in_a_tiny_configuration(pg_database):
    import subprocess
    import sys

    from worker_support import REPO

    out = subprocess.run([sys.executable, str(REPO / "bench" / "bench_workers.py"), "--calls", "150", "--workers", "1,2", "--batch", "50"],
                         capture_output=True, text=True, timeout=300, cwd=REPO).stdout
    assert "1 workers:" in out and "2 workers:" in out and "speed-up x1.00" in out, out
