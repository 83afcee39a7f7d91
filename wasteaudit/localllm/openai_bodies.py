"""Realistic OpenAI response bodies for the local LLM server (tests, benchmarks, the demo).

Shapes follow what api.openai.com sends (checked against the recorded cassettes): Chat
Completions JSON and SSE chunk lists (n choices interleaved, tool-call and refusal deltas, the
``include_usage`` chunk with ``choices: []``), Responses API JSON and SSE event lists
(``response.created`` … ``response.output_text.delta`` … ``response.completed`` /
``response.incomplete`` / ``response.failed``), legacy Completions, usage objects and error
bodies. Everything returns plain JSON data (dicts) or SSE event texts for
:class:`~wasteaudit.localllm.Reply`.

    server.enqueue(Reply(json=chat_completion("Hello!", completion_tokens=2)))
    server.enqueue(Reply(sse=chat_chunks(["Hel", "lo!"], include_usage=True)))
    server.handler = honour_include_usage(chat_chunks(["Hi"]), usage=chat_usage(5, 1))
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Sequence

from wasteaudit.localllm.server import RecordedRequest, Reply

CREATED = 1_760_000_000
DONE = "data: [DONE]"


def _compact(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}


# -- usage ----------------------------------------------------------------------------------------


def chat_usage(
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    *,
    cached_tokens: int | None = 0,
    cache_write_tokens: int | None = None,
    reasoning_tokens: int | None = 0,
    accepted_prediction_tokens: int | None = 0,
    rejected_prediction_tokens: int | None = 0,
    audio_prompt_tokens: int | None = 0,
    audio_completion_tokens: int | None = 0,
    details: bool = True,
) -> dict[str, Any]:
    """``CompletionUsage`` as OpenAI sends it (``prompt_tokens`` already includes cached)."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if details:
        usage["prompt_tokens_details"] = _compact(
            {"cached_tokens": cached_tokens, "audio_tokens": audio_prompt_tokens, "cache_write_tokens": cache_write_tokens}
        )
        usage["completion_tokens_details"] = _compact(
            {
                "reasoning_tokens": reasoning_tokens,
                "audio_tokens": audio_completion_tokens,
                "accepted_prediction_tokens": accepted_prediction_tokens,
                "rejected_prediction_tokens": rejected_prediction_tokens,
            }
        )
    return usage


def responses_usage(
    input_tokens: int = 10,
    output_tokens: int = 5,
    *,
    cached_tokens: int | None = 0,
    cache_write_tokens: int | None = None,
    ttl_30m_tokens: int | None = None,
    ttl_12h_tokens: int | None = None,
    reasoning_tokens: int | None = 0,
) -> dict[str, Any]:
    """``ResponseUsage`` (``input_tokens`` includes cached)."""
    input_details: dict[str, Any] = _compact({"cached_tokens": cached_tokens, "cache_write_tokens": cache_write_tokens})
    if ttl_30m_tokens is not None or ttl_12h_tokens is not None:
        input_details["cache_write_tokens_details"] = {"ttl_30m_tokens": ttl_30m_tokens or 0, "ttl_12h_tokens": ttl_12h_tokens or 0}
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": input_details,
        "output_tokens": output_tokens,
        "output_tokens_details": _compact({"reasoning_tokens": reasoning_tokens}),
        "total_tokens": input_tokens + output_tokens,
    }


# -- chat completions -------------------------------------------------------------------------------


def tool_call(name: str, arguments: str | dict[str, Any], call_id: str = "call_1") -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def chat_choice(
    content: str | None = "Hello!",
    *,
    index: int = 0,
    finish_reason: str | None = "stop",
    tool_calls: list[dict[str, Any]] | None = None,
    refusal: str | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal, "annotations": []}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish_reason}


