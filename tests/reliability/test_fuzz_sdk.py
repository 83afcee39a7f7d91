"""Fuzzed provider replies through the real SDKs: the app sees what the bare SDK gives it, rows stay sane.

Each example serves one damaged reply (see ``fuzz_support``) twice from the loopback server:
once to the uninstrumented SDK, once to the instrumented one. The two observations (returned
value, every streamed item, the exception's type and message) must be identical, wasteaudit
must count no internal error (the suite re-raises them: ``WASTEAUDIT_RAISE_INTERNAL=1``), the
writer must drop nothing, and the stored SQLite row must decode with sane token counts and
text that round-trips. Examples are bounded (``WASTEAUDIT_FUZZ_EXAMPLES``, default 40 per test)
and derandomized, so CI runs the same cases every time; raise the count locally to search more.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import anthropic
import openai
import pytest
from fuzz_support import (
    canonical,
    check_row_sane,
    damaged_stream,
    encoded,
    json_reply,
    mutated,
    observe,
    observe_stream,
    raised,
    stored_call,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wasteaudit import config
from wasteaudit._internal import pipeline
from wasteaudit._internal.content import scrub
from wasteaudit._internal.safety import internal_error_counts
from wasteaudit.instrumentation import active_instrumentations, instrument_anthropic, instrument_openai
from wasteaudit.localllm import LocalLLMServer, Reply
from wasteaudit.localllm import anthropic_bodies as ab
from wasteaudit.localllm import openai_bodies as ob
from wasteaudit.storage.convert import clean_text
from wasteaudit.testing import CapturedAudit, capture

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("WASTEAUDIT_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("WASTEAUDIT_FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# The HTTP packages the installed SDKs are built on (httpx2 today, httpx in older releases).
OPENAI_HTTP = getattr(openai._base_client, "httpx2", None) or openai._base_client.httpx  # type: ignore[attr-defined]
ANTHROPIC_HTTP = getattr(anthropic._base_client, "httpx2", None) or anthropic._base_client.httpx  # type: ignore[attr-defined]

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]
ANTHROPIC_MODEL = "claude-wasteaudit-test"


@dataclass
class Env:
    server: LocalLLMServer
    sink: CapturedAudit
    db_path: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Storage on (a module-private SQLite file), instrumentation off until an example turns it on."""
    for handle in list(active_instrumentations().values()):
        handle.undo()
    db_path = str(tmp_path_factory.mktemp("fuzz") / "fuzz.db")
    previous = config.get_settings()
    pipeline.reset_writer()
    config.set_settings(
        config.settings_from_env(
            database_url=f"sqlite:///{db_path}", storage=True, flush_interval=0.01, openai_stream_usage=False, content_mode="full", _explicit=True
        )
    )
    server = LocalLLMServer()
    server._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    server.start()
    try:
        with capture() as sink:
            yield Env(server, sink, db_path)
    finally:
        server.stop()
        pipeline.reset_writer()
        config.set_settings(previous)


def openai_client(server: LocalLLMServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_base_url, api_key="sk-test-not-a-real-key", max_retries=0, timeout=10, http_client=OPENAI_HTTP.Client(verify=False))


def anthropic_client(server: LocalLLMServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="sk-ant-test", max_retries=0, timeout=10, http_client=ANTHROPIC_HTTP.Client(verify=False))


def _drops() -> int:
    """Records the writer lost so far (refused, invalid, queue full)."""
    return sum(v for k, v in pipeline.stats().items() if k.startswith("dropped_"))


def run_both(
    env: Env, reply: Reply, instrument: Callable[[], Any], drive: Callable[[], tuple[Any, ...]], error_states: tuple[str, ...] = ("error",)
) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
    """The same reply through the bare and the instrumented SDK; checks everything generic.

    ``error_states``: the stream states a call the app saw fail may be stored with. Returns the
    app's observation, the stored row and the in-memory record.
    """
    env.sink.clear()
    env.server.clear()
    errors_before = internal_error_counts()
    drops_before = _drops()
    env.server.enqueue(reply)
    bare = drive()
    handle = instrument()
    try:
        env.server.enqueue(reply)
        seen = drive()
    finally:
        handle.undo()
    assert canonical(seen) == canonical(bare)
    assert internal_error_counts() == errors_before
    calls = env.sink.calls
    assert len(calls) == 1, calls
    record = calls[0]
    assert pipeline.flush(timeout=10)
    assert pipeline.stats().get("writer_start_error") is None
    assert _drops() == drops_before
    row = stored_call(env.db_path, record.id)
    check_row_sane(row)
    # Text round-trips: what the policy kept is what the row holds (made storable, nothing else).
    assert len(row["choices"]) == len(record.choices)
    for stored, kept in zip(row["choices"], record.choices):
        for key in ("text", "refusal", "reasoning_text"):
            assert stored[key] == clean_text(getattr(kept, key))[0]
    if raised(seen):
        assert row["error_type"] is not None or row["stream_state"] in error_states, row
    return seen, row, record


