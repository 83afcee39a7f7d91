"""LiteLLM: a callback that records every ``litellm.completion`` / ``acompletion`` as a CallRecord.

    import litellm
    from wasteaudit.integrations.litellm import WasteAuditLogger
    litellm.callbacks = [WasteAuditLogger()]          # or wasteaudit.integrations.litellm.register()

Needs ``litellm`` (extra ``wasteaudit[litellm]``). LiteLLM reports a call's end from a background
thread or queue; the record is built then, in the context the call started in (so it joins the
innermost ``@audit`` run and nests its span under the caller's), with LiteLLM's measured duration.
When LiteLLM goes through an SDK wasteaudit instruments (the ``openai`` SDK for OpenAI-compatible
providers, with ``instrument_openai()``), the SDK-level record is kept and this callback adds nothing.

What LiteLLM hands over is already normalized to OpenAI's shape: finish reasons are LiteLLM's mapping
(``stop``, ``length``, ...), not the provider's verbatim values, and ``prompt_tokens`` includes cached
input. LiteLLM's own cost estimate is kept in ``usage_details["litellm.response_cost"]``; wasteaudit
prices the call itself, like any other.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

from litellm.integrations.custom_logger import CustomLogger

from wasteaudit._internal.safety import internal_error
from wasteaudit.integrations._framework import MAX_PENDING, PendingCall, int_or_none
from wasteaudit.records import CallRecord, ChoiceContent

__all__ = ["PROVIDERS", "WasteAuditLogger", "register"]

#: LiteLLM's ``custom_llm_provider`` -> ``gen_ai.provider.name``.
PROVIDERS: dict[str, str] = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "azure": "azure.ai.openai",
    "azure_text": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "anthropic": "anthropic",
    "groq": "groq",
    "mistral": "mistral_ai",
    "codestral": "mistral_ai",
    "deepseek": "deepseek",
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "vertex_ai_beta": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "sagemaker": "aws.sagemaker",
    "cohere": "cohere",
    "cohere_chat": "cohere",
    "xai": "x_ai",
    "perplexity": "perplexity",
    "openrouter": "openrouter",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "ollama": "ollama",
    "ollama_chat": "ollama",
    "hosted_vllm": "vllm",
    "vllm": "vllm",
    "llamafile": "llamafile",
    "lm_studio": "lm_studio",
    "moonshot": "moonshot_ai",
    "watsonx": "ibm.watsonx.ai",
}

_PARAMS = ("temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "n", "seed", "stop", "frequency_penalty", "presence_penalty", "reasoning_effort")


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _endpoint(api_base: Any) -> tuple[str | None, int | None]:
    if not isinstance(api_base, str) or "://" not in api_base:
        return None, None
    try:
        parts = urlsplit(api_base)
        port = parts.port or (443 if parts.scheme == "https" else 80 if parts.scheme == "http" else None)
        return parts.hostname, port
    except ValueError:
        return None, None


class WasteAuditLogger(CustomLogger):
    """A LiteLLM ``CustomLogger``; never raises into LiteLLM (failures are counted)."""

    def __init__(self, *, defer_to_sdk: bool = True) -> None:
        super().__init__()
        self.defer_to_sdk = defer_to_sdk
        self._lock = threading.Lock()
        self._pending: dict[str, PendingCall] = {}

    # -- start ---------------------------------------------------------------------------------------
    def log_pre_api_call(self, model: Any, messages: Any, kwargs: dict[str, Any]) -> None:
        try:
            call_id = kwargs.get("litellm_call_id")
            if not call_id:
                return
            with self._lock:
                if call_id in self._pending:  # LiteLLM retrying the same logical call
                    return
            litellm_params = kwargs.get("litellm_params") or {}
            optional = kwargs.get("optional_params") or {}
            raw_provider = str(kwargs.get("custom_llm_provider") or litellm_params.get("custom_llm_provider") or "litellm")
            host, port = _endpoint(kwargs.get("api_base") or litellm_params.get("api_base"))
            params: dict[str, Any] = {}
            for key in _PARAMS:
                value = optional.get(key)
                if value is not None and not isinstance(value, bool):
                    params["max_tokens" if key == "max_completion_tokens" else key] = value
            stream = bool(optional.get("stream") or kwargs.get("stream"))
            call_type = str(kwargs.get("call_type") or "completion")
            text = "text_completion" in call_type
            pending = PendingCall(
                provider=PROVIDERS.get(raw_provider, raw_provider),
                operation="text_completion" if text else "chat",
                api="litellm." + call_type.removeprefix("a").removeprefix("_"),
                method="stream" if stream else "create",
                request_model=model if isinstance(model, str) else kwargs.get("model"),
                stream=stream,
                params=params,
                server_address=host,
                server_port=port,
                defer_to_sdk=self.defer_to_sdk,
                capture_context=True,
            )
            if isinstance(messages, list):
                system = [m for m in messages if isinstance(m, dict) and m.get("role") == "system"]
                pending.input_messages = [m for m in messages if not (isinstance(m, dict) and m.get("role") == "system")]
                pending.system_instructions = [{"type": "text", "content": m.get("content")} for m in system] or None
            with self._lock:
                self._pending[call_id] = pending
                if len(self._pending) > MAX_PENDING:  # ends that never came: bounded
                    self._pending.pop(next(iter(self._pending))).abandon()
        except Exception as exc:
            internal_error("litellm.start", exc)

    # -- end -------------------------------------------------------------------------------------------
    def _take(self, kwargs: dict[str, Any]) -> PendingCall | None:
        call_id = kwargs.get("litellm_call_id")
        with self._lock:
            return self._pending.pop(call_id, None) if call_id else None

    @staticmethod
    def _duration(start_time: Any, end_time: Any) -> float | None:
        try:
            return max(0.0, (end_time - start_time).total_seconds())
        except Exception:
            return None

    def _success(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        pending = self._take(kwargs)
        if pending is None:
            return
        try:
            response = kwargs.get("complete_streaming_response") or response_obj
            first = kwargs.get("completion_start_time")
            if pending.stream and first is not None and start_time is not None:
                try:
                    pending.time_to_first_chunk_s = max(0.0, (first - start_time).total_seconds())
                except Exception:
                    pass
            cost = kwargs.get("response_cost")
            pending.finish(lambda record: _fill(record, response, cost), duration_s=self._duration(start_time, end_time))
        except Exception as exc:
            internal_error("litellm.end", exc)

    def _failure(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        pending = self._take(kwargs)
        if pending is None:
            return
        try:
            error = kwargs.get("exception")
            if not isinstance(error, BaseException):
                error = RuntimeError(str(error or "LiteLLM call failed"))
            pending.finish(None, error, duration_s=self._duration(start_time, end_time))
        except Exception as exc:
            internal_error("litellm.error", exc)

    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._success(kwargs, response_obj, start_time, end_time)

    def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._failure(kwargs, response_obj, start_time, end_time)

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._success(kwargs, response_obj, start_time, end_time)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._failure(kwargs, response_obj, start_time, end_time)


def _fill(record: CallRecord, response: Any, cost: Any) -> None:
    record.response_model = _get(response, "model") or None
    rid = _get(response, "id")
    record.response_id = rid if isinstance(rid, str) and rid else None
    choices = _get(response, "choices") or []
    reasons: list[str | None] = []
    for position, choice in enumerate(choices):
        message = _get(choice, "message") or _get(choice, "delta")
        reason = _get(choice, "finish_reason")
        reasons.append(reason if isinstance(reason, str) else None)
        text = _get(message, "content") if message is not None else _get(choice, "text")
        tool_calls = _get(message, "tool_calls") if message is not None else None
        calls = None
        if tool_calls:
            calls = [{"id": _get(c, "id"), "name": _get(_get(c, "function"), "name"), "arguments": _get(_get(c, "function"), "arguments")} for c in tool_calls]
        index = _get(choice, "index")
        record.choices.append(ChoiceContent(index=index if isinstance(index, int) else position, text=text if isinstance(text, str) else None,
                                            refusal=_get(message, "refusal") if message is not None else None, tool_calls=calls, finish_reason=reasons[-1]))
    record.finish_reasons = reasons
    usage = _get(response, "usage")
    if usage is not None:
        prompt = int_or_none(_get(usage, "prompt_tokens"))
        completion = int_or_none(_get(usage, "completion_tokens"))
        if prompt is not None or completion is not None:
            record.usage_source = "provider"
            record.input_tokens, record.output_tokens = prompt, completion
            pdet, cdet = _get(usage, "prompt_tokens_details"), _get(usage, "completion_tokens_details")
            record.input_cache_read_tokens = int_or_none(_get(pdet, "cached_tokens")) if pdet is not None else None
            if record.input_cache_read_tokens is None:
                record.input_cache_read_tokens = int_or_none(_get(usage, "cache_read_input_tokens"))
            record.input_cache_write_tokens = int_or_none(_get(usage, "cache_creation_input_tokens"))
            record.output_reasoning_tokens = int_or_none(_get(cdet, "reasoning_tokens")) if cdet is not None else None
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        record.usage_details = {**(record.usage_details or {}), "litellm.response_cost": float(cost)}
    if record.stream:
        record.stream_state = "completed"


_registered: WasteAuditLogger | None = None


def register() -> WasteAuditLogger:
    """Add one WasteAuditLogger to ``litellm.callbacks`` (idempotent) and return it."""
    global _registered
    import litellm

    if _registered is None or _registered not in (litellm.callbacks or []):
        _registered = _registered or WasteAuditLogger()
        litellm.callbacks = [*(litellm.callbacks or []), _registered]
    return _registered
