"""Every HTTP attempt of a call is visible: retries are attempts of one record, not new calls."""

from __future__ import annotations

import socket

import openai
import pytest
from openai_support import *  # noqa: F403 - fixtures: llm_server, oai, aoai, instrumented
from openai_support import only_call

from wasteaudit.localllm import Reply
from wasteaudit.localllm import openai_bodies as ob

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fast_backoff(monkeypatch):
    """Retries without a retry-after header back off 0.5 s+; tests need milliseconds."""
    monkeypatch.setattr("openai._base_client.INITIAL_RETRY_DELAY", 0.001)
    monkeypatch.setattr("openai._base_client.MAX_RETRY_DELAY", 0.002)


def test_429_then_200_is_one_record_with_two_attempts(oai, llm_server, records, spans):
    llm_server.enqueue(
        ob.error_reply(429, "slow down"),
        Reply(json=ob.chat_completion("ok", prompt_tokens=11, completion_tokens=2), headers={"x-request-id": "req_ok"}),
    )
    result = oai(max_retries=2).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert result.choices[0].message.content == "ok"
    call = only_call(records)
    assert [a.status_code for a in call.attempts] == [429, 200]
    assert [a.index for a in call.attempts] == [0, 1]
    assert call.attempts[0].request_id.startswith("req_err_429") and call.attempts[1].request_id == "req_ok"
    assert all(a.duration_s is not None and a.duration_s >= 0 and a.error_type is None for a in call.attempts)
    assert (call.input_tokens, call.output_tokens) == (11, 2)  # the 200's usage
    assert call.status_code == 200 and call.error_type is None and call.attempt_count == 2
    assert [r.headers["x-stainless-retry-count"] for r in llm_server.requests] == ["0", "1"]
    attrs = spans.spans[-1].attributes
    assert attrs["wasteaudit.attempts"] == 2
    assert tuple(attrs["wasteaudit.attempts.failed_statuses"]) == (429,)
    assert len(spans.spans) == 1  # one span for the logical call


def test_500_then_200(oai, llm_server, records):
    llm_server.enqueue(ob.error_reply(500, "oops"), Reply(json=ob.chat_completion("ok")))
    oai(max_retries=1).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert [a.status_code for a in only_call(records).attempts] == [500, 200]


def test_retries_exhausted(oai, llm_server, records):
    llm_server.enqueue(ob.error_reply(503), ob.error_reply(503), ob.error_reply(503))
    with pytest.raises(openai.InternalServerError) as caught:
        oai(max_retries=2).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert caught.value.status_code == 503
    call = only_call(records)
    assert [a.status_code for a in call.attempts] == [503, 503, 503]
    assert call.status_code == 503 and call.error_type == "server_error" and call.finish_category == "error"


def test_stream_429_then_200(oai, llm_server, records):
    llm_server.enqueue(ob.error_reply(429), Reply(sse=ob.chat_chunks(["a", "b"], include_usage=True)))
    chunks = list(oai(max_retries=1).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert chunks
    call = only_call(records)
    assert [a.status_code for a in call.attempts] == [429, 200] and call.usage_source == "provider"


def test_responses_retry(oai, llm_server, records):
    llm_server.enqueue(ob.error_reply(429), Reply(json=ob.response("ok")))
    oai(max_retries=1).responses.create(model="gpt-4.1", input="x")
    assert [a.status_code for a in only_call(records).attempts] == [429, 200]


def test_connection_errors_are_attempts(instrumented, records, fast_backoff):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=1)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    call = only_call(records)
    assert [a.status_code for a in call.attempts] == [None, None]
    assert [a.error_type for a in call.attempts] == ["ConnectError", "ConnectError"]
    assert call.error_type == "APIConnectionError" and call.status_code is None


def test_timeout_then_success(oai, llm_server, records, fast_backoff):
    llm_server.enqueue(Reply(json=ob.chat_completion("late"), delay_s=0.5), Reply(json=ob.chat_completion("ok")))
    result = oai(max_retries=1, timeout=0.15).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert result.choices[0].message.content == "ok"
    call = only_call(records)
    assert [a.error_type for a in call.attempts] == ["ReadTimeout", None]
    assert [a.status_code for a in call.attempts] == [None, 200]


async def test_async_retry_and_connection_error(aoai, llm_server, records, fast_backoff):
    llm_server.enqueue(ob.error_reply(429), Reply(json=ob.chat_completion("ok")))
    await aoai(max_retries=1).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert [a.status_code for a in only_call(records).attempts] == [429, 200]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=1)
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert [a.error_type for a in records.calls[-1].attempts] == ["ConnectError", "ConnectError"]


def test_requests_outside_instrumented_calls_are_not_attempts(oai, llm_server, records):
    llm_server.enqueue(Reply(json={"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "me"}]}))
    models = oai().models.list()
    assert [m.id for m in models] == ["gpt-4o-mini"]
    assert records.calls == []


def test_a_call_made_while_another_streams_gets_its_own_attempts(oai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.chat_chunks(["a", "b"])), Reply(json=ob.chat_completion("inner")))
    client = oai()
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    next(stream)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # while the stream is open
    list(stream)
    inner, outer = records.calls
    assert inner.choices[0].text == "inner" and len(inner.attempts) == 1
    assert outer.stream and len(outer.attempts) == 1