def expect_text(row: dict[str, Any], text: Any) -> None:
    """The stored first choice holds the text the app got (scrubbed of secrets, made storable)."""
    if isinstance(text, str) and len(text.encode("utf-8", "surrogatepass")) < config.get_settings().max_output_bytes:
        assert row["choices"] and row["choices"][0]["text"] == clean_text(scrub(text))[0]


# -- base bodies ---------------------------------------------------------------------------------

CHAT = ob.chat_completion(
    "The answer is 4.",
    tool_calls=[ob.tool_call("calculator", {"expression": "2+2"})],
    usage=ob.chat_usage(12, 7),
)
CHAT_N2 = ob.chat_completion(["Four.", "It is 4."], finish_reason=["stop", "length"])
CHAT_STREAM = ob.chat_chunks(("The ", "answer ", "is 4."), include_usage=True, tool_calls=[ob.tool_call("calculator", {"expression": "2+2"})])
RESPONSE = ob.response("The answer is 4.")
RESPONSE_STREAM = ob.response_events(("The ", "answer ", "is 4."), function_call={"name": "calculator", "arguments": '{"expression": "2+2"}'})
MESSAGE = ab.message(
    [ab.thinking_block("2+2 is 4."), ab.text_block("The answer is 4."), ab.tool_use_block("calculator", {"expression": "2+2"}, id="toolu_1")],
    id="msg_fuzz_1",
    stop_reason="tool_use",
    usage=ab.usage(10, 50, cache_read=30, cache_creation=20, cache_5m=15, cache_1h=5, thinking_tokens=12, service_tier="standard"),
)
MESSAGE_STREAM = ab.stream_events(MESSAGE, chunk_chars=8)


def body_replies(*bases: Any) -> st.SearchStrategy[Reply]:
    return st.sampled_from(bases).flatmap(mutated).flatmap(encoded).map(json_reply)


# -- OpenAI --------------------------------------------------------------------------------------


@FUZZ
@given(reply=body_replies(CHAT, CHAT_N2))
def test_fuzzed_chat_completion_body(env: Env, reply: Reply) -> None:
    def drive() -> tuple[Any, ...]:
        return observe(lambda: openai_client(env.server).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))

    seen, row, _ = run_both(env, reply, instrument_openai, drive)
    if seen[0] == "ok" and isinstance(seen[1], dict) and isinstance(seen[1].get("choices"), list) and seen[1]["choices"]:
        first = seen[1]["choices"][0]
        if isinstance(first, dict) and isinstance(first.get("message"), dict):
            expect_text(row, first["message"].get("content"))


@FUZZ
@given(reply=damaged_stream(CHAT_STREAM))
def test_fuzzed_chat_completion_stream(env: Env, reply: Reply) -> None:
    def drive() -> tuple[Any, ...]:
        client = openai_client(env.server)
        return observe_stream(lambda: client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))

    _, row, _ = run_both(env, reply, instrument_openai, drive)
    assert row["stream"] == 1


@FUZZ
@given(reply=body_replies(RESPONSE))
def test_fuzzed_responses_body(env: Env, reply: Reply) -> None:
    def drive() -> tuple[Any, ...]:
        return observe(lambda: openai_client(env.server).responses.create(model="gpt-4.1", input="What is 2 + 2?"))

    run_both(env, reply, instrument_openai, drive)


@FUZZ
@given(reply=damaged_stream(RESPONSE_STREAM))
def test_fuzzed_responses_stream(env: Env, reply: Reply) -> None:
    def drive() -> tuple[Any, ...]:
        client = openai_client(env.server)
        return observe_stream(lambda: client.responses.create(model="gpt-4.1", input="What is 2 + 2?", stream=True))

    _, row, _ = run_both(env, reply, instrument_openai, drive)
    assert row["stream"] == 1


# -- Anthropic -----------------------------------------------------------------------------------


@FUZZ
@given(reply=body_replies(MESSAGE, ab.message("The answer is 4.", id="msg_fuzz_2")))
def test_fuzzed_anthropic_message_body(env: Env, reply: Reply) -> None:
    def drive() -> tuple[Any, ...]:
        return observe(lambda: anthropic_client(env.server).messages.create(model=ANTHROPIC_MODEL, max_tokens=256, messages=MESSAGES))

    run_both(env, reply, instrument_anthropic, drive)


def _helper_observation(client: anthropic.Anthropic) -> tuple[Any, ...]:
    """What an app using ``messages.stream()`` sees: the texts, then the final message."""
    texts: list[str] = []
    try:
        with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=256, messages=MESSAGES) as stream:
            for text in stream.text_stream:
                texts.append(text)
            final = stream.get_final_message()
    except Exception as exc:  # noqa: BLE001
        return observe_stream(lambda: _raise(exc, texts))
    return ("helper", texts, observe(lambda: final))


def _raise(exc: Exception, items: list[str]) -> Iterator[str]:
    yield from items
    raise exc


