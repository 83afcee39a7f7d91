"""Small builders for realistic records (what the instrumentation would have produced)."""

from __future__ import annotations

import itertools
from typing import Any

from wasteaudit.records import CallRecord, ChoiceContent, RunRecord, ScoreRecord

_ids = itertools.count(1)
T0 = 1_750_000_000.0


def next_id(prefix: str) -> str:
    return f"{prefix}{next(_ids):06d}"


def call(
    text: str | list[str | None] | None = "",
    *,
    prompt: str = "Explain how HTTP caching works.",
    system: str | None = None,
    messages: list[dict[str, Any]] | None = None,
    run: RunRecord | None = None,
    function: str | None = None,
    tokens: int | None = None,
    finish: str | list[str] | None = "stop",
    category: str | None = None,
    model: str = "gpt-4o-mini",
    params: dict[str, Any] | None = None,
    at: float = 0.0,
    provider: str = "openai",
    refusal: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    response_format: Any = None,
    tools: Any = None,
    error: str | None = None,
    stream_state: str | None = None,
    content_mode: str = "full",
    reasoning: int | None = None,
    usage_source: str = "provider",
    output_type: str | None = None,
) -> CallRecord:
    texts = text if isinstance(text, list) else [text]
    finishes = finish if isinstance(finish, list) else [finish] * len(texts)
    choices = [
        ChoiceContent(index=i, text=t, finish_reason=finishes[i], refusal=refusal if i == 0 else None, tool_calls=tool_calls if i == 0 else None)
        for i, t in enumerate(texts)
    ]
    if tokens is None and usage_source == "provider":
        tokens = sum(max(1, round(len(t or "") / 4)) for t in texts) + sum(len(str(tc)) // 4 for tc in tool_calls or [])
    msgs = messages if messages is not None else [{"role": "user", "content": prompt}]
    rec = CallRecord(
        id=next_id("c"),
        provider=provider,
        operation="chat",
        api="chat.completions" if provider == "openai" else "messages",
        started_at=T0 + at,
        run_id=run.id if run is not None else None,
        function=function or (run.name if run is not None else None),
        request_model=model,
        request_params=dict(params or {}),
        usage_source=usage_source if tokens is not None else "missing",  # type: ignore[arg-type]
        output_tokens=tokens,
        output_reasoning_tokens=reasoning,
        finish_reasons=[f for f in finishes],
        finish_category=category or _category(finishes, error),
        stream_state=stream_state,  # type: ignore[arg-type]
        error_type=error,
        input_messages=msgs,
        system_instructions=[{"type": "text", "content": system}] if system else None,
        choices=choices,
        response_format=response_format,
        tool_definitions=tools,
        content_mode=content_mode,
        output_type=output_type,
    )
    return rec


def _category(finishes: list[str | None], error: str | None) -> str | None:
    if error:
        return "error"
    mapping = {"stop": "stop", "end_turn": "stop", "length": "length", "max_tokens": "length", "tool_calls": "tool",
               "tool_use": "tool", "content_filter": "filter", "refusal": "refusal"}
    cats = [mapping.get(f or "", "stop") for f in finishes]
    for worst in ("refusal", "filter", "length", "tool"):
        if worst in cats:
            return worst
    return "stop" if cats else None


def run(name: str = "app.answer", *, returned: str | None = None, used: list[str] | None = None, validation: bool | None = None, at: float = 0.0) -> RunRecord:
    return RunRecord(
        id=next_id("r"), name=name, started_at=T0 + at, ended_at=T0 + at + 5, status="ok",
        return_value=returned, used_values=list(used or []), validation=validation,
    )


def score(run_record: RunRecord, name: str, value: float) -> ScoreRecord:
    return ScoreRecord(id=next_id("s"), run_id=run_record.id, name=name, value=value)
