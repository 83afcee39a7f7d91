"""Read an OpenAI request's arguments and an OpenAI response object into a :class:`CallRecord`.

Request side: the parameters that matter for waste and duplicate detection, and references to
the content (a shallow copy of the messages list, because apps append to it right after a call).
Response side: per-choice text / refusal / tool calls / finish reason, ids, model, service tier,
usage. Only attribute reads on the SDK's objects; anything of an unexpected type is skipped (and
noted in ``record.gaps`` where it matters), never raised.
"""

from __future__ import annotations

from typing import Any

from wasteaudit.instrumentation._openai_usage import apply_chat_usage, apply_responses_usage
from wasteaudit.records import CallRecord, ChoiceContent

try:  # the SDK's "argument not given" sentinels
    from openai._types import NotGiven, Omit

    _SENTINELS: tuple[type, ...] = (NotGiven, Omit)
except Exception:  # pragma: no cover - very old or very new SDK
    _SENTINELS = ()

# request argument -> record.request_params key
_PARAMS: dict[str, str] = {
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "max_output_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "n": "n",
    "best_of": "best_of",
    "seed": "seed",
    "stop": "stop",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "reasoning_effort": "reasoning_effort",
    "verbosity": "verbosity",
    "service_tier": "service_tier",
    "logprobs": "logprobs",
    "top_logprobs": "top_logprobs",
    "echo": "echo",
    "tool_choice": "tool_choice",
    "parallel_tool_calls": "parallel_tool_calls",
    "max_tool_calls": "max_tool_calls",
    "previous_response_id": "previous_response_id",
    "background": "background",
    "prompt_cache_key": "prompt_cache_key",
}


def given(value: Any) -> bool:
    """An argument the app actually passed, and not as None."""
    return value is not None and not isinstance(value, _SENTINELS)


def is_sentinel(value: Any) -> bool:
    return isinstance(value, _SENTINELS)


def _str(value: Any) -> str | None:
    return value if type(value) is str else None


def _snapshot(value: Any, record: CallRecord, what: str) -> Any:
    """A shallow copy of a list argument; strings as they are; anything else is not consumed."""
    if type(value) is list:
        return list(value)
    if isinstance(value, (str, tuple, dict)):
        return value
    record.gaps.append(f"{what} not captured: {type(value).__name__} is not a list")
    return None


def request_params(kwargs: dict[str, Any], extra_body: Any) -> dict[str, Any]:
    """The request parameters that matter for waste and duplicate detection (one pass over kwargs)."""
    params: dict[str, Any] = {}
    names = _PARAMS
    for name, value in kwargs.items():
        key = names.get(name)
        if key is None or value is None or isinstance(value, _SENTINELS):
            continue
        if name == "max_tokens" and key in params:
            continue  # the deprecated max_tokens never overrides max_completion_tokens
        params[key] = value
    reasoning = kwargs.get("reasoning")
    if type(reasoning) is dict and reasoning.get("effort") is not None:
        params["reasoning_effort"] = reasoning["effort"]
    text = kwargs.get("text")
    if type(text) is dict and text.get("verbosity") is not None:
        params["verbosity"] = text["verbosity"]
    if type(extra_body) is dict:
        for name, value in extra_body.items():
            key = names.get(name)
            if key is not None and value is not None and key not in params:
                params[key] = value
    return params


def _format_of(fmt: Any, record: CallRecord) -> None:
    """Record a requested output format: a dict ({"type": ...}) or a parse() model class."""
    if type(fmt) is dict:
        record.response_format = fmt
        kind = fmt.get("type")
        if kind in ("json_object", "json_schema"):
            record.output_type = "json"
        elif kind == "text":
            record.output_type = "text"
    elif isinstance(fmt, type):
        record.response_format = {"type": "json_schema", "name": fmt.__name__}
        record.output_type = "json"


def apply_request(record: CallRecord, api: str, kwargs: dict[str, Any], extra_body: Any) -> None:
    """Content references and format/tool requests; no serialization."""
    if api == "chat.completions":
        messages = kwargs.get("messages")
        if messages is None and type(extra_body) is dict:
            messages = extra_body.get("messages")
        if given(messages):
            record.input_messages = _snapshot(messages, record, "messages")
        fmt = kwargs.get("response_format")
        if given(fmt):
            _format_of(fmt, record)
    elif api == "responses":
        value = kwargs.get("input")
        if given(value):
            record.input_messages = _snapshot(value, record, "input")
        instructions = kwargs.get("instructions")
        if given(instructions):
            record.system_instructions = instructions
        text = kwargs.get("text")
        if type(text) is dict and given(text.get("format")):
            _format_of(text["format"], record)
        text_format = kwargs.get("text_format")
        if given(text_format):
            _format_of(text_format, record)
    else:
        prompt = kwargs.get("prompt")
        if given(prompt):
            record.input_messages = _snapshot(prompt, record, "prompt")
    tools = kwargs.get("tools")
    if given(tools):
        record.tool_definitions = _snapshot(tools, record, "tools")
    elif given(kwargs.get("functions")):
        record.tool_definitions = _snapshot(kwargs["functions"], record, "functions")


