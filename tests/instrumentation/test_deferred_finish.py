"""Calls are finished off the app's thread: complete records and spans, in order, nothing lost.

The calling thread stamps the timing and queues the rest (reading the result, the span's end
attributes, ending the span, handing the record on) to the finisher thread; every reader of
records (the test kit, ``flush()``, shutdown, interpreter exit) drains it first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Iterator

import pytest
from openai_support import *  # noqa: F403 - fixtures: llm_server, oai, instrumented
from openai_support import only_call

import wasteaudit
from wasteaudit._internal import deferred, pipeline
from wasteaudit.localllm import Reply
from wasteaudit.localllm import openai_bodies as ob

MESSAGES = [{"role": "user", "content": "Say hi"}]


def _chat(client: Any) -> Any:
    return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)


class ThreadNoting:
    """A sink that notes the thread each record arrives on."""

    deferrable = True

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.complete: list[bool] = []

    def submit(self, record: Any) -> bool:
        self.threads.append(threading.current_thread().name)
        self.complete.append(getattr(record, "output_tokens", None) is not None)
        return True


@pytest.fixture
def noting() -> Iterator[ThreadNoting]:
    sink = ThreadNoting()
    pipeline.add_sink(sink)
    try:
        yield sink
    finally:
        pipeline.remove_sink(sink)


def _wait(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_a_call_is_finished_on_the_finisher_thread_with_a_complete_record(oai, llm_server, records, noting):
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi!", prompt_tokens=7, completion_tokens=2)))
    _chat(oai())
    # no reader drained yet: the finisher delivers it by itself
    assert _wait(lambda: len(noting.threads) == 1)
    assert noting.threads == ["wasteaudit-finisher"] and noting.complete == [True]
    record = only_call(records)
    assert (record.input_tokens, record.output_tokens, record.choices[0].text) == (7, 2, "Hi!")


def test_readers_see_complete_records_and_ended_spans_right_after_the_call(oai, llm_server, records, spans):
    deferred_delay = deferred.BATCH_DELAY_S
    deferred.BATCH_DELAY_S = 5.0  # the worker would wait: only the readers' drain can finish it
    try:
        llm_server.enqueue(Reply(json=ob.chat_completion("Hello", prompt_tokens=5, completion_tokens=1)))
        _chat(oai())
        record = only_call(records)
        assert record.output_tokens == 1 and record.finish_category == "stop" and record.choices[0].text == "Hello"
        (span,) = spans.spans
        assert span.attributes["gen_ai.usage.output_tokens"] == 1
        assert span.attributes["wasteaudit.call.id"] == record.id
        assert span.attributes["gen_ai.request.max_tokens"] == 20
        # ended off the app's thread, but with the call's own end time
        assert span.end_time == int(record.ended_at * 1e9)
        assert span.start_time == int(record.started_at * 1e9)
    finally:
        deferred.BATCH_DELAY_S = deferred_delay


def test_own_span_starts_with_the_sampling_relevant_attributes(oai, llm_server, records):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from wasteaudit._internal import tracing

    seen: dict[str, Any] = {}

    class AtStart(SimpleSpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            seen.update(span.attributes)

    provider = TracerProvider()
    provider.add_span_processor(AtStart(InMemorySpanExporter()))
    previous, tracing._tracer = tracing._tracer, provider.get_tracer("wasteaudit")
    try:
        llm_server.enqueue(Reply(json=ob.chat_completion("ok")))
        _chat(oai())
        records.calls
    finally:
        tracing._tracer = previous
    assert seen["gen_ai.operation.name"] == "chat" and seen["gen_ai.provider.name"] == "openai"
    assert seen["gen_ai.request.model"] == "gpt-4o-mini" and seen["server.address"] == "127.0.0.1"
    assert "wasteaudit.call.id" not in seen  # set with the end attributes, off the app's thread


def test_a_sink_that_reads_the_callers_context_gets_records_on_the_calling_thread(oai, llm_server, records):
    class ContextSink:  # no ``deferrable``: it must run in the caller's context
        def __init__(self) -> None:
            self.threads: list[str] = []

        def submit(self, record: Any) -> bool:
            self.threads.append(threading.current_thread().name)
            return True

    sink = ContextSink()
    pipeline.add_sink(sink)
    try:
        llm_server.enqueue(Reply(json=ob.chat_completion("ok")))
        _chat(oai())
        assert sink.threads == [threading.current_thread().name]  # delivered before create() returned
    finally:
        pipeline.remove_sink(sink)
    assert len(records.calls) == 1


def test_records_keep_call_order_with_runs_and_scores(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.chat_completion("one")), Reply(json=ob.chat_completion("two")))
    client = oai()

    @wasteaudit.audit
    def feature() -> None:
        _chat(client)
        _chat(client)

    feature()
    kinds = [type(r).__name__ for r in records.records]
    assert kinds == ["CallRecord", "CallRecord", "RunRecord"]
    assert [c.choices[0].text for c in records.calls] == ["one", "two"]


def test_a_full_queue_finishes_the_call_inline_never_drops(oai, llm_server, records, noting, monkeypatch):
    monkeypatch.setattr(deferred, "MAX_QUEUED", 0)
    llm_server.enqueue(Reply(json=ob.chat_completion("ok", completion_tokens=3)))
    _chat(oai())
    assert noting.threads == [threading.current_thread().name]  # finished before create() returned
    assert only_call(records).output_tokens == 3


def test_an_error_escaping_a_job_fails_the_next_reader_under_the_test_suite():
    def broken() -> None:
        raise RuntimeError("finisher bug")

    deferred.submit_or_run(broken)
    with pytest.raises(RuntimeError, match="finisher bug"):
        pipeline.deferred.drain()
    assert not deferred.pending()


def test_an_error_in_a_job_is_counted_in_production(monkeypatch):
    from wasteaudit._internal.safety import internal_error_counts

    monkeypatch.setenv("WASTEAUDIT_RAISE_INTERNAL", "0")
    before = internal_error_counts().get("deferred.job", 0)

    def broken() -> None:
        raise RuntimeError("finisher bug")

    deferred.submit_or_run(broken)
    assert internal_error_counts().get("deferred.job", 0) == before + 1  # drained first


def _child_script(body: str) -> str:
    return textwrap.dedent(
        """
        import importlib, os, sys, json
        sys.path.insert(0, {root!r})
        import openai, wasteaudit
        base = importlib.import_module("openai._base_client")
        httpx2 = getattr(base, "httpx2", None) or base.httpx  # the HTTP package this SDK is built on
        from wasteaudit.localllm import openai_bodies as ob
        from wasteaudit._internal import deferred
        deferred.BATCH_DELAY_S = 30.0  # the worker never gets to it: only the exit path can
        body = json.dumps(ob.chat_completion("bye", prompt_tokens=4, completion_tokens=2)).encode()
        transport = httpx2.MockTransport(lambda request: httpx2.Response(200, content=body, headers={{"content-type": "application/json"}}))
        wasteaudit.configure(database_url=sys.argv[1])
        wasteaudit.instrument_openai()
        client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-test", max_retries=0, http_client=httpx2.Client(transport=transport))
        """
    ).format(root=os.getcwd()) + textwrap.dedent(body)


def _stored_calls(url: str) -> list[tuple[Any, ...]]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sqlalchemy.text("select input_tokens, output_tokens from wasteaudit_calls"))]
    finally:
        engine.dispose()


def test_interpreter_exit_finishes_the_queued_calls_before_the_writer_stops(tmp_path):
    url = f"sqlite:///{tmp_path}/exit.db"
    script = _child_script(
        """
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WASTEAUDIT_RAISE_INTERNAL": "1"}
    done = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert _stored_calls(url) == [(4, 2), (4, 2)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_the_parents_queued_calls(tmp_path):
    url = f"sqlite:///{tmp_path}/fork.db"
    script = _child_script(
        """
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert deferred.pending()  # still queued in the parent
        pid = os.fork()
        if pid == 0:
            ok = not deferred.pending()
            wasteaudit.flush(timeout=30)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        wasteaudit.flush(timeout=30)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WASTEAUDIT_RAISE_INTERNAL": "1"}
    done = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert _stored_calls(url) == [(4, 2)]  # once: the parent's, never again from the child


def test_flush_writes_what_the_finisher_still_holds(oai, llm_server, tmp_path):
    from wasteaudit import config

    previous = config.get_settings()
    url = f"sqlite:///{tmp_path}/flush.db"
    wasteaudit.configure(database_url=url)
    deferred_delay = deferred.BATCH_DELAY_S
    deferred.BATCH_DELAY_S = 5.0
    try:
        llm_server.enqueue(Reply(json=ob.chat_completion("ok", prompt_tokens=9, completion_tokens=4)))
        _chat(oai())
        assert wasteaudit.flush(timeout=30)
        assert _stored_calls(url) == [(9, 4)]
    finally:
        deferred.BATCH_DELAY_S = deferred_delay
        pipeline.reset_writer()
        config.set_settings(previous)


def test_the_worker_still_wakes_after_a_drain_took_the_job_that_woke_it():
    ran: list[int] = []
    for i in range(50):
        deferred.submit_or_run(lambda: ran.append(-1))
        deferred.drain()  # usually takes the job before the worker gets the GIL
        time.sleep(0.002)  # the woken worker finds nothing and waits again
        deferred.submit_or_run(lambda i=i: ran.append(i))
        assert _wait(lambda i=i: ran[-1:] == [i], timeout=5.0), f"worker missed job {i}"
    assert [r for r in ran if r >= 0] == list(range(50))


def test_calls_from_many_threads_are_all_finished_without_a_reader_draining():
    import random

    done: list[int] = []
    lock = threading.Lock()

    def job(n: int) -> None:
        with lock:
            done.append(n)

    def app_thread(base: int) -> None:
        rng = random.Random(base)
        for i in range(200):
            deferred.submit_or_run(lambda n=base + i: job(n))
            if rng.random() < 0.2:
                time.sleep(rng.choice((0, 0.0005, 0.012)))  # around the worker's batch pace

    threads = [threading.Thread(target=app_thread, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _wait(lambda: len(done) == 800, timeout=10.0), len(done)
    assert sorted(done) == sorted(k * 1000 + i for k in range(4) for i in range(200))


def test_finish_in_background_off_finishes_on_the_calling_thread_and_ends_the_span_before_returning(oai, llm_server, records, spans, noting):
    from wasteaudit import config

    previous = config.get_settings()
    config.set_settings(config.replace(previous, finish_in_background=False))
    try:
        llm_server.enqueue(Reply(json=ob.chat_completion("Now", prompt_tokens=3, completion_tokens=1)))
        _chat(oai())
        # delivered before the SDK call returned, without any reader draining
        assert noting.threads == [threading.current_thread().name] and noting.complete == [True]
        assert not deferred.pending()
    finally:
        config.set_settings(previous)
    (span,) = spans.spans
    assert span.end_time is not None and span.attributes["gen_ai.usage.output_tokens"] == 1
    assert only_call(records).output_tokens == 1