@FUZZ
@given(reply=damaged_stream(MESSAGE_STREAM), helper=st.booleans())
def test_fuzzed_anthropic_message_stream(env: Env, reply: Reply, helper: bool) -> None:
    def drive() -> tuple[Any, ...]:
        client = anthropic_client(env.server)
        if helper:
            return _helper_observation(client)

        def events() -> Iterator[Any]:
            with client.messages.create(model=ANTHROPIC_MODEL, max_tokens=256, messages=MESSAGES, stream=True) as stream:
                yield from stream

        return observe_stream(events)

    # Known limit: when the helper itself fails on a malformed event (one without a type, say),
    # the exception leaves the app's ``with`` block like an exception of the app's own, so the
    # call is stored as an abandoned stream rather than an error; both count the output as waste.
    _, row, _ = run_both(env, reply, instrument_anthropic, drive, ("error", "abandoned") if helper else ("error",))
    assert row["stream"] == 1


# -- one very large output, through storage --------------------------------------------------------


def test_ten_megabyte_outputs_are_stored_capped_and_marked(env: Env) -> None:
    """10 MB of output reaches the app whole; the row keeps max_output_bytes and says it was cut."""
    text = "word " * (2 * 1024 * 1024)
    limit = config.get_settings().max_output_bytes
    cases: list[tuple[Reply, Callable[[], Any], Callable[[], Any]]] = [
        (
            Reply(json=ob.chat_completion(text, completion_tokens=2_000_000)),
            instrument_openai,
            lambda: openai_client(env.server).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content,
        ),
        (
            ab.reply_message(ab.message(text, usage=ab.usage(5, 2_000_000))),
            instrument_anthropic,
            lambda: anthropic_client(env.server).messages.create(model=ANTHROPIC_MODEL, max_tokens=256, messages=MESSAGES).content[0].text,
        ),
    ]
    for reply, instrument, call in cases:
        seen, row, _ = run_both(env, reply, instrument, lambda call=call: observe(call))
        assert seen == ("ok", text)
        assert row["output_tokens"] == 2_000_000 and row["content_truncated"] == 1
        assert row["choices"][0]["text"] == text[:limit]
        assert "content truncated at max_output_bytes" in row["gaps"]


# -- what the fuzzing found, pinned ----------------------------------------------------------------


def test_out_of_range_token_counts_are_dropped_with_a_gap_not_the_row(env: Env) -> None:
    """A count beyond BIGINT (or negative) once made the database refuse the whole row."""
    chat = {**CHAT, "usage": {"prompt_tokens": 2**64 + 7, "completion_tokens": -1, "total_tokens": 3}}
    seen, row, _ = run_both(env, json_reply(json.dumps(chat).encode()), instrument_openai, lambda: observe(lambda: openai_client(env.server).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)))
    assert seen[0] == "ok"
    assert row["input_tokens"] is None and row["output_tokens"] is None and row["usage_source"] == "missing"
    assert "usage field prompt_tokens is out of range: 18446744073709551623" in row["gaps"]

    message = {**MESSAGE, "usage": {**MESSAGE["usage"], "input_tokens": 2**63 - 1, "cache_read_input_tokens": 30, "output_tokens": 2**70}}
    seen, row, _ = run_both(
        env,
        json_reply(json.dumps(message).encode()),
        instrument_anthropic,
        lambda: observe(lambda: anthropic_client(env.server).messages.create(model=ANTHROPIC_MODEL, max_tokens=256, messages=MESSAGES)),
    )
    assert seen[0] == "ok"
    assert row["input_tokens"] is None and row["output_tokens"] is None  # the sum would overflow too
    assert any("unexpected types" in gap and "input_tokens" in gap and "output_tokens" in gap for gap in row["gaps"])


def test_a_malformed_block_index_does_not_cost_the_stream_its_content(env: Env) -> None:
    """An unhashable ``index`` (a list) in a content block event used to raise inside our observer."""
    events = [e.replace('"index":1', '"index":[1]') if "content_block_" in e and '"index":1' in e else e for e in MESSAGE_STREAM]

    def drive() -> tuple[Any, ...]:
        client = anthropic_client(env.server)

        def items() -> Iterator[Any]:
            with client.messages.create(model=ANTHROPIC_MODEL, max_tokens=256, messages=MESSAGES, stream=True) as stream:
                yield from stream

        return observe_stream(items)

    seen, row, _ = run_both(env, Reply(sse=events), instrument_anthropic, drive)
    assert seen[2] is None and row["stream_state"] == "completed"
    assert row["choices"][0]["text"] == "The answer is 4." and row["output_tokens"] == 50


def test_a_block_type_that_is_not_a_string_is_skipped_not_an_internal_error(env: Env) -> None:
    """``{"type": []}`` in a Message's content once raised TypeError (unhashable) in our reader."""
    message = {**MESSAGE, "content": [{"type": [], "thinking": "x"}, {"type": {"a": 1}}, *MESSAGE["content"][1:]]}
    seen, row, _ = run_both(
        env,
        json_reply(json.dumps(message).encode()),
        instrument_anthropic,
        lambda: observe(lambda: anthropic_client(env.server).messages.create(model=ANTHROPIC_MODEL, max_tokens=256, messages=MESSAGES)),
    )
    assert seen[0] == "ok"
    assert row["choices"][0]["text"] == "The answer is 4." and row["choices"][0]["tool_calls"][0]["name"] == "calculator"