def chat_completion(
    content: str | Sequence[str] | None = "Hello!",
    *,
    model: str = "gpt-4o-mini-2024-07-18",
    finish_reason: str | Sequence[str] = "stop",
    tool_calls: list[dict[str, Any]] | None = None,
    refusal: str | None = None,
    usage: dict[str, Any] | None = None,
    prompt_tokens: int = 10,
    completion_tokens: int | None = None,
    include_usage: bool = True,
    service_tier: str | None = "default",
    id: str = "chatcmpl-local-1",
    choices: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` body. A list of contents makes n choices (finish reasons per choice)."""
    if choices is None:
        contents = [content] if content is None or isinstance(content, str) else list(content)
        reasons = [finish_reason] * len(contents) if isinstance(finish_reason, str) else list(finish_reason)
        choices = [
            chat_choice(text, index=i, finish_reason=reasons[i], tool_calls=tool_calls if i == 0 else None, refusal=refusal if i == 0 else None)
            for i, text in enumerate(contents)
        ]
    if usage is None and include_usage:
        words = sum(len((c["message"].get("content") or "").split()) for c in choices) or 1
        usage = chat_usage(prompt_tokens, completion_tokens if completion_tokens is not None else words)
    body = {
        "id": id,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": choices,
        "usage": usage,
        "service_tier": service_tier,
        "system_fingerprint": "fp_local",
    }
    if not include_usage and usage is None:
        del body["usage"]
    return body


def _chunk(model: str, id: str, choices: list[dict[str, Any]], *, usage: Any = None, with_usage_field: bool = False) -> str:
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_local",
        "choices": choices,
    }
    if with_usage_field or usage is not None:
        body["usage"] = usage
    return "data: " + json.dumps(body, ensure_ascii=False)


def chat_chunks(
    deltas: Sequence[str] | Sequence[Sequence[str]] = ("Hel", "lo", "!"),
    *,
    n: int = 1,
    model: str = "gpt-4o-mini-2024-07-18",
    finish_reason: str | Sequence[str | None] | None = "stop",
    include_usage: bool = False,
    usage: dict[str, Any] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    refusal: Sequence[str] | None = None,
    id: str = "chatcmpl-local-stream",
    done: bool = True,
) -> list[str]:
    """SSE events of a chat stream.

    ``deltas`` is one list of text pieces (used for every choice when ``n > 1``) or one list per
    choice; choices are interleaved by index, as OpenAI does. ``tool_calls`` (full calls) are
    streamed as name then argument fragments; ``refusal`` pieces as refusal deltas.
    ``include_usage`` adds ``"usage": null`` to every chunk and the final ``choices: []`` chunk.
    """
    per_choice: list[list[str]]
    if deltas and not isinstance(deltas[0], str):
        per_choice = [list(d) for d in deltas]  # type: ignore[arg-type]
        n = len(per_choice)
    else:
        per_choice = [list(deltas)] * n  # type: ignore[list-item]
    reasons = [finish_reason] * n if finish_reason is None or isinstance(finish_reason, str) else list(finish_reason)
    events: list[str] = []
    role = [{"index": i, "delta": {"role": "assistant", "content": "", "refusal": None}, "logprobs": None, "finish_reason": None} for i in range(n)]
    for choice in role:
        events.append(_chunk(model, id, [choice], with_usage_field=include_usage))
    longest = max((len(p) for p in per_choice), default=0)
    for step in range(longest):
        for i in range(n):
            if step < len(per_choice[i]):
                delta = {"content": per_choice[i][step]}
                events.append(_chunk(model, id, [{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}], with_usage_field=include_usage))
    for piece in refusal or ():
        events.append(_chunk(model, id, [{"index": 0, "delta": {"refusal": piece}, "logprobs": None, "finish_reason": None}], with_usage_field=include_usage))
    for number, call in enumerate(tool_calls or ()):
        head = {"index": number, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}
        events.append(_chunk(model, id, [{"index": 0, "delta": {"tool_calls": [head]}, "logprobs": None, "finish_reason": None}], with_usage_field=include_usage))
        args = call["function"]["arguments"]
        for start in range(0, len(args), 8):
            part = {"index": number, "function": {"arguments": args[start : start + 8]}}
            events.append(_chunk(model, id, [{"index": 0, "delta": {"tool_calls": [part]}, "logprobs": None, "finish_reason": None}], with_usage_field=include_usage))
    for i in range(n):
        if reasons[i] is not None:
            events.append(_chunk(model, id, [{"index": i, "delta": {}, "logprobs": None, "finish_reason": reasons[i]}], with_usage_field=include_usage))
    if include_usage:
        words = sum(len("".join(p).split()) for p in per_choice) or 1
        events.append(_chunk(model, id, [], usage=usage or chat_usage(10, words)))
    if done:
        events.append(DONE)
    return events


def honour_include_usage(events: list[str], usage: dict[str, Any] | None = None) -> Callable[[RecordedRequest], Reply]:
    """A server handler that behaves like OpenAI: the usage chunk only when the request asked.

    ``events`` is a stream without a usage chunk (``chat_chunks(...)`` default); when the request
    carries ``stream_options.include_usage``, every chunk gets ``"usage": null`` and the final
    ``choices: []`` usage chunk is added before ``[DONE]``.
    """

    def handler(request: RecordedRequest) -> Reply:
        body = request.json or {}
        options = body.get("stream_options") if isinstance(body, dict) else None
        if not (isinstance(options, dict) and options.get("include_usage")):
            return Reply(sse=list(events))
        out: list[str] = []
        template: dict[str, Any] = {}
        for event in events:
            if event == DONE:
                continue
            data = json.loads(event[len("data: ") :])
            data["usage"] = None
            template = data
            out.append("data: " + json.dumps(data, ensure_ascii=False))
        final = {**template, "choices": [], "usage": usage or chat_usage()}
        out.append("data: " + json.dumps(final, ensure_ascii=False))
        out.append(DONE)
        return Reply(sse=out)

    return handler


# -- legacy completions -------------------------------------------------------------------------------


def completion(
    text: str | Sequence[str] = "Hello!",
    *,
    model: str = "gpt-3.5-turbo-instruct",
    finish_reason: str | Sequence[str] = "stop",
    usage: dict[str, Any] | None = None,
    prompt_tokens: int = 5,
    completion_tokens: int | None = None,
    id: str = "cmpl-local-1",
) -> dict[str, Any]:
    texts = [text] if isinstance(text, str) else list(text)
    reasons = [finish_reason] * len(texts) if isinstance(finish_reason, str) else list(finish_reason)
    choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": reasons[i]} for i, t in enumerate(texts)]
    words = sum(len(t.split()) for t in texts) or 1
    return {
        "id": id,
        "object": "text_completion",
        "created": CREATED,
        "model": model,
        "choices": choices,
        "usage": usage or {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens or words, "total_tokens": prompt_tokens + (completion_tokens or words)},
    }


def completion_chunks(
    deltas: Sequence[str] = ("Hel", "lo", "!"),
    *,
    n: int = 1,
    model: str = "gpt-3.5-turbo-instruct",
    finish_reason: str | None = "stop",
    include_usage: bool = False,
    usage: dict[str, Any] | None = None,
    id: str = "cmpl-local-stream",
) -> list[str]:
    def chunk(choices: list[dict[str, Any]], usage_value: Any = None) -> str:
        body: dict[str, Any] = {"id": id, "object": "text_completion", "created": CREATED, "model": model, "choices": choices}
        if include_usage:
            body["usage"] = usage_value
        return "data: " + json.dumps(body, ensure_ascii=False)

    events = []
    for piece in deltas:
        for i in range(n):
            events.append(chunk([{"index": i, "text": piece, "logprobs": None, "finish_reason": None}]))
    if finish_reason is not None:
        for i in range(n):
            events.append(chunk([{"index": i, "text": "", "logprobs": None, "finish_reason": finish_reason}]))
    if include_usage:
        words = len("".join(deltas).split()) * n or 1
        events.append(chunk([], usage or {"prompt_tokens": 5, "completion_tokens": words, "total_tokens": 5 + words}))
    events.append(DONE)
    return events


# -- responses API -------------------------------------------------------------------------------------


def message_item(text: str | None = "Hello!", *, refusal: str | None = None, id: str = "msg_local_1", status: str = "completed") -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal is not None:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": id, "type": "message", "status": status, "role": "assistant", "content": content}


def function_call_item(name: str, arguments: str | dict[str, Any], *, call_id: str = "call_1", id: str = "fc_local_1") -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": id, "type": "function_call", "status": "completed", "call_id": call_id, "name": name, "arguments": args}


def reasoning_item(summary: Sequence[str] = (), *, id: str = "rs_local_1") -> dict[str, Any]:
    return {"id": id, "type": "reasoning", "summary": [{"type": "summary_text", "text": s} for s in summary]}


def response(
    text: str | None = "Hello!",
    *,
    model: str = "gpt-4.1-2025-04-14",
    status: str = "completed",
    incomplete_reason: str | None = None,
    output: list[dict[str, Any]] | None = None,
    refusal: str | None = None,
    usage: dict[str, Any] | None = None,
    input_tokens: int = 10,
    output_tokens: int | None = None,
    include_usage: bool = True,
    error: dict[str, Any] | None = None,
    instructions: str | None = None,
    service_tier: str = "default",
    id: str = "resp_local_1",
) -> dict[str, Any]:
    """A Responses API ``response`` object (also the payload of the terminal stream events)."""
    if output is None:
        output = [message_item(text, refusal=refusal, status="incomplete" if status == "incomplete" else "completed")] if (text is not None or refusal is not None) else []
    if usage is None and include_usage and status not in ("in_progress", "queued"):
        words = len((text or refusal or "").split()) or 1
        usage = responses_usage(input_tokens, output_tokens if output_tokens is not None else words)
    return {
        "id": id,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": instructions,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": service_tier,
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage if include_usage else None,
        "user": None,
        "metadata": {},
    }


def _event(kind: str, payload: dict[str, Any], sequence: int) -> str:
    data = {"type": kind, **payload, "sequence_number": sequence}
    return f"event: {kind}\ndata: " + json.dumps(data, ensure_ascii=False)


def response_events(
    deltas: Sequence[str] = ("Hel", "lo", "!"),
    *,
    terminal: str = "completed",
    incomplete_reason: str | None = None,
    model: str = "gpt-4.1-2025-04-14",
    usage: dict[str, Any] | None = None,
    refusal: Sequence[str] | None = None,
    function_call: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    id: str = "resp_local_stream",
) -> list[str]:
    """SSE events of a Responses stream, ending with ``response.<terminal>``.

    ``terminal`` is ``completed``, ``incomplete`` (with ``incomplete_reason``), ``failed`` (with
    ``error``) or ``""`` for none at all (a stream that just stops).
    """
    seq = 0
    events: list[str] = []

    def add(kind: str, payload: dict[str, Any]) -> None:
        nonlocal seq
        events.append(_event(kind, payload, seq))
        seq += 1

    pending = response(None, model=model, status="in_progress", include_usage=False, id=id, output=[])
    add("response.created", {"response": pending})
    add("response.in_progress", {"response": pending})
    text = "".join(deltas)
    refusal_text = "".join(refusal or ())
    output: list[dict[str, Any]] = []
    msg_id = "msg_local_stream"
    if deltas or refusal:
        add("response.output_item.added", {"output_index": 0, "item": {"id": msg_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}})
    if deltas:
        add("response.content_part.added", {"item_id": msg_id, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}})
        for piece in deltas:
            add("response.output_text.delta", {"item_id": msg_id, "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []})
        add("response.output_text.done", {"item_id": msg_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []})
    if refusal:
        add("response.content_part.added", {"item_id": msg_id, "output_index": 0, "content_index": 1, "part": {"type": "refusal", "refusal": ""}})
        for piece in refusal:
            add("response.refusal.delta", {"item_id": msg_id, "output_index": 0, "content_index": 1, "delta": piece})
        add("response.refusal.done", {"item_id": msg_id, "output_index": 0, "content_index": 1, "refusal": refusal_text})
    if deltas or refusal:
        item = message_item(text if deltas else None, refusal=refusal_text or None, id=msg_id, status="completed" if terminal == "completed" else "incomplete")
        add("response.output_item.done", {"output_index": 0, "item": item})
        output.append(item)
    if function_call is not None:
        index = len(output)
        fc = function_call_item(function_call["name"], function_call.get("arguments", "{}"), call_id=function_call.get("call_id", "call_1"))
        add("response.output_item.added", {"output_index": index, "item": {**fc, "arguments": "", "status": "in_progress"}})
        args = fc["arguments"]
        for start in range(0, len(args), 8):
            add("response.function_call_arguments.delta", {"item_id": fc["id"], "output_index": index, "delta": args[start : start + 8]})
        add("response.function_call_arguments.done", {"item_id": fc["id"], "output_index": index, "arguments": args})
        add("response.output_item.done", {"output_index": index, "item": fc})
        output.append(fc)
    if terminal:
        words = len((text or refusal_text).split()) or 1
        final = response(
            None,
            model=model,
            status=terminal,
            incomplete_reason=incomplete_reason,
            output=output,
            usage=usage or responses_usage(10, words),
            error=error,
            id=id,
        )
        add(f"response.{terminal}", {"response": final})
    return events


# -- errors --------------------------------------------------------------------------------------------


def error_body(message: str = "Rate limit reached", *, type: str = "rate_limit_error", code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_reply(status: int = 429, message: str | None = None, *, type: str | None = None, retry_after_ms: int | None = 1, code: str | None = None) -> Reply:
    """A retryable (or not) HTTP error; ``retry_after_ms`` keeps SDK retries fast in tests."""
    kinds = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_error"}
    headers = {"x-request-id": f"req_err_{status}_{int(time.time() * 1e6) % 1_000_000}"}
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
    return Reply(
        status=status,
        json=error_body(message or f"error {status}", type=type or kinds.get(status, "server_error"), code=code),
        headers=headers,
    )
