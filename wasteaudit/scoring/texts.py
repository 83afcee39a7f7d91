"""Reading texts out of records whatever the provider shape or content mode.

OpenAI chat, the Responses API and Anthropic store messages differently, and the content
mode may have replaced every string by a hash dict (``{"sha", "chars", "lines"}``) or by
nothing. Detectors ask this module for "the user-visible prompt", "the request's identity"
and "the choice's body" and never look at provider shapes themselves.
"""

from __future__ import annotations

import json
from typing import Any

from wasteaudit.records import CallRecord, ChoiceContent
from wasteaudit.scoring.lexical import digest

__all__ = (
    "is_hashed",
    "message_list",
    "user_prompt",
    "last_user_text",
    "request_hash",
    "ask_hash",
    "context_hash",
    "params_key",
    "json_requested",
    "requested_schema",
    "tool_schemas",
    "tool_call_parts",
    "choice_text",
)

# Request parameters that do not change what the model generates (transport, tracking, caching).
_NEUTRAL_PARAMS = frozenset(
    {
        "stream", "stream_options", "user", "metadata", "store", "timeout", "extra_headers", "extra_query",
        "extra_body", "service_tier", "parallel_tool_calls", "safety_identifier", "prompt_cache_key",
        "background", "messages", "input", "system", "model", "betas", "idempotency_key",
    }
)
# ... and the ones a retry typically changes (a bigger cap, another sample).
_RETRY_PARAMS = frozenset({"max_tokens", "max_completion_tokens", "max_output_tokens", "temperature", "seed", "top_p", "top_k", "n"})


def is_hashed(value: Any) -> bool:
    return isinstance(value, dict) and "sha" in value and "lines" in value


def _part_text(part: Any) -> Any:
    if isinstance(part, str) or is_hashed(part):
        return part
    if isinstance(part, dict):
        kind = part.get("type")
        for key in ("text", "content", "input_text", "output_text"):
            value = part.get(key)
            if isinstance(value, str) or is_hashed(value):
                return value
            if isinstance(value, list):
                return _join([_part_text(p) for p in value])
        if kind in ("tool_result", "function_call_output"):
            return _part_text(part.get("output"))
    return None


def _join(parts: list[Any]) -> Any:
    texts = [p for p in parts if p is not None]
    if not texts:
        return None
    if any(is_hashed(p) for p in texts):
        # Hashed mode: keep the hashes (they still identify the content exactly).
        lines: list[str] = []
        chars = 0
        for p in texts:
            if is_hashed(p):
                lines.extend(p.get("lines") or [])
                chars += int(p.get("chars") or 0)
        return {"sha": digest("|".join(str(p.get("sha")) if is_hashed(p) else str(p) for p in texts)), "chars": chars, "lines": lines}
    return "\n".join(str(p) for p in texts)


def message_list(messages: Any) -> list[tuple[str, Any]]:
    """(role, text or hash dict) for every message of a request, in order."""
    if messages is None:
        return []
    if isinstance(messages, str) or is_hashed(messages):
        return [("user", messages)]
    if isinstance(messages, dict):
        messages = [messages]
    out: list[tuple[str, Any]] = []
    if not isinstance(messages, list):
        return out
    for msg in messages:
        if isinstance(msg, str) or is_hashed(msg):
            out.append(("user", msg))
            continue
        if not isinstance(msg, dict):
            continue
        role = str(msg.get("role") or msg.get("type") or "user")
        content = msg.get("content")
        if isinstance(content, list):
            text = _join([_part_text(p) for p in content])
        elif content is None:
            text = _part_text(msg)
        else:
            text = content if (isinstance(content, str) or is_hashed(content)) else _part_text(content)
        if role == "assistant" and msg.get("tool_calls"):
            calls = json.dumps(msg.get("tool_calls"), sort_keys=True, default=str)
            text = calls if text is None else f"{text}\n{calls}" if isinstance(text, str) else text
        if text is not None:
            out.append((role, text))
    return out


def _system(call: CallRecord) -> Any:
    return _join([t for _, t in message_list(call.system_instructions)]) if call.system_instructions is not None else None


def user_prompt(call: CallRecord) -> str:
    """The user-visible prompt: user turns only (system prompts and tool results may legitimately be quoted)."""
    return "\n".join(t for role, t in message_list(call.input_messages) if role == "user" and isinstance(t, str))


