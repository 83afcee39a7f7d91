"""Realistic Anthropic Messages API bodies for tests, benchmarks and the demo.

Everything here returns plain JSON data (or ready :class:`Reply` objects) shaped like what
``api.anthropic.com`` sends: a ``Message`` with text / ``tool_use`` / ``thinking`` blocks,
its ``usage`` (cache reads and writes with the 5m/1h split, ``output_tokens_details``,
``service_tier``), the server-sent event stream of the same message (``message_start``,
``content_block_*``, ``ping``, ``message_delta`` with cumulative usage, ``message_stop``),
mid-stream ``event: error`` and the error bodies of 4xx/5xx responses.

    msg = message([text_block("Hello!")], usage=usage(12, 5, cache_read=100))
    server.enqueue(reply_message(msg), reply_stream(msg), reply_overloaded())

Token counts are whatever you pass: nothing is counted from the text, so a test states its
ground truth explicitly.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Iterable

from wasteaudit.localllm.server import Reply

DEFAULT_MODEL = "claude-sonnet-4-5-20250929"

_ids = itertools.count(1)


def _next_id(prefix: str) -> str:
    return f"{prefix}_01{next(_ids):022d}"


# -- usage --------------------------------------------------------------------------------------


def usage(
    input_tokens: int = 12,
    output_tokens: int = 8,
    *,
    cache_read: int | None = 0,
    cache_creation: int | None = 0,
    cache_5m: int | None = None,
    cache_1h: int | None = None,
    thinking_tokens: int | None = None,
    service_tier: str | None = "standard",
    web_search_requests: int | None = None,
    web_fetch_requests: int | None = None,
    inference_geo: str | None = None,
) -> dict[str, Any]:
    """A ``usage`` object. ``input_tokens`` EXCLUDES cache reads and writes, as Anthropic reports it.

    ``cache_5m`` / ``cache_1h`` add the ``cache_creation`` breakdown (by default all of
    ``cache_creation`` is 5-minute when a breakdown is asked for with only one of them).
    Pass ``None`` for a field to leave it out entirely (older API responses lack them).
    """
    body: dict[str, Any] = {"input_tokens": input_tokens}
    if cache_creation is not None:
        body["cache_creation_input_tokens"] = cache_creation
    if cache_read is not None:
        body["cache_read_input_tokens"] = cache_read
    if cache_5m is not None or cache_1h is not None:
        body["cache_creation"] = {"ephemeral_5m_input_tokens": cache_5m or 0, "ephemeral_1h_input_tokens": cache_1h or 0}
    body["output_tokens"] = output_tokens
    if thinking_tokens is not None:
        body["output_tokens_details"] = {"thinking_tokens": thinking_tokens}
    if web_search_requests is not None or web_fetch_requests is not None:
        body["server_tool_use"] = {"web_search_requests": web_search_requests or 0, "web_fetch_requests": web_fetch_requests or 0}
    if service_tier is not None:
        body["service_tier"] = service_tier
    if inference_geo is not None:
        body["inference_geo"] = inference_geo
    return body


_default_usage = usage


# -- content blocks -----------------------------------------------------------------------------


def text_block(text: str, *, citations: list[Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if citations is not None:
        block["citations"] = citations
    return block


def tool_use_block(name: str, input: dict[str, Any], *, id: str | None = None) -> dict[str, Any]:  # noqa: A002 - API field name
    return {"type": "tool_use", "id": id or _next_id("toolu"), "name": name, "input": input}


def server_tool_use_block(name: str = "web_search", input: dict[str, Any] | None = None, *, id: str | None = None) -> dict[str, Any]:  # noqa: A002
    return {"type": "server_tool_use", "id": id or _next_id("srvtoolu"), "name": name, "input": input or {"query": "weather"}}


def thinking_block(thinking: str, *, signature: str = "EqQBCkYIBxgCKkC0c2lnbmF0dXJl") -> dict[str, Any]:
    return {"type": "thinking", "thinking": thinking, "signature": signature}


def redacted_thinking_block(data: str = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP") -> dict[str, Any]:
    return {"type": "redacted_thinking", "data": data}


# -- messages -----------------------------------------------------------------------------------


def message(
    content: Iterable[dict[str, Any]] | str = "Hello! How can I help you today?",
    *,
    model: str = DEFAULT_MODEL,
    id: str | None = None,  # noqa: A002 - API field name
    stop_reason: str | None = "end_turn",
    stop_sequence: str | None = None,
    usage: dict[str, Any] | None = None,  # the API field name; shadows the builder inside this function
    stop_details: dict[str, Any] | None = None,
    container: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete ``Message`` body as a non-streaming ``POST /v1/messages`` returns it."""
    blocks = [text_block(content)] if isinstance(content, str) else list(content)
    body: dict[str, Any] = {
        "id": id or _next_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage if usage is not None else _default_usage(),
    }
    if stop_details is not None:
        body["stop_details"] = stop_details
    if container is not None:
        body["container"] = container
    return body


