"""One OpenAI SDK call from the moment its method is entered until its result is handed back.

:class:`OpenAICall` reads the request (parameters, content references, provider from the client's
base URL), decides whether to ask for stream usage on the app's behalf, creates the
:class:`CallTracker`, and turns the SDK's result into record data: a parsed body, a stream proxy
with an observer, or a raw response read only from a body that is already read.
"""

from __future__ import annotations

import importlib
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace

from wasteaudit._internal.safety import internal_error
from wasteaudit.config import get_settings
from wasteaudit.instrumentation._calls import CallTracker
from wasteaudit.instrumentation._openai_extract import (
    apply_chat_body_usage,
    apply_chat_completion,
    apply_completion,
    apply_request,
    apply_response,
    apply_response_body_usage,
    given,
    is_sentinel,
    request_params,
)
from wasteaudit.instrumentation._openai_streams import ChatStreamObserver, ResponsesStreamObserver
from wasteaudit.instrumentation._providers import endpoint_of, host_allowed
from wasteaudit.instrumentation._streams import AsyncStreamProxy, SyncStreamProxy

RAW_HEADER = "X-Stainless-Raw-Response"
HELPER_HEADER = "X-Stainless-Helper-Method"

_OPERATION = {"chat.completions": "chat", "responses": "chat", "completions": "text_completion"}

_MISSING = object()

# Set by the wrapped stream managers while they make their request: labels the record "stream".
helper_method: ContextVar[str | None] = ContextVar("wasteaudit_openai_helper", default=None)


def sdk_types() -> dict[str, Any]:
    """The SDK classes the wrappers test results against, looked up once (each one optional)."""
    types: dict[str, Any] = {}
    try:
        from openai import AsyncStream, Stream

        types["Stream"], types["AsyncStream"] = Stream, AsyncStream
    except ImportError:  # pragma: no cover
        types["Stream"] = types["AsyncStream"] = ()
    raw: list[type] = []
    for module, name in (("openai._legacy_response", "LegacyAPIResponse"), ("openai._response", "APIResponse"), ("openai._response", "AsyncAPIResponse")):
        try:
            raw.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    types["raw"] = tuple(raw)
    finish_errors: list[type] = []
    for name in ("LengthFinishReasonError", "ContentFilterFinishReasonError"):
        try:
            finish_errors.append(getattr(importlib.import_module("openai"), name))
        except (ImportError, AttributeError):
            pass
    types["finish_errors"] = tuple(finish_errors)
    try:
        from openai._models import construct_type

        types["construct"] = construct_type
    except ImportError:  # pragma: no cover
        types["construct"] = None
    models: dict[str, Any] = {}
    for api, module, name in (
        ("chat.completions", "openai.types.chat", "ChatCompletion"),
        ("completions", "openai.types", "Completion"),
        ("responses", "openai.types.responses", "Response"),
    ):
        try:
            models[api] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            pass
    types["models"] = models
    return types


SDK: dict[str, Any] = {}


def _header(headers: Any, name: str) -> Any:
    if not headers:
        return None
    try:
        value = headers.get(name)
        if value is None:
            value = headers.get(name.lower())
        return value
    except AttributeError:
        return None


def stream_usage_plan(kwargs: dict[str, Any], extra_body: Any, raw: bool, host: str | None, settings: Any) -> tuple[bool, str]:
    """Whether to ask for ``include_usage`` on the app's behalf, and the gap to note if usage is missing.

    Only when the app did not set ``stream_options`` itself (argument or ``extra_body``), the call
    is not a raw-response call, the option is on and the host is known to accept it.
    """
    options = kwargs.get("stream_options", _MISSING)
    if options is _MISSING or is_sentinel(options):
        options = extra_body.get("stream_options", _MISSING) if type(extra_body) is dict else _MISSING
    if options is not _MISSING:  # the app chose: respect it, whatever it is
        include = options.get("include_usage") if type(options) is dict else None
        if include:
            return False, "usage missing: include_usage requested but the host sent no usage chunk"
        return False, "usage missing: the app set stream_options without include_usage"
    if raw:
        return False, "usage missing: raw-response stream, include_usage not requested"
    if not settings.openai_stream_usage:
        return False, "usage missing: include_usage not requested (openai_stream_usage is off)"
    if not host_allowed(host, settings.stream_usage_hosts):
        return False, f"usage missing: host {host} is not on stream_usage_hosts"
    return True, "usage missing: include_usage requested but the host sent no usage chunk"