# -- responses -------------------------------------------------------------------------------------


def _reasoning_extra(obj: Any) -> str | None:
    """Reasoning text some compatible hosts add (DeepSeek ``reasoning_content``, OpenRouter ``reasoning``)."""
    extra = getattr(obj, "__pydantic_extra__", None)
    if extra:
        value = extra.get("reasoning_content") or extra.get("reasoning")
        if type(value) is str:
            return value
    return None


def chat_tool_calls(message: Any) -> list[dict[str, Any]] | None:
    calls = getattr(message, "tool_calls", None)
    legacy = getattr(message, "function_call", None)
    if not calls and legacy is None:
        return None
    out: list[dict[str, Any]] = []
    if type(calls) is list:
        for call in calls:
            kind = getattr(call, "type", None)
            fn = getattr(call, "function", None)
            if fn is not None:
                out.append({"id": getattr(call, "id", None), "type": kind or "function", "name": getattr(fn, "name", None), "arguments": getattr(fn, "arguments", None)})
            else:
                custom = getattr(call, "custom", None)
                out.append({"id": getattr(call, "id", None), "type": kind, "name": getattr(custom, "name", None), "arguments": getattr(custom, "input", None)})
    if legacy is not None:
        out.append({"id": None, "type": "function_call", "name": getattr(legacy, "name", None), "arguments": getattr(legacy, "arguments", None)})
    return out or None


def _text_of(content: Any) -> str | None:
    if type(content) is str:
        return content
    if type(content) is list:  # content parts from some compatible hosts
        parts = [p.get("text") if type(p) is dict else getattr(p, "text", None) for p in content]
        joined = "".join(p for p in parts if type(p) is str)
        return joined or None
    return None


def _common(record: CallRecord, body: Any) -> None:
    record.response_id = _str(getattr(body, "id", None))
    model = _str(getattr(body, "model", None))
    if model:
        record.response_model = model
    tier = _str(getattr(body, "service_tier", None))
    if tier:
        record.service_tier = tier


def apply_chat_completion(record: CallRecord, completion: Any, *, with_usage: bool = True) -> bool:
    """A ``ChatCompletion`` (or ``ParsedChatCompletion``); returns whether any choice refused.

    ``with_usage=False`` leaves the usage to :func:`apply_chat_body_usage` (the finisher's part).
    """
    _common(record, completion)
    refused = False
    choices = getattr(completion, "choices", None)
    if type(choices) is list:
        record.choices = []
        record.finish_reasons = []
        for position, choice in enumerate(choices):
            index = getattr(choice, "index", None)
            message = getattr(choice, "message", None)
            refusal = _str(getattr(message, "refusal", None))
            refused = refused or bool(refusal)
            finish = _str(getattr(choice, "finish_reason", None))
            record.choices.append(
                ChoiceContent(
                    index=index if type(index) is int else position,
                    text=_text_of(getattr(message, "content", None)),
                    refusal=refusal,
                    tool_calls=chat_tool_calls(message),
                    finish_reason=finish,
                    reasoning_text=_reasoning_extra(message),
                )
            )
            record.finish_reasons.append(finish)
    elif choices is not None:
        record.gaps.append(f"response choices malformed: {type(choices).__name__}")
    else:
        record.gaps.append("response had no choices")
    if with_usage:
        apply_chat_body_usage(record, getattr(completion, "usage", None))
    return refused


def apply_chat_body_usage(record: CallRecord, usage: Any) -> None:
    """The usage of a Chat Completions or legacy Completions body (``None``: the body had none)."""
    if usage is None:
        record.gaps.append("usage missing: response body had no usage")
    else:
        apply_chat_usage(record, usage)


def apply_completion(record: CallRecord, completion: Any, *, with_usage: bool = True) -> bool:
    """A legacy ``Completion`` (``with_usage`` as for :func:`apply_chat_completion`)."""
    _common(record, completion)
    choices = getattr(completion, "choices", None)
    if type(choices) is list:
        record.choices = []
        record.finish_reasons = []
        for position, choice in enumerate(choices):
            index = getattr(choice, "index", None)
            finish = _str(getattr(choice, "finish_reason", None))
            record.choices.append(
                ChoiceContent(index=index if type(index) is int else position, text=_str(getattr(choice, "text", None)), finish_reason=finish)
            )
            record.finish_reasons.append(finish)
    elif choices is not None:
        record.gaps.append(f"response choices malformed: {type(choices).__name__}")
    if with_usage:
        apply_chat_body_usage(record, getattr(completion, "usage", None))
    return False