def refusal_message(
    *, model: str = DEFAULT_MODEL, input_tokens: int = 97, output_tokens: int = 0, category: str | None = "cyber", explanation: str | None = None
) -> dict[str, Any]:
    """A refused request: ``stop_reason: refusal``, usually no content and (near) zero output."""
    return message(
        [],
        model=model,
        stop_reason="refusal",
        usage=usage(input_tokens, output_tokens),
        stop_details={"type": "refusal", "category": category, "explanation": explanation},
    )


def error_body(error_type: str = "overloaded_error", message: str = "Overloaded", *, request_id: str | None = None) -> dict[str, Any]:
    """The JSON body of an API error (also the data of a mid-stream ``event: error``)."""
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
    body["request_id"] = request_id or _next_id("req")
    return body


# -- server-sent events -------------------------------------------------------------------------


def event(name: str, data: dict[str, Any]) -> str:
    """One SSE event text (``event:`` line plus ``data:`` line), as :class:`Reply` ``sse`` items take."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}"


def ping() -> str:
    return 'event: ping\ndata: {"type": "ping"}'


def error_event(error_type: str = "overloaded_error", message: str = "Overloaded") -> str:
    """A mid-stream error: the SDK raises an ``APIStatusError`` when it reaches this event."""
    return event("error", error_body(error_type, message))


def _chunks(text: str, size: int) -> list[str]:
    if size <= 0 or not text:
        return [text] if text else []
    return [text[i : i + size] for i in range(0, len(text), size)]


def _block_start(block: dict[str, Any]) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        start = {"type": "text", "text": ""}
        if "citations" in block:
            start["citations"] = []
        return start
    if kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
        return {**{k: v for k, v in block.items() if k != "input"}, "input": {}}
    if kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    return dict(block)  # redacted_thinking, web_search_tool_result, ...: sent whole at start


def _block_deltas(block: dict[str, Any], chunk_chars: int) -> list[dict[str, Any]]:
    kind = block.get("type")
    if kind == "text":
        return [{"type": "text_delta", "text": piece} for piece in _chunks(block.get("text", ""), chunk_chars)]
    if kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
        raw = json.dumps(block.get("input") or {}, separators=(",", ":"), ensure_ascii=False)
        return [{"type": "input_json_delta", "partial_json": ""}] + [
            {"type": "input_json_delta", "partial_json": piece} for piece in _chunks(raw, max(1, chunk_chars // 2))
        ]
    if kind == "thinking":
        deltas: list[dict[str, Any]] = [{"type": "thinking_delta", "thinking": piece} for piece in _chunks(block.get("thinking", ""), chunk_chars)]
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        return deltas
    return []


def stream_events(
    msg: dict[str, Any],
    *,
    chunk_chars: int = 12,
    pings: bool = True,
    start_output_tokens: int = 1,
    delta_input_usage: bool = False,
    error_after: int | None = None,
    error: tuple[str, str] = ("overloaded_error", "Overloaded"),
    end: bool = True,
) -> list[str]:
    """The SSE events that stream ``msg`` (a :func:`message` body), in the API's order.

    ``message_start`` carries the input side of the usage and a placeholder
    ``output_tokens`` (``start_output_tokens``); the final ``message_delta`` carries the
    cumulative ``output_tokens`` (plus ``output_tokens_details`` and ``server_tool_use``
    when the message has them, and the input/cache counts again with ``delta_input_usage``,
    as newer API versions send). ``error_after=n`` replaces everything after the first ``n``
    events by an ``event: error``; ``end=False`` leaves out ``message_delta`` and
    ``message_stop`` (a body that ends early without an error).
    """
    full_usage = dict(msg.get("usage") or {})
    start_usage = {k: v for k, v in full_usage.items() if k not in ("output_tokens_details", "server_tool_use")}
    start_usage["output_tokens"] = start_output_tokens
    start_message = {**msg, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    start_message.pop("stop_details", None)
    events = [event("message_start", {"type": "message_start", "message": start_message})]
    for index, block in enumerate(msg.get("content") or []):
        events.append(event("content_block_start", {"type": "content_block_start", "index": index, "content_block": _block_start(block)}))
        if pings and index == 0:
            events.append(ping())
        for delta in _block_deltas(block, chunk_chars):
            events.append(event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta_usage: dict[str, Any] = {"output_tokens": full_usage.get("output_tokens", 0)}
    for key in ("output_tokens_details", "server_tool_use"):
        if key in full_usage:
            delta_usage[key] = full_usage[key]
    if delta_input_usage:
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            if key in full_usage:
                delta_usage[key] = full_usage[key]
    delta: dict[str, Any] = {"stop_reason": msg.get("stop_reason"), "stop_sequence": msg.get("stop_sequence")}
    if msg.get("stop_details") is not None:
        delta["stop_details"] = msg["stop_details"]
    if end:
        events.append(event("message_delta", {"type": "message_delta", "delta": delta, "usage": delta_usage}))
        events.append(event("message_stop", {"type": "message_stop"}))
    if error_after is not None:
        events = events[:error_after] + [error_event(*error)]
    return events


# -- ready replies for LocalLLMServer -----------------------------------------------------------


def _headers(extra: dict[str, str] | None) -> dict[str, str]:
    headers = {"request-id": _next_id("req"), "anthropic-organization-id": "00000000-0000-4000-8000-000000000000"}
    headers.update(extra or {})
    return headers


def reply_message(msg: dict[str, Any] | None = None, *, headers: dict[str, str] | None = None, delay_s: float = 0.0) -> Reply:
    """A 200 response with a complete Message body."""
    return Reply(status=200, json=msg if msg is not None else message(), headers=_headers(headers), delay_s=delay_s)


def reply_stream(
    msg: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    event_delay_s: float = 0.0,
    cut_after: int | None = None,
    **stream_options: Any,
) -> Reply:
    """A 200 ``text/event-stream`` response streaming ``msg`` (see :func:`stream_events` for options).

    ``cut_after=n`` drops the connection after ``n`` events (a network failure mid-stream).
    """
    return Reply(
        status=200,
        sse=stream_events(msg if msg is not None else message(), **stream_options),
        headers=_headers(headers),
        event_delay_s=event_delay_s,
        cut_after=cut_after,
    )


def reply_error(status: int, error_type: str, message: str, *, retry_after_ms: int | None = None, should_retry: bool | None = None) -> Reply:
    headers: dict[str, str] = {}
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
    if should_retry is not None:
        headers["x-should-retry"] = "true" if should_retry else "false"
    return Reply(status=status, json=error_body(error_type, message), headers=_headers(headers))


def reply_overloaded(*, retry_after_ms: int | None = 1) -> Reply:
    """HTTP 529 ``overloaded_error`` (retried by the SDK)."""
    return reply_error(529, "overloaded_error", "Overloaded", retry_after_ms=retry_after_ms)


def reply_rate_limited(*, retry_after_ms: int | None = 1) -> Reply:
    """HTTP 429 ``rate_limit_error`` (retried by the SDK)."""
    return reply_error(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit", retry_after_ms=retry_after_ms)


def reply_invalid_request(message: str = "max_tokens: Field required") -> Reply:
    return reply_error(400, "invalid_request_error", message)


def reply_not_found(model: str = "claude-nonexistent") -> Reply:
    return reply_error(404, "not_found_error", f"model: {model}")


def reply_authentication_error() -> Reply:
    return reply_error(401, "authentication_error", "invalid x-api-key")
