"""instrument()/undo: reversible, idempotent, guarded per target, no double records."""

from __future__ import annotations

import openai
import pytest
import wrapt
from openai.resources.chat.completions import completions as chat_module
from openai_support import *  # noqa: F403 - fixtures: llm_server, oai, aoai, instrumented
from openai_support import only_call, set_settings

import wasteaudit
from wasteaudit.instrumentation import instrument_openai
from wasteaudit.instrumentation import openai as wa_openai
from wasteaudit.localllm import Reply
from wasteaudit.localllm import openai_bodies as ob

MESSAGES = [{"role": "user", "content": "hi"}]


def _originals() -> dict[str, object]:
    found = {}
    for name in wa_openai.patched_targets():
        module, cls_name, attr = name.rsplit(".", 2)
        cls = getattr(__import__(module, fromlist=[cls_name]), cls_name)
        found[name] = cls.__dict__[attr]
    return found


def test_undo_restores_every_original(records):
    before = _originals()
    assert "openai.resources.chat.completions.completions.Completions.create" in before
    assert "openai._base_client.SyncAPIClient._send_request" in before
    undo = wa_openai.instrument()
    during = _originals()
    assert all(isinstance(during[name], wrapt.FunctionWrapper) for name in before)
    undo()
    assert _originals() == before
    undo()  # twice is harmless


def test_handle_is_idempotent_and_records_once(oai, llm_server, records):
    assert instrument_openai() is instrument_openai()
    llm_server.enqueue(Reply(json=ob.chat_completion("once")))
    oai().chat.completions.create(model="m", messages=MESSAGES)
    assert len(records.calls) == 1


def test_double_patching_still_records_once(oai, llm_server, records):
    undo = wa_openai.instrument()  # a second, independent layer on top of the fixture's
    try:
        llm_server.enqueue(Reply(json=ob.chat_completion("once")), ob.error_reply(429), Reply(json=ob.chat_completion("retried")))
        client = oai(max_retries=1)
        client.chat.completions.create(model="m", messages=MESSAGES)
        client.chat.completions.create(model="m", messages=MESSAGES)
        assert len(records.calls) == 2
        assert [a.status_code for a in records.calls[1].attempts] == [429, 200]  # not doubled
    finally:
        undo()


def test_undo_under_a_third_party_wrapper(llm_server, records):
    undo = wa_openai.instrument()
    seen = []

    def third_party(wrapped, instance, args, kwargs):
        seen.append(1)
        return wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper(chat_module.Completions, "create", third_party)
    theirs = chat_module.Completions.__dict__["create"]
    try:
        undo()
        llm_server.enqueue(Reply(json=ob.chat_completion("after")))
        client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0)
        assert client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content == "after"
        assert seen == [1] and records.calls == []  # theirs still runs, ours is gone or inert
    finally:
        if chat_module.Completions.__dict__.get("create") is theirs:
            chat_module.Completions.create = theirs.__wrapped__


def test_missing_targets_are_skipped(monkeypatch, oai, llm_server, records):
    """An older SDK without some methods still gets the others."""
    current = wasteaudit.instrumentation.active_instrumentations()["openai"]
    current.undo()
    monkeypatch.delattr(chat_module.Completions, "parse")
    monkeypatch.delattr(openai._base_client.SyncAPIClient, "_send_request")
    handle = instrument_openai()
    try:
        assert not any(t.endswith("Completions.parse") and "AsyncCompletions" not in t for t in wa_openai.patched_targets())
    finally:
        handle.undo()
    monkeypatch.undo()
    instrument_openai()
    llm_server.enqueue(Reply(json=ob.chat_completion("ok")))
    oai().chat.completions.create(model="m", messages=MESSAGES)
    assert len(records.calls) == 1


def test_disabled_settings_pass_through(oai, llm_server, records):
    set_settings(enabled=False)
    llm_server.enqueue(Reply(sse=ob.chat_chunks(["a"])))
    chunks = list(oai().chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert "stream_options" not in llm_server.requests[-1].json
    assert type(chunks[0]).__name__ == "ChatCompletionChunk" and records.calls == []


def test_open_stream_survives_undo(oai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(["a", "b"]), usage=ob.chat_usage(2, 2))
    stream = oai().chat.completions.create(model="m", messages=MESSAGES, stream=True)
    wasteaudit.instrumentation.active_instrumentations()["openai"].undo()
    assert all(c.choices for c in stream)
    call = only_call(records)
    assert call.stream_state == "completed" and call.output_tokens == 2


def test_calls_belong_to_their_audit_run(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.chat_completion("in run")))

    @wasteaudit.audit(name="feature")
    def feature() -> str:
        return oai().chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content

    assert feature() == "in run"
    call = only_call(records)
    assert call.function == "feature" and call.run_id == records.runs[0].id


def test_module_level_client(instrumented, llm_server, records, monkeypatch):
    monkeypatch.setattr(openai, "api_key", "sk-test")
    monkeypatch.setattr(openai, "base_url", llm_server.openai_base_url)
    monkeypatch.setattr(openai, "max_retries", 0)
    monkeypatch.setattr(openai, "_client", None)
    llm_server.enqueue(Reply(json=ob.chat_completion("module")))
    assert openai.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content == "module"
    call = only_call(records)
    assert call.server_address == "127.0.0.1" and call.provider == "openai"


@pytest.mark.parametrize("raw_first", [True])
def test_raw_wrapper_cached_before_instrumenting_bypasses_us(llm_server, records, raw_first):
    """Documented SDK behaviour (sdk-surfaces §2.5): with_raw_response binds create when first touched."""
    client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="k", max_retries=0)
    raw = client.chat.completions.with_raw_response  # touched before instrumenting
    handle = instrument_openai()
    try:
        llm_server.enqueue(Reply(json=ob.chat_completion("raw")))
        assert raw.create(model="m", messages=MESSAGES).parse().choices[0].message.content == "raw"
        assert records.calls == []
    finally:
        handle.undo()
