"""Anthropic response knowledge: usage normalization and content extraction, from models or JSON.

Pure functions over either the SDK's pydantic models (``Message``, ``Usage``,
``MessageDeltaUsage``, stream events) or the decoded JSON of the same bodies, so the call
wrapper (models) and the middleware (an already-read body) share one implementation. Only
cheap attribute reads happen here: no ``model_dump``, no re-serialization except a tool's
``input`` dict, which becomes its JSON ``arguments`` string.

Normalization (DESIGN §2): Anthropic's ``input_tokens`` EXCLUDES cache reads and writes, so
``input_tokens = input + cache_read + cache_creation``; ``input_cache_read_tokens`` /
``input_cache_write_tokens`` are the cache fields as reported; the 5m/1h split and server-tool
counts stay in ``usage_details`` in the provider's own shape (what pricing reads);
``output_reasoning_tokens`` is ``output_tokens_details.thinking_tokens`` or ``None``.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from wasteaudit.records import CallRecord, ChoiceContent

TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})


def get(obj: Any, name: str) -> Any:
    """``obj[name]`` for decoded JSON, ``obj.name`` for a model; ``None`` where absent."""
    if type(obj) is dict:
        return obj.get(name)
    return getattr(obj, name, None)


def fields(obj: Any) -> dict[str, Any]:
    """A model's fields as a dict without copying (JSON dicts as they are).

    Reading a field a pydantic model lacks goes through ``__getattr__`` and an exception, which
    costs microseconds; the SDK's models keep their fields (and unknown extra fields) in plain
    dicts, so lookups there are cheap. Anything else yields ``{}``.
    """
    if type(obj) is dict:
        return obj
    own = getattr(obj, "__dict__", None)
    if type(own) is not dict:
        return {}
    extra = getattr(obj, "__pydantic_extra__", None)
    return {**own, **extra} if extra else own


# A count must fit the database's BIGINT and cannot be negative.
_MAX_COUNT = 2**63 - 1


def _count(value: Any) -> int | None:
    """A token count, or ``None`` for anything that is not a plain int in range (bools, strings, floats, -1, 2**64)."""
    return value if type(value) is int and 0 <= value <= _MAX_COUNT else None


def _plain(obj: Any) -> dict[str, Any] | None:
    """A small model or dict as a dict of its scalar fields (for ``usage_details``)."""
    if obj is None:
        return None
    items = fields(obj).items()
    out = {k: v for k, v in items if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    return out or None


def apply_usage(record: CallRecord, primary: Any, fallback: Any = None, *, output_known: bool = True) -> None:
    """Fill the record's token fields from ``primary`` (overlaid on ``fallback``).

    Non-stream: ``primary`` is ``Message.usage``. Streams: ``primary`` is the last
    ``message_delta.usage`` (cumulative ``output_tokens``; input/cache counts when the API
    repeats them) and ``fallback`` the ``message_start`` usage. ``output_known=False`` (a stream
    that ended before ``message_delta``) keeps the input side and leaves output unknown, since
    ``message_start`` only carries a placeholder ``output_tokens``.
    """
    first = fields(primary) if primary is not None else {}
    second = fields(fallback) if fallback is not None else {}
    odd: list[str] = []

    def pick(name: str) -> int | None:
        for source in (first, second):
            raw = source.get(name)
            if raw is None:
                continue
            if _count(raw) is not None:
                return raw
            odd.append(name)
        return None

    base = pick("input_tokens")
    cache_read = pick("cache_read_input_tokens")
    cache_write = pick("cache_creation_input_tokens")
    record.input_cache_read_tokens = cache_read
    record.input_cache_write_tokens = cache_write
    total = None if base is None else base + (cache_read or 0) + (cache_write or 0)
    if total is not None and total > _MAX_COUNT:
        odd.append("input_tokens")
        total = None
    record.input_tokens = total

    output = None
    reasoning = None
    if output_known and primary is not None:
        raw_output = first.get("output_tokens")
        output = _count(raw_output)
        if raw_output is not None and output is None:
            odd.append("output_tokens")
        details = first.get("output_tokens_details")
        if details is not None:
            reasoning = _count(fields(details).get("thinking_tokens"))
    record.output_tokens = output
    record.output_reasoning_tokens = reasoning

    tier = first.get("service_tier")
    if not isinstance(tier, str):
        tier = second.get("service_tier")
    record.service_tier = tier if isinstance(tier, str) else None
    details_out: dict[str, Any] | None = None
    for key in ("cache_creation", "server_tool_use", "speed", "inference_geo"):
        value = first.get(key)
        if value is None:
            value = second.get(key)
        if value is None:
            continue
        value = value if isinstance(value, str) else _plain(value)
        if value is not None:
            if details_out is None:
                details_out = {}
            details_out[key] = value
    record.usage_details = details_out

    record.usage_source = "provider" if output is not None else "missing"
    if odd:
        record.gaps.append("usage fields with unexpected types ignored: " + ", ".join(sorted(set(odd))))
    if base is None and (first or second) and "input_tokens" not in odd:
        record.gaps.append("usage: input_tokens not reported")


def tool_call(block: Any, kind: str, arguments: str | None = None) -> dict[str, Any]:
    """One ``tool_use`` / ``server_tool_use`` block as a tool call with JSON ``arguments``."""
    if arguments is None:
        raw_input = get(block, "input")
        if isinstance(raw_input, str):
            arguments = raw_input
        else:
            try:
                arguments = json.dumps(raw_input if raw_input is not None else {}, ensure_ascii=False, separators=(",", ":"))
            except (TypeError, ValueError):
                arguments = repr(raw_input)
    return {"id": get(block, "id"), "name": get(block, "name"), "arguments": arguments, "type": kind}


def apply_message(record: CallRecord, message: Any) -> bool:
    """Fill the record from a complete ``Message`` (model or decoded JSON). Returns ``refused``."""
    if message is None or isinstance(message, (str, bytes, list, tuple, int, float, bool)):
        record.usage_source = "missing"
        record.gaps.append(f"usage missing: the response body is a {type(message).__name__}, not a Message")
        return False
    data = fields(message)
    response_id = data.get("id")
    if isinstance(response_id, str):
        record.response_id = response_id
    model = data.get("model")
    if isinstance(model, str):
        record.response_model = model
    stop_reason = data.get("stop_reason")
    if stop_reason is not None and not isinstance(stop_reason, str):
        record.gaps.append(f"stop_reason of unexpected type {type(stop_reason).__name__} ignored")
        stop_reason = None
    record.finish_reasons = [stop_reason]

    usage = data.get("usage")
    if usage is None:
        record.usage_source = "missing"
        record.gaps.append("usage missing: the response had no usage object")
    else:
        apply_usage(record, usage)

    content = data.get("content")
    text: str | None = None
    texts: list[str] | None = None
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    if isinstance(content, list):
        for block in content:
            part = fields(block)
            kind = part.get("type")
            if kind == "text":
                piece = part.get("text")
                if isinstance(piece, str):
                    if text is None:
                        text = piece
                    else:
                        if texts is None:
                            texts = [text]
                        texts.append(piece)
            elif type(kind) is str and kind in TOOL_BLOCKS:  # a list or dict here must not raise
                calls.append(tool_call(part, kind))
            elif kind == "thinking":
                piece = part.get("thinking")
                if isinstance(piece, str):
                    thinking.append(piece)
    elif content is not None:
        record.gaps.append(f"content of unexpected type {type(content).__name__} not captured")
    refused = stop_reason == "refusal"
    record.choices = [
        ChoiceContent(
            index=0,
            text="".join(texts) if texts is not None else text,
            tool_calls=calls or None,
            finish_reason=stop_reason,
            reasoning_text="".join(thinking) if thinking else None,
            refusal=refusal_text(data.get("stop_details")) if refused else None,
        )
    ]
    return refused


UNCHANGED: Any = object()


class MessageFacts(NamedTuple):
    """What :func:`apply_message` will set that the SDK's span needs, read without filling a record.

    ``finish_reasons`` None and ``cache_write`` :data:`UNCHANGED`: the record's value stays.
    """

    finish_reasons: list[str | None] | None
    usage_source: str
    cache_write: Any
    refused: bool


def message_facts(message: Any) -> MessageFacts:
    """The span's share of :func:`apply_message` (same rules), for the request path; the finisher
    reads the whole Message later."""
    if message is None or isinstance(message, (str, bytes, list, tuple, int, float, bool)):
        return MessageFacts(None, "missing", UNCHANGED, False)
    data = fields(message)
    stop_reason = data.get("stop_reason")
    if stop_reason is not None and not isinstance(stop_reason, str):
        stop_reason = None
    usage = data.get("usage")
    if usage is None:
        return MessageFacts([stop_reason], "missing", UNCHANGED, stop_reason == "refusal")
    first = fields(usage)
    raw_write = first.get("cache_creation_input_tokens")
    cache_write = raw_write if _count(raw_write) is not None else None
    source = "provider" if _count(first.get("output_tokens")) is not None else "missing"
    return MessageFacts([stop_reason], source, cache_write, stop_reason == "refusal")


def refusal_text(details: Any) -> str | None:
    if details is None:
        return None
    explanation = get(details, "explanation")
    return explanation if isinstance(explanation, str) else None
