"""The Anthropic SDK's span is enriched from the few facts read on the request path; the record
is filled from the whole Message later, in the finisher. Both must agree, for odd bodies too."""

from __future__ import annotations

from typing import Any

import pytest

from wasteaudit.instrumentation._anthropic_usage import UNCHANGED, apply_message, message_facts
from wasteaudit.localllm import anthropic_bodies as ab
from wasteaudit.records import CallRecord


def _message(**changes: Any) -> dict[str, Any]:
    body = ab.message("Hello there", usage=ab.usage(input_tokens=10, output_tokens=5))
    body.update(changes)
    return body


def _usage(**fields: Any) -> dict[str, Any]:
    return {"input_tokens": 10, "output_tokens": 5, **fields}


BODIES = {
    "plain": _message(),
    "refusal": _message(stop_reason="refusal", stop_details={"explanation": "no"}),
    "max_tokens": _message(stop_reason="max_tokens"),
    "stop_reason of a wrong type": _message(stop_reason=3),
    "no stop_reason": _message(stop_reason=None),
    "no usage": {k: v for k, v in _message().items() if k != "usage"},
    "usage null": _message(usage=None),
    "usage a string": _message(usage="lots"),
    "usage a list": _message(usage=[1, 2]),
    "output_tokens a string": _message(usage=_usage(output_tokens="5")),
    "output_tokens negative": _message(usage=_usage(output_tokens=-1)),
    "output_tokens a bool": _message(usage=_usage(output_tokens=True)),
    "output_tokens missing": _message(usage={"input_tokens": 3}),
    "cache write": _message(usage=_usage(cache_creation_input_tokens=7, cache_read_input_tokens=2)),
    "cache write zero": _message(usage=_usage(cache_creation_input_tokens=0)),
    "cache write too large": _message(usage=_usage(cache_creation_input_tokens=2**64)),
    "cache write a string": _message(usage=_usage(cache_creation_input_tokens="7")),
    "cache write null": _message(usage=_usage(cache_creation_input_tokens=None)),
    "body None": None,
    "body a list": [1],
    "body a string": "oops",
    "body an int": 7,
}


def _as_model(body: Any) -> Any:
    """The SDK's own Message model for a well-formed body (the path of a parsed response)."""
    from anthropic._models import construct_type
    from anthropic.types import Message

    return construct_type(type_=Message, value=body) if isinstance(body, dict) else body


@pytest.mark.parametrize("form", ["json", "model"])
@pytest.mark.parametrize("name", list(BODIES))
def test_span_facts_agree_with_the_record_filled_later(name: str, form: str) -> None:
    body = BODIES[name] if form == "json" else _as_model(BODIES[name])
    record = CallRecord(id="c", provider="anthropic", operation="chat", api="messages", started_at=0.0)
    before_reasons, before_write = list(record.finish_reasons), record.input_cache_write_tokens
    refused = apply_message(record, body)
    facts = message_facts(body)
    assert facts.refused == refused
    assert facts.usage_source == record.usage_source
    assert (facts.finish_reasons if facts.finish_reasons is not None else before_reasons) == record.finish_reasons
    assert (before_write if facts.cache_write is UNCHANGED else facts.cache_write) == record.input_cache_write_tokens