class OpenAICall:
    """One wrapped SDK call from entry to the moment its result is handed back."""

    __slots__ = ("tracker", "api", "kwargs", "raw", "stream", "injected", "usage_gap", "otel_token", "usage")

    def __init__(self, api: str, method: str, instance: Any, kwargs: dict[str, Any]) -> None:
        settings = get_settings()
        endpoint = endpoint_of(getattr(instance, "_client", None))
        extra_body = kwargs.get("extra_body")
        headers = kwargs.get("extra_headers")
        raw = _header(headers, RAW_HEADER) is not None
        helper = helper_method.get()
        if helper is not None:
            method = helper
        elif _header(headers, HELPER_HEADER) == "chat.completions.stream":
            method = "stream"
        stream = bool(kwargs.get("stream"))  # the SDK's "not given" sentinels are falsy
        model = kwargs.get("model")
        if not given(model) and type(extra_body) is dict:
            model = extra_body.get("model")
        self.api = api
        self.raw = raw
        self.stream = stream
        self.injected = False
        self.usage_gap = ""
        self.otel_token: Any = None
        call_kwargs = kwargs
        if stream and api != "responses":
            self.injected, self.usage_gap = stream_usage_plan(kwargs, extra_body, raw, endpoint.host, settings)
            if self.injected:
                call_kwargs = dict(kwargs)
                call_kwargs["stream_options"] = {"include_usage": True}
        self.kwargs = call_kwargs
        tracker = CallTracker(
            provider=endpoint.provider,
            operation=_OPERATION[api],
            api=api,
            method=method,
            request_model=model if type(model) is str else None,
            stream=stream,
            params=request_params(kwargs, extra_body),
            server_address=endpoint.host,
            server_port=endpoint.port,
        )
        self.tracker = tracker
        try:
            apply_request(tracker.record, api, kwargs, extra_body)
        except Exception as exc:  # the call is still recorded, without its request content
            tracker.record.gaps.append("request content not captured")
            internal_error("openai.request", exc)

    # -- around the SDK call ---------------------------------------------------------------------
    def enter(self) -> None:
        tracker = self.tracker
        tracker.activate()
        if tracker.record.trace_id is not None:
            try:
                self.otel_token = otel_context.attach(otel_trace.set_span_in_context(tracker.span))
            except Exception as exc:
                internal_error("openai.context", exc)

    def exit(self) -> None:
        tracker = self.tracker
        tracker.deactivate()
        token = self.otel_token
        if token is not None:
            self.otel_token = None
            try:
                otel_context.detach(token)
            except Exception as exc:
                internal_error("openai.context", exc)
            tracker.context_released()

    def failed(self, error: BaseException) -> None:
        tracker = self.tracker
        refused = False
        try:
            if isinstance(error, SDK["finish_errors"]):
                completion = getattr(error, "completion", None)
                if completion is not None:
                    refused = apply_chat_completion(tracker.record, completion)
            self._status_from_attempts()
        except Exception as exc:
            internal_error("openai.failed", exc)
        tracker.finish(error, refused=refused)

    def returned(self, result: Any) -> Any:
        tracker = self.tracker
        try:
            self._status_from_attempts()
            if self.raw or isinstance(result, SDK["raw"]):
                self._raw(result)
                return result
            if isinstance(result, SDK["AsyncStream"]):
                return AsyncStreamProxy(result, self._observer())
            if isinstance(result, SDK["Stream"]):
                return SyncStreamProxy(result, self._observer())
            # Read here, not in the finisher: holding the response's object graph until the
            # finisher runs lets it survive young garbage collections, which then cost the app's
            # thread more than reading it does (measured with the collector on). Only its usage
            # (two or three small objects) is read by the finisher.
            refused = self._fill(result)
            self.usage = (getattr(result, "usage", None), getattr(result, "status", None) if self.api == "responses" else None)
            tracker.finish(None, refused=refused, fill=self._usage)
            return result
        except Exception as exc:
            internal_error("openai.result", exc)
            if not tracker.finished:
                tracker.finish(None)
            return result

    # -- helpers -----------------------------------------------------------------------------------
    def _status_from_attempts(self) -> None:
        attempts = self.tracker.record.attempts
        if attempts and attempts[-1].status_code is not None:
            self.tracker.record.status_code = attempts[-1].status_code

    def _observer(self) -> Any:
        tracker = self.tracker
        if self.api == "responses":
            return ResponsesStreamObserver(tracker)
        n = tracker.record.request_params.get("n")
        return ChatStreamObserver(
            tracker,
            hide_usage=self.injected,
            legacy=self.api == "completions",
            expected=n if type(n) is int and 0 < n <= 128 else 1,
            usage_gap=self.usage_gap,
        )

    def _fill(self, body: Any) -> bool:
        """Read a returned body but its usage into the record; a failure is counted, never raised."""
        try:
            return self._body(body, with_usage=False)
        except Exception as exc:
            internal_error("openai.result", exc)
            return False

    def _usage(self) -> bool:
        """The finisher's part of a returned body: its usage (never refuses)."""
        try:
            usage, status = self.usage
            self.usage = None
            if self.api == "responses":
                apply_response_body_usage(self.tracker.record, usage, status)
            else:
                apply_chat_body_usage(self.tracker.record, usage)
        except Exception as exc:
            internal_error("openai.usage", exc)
        return False

    def _body(self, body: Any, *, with_usage: bool = True) -> bool:
        record = self.tracker.record
        if self.api == "chat.completions":
            return apply_chat_completion(record, body, with_usage=with_usage)
        if self.api == "responses":
            return apply_response(record, body, with_usage=with_usage)
        return apply_completion(record, body, with_usage=with_usage)

    def _raw(self, result: Any) -> None:
        """A raw-response wrapper's object: read only a body that has already been read."""
        tracker = self.tracker
        record = tracker.record
        refused = False
        http = getattr(result, "http_response", None)
        if http is not None and record.status_code is None:
            status = getattr(http, "status_code", None)
            if type(status) is int:
                record.status_code = status
        if self.stream or http is None or not getattr(http, "is_closed", False):
            record.gaps.append("raw streaming response: body not observed")
            record.gaps.append("usage missing: raw streaming response")
        else:
            try:
                data = http.json()
            except Exception:
                record.gaps.append("raw response body is not JSON")
                data = None
            if data is not None:
                model = SDK["models"].get(self.api)
                construct = SDK["construct"]
                if model is not None and construct is not None:
                    refused = self._body(construct(type_=model, value=data))
                else:  # pragma: no cover - SDK without these internals
                    record.gaps.append("raw response: SDK model types unavailable")
        tracker.finish(None, refused=refused)


def start_call(api: str, method: str, instance: Any, kwargs: dict[str, Any]) -> OpenAICall | None:
    try:
        if not get_settings().enabled:
            return None
        return OpenAICall(api, method, instance, kwargs)
    except Exception as exc:
        internal_error("openai.start", exc)
        return None