def response_finish(response: Any) -> str | None:
    """Responses API: ``incomplete_details.reason`` when incomplete, else ``status``, verbatim."""
    status = _str(getattr(response, "status", None))
    if status == "incomplete":
        reason = _str(getattr(getattr(response, "incomplete_details", None), "reason", None))
        if reason:
            return reason
    return status


def response_tool_call(item: Any, kind: str) -> dict[str, Any]:
    if kind == "function_call" or kind == "mcp_call":
        return {"id": getattr(item, "call_id", None) or getattr(item, "id", None), "type": kind, "name": getattr(item, "name", None), "arguments": getattr(item, "arguments", None)}
    if kind == "custom_tool_call":
        return {"id": getattr(item, "call_id", None), "type": kind, "name": getattr(item, "name", None), "arguments": getattr(item, "input", None)}
    return {"id": getattr(item, "id", None), "type": kind, "name": kind[: -len("_call")]}


class ResponseOutput:
    """Text, refusal, tool calls and reasoning gathered from Responses output items."""

    __slots__ = ("text", "refusal", "tools", "reasoning")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.refusal: list[str] = []
        self.tools: list[dict[str, Any]] = []
        self.reasoning: list[str] = []

    def add_item(self, item: Any) -> None:
        kind = getattr(item, "type", None)
        if kind == "message":
            content = getattr(item, "content", None)
            if type(content) is list:
                for part in content:
                    ptype = getattr(part, "type", None)
                    if ptype == "output_text":
                        text = getattr(part, "text", None)
                        if type(text) is str:
                            self.text.append(text)
                    elif ptype == "refusal":
                        refusal = getattr(part, "refusal", None)
                        if type(refusal) is str:
                            self.refusal.append(refusal)
        elif kind == "reasoning":
            for attr in ("summary", "content"):
                parts = getattr(item, attr, None)
                if type(parts) is list:
                    for part in parts:
                        text = getattr(part, "text", None)
                        if type(text) is str:
                            self.reasoning.append(text)
        elif type(kind) is str and kind.endswith("_call"):
            self.tools.append(response_tool_call(item, kind))

    def choice(self, finish: str | None) -> ChoiceContent:
        return ChoiceContent(
            index=0,
            text="".join(self.text) if self.text else None,
            refusal="".join(self.refusal) if self.refusal else None,
            tool_calls=self.tools or None,
            finish_reason=finish,
            reasoning_text="\n".join(self.reasoning) if self.reasoning else None,
        )


def apply_response(record: CallRecord, response: Any, fallback: ResponseOutput | None = None, *, with_usage: bool = True) -> bool:
    """A Responses API ``Response``; returns whether the output contains a refusal.

    ``fallback`` is what a stream accumulated, used when the final response carries no output;
    ``with_usage=False`` leaves the usage to :func:`apply_response_body_usage`.
    """
    _common(record, response)
    finish = response_finish(response)
    out = ResponseOutput()
    output = getattr(response, "output", None)
    if type(output) is list:
        for item in output:
            out.add_item(item)
    if fallback is not None and not (out.text or out.refusal or out.tools or out.reasoning):
        out = fallback
    record.choices = [out.choice(finish)]
    record.finish_reasons = [finish]
    status = _str(getattr(response, "status", None))
    if status in ("failed", "cancelled"):
        record.finish_category = "error"
        error = getattr(response, "error", None)
        if error is not None:
            code = _str(getattr(error, "code", None))
            if code:
                record.error_type = code
            message = _str(getattr(error, "message", None))
            if message:
                record.error_message = message[:2000]
    elif status in ("queued", "in_progress"):
        record.gaps.append(f"background response {status}: output and usage arrive later")
    elif status == "completed" and out.tools and not out.refusal:
        record.finish_category = "tool"
    if with_usage:
        apply_response_body_usage(record, getattr(response, "usage", None), status)
    return bool(out.refusal)


def apply_response_body_usage(record: CallRecord, usage: Any, status: Any) -> None:
    """The usage of a Responses API body with this ``status`` (``None``: the body had none)."""
    if usage is None:
        if status not in ("queued", "in_progress"):
            record.gaps.append("usage missing: response had no usage")
    else:
        apply_responses_usage(record, usage)
