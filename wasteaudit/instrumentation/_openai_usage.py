"""OpenAI usage -> the normalized token fields of a :class:`CallRecord`.

Chat Completions / legacy Completions report ``prompt_tokens`` (already including cached input)
and ``completion_tokens`` (including reasoning); the Responses API reports ``input_tokens`` /
``output_tokens`` with ``*_tokens_details``. Both land in the same fields: a detail the provider
did not report stays ``None`` (never 0), a value of the wrong type is dropped with a gap, and
every other detail (predictions, audio, cache TTL split, totals, a host's extras) is kept in
``usage_details`` under ``input.<field>`` / ``output.<field>`` / ``<field>``.

Cheap by construction: the SDK's models are read through their ``__dict__``; no ``model_dump``.
"""

from __future__ import annotations

from typing import Any

from wasteaudit.records import CallRecord

_SCALARS = (int, float, str, bool)


def _as_dict(obj: Any) -> dict[str, Any] | None:
    """A pydantic model's fields (and extras) or a dict, as a dict; None for anything else."""
    if type(obj) is dict:
        return obj
    data = getattr(obj, "__dict__", None)
    if type(data) is not dict:
        return None
    extra = getattr(obj, "__pydantic_extra__", None)
    return {**data, **extra} if extra else data


# A count must fit the database's BIGINT and cannot be negative; anything else is dropped with a gap.
_MAX_COUNT = 2**63 - 1


def _int(record: CallRecord, value: Any, name: str) -> int | None:
    if value is None:
        return None
    if type(value) is int:
        if 0 <= value <= _MAX_COUNT:
            return value
        record.gaps.append(f"usage field {name} is out of range: {value!r:.40}")
        return None
    record.gaps.append(f"usage field {name} is not an integer: {value!r:.40}")
    return None


def _details(side: str, data: dict[str, Any], skip: frozenset[str], out: dict[str, Any]) -> None:
    for name, value in data.items():
        if value is None or name in skip:
            continue
        if isinstance(value, _SCALARS):
            out[side + name] = value
        else:  # one nested level (cache_write_tokens_details: the TTL split)
            nested = _as_dict(value)
            if nested:
                for sub, subvalue in nested.items():
                    if subvalue is not None and isinstance(subvalue, _SCALARS):
                        out[f"{side}{name}.{sub}"] = subvalue


_CHAT_TOP = frozenset({"prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details"})
_RESP_TOP = frozenset({"input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details"})
_INPUT_SKIP = frozenset({"cached_tokens", "cache_write_tokens"})
_OUTPUT_SKIP = frozenset({"reasoning_tokens"})


def _apply(record: CallRecord, usage: Any, in_name: str, out_name: str, in_details: str, out_details: str, top: frozenset[str]) -> bool:
    if usage is None:
        return False
    data = _as_dict(usage)
    if data is None:
        record.gaps.append(f"usage malformed: {type(usage).__name__} instead of an object")
        return False
    input_tokens = _int(record, data.get(in_name), in_name)
    output_tokens = _int(record, data.get(out_name), out_name)
    cache_read = cache_write = reasoning = None
    details: dict[str, Any] = {}
    for name, value in data.items():
        if value is not None and name not in top and isinstance(value, _SCALARS):
            details[name] = value
    idet = data.get(in_details)
    if idet is not None:
        idata = _as_dict(idet)
        if idata is None:
            record.gaps.append(f"usage field {in_details} malformed: {type(idet).__name__}")
        else:
            cache_read = _int(record, idata.get("cached_tokens"), in_details + ".cached_tokens")
            cache_write = _int(record, idata.get("cache_write_tokens"), in_details + ".cache_write_tokens")
            _details("input.", idata, _INPUT_SKIP, details)
    odet = data.get(out_details)
    if odet is not None:
        odata = _as_dict(odet)
        if odata is None:
            record.gaps.append(f"usage field {out_details} malformed: {type(odet).__name__}")
        else:
            reasoning = _int(record, odata.get("reasoning_tokens"), out_details + ".reasoning_tokens")
            _details("output.", odata, _OUTPUT_SKIP, details)
    if input_tokens is None and output_tokens is None:
        record.gaps.append("usage malformed: no integer token counts")
        return False
    record.usage_source = "provider"
    record.input_tokens = input_tokens
    record.output_tokens = output_tokens
    record.input_cache_read_tokens = cache_read
    record.input_cache_write_tokens = cache_write
    record.output_reasoning_tokens = reasoning
    record.usage_details = details or None
    return True


def apply_chat_usage(record: CallRecord, usage: Any) -> bool:
    """Chat Completions / legacy Completions ``CompletionUsage``; True when usage was recorded."""
    return _apply(record, usage, "prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details", _CHAT_TOP)


def apply_responses_usage(record: CallRecord, usage: Any) -> bool:
    """Responses API ``ResponseUsage``; True when usage was recorded."""
    return _apply(record, usage, "input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details", _RESP_TOP)
