"""LangChain: a callback handler that records every chat model / LLM call as a wasteaudit CallRecord.

    from wasteaudit.integrations.langchain import WasteAuditCallbackHandler
    llm = ChatOpenAI(model="gpt-4o-mini", callbacks=[WasteAuditCallbackHandler()])
    # or per call: chain.invoke(x, config={"callbacks": [WasteAuditCallbackHandler()]})

Needs ``langchain-core`` (extra ``wasteaudit[langchain]``). Calls join the innermost ``@audit`` run, get
a span and metrics, and are scored like any other. When the model talks through an SDK that
wasteaudit already instruments (``ChatOpenAI`` / ``AzureChatOpenAI`` with ``instrument_openai()``,
``ChatAnthropic`` with ``instrument_anthropic()``), the SDK-level record is kept and this handler adds
nothing: one call, one record. Usage comes from LangChain's standard ``usage_metadata`` (input tokens
including cached ones, as LangChain normalizes them), else the provider's ``token_usage``.
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from wasteaudit._internal.safety import internal_error
from wasteaudit.integrations._framework import MAX_PENDING, PendingCall, int_or_none
from wasteaudit.records import CallRecord, ChoiceContent

__all__ = ["WasteAuditCallbackHandler", "PROVIDERS"]

#: LangChain's ``ls_provider`` -> ``gen_ai.provider.name`` (GenAI conventions' well-known values).
PROVIDERS: dict[str, str] = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "anthropic": "anthropic",
    "groq": "groq",
    "mistralai": "mistral_ai",
    "mistral": "mistral_ai",
    "deepseek": "deepseek",
    "xai": "x_ai",
    "google_genai": "gcp.gemini",
    "google_vertexai": "gcp.vertex_ai",
    "google_anthropic_vertex": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "amazon_bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
    "cohere": "cohere",
    "perplexity": "perplexity",
    "fireworks": "fireworks",
    "together": "together",
    "openrouter": "openrouter",
    "ollama": "ollama",
    "huggingface": "huggingface",
}

_PARAMS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "max_output_tokens": "max_tokens",
    "n": "n",
    "seed": "seed",
    "stop": "stop",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "reasoning_effort": "reasoning_effort",
}
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool", "chat": "user"}


def _params(invocation: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, name in _PARAMS.items():
        value = invocation.get(key)
        if value is not None and isinstance(value, (int, float, str, list, tuple)) and not isinstance(value, bool):
            out[name] = list(value) if isinstance(value, tuple) else value
    for key, name in (("ls_temperature", "temperature"), ("ls_max_tokens", "max_tokens"), ("ls_stop", "stop")):
        if name not in out and metadata.get(key) is not None:
            out[name] = metadata[key]
    return out


def _message(message: Any) -> dict[str, Any]:
    role = _ROLES.get(getattr(message, "type", ""), getattr(message, "type", "user"))
    item: dict[str, Any] = {"role": role, "content": getattr(message, "content", None)}
    tool_calls = getattr(message, "tool_calls", None)
    if tool_calls:
        item["tool_calls"] = [{"id": c.get("id"), "name": c.get("name"), "arguments": c.get("args")} for c in tool_calls]
    return item


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks
        parts = [b.get("text") if isinstance(b, dict) else b for b in content]
        return "".join(p for p in parts if isinstance(p, str)) or None
    return None


class WasteAuditCallbackHandler(BaseCallbackHandler):
    """Records LangChain model calls; never raises into the chain (failures are counted)."""

    run_inline = True  # same context as the model call: the @audit run and the SDK coverage check see it
    raise_error = False

    def __init__(self, *, defer_to_sdk: bool = True) -> None:
        super().__init__()
        self.defer_to_sdk = defer_to_sdk
        self._lock = threading.Lock()
        self._pending: dict[UUID, PendingCall] = {}

    # -- start -------------------------------------------------------------------------------------
    def _start(self, run_id: UUID, serialized: dict[str, Any] | None, kwargs: dict[str, Any], operation: str, api: str) -> PendingCall:
        metadata = kwargs.get("metadata") or {}
        invocation = kwargs.get("invocation_params") or {}
        ls_provider = metadata.get("ls_provider") or invocation.get("_type") or "langchain"
        provider = PROVIDERS.get(str(ls_provider).lower(), str(ls_provider).lower())
        model = metadata.get("ls_model_name") or invocation.get("model") or invocation.get("model_name")
        stream = bool(invocation.get("stream") or invocation.get("streaming"))
        pending = PendingCall(
            provider=provider,
            operation=operation,
            api=api,
            method="stream" if stream else "invoke",
            request_model=model if isinstance(model, str) else None,
            stream=stream,
            params=_params(invocation, metadata),
            defer_to_sdk=self.defer_to_sdk,
        )
        with self._lock:
            self._pending[run_id] = pending
            if len(self._pending) > MAX_PENDING:  # ends that never came (abandoned streams): bounded
                self._pending.pop(next(iter(self._pending))).abandon()
        return pending

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[Any]], *, run_id: UUID, **kwargs: Any) -> None:
        try:
            pending = self._start(run_id, serialized, kwargs, "chat", "langchain.chat_model")
            batch = messages[0] if messages else []
            system = [_message(m) for m in batch if getattr(m, "type", "") == "system"]
            pending.input_messages = [_message(m) for m in batch if getattr(m, "type", "") != "system"]
            pending.system_instructions = [{"type": "text", "content": m["content"]} for m in system] or None
        except Exception as exc:
            internal_error("langchain.start", exc)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any) -> None:
        try:
            pending = self._start(run_id, serialized, kwargs, "text_completion", "langchain.llm")
            pending.input_messages = [{"role": "user", "content": p} for p in prompts[:1]]
        except Exception as exc:
            internal_error("langchain.start", exc)

    def on_llm_new_token(self, token: str, *, run_id: UUID, **kwargs: Any) -> None:
        pending = self._pending.get(run_id)
        if pending is not None:
            pending.stream = True
            pending.method = "stream"
            pending.first_chunk()

    # -- end -----------------------------------------------------------------------------------------
    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            pending = self._pending.pop(run_id, None)
        if pending is None:
            return
        try:
            pending.finish(lambda record: _fill(record, response))
        except Exception as exc:
            internal_error("langchain.end", exc)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            pending = self._pending.pop(run_id, None)
        if pending is None:
            return
        try:
            partial = kwargs.get("response")
            pending.finish((lambda record: _fill(record, partial)) if partial is not None else None, error)
        except Exception as exc:
            internal_error("langchain.error", exc)


def _fill(record: CallRecord, response: Any) -> None:
    """LLMResult -> usage, model, finish reasons and outputs of the first prompt's generations."""
    generations = (getattr(response, "generations", None) or [[]])[0]
    llm_output = getattr(response, "llm_output", None) or {}
    usage_found = False
    input_tokens = output_tokens = cache_read = cache_write = reasoning = 0
    reasons: list[str | None] = []
    for index, generation in enumerate(generations):
        message = getattr(generation, "message", None)
        info = getattr(generation, "generation_info", None) or {}
        metadata = getattr(message, "response_metadata", None) or {}
        reason = info.get("finish_reason") or metadata.get("finish_reason") or metadata.get("stop_reason")
        reasons.append(reason if isinstance(reason, str) else None)
        text = _text(getattr(message, "content", None)) if message is not None else getattr(generation, "text", None)
        tool_calls = getattr(message, "tool_calls", None)
        record.choices.append(ChoiceContent(
            index=index,
            text=text or None,
            finish_reason=reasons[-1],
            tool_calls=[{"id": c.get("id"), "name": c.get("name"), "arguments": c.get("args")} for c in tool_calls] if tool_calls else None,
        ))
        model = metadata.get("model_name") or metadata.get("model")
        if isinstance(model, str) and model and record.response_model is None:
            record.response_model = model
        rid = metadata.get("id") or getattr(message, "id", None)
        if isinstance(rid, str) and rid and not rid.startswith("run-") and not rid.startswith("lc_run") and record.response_id is None:
            record.response_id = rid
        usage = getattr(message, "usage_metadata", None)
        if isinstance(usage, dict) and usage:
            usage_found = True
            input_tokens += int_or_none(usage.get("input_tokens")) or 0
            output_tokens += int_or_none(usage.get("output_tokens")) or 0
            idet = usage.get("input_token_details") or {}
            odet = usage.get("output_token_details") or {}
            cache_read += int_or_none(idet.get("cache_read")) or 0
            cache_write += int_or_none(idet.get("cache_creation")) or 0
            reasoning += int_or_none(odet.get("reasoning")) or 0
            details = {k: v for k, v in {**{f"input.{k}": v for k, v in idet.items()}, **{f"output.{k}": v for k, v in odet.items()}}.items() if isinstance(v, (int, float))}
            if details:
                record.usage_details = details
    if usage_found:
        record.usage_source = "provider"
        record.input_tokens = input_tokens
        record.output_tokens = output_tokens
        record.input_cache_read_tokens = cache_read if _has(generations, "input_token_details", "cache_read") else None
        record.input_cache_write_tokens = cache_write if _has(generations, "input_token_details", "cache_creation") else None
        record.output_reasoning_tokens = reasoning if _has(generations, "output_token_details", "reasoning") else None
    else:
        token_usage = llm_output.get("token_usage") or llm_output.get("usage") or {}
        prompt = int_or_none(token_usage.get("prompt_tokens", token_usage.get("input_tokens")))
        completion = int_or_none(token_usage.get("completion_tokens", token_usage.get("output_tokens")))
        if prompt is not None or completion is not None:
            record.usage_source = "provider"
            record.input_tokens, record.output_tokens = prompt, completion
    if record.response_model is None:
        model = llm_output.get("model_name") or llm_output.get("model")
        if isinstance(model, str) and model:
            record.response_model = model
    record.finish_reasons = reasons
    if record.stream:
        record.stream_state = "completed"


def _has(generations: list[Any], group: str, key: str) -> bool:
    for generation in generations:
        usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
        if isinstance(usage, dict) and isinstance(usage.get(group), dict) and key in usage[group]:
            return True
    return False
