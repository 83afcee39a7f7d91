"""@audit: runs are grouped, nested, isolated per thread/task, and the app sees no difference."""

from __future__ import annotations

import asyncio
import threading

import pytest

import wasteaudit
from wasteaudit._internal.runs import current_run, materialize
from wasteaudit.instrumentation._calls import CallTracker


def fake_call(text: str = "hello") -> None:
    """What an instrumented SDK call does to the run context, without HTTP."""
    tracker = CallTracker(provider="openai", operation="chat", api="chat.completions", method="create", request_model="m", stream=False, params={})
    tracker.finish()


def test_sync_run_groups_calls_and_captures_return_value(records):
    @wasteaudit.audit
    def answer(q: str) -> str:
        fake_call()
        fake_call()
        return "final answer"

    assert answer("q") == "final answer"
    run = records.runs[0]
    assert run.name.endswith("answer")
    assert run.status == "ok"
    assert run.return_value == "final answer"
    assert [c.run_id for c in records.calls] == [run.id, run.id]
    assert records.calls[0].function == run.name


def test_run_without_calls_is_not_stored(records):
    @wasteaudit.audit(name="idle")
    def idle() -> int:
        return 1

    assert idle() == 1
    assert records.runs == []


def test_exception_propagates_unchanged_and_marks_run_failed(records):
    class Boom(Exception):
        pass

    err = Boom("x")

    @wasteaudit.audit(name="fails", tags={"team": "cx"})
    def fails() -> None:
        fake_call()
        raise err

    with pytest.raises(Boom) as caught:
        fails()
    assert caught.value is err
    run = records.runs[0]
    assert run.status == "failed" and run.error_type == "Boom" and run.tags == {"team": "cx"}


def test_nested_audits_become_child_runs(records):
    @wasteaudit.audit(name="inner")
    def inner() -> str:
        fake_call()
        return "in"

    @wasteaudit.audit(name="outer")
    def outer() -> str:
        fake_call()
        return inner() + "+out"

    assert outer() == "in+out"
    runs = {r.name: r for r in records.runs}
    assert runs["inner"].parent_id == runs["outer"].id
    by_run = {c.run_id for c in records.calls}
    assert by_run == {runs["inner"].id, runs["outer"].id}


def test_parent_without_own_calls_is_stored_when_child_has_calls(records):
    @wasteaudit.audit(name="child")
    def child() -> None:
        fake_call()

    @wasteaudit.audit(name="parent")
    def parent() -> None:
        child()

    parent()
    names = sorted(r.name for r in records.runs)
    assert names == ["child", "parent"]


async def test_async_runs_are_isolated_per_task(records):
    @wasteaudit.audit(name="task")
    async def task(i: int) -> int:
        fake_call()
        await asyncio.sleep(0.01)
        fake_call()
        return i

    results = await asyncio.gather(*(task(i) for i in range(20)))
    assert results == list(range(20))
    assert len(records.runs) == 20
    per_run: dict[str, int] = {}
    for call in records.calls:
        per_run[call.run_id] = per_run.get(call.run_id, 0) + 1
    assert sorted(per_run.values()) == [2] * 20
    assert {r.return_value for r in records.runs} == {str(i) for i in range(20)}


def test_threads_do_not_share_runs(records):
    @wasteaudit.audit(name="worker")
    def worker() -> None:
        fake_call()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({c.run_id for c in records.calls}) == 8
    assert current_run() is None


def test_generator_run_spans_iteration_and_captures_yielded_text(records):
    @wasteaudit.audit(name="gen")
    def gen():
        fake_call()
        yield "a"
        fake_call()
        yield "b"
        return "done"

    out = list(gen())
    assert out == ["a", "b"]
    assert len(records.runs) == 1
    assert records.runs[0].return_value == "ab"
    assert len({c.run_id for c in records.calls}) == 1
    assert current_run() is None


def test_generator_closed_early_still_ends_the_run(records):
    @wasteaudit.audit(name="gen")
    def gen():
        for i in range(10):
            fake_call()
            yield str(i)

    g = gen()
    assert next(g) == "0"
    g.close()
    assert len(records.runs) == 1 and records.runs[0].status == "ok"


async def test_async_generator_run(records):
    @wasteaudit.audit(name="agen")
    async def agen():
        fake_call()
        yield "x"
        await asyncio.sleep(0)
        fake_call()
        yield "y"

    out = [item async for item in agen()]
    assert out == ["x", "y"]
    assert records.runs[0].return_value == "xy"
    assert len(records.calls) == 2 and len({c.run_id for c in records.calls}) == 1


def test_calls_outside_runs_are_recorded_runless(records):
    fake_call()
    assert records.calls[0].run_id is None and records.calls[0].function is None


def test_mark_used_and_score_inside_run(records):
    @wasteaudit.audit(name="uses")
    def uses() -> str:
        fake_call()
        wasteaudit.mark_used({"answer": 42})
        assert wasteaudit.score(0.8) == wasteaudit.current_run_id()
        return "ok"

    uses()
    run = records.runs[0]
    assert run.used_values == ['{"answer": 42}']
    assert records.scores[0].run_id == run.id and records.scores[0].value == 0.8


def test_score_later_by_run_id_and_rejects_out_of_range(records):
    assert wasteaudit.score(True, run_id="abc") == "abc"
    assert records.scores[0].value == 1.0
    with pytest.raises(ValueError):
        wasteaudit.score(1.5, run_id="abc")


def test_validator_failure_records_a_zero_score(records):
    @wasteaudit.audit(name="extract", validate=lambda out: out.startswith("{"))
    def extract() -> str:
        fake_call()
        return "not json"

    assert extract() == "not json"
    assert records.runs[0].validation is False
    assert [(s.name, s.value, s.source) for s in records.scores] == [("validation", 0.0, "validator")]


def test_return_value_is_capped(records, monkeypatch):
    from wasteaudit import config

    config.set_settings(config.replace(config.get_settings(), max_return_bytes=10))

    @wasteaudit.audit
    def big() -> str:
        fake_call()
        return "x" * 100

    assert big() == "x" * 100
    assert records.runs[0].return_value == "x" * 10 and records.runs[0].return_truncated


def test_materialize_marks_parents(records):
    @wasteaudit.audit(name="a")
    def a():
        run = current_run()
        materialize(run)
        return run

    run = a()
    assert run.materialized


def test_run_span_parents_call_spans(records, spans):
    @wasteaudit.audit(name="traced")
    def traced() -> None:
        fake_call()

    traced()
    finished = {s.name: s for s in spans.spans}
    run_span = finished["audit traced"]
    call_span = finished["chat m"]
    assert call_span.parent.span_id == run_span.context.span_id
    assert call_span.attributes["wasteaudit.run.name"] == "traced"
    assert records.calls[0].span_id == format(call_span.context.span_id, "016x")