def last_user_text(call: CallRecord) -> Any:
    for role, text in reversed(message_list(call.input_messages)):
        if role == "user":
            return text
    return None


def _norm_value(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.split()).lower()
    if is_hashed(value):
        return ["#", value.get("sha")]
    return value


def _messages_key(call: CallRecord) -> list[Any]:
    msgs = [[role, _norm_value(text)] for role, text in message_list(call.input_messages)]
    system = _system(call)
    if system is not None:
        msgs.insert(0, ["system", _norm_value(system)])
    return msgs


def params_key(call: CallRecord) -> str:
    """Model and generation-relevant parameters: what must match for two calls to be interchangeable."""
    params = {k: v for k, v in (call.request_params or {}).items() if k not in _NEUTRAL_PARAMS}
    payload = [call.request_model, params, call.response_format, call.tool_definitions]
    return digest(json.dumps(payload, sort_keys=True, default=str))


def request_hash(call: CallRecord) -> str:
    """Identity of the whole request after whitespace/case normalization (exact-duplicate key)."""
    return digest(json.dumps([params_key(call), _messages_key(call)], sort_keys=True, default=str))


def ask_hash(call: CallRecord) -> str:
    """Identity of what was asked, ignoring the parameters a retry usually changes."""
    params = {k: v for k, v in (call.request_params or {}).items() if k not in _NEUTRAL_PARAMS and k not in _RETRY_PARAMS}
    return digest(json.dumps([params, call.response_format, _messages_key(call)], sort_keys=True, default=str))


def context_hash(call: CallRecord) -> str:
    """Everything but the last user turn: a follow-up ("and in French?") only matches in the same context."""
    msgs = _messages_key(call)
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i][0] == "user":
            msgs = msgs[:i] + msgs[i + 1 :]
            break
    return digest(json.dumps(msgs, sort_keys=True, default=str))


def _format_of(call: CallRecord) -> Any:
    params = call.request_params or {}
    for candidate in (
        call.response_format,
        params.get("response_format"),
        (params.get("text") or {}).get("format") if isinstance(params.get("text"), dict) else None,
        params.get("output_format"),
        (params.get("output_config") or {}).get("format") if isinstance(params.get("output_config"), dict) else None,
    ):
        if candidate is not None:
            return candidate
    return None


def json_requested(call: CallRecord) -> bool:
    """The request asked for JSON (output type, response format, Responses text.format, Anthropic output format)."""
    if (call.output_type or "").lower() == "json":
        return True
    fmt = _format_of(call)
    if isinstance(fmt, dict):
        return str(fmt.get("type", "")).lower() in ("json_object", "json_schema", "json")
    if isinstance(fmt, str):
        return "json" in fmt.lower()
    return False


def requested_schema(call: CallRecord) -> dict[str, Any] | None:
    fmt = _format_of(call)
    if not isinstance(fmt, dict):
        return None
    inner = fmt.get("json_schema") if isinstance(fmt.get("json_schema"), dict) else fmt
    schema = inner.get("schema")
    return schema if isinstance(schema, dict) else None


def tool_schemas(call: CallRecord) -> dict[str, dict[str, Any]]:
    """Tool name → parameter schema, for OpenAI (chat/Responses) and Anthropic tool definitions."""
    out: dict[str, dict[str, Any]] = {}
    tools = call.tool_definitions or (call.request_params or {}).get("tools")
    if not isinstance(tools, list):
        return out
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        name = fn.get("name")
        schema = fn.get("parameters") or fn.get("input_schema")
        if isinstance(name, str) and isinstance(schema, dict):
            out[name] = schema
    return out


def tool_call_parts(choice: ChoiceContent) -> list[tuple[str | None, Any]]:
    """(name, arguments) of each tool call; arguments as the raw JSON string when the provider sent one."""
    out: list[tuple[str | None, Any]] = []
    for tc in choice.tool_calls or []:
        if not isinstance(tc, dict):
            continue
        fn = tc.get("function") if isinstance(tc.get("function"), dict) else tc
        args = fn.get("arguments", fn.get("input", fn.get("args")))
        out.append((fn.get("name"), args))
    return out


def choice_text(choice: ChoiceContent | dict[str, Any]) -> Any:
    """The visible text of a choice: a string, a hash dict (hashed mode) or None."""
    if isinstance(choice, dict):
        return choice.get("text")
    return choice.text
