"""Usage normalization and content extraction on their own (models and decoded JSON alike)."""

from __future__ import annotations

from anthropic._models import construct_type
from anthropic.types import Message, MessageDeltaUsage, Usage
from hypothesis import given
from hypothesis import strategies as st

from wasteaudit.instrumentation._anthropic_usage import apply_message, apply_usage
from wasteaudit.localllm import anthropic_bodies as ab
from wasteaudit.records import CallRecord

counts = st.one_of(st.none(), st.integers(min_value=0, max_value=10**9))


def _record() -> CallRecord:
    return CallRecord(id="c", provider="anthropic", operation="chat", api="messages", started_at=0.0)


@given(base=st.integers(0, 10**9), read=counts, write=counts, output=st.integers(0, 10**7), thinking=counts, as_model=st.booleans())
def test_input_total_includes_cache_and_details_stay_null(base, read, write, output, thinking, as_model):
    body = ab.usage(base, output, cache_read=read, cache_creation=write, thinking_tokens=thinking)
    usage = construct_type(type_=Usage, value=body) if as_model else body
    record = _record()
    apply_usage(record, usage)
    assert record.input_tokens == base + (read or 0) + (write or 0)
    assert record.input_cache_read_tokens == read
    assert record.input_cache_write_tokens == write
    assert record.output_tokens == output
    assert record.output_reasoning_tokens == thinking
    assert record.usage_source == "provider"
    assert record.gaps == []


@given(start_out=st.integers(0, 5), final=st.integers(0, 10**6), repeat_input=st.booleans())
def test_stream_overlay_takes_the_delta_never_a_sum(start_out, final, repeat_input):
    start = construct_type(type_=Usage, value=ab.usage(100, start_out, cache_read=50, cache_creation=7))
    delta_body = {"output_tokens": final}
    if repeat_input:
        delta_body.update(input_tokens=101, cache_read_input_tokens=51, cache_creation_input_tokens=8)
    delta = construct_type(type_=MessageDeltaUsage, value=delta_body)
    record = _record()
    apply_usage(record, delta, start)
    assert record.output_tokens == final
    assert record.input_tokens == (101 + 51 + 8 if repeat_input else 100 + 50 + 7)


def test_stream_without_delta_keeps_input_only():
    record = _record()
    apply_usage(record, construct_type(type_=Usage, value=ab.usage(12, 1, cache_read=3)), output_known=False)
    assert record.input_tokens == 15 and record.output_tokens is None and record.usage_source == "missing"


def test_details_keep_the_provider_shape_for_pricing():
    record = _record()
    apply_usage(record, ab.usage(1, 2, cache_creation=10, cache_5m=4, cache_1h=6, web_search_requests=2, service_tier="priority", inference_geo="us"))
    assert record.usage_details == {
        "cache_creation": {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 6},
        "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 0},
        "inference_geo": "us",
    }
    assert record.service_tier == "priority"


def test_bools_and_strings_are_not_counts():
    record = _record()
    apply_usage(record, {"input_tokens": True, "output_tokens": "7", "cache_read_input_tokens": 2.0})
    assert record.input_tokens is None and record.output_tokens is None and record.input_cache_read_tokens is None
    assert record.usage_source == "missing"
    assert record.gaps == ["usage fields with unexpected types ignored: cache_read_input_tokens, input_tokens, output_tokens"]


def test_message_model_and_json_give_the_same_record():
    body = ab.message(
        [ab.thinking_block("hmm"), ab.text_block("a"), ab.tool_use_block("f", {"x": [1, "é"]}, id="t"), ab.text_block("b")],
        stop_reason="tool_use",
        usage=ab.usage(3, 4, thinking_tokens=1),
    )
    from_json, from_model = _record(), _record()
    apply_message(from_json, body)
    apply_message(from_model, construct_type(type_=Message, value=body))
    for record in (from_json, from_model):
        choice = record.choices[0]
        assert choice.text == "ab" and choice.reasoning_text == "hmm"
        assert choice.tool_calls == [{"id": "t", "name": "f", "arguments": '{"x":[1,"é"]}', "type": "tool_use"}]
        assert record.finish_reasons == ["tool_use"] and record.input_tokens == 3 and record.output_reasoning_tokens == 1
