"""Anthropic SDK instrumentation: one record per ``messages`` call, every HTTP attempt, exact usage.

What is patched (reversibly, with wrapt, each target guarded so older SDKs that lack one still
get the rest):

* ``Messages`` / ``AsyncMessages`` ``create`` and ``parse`` (stable and beta resources): one
  :class:`~wasteaudit.instrumentation._calls.CallTracker` per call; a streamed ``create`` returns
  a transparent proxy around the SDK ``Stream`` that records events as they pass.
* ``messages.stream()``: the helper calls ``_post`` itself, not ``create``, and sends nothing
  until its manager is entered. ``stream()`` is left unwrapped; the manager's ``__init__`` is
  tagged with the request it will make (client, body, options), its ``__enter__`` /
  ``__aenter__`` starts the call, and the helper stream's ``__init__`` gets our proxy as its
  ``raw_stream``, so ``text_stream``, ``get_final_message()`` and ``until_done()`` run through
  it unchanged.
* Sync ``create`` is decorated by the SDK's ``required_args``; when that check is sure to pass,
  the wrapper calls the undecorated method, so the SDK's ``warnings.warn(..., stacklevel=3)``
  (retired models) still points at the app's line, not at ours.
* Client construction (SDKs with ``anthropic.Middleware``): ``SyncAPIClient.__init__`` /
  ``AsyncAPIClient.__init__`` append one read-only middleware, innermost, idempotently
  (``copy()`` / ``with_options()`` re-run the constructor with the list that already has it).
  It sees each HTTP attempt (status, connection error, ``retries_taken``) of the active call.

Spans, replace mode (``anthropic_sdk_span="replace"``, the default; mode ``_REPLACE``): for a
client whose own tracing is on, the SDK's ``start_api_call_span`` / ``finish_api_call_span``
(module globals of ``anthropic._base_client``, hooked reversibly) are handed our span and
relieved of their work. Where the SDK would start its span, ours is started with the client's
tracer and the SDK's span name, and given to the SDK, which makes it current, writes its trace
context into each request and sets the ``url.*`` attributes on it as it would on its own. When
the SDK finishes the call, its arguments (request options, result) are kept by reference, as are
the stream events its recorder reads; the finisher replays the SDK's own recording functions onto
a stand-in span (:class:`_Collector`) and puts what they set (attributes, status, events) on ours
over our attributes. One span per call, a superset of the SDK's, with the SDK's attribute work
off the app's thread. If the client's span would not record (no tracer provider, sampled out),
the SDK gets what its tracer gave and the call gets our own span, as below. Content-recording
clients, raw-response calls and SDKs without these functions are not replaced (enrich mode).

Spans, enrich mode: when the SDK's own tracing records a span for the call (``anthropic.messages.create``),
that span is enriched (finish reasons, ``wasteaudit.*``, both cache-write names) and no second
span is made. Whether it exists is known only inside the SDK's retry loop, so for a client that
has our middleware and an SDK tracer the span decision is deferred to the first attempt: the
middleware adopts the SDK's current span if it is a new recording span, and otherwise starts
our own ``chat {model}`` span with the call's real start time and the caller's context. Clients
without our middleware (built before instrumenting, or an SDK without middleware) and clients
with tracing off get our own span at once. The SDK ends its span before ``create()`` returns
(non-stream) or as soon as the body ends (streams), so data for it is set in the middleware
(non-stream: from the already-read body) and while events flow (``message_delta``,
``message_stop``, and just before the app closes the stream).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import time
from contextvars import ContextVar
from types import MethodType
from typing import Any, Callable

import wrapt

from wasteaudit._internal import semconv as sc
from wasteaudit._internal import tracing
from wasteaudit._internal.safety import internal_error
from wasteaudit.config import get_settings
from wasteaudit.instrumentation._anthropic_usage import (
    TOOL_BLOCKS,
    UNCHANGED,
    MessageFacts,
    apply_message,
    message_facts,
    apply_usage,
    refusal_text,
    tool_call,
)
from wasteaudit.instrumentation._calls import CallTracker, error_type_of, finish_category
from wasteaudit.instrumentation._streams import AsyncStreamProxy, SyncStreamProxy
from wasteaudit.records import ChoiceContent, CallRecord

logger = logging.getLogger("wasteaudit")

PROVIDER = "anthropic"
OPERATION = "chat"
RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
_PENDING = "_wasteaudit_pending"

# span modes of a call
_OWN = 0  # our own span (already started)
_DEFER = 1  # decided at the first HTTP attempt: the SDK's span if it records one, else ours
_SDK = 2  # the SDK's own span, enriched
_REPLACE = 3  # our span in place of the SDK's (its tracer, its name); its attributes replayed when the call ends

# The name the SDK gives the span of every messages call (create, parse, stream, beta).
SDK_SPAN_NAME = "anthropic.messages.create"

# Attributes the SDK's span already carries (possibly with other values, e.g. gen_ai.provider.name
# "aws.bedrock" on Bedrock clients): never overwritten when enriching it.
_SDK_OWNED = frozenset(
    {
        sc.OPERATION,
        sc.PROVIDER,
        sc.REQUEST_MODEL,
        sc.REQUEST_MAX_TOKENS,
        sc.REQUEST_STREAM,
        sc.SERVER_ADDRESS,
        sc.SERVER_PORT,
        sc.OUTPUT_TYPE,
    }
)

_current: ContextVar["_Call | None"] = ContextVar("wasteaudit_anthropic_call", default=None)
_MISSING = object()
_NO_BODY = object()


class _Runtime:
    """What instrument() resolved from the installed SDK (types for isinstance checks)."""

    sync_stream: tuple[type, ...] = ()
    async_stream: tuple[type, ...] = ()
    raw_response: tuple[type, ...] = ()
    invalid_span: Any = None
    middleware: Any = None  # our middleware instance, when the SDK has middleware
    sdk: "_SdkTracing | None" = None  # the SDK's span functions, when replace mode can use them


_rt = _Runtime()


_otel_modules: tuple[Any, Any] | None = None


def _otel() -> tuple[Any, Any]:
    """(opentelemetry.context, opentelemetry.trace), imported once."""
    global _otel_modules
    if _otel_modules is None:
        from opentelemetry import context, trace

        _otel_modules = (context, trace)
    return _otel_modules


# --------------------------------------------------------------------------------------------
# request side
# --------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or kind is float


def _scalar_param(params: dict[str, Any], key: str, value: Any) -> None:
    kind = type(value)
    if kind is int or kind is float:
        params[key] = value


def _text_param(params: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, str):
        params[key] = value


def _stop_param(params: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, (list, tuple)):
        params["stop"] = list(value)
    elif isinstance(value, str):
        params["stop"] = [value]


def _thinking_param(params: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict):
        kind = value.get("type")
        if isinstance(kind, str):
            params["thinking_type"] = kind
        budget = value.get("budget_tokens")
        if type(budget) is int:
            params["thinking_budget_tokens"] = budget


def _output_config_param(params: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict) and isinstance(value.get("effort"), str):
        params["effort"] = value["effort"]


def _tool_choice_param(params: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        params["tool_choice"] = value["type"]


def _max_tokens_param(params: dict[str, Any], key: str, value: Any) -> None:
    if type(value) is int:
        params["max_tokens"] = value


_PARAMS: dict[str, Callable[[dict[str, Any], str, Any], None]] = {
    "max_tokens": _max_tokens_param,
    "temperature": _scalar_param,
    "top_p": _scalar_param,
    "top_k": _scalar_param,
    "stop_sequences": _stop_param,
    "thinking": _thinking_param,
    "output_config": _output_config_param,
    "service_tier": _text_param,
    "speed": _text_param,
    "inference_geo": _text_param,
    "tool_choice": _tool_choice_param,
}


def _request_params(src: dict[str, Any]) -> dict[str, Any]:
    """Parameters that matter for waste and duplicate detection (cheap reads, no copies of content).

    Walks the (few) arguments given rather than looking up every known name.
    """
    params: dict[str, Any] = {}
    for key, value in src.items():
        handler = _PARAMS.get(key)
        if handler is not None:
            handler(params, key, value)
    return params


def _capture_request(record: CallRecord, src: dict[str, Any]) -> None:
    """References to the request content (shallow copies of lists; iterables are never consumed)."""
    messages = src.get("messages")
    if isinstance(messages, (list, tuple)):
        record.input_messages = list(messages)
    elif messages is not None:
        record.gaps.append("input messages not captured: passed as a one-shot iterable")
    system = src.get("system")
    if isinstance(system, str):
        record.system_instructions = system
    elif isinstance(system, (list, tuple)):
        record.system_instructions = list(system)
    tools = src.get("tools")
    if isinstance(tools, (list, tuple)):
        record.tool_definitions = list(tools)
    fmt: Any = None
    config = src.get("output_config")
    if isinstance(config, dict):
        fmt = config.get("format")
    if fmt is None:
        fmt = src.get("output_format")
    if isinstance(fmt, dict):
        record.response_format = fmt
        if fmt.get("type") == "json_schema":
            record.output_type = "json"
    elif isinstance(fmt, type):
        record.response_format = {"type": "json_schema", "output_format": fmt.__qualname__}
        record.output_type = "json"


_servers: dict[int, tuple[Any, str | None, int | None]] = {}


def _server(client: Any) -> tuple[str | None, int | None]:
    """(host, port) of the client's base URL, cached per URL object (parsing it costs µs)."""
    url = getattr(client, "_base_url", None) or getattr(client, "base_url", None)
    if url is None:
        return None, None
    cached = _servers.get(id(url))
    if cached is not None and cached[0] is url:
        return cached[1], cached[2]
    try:
        host = url.host or None
        port = url.port or (443 if url.scheme == "https" else 80)
    except Exception:
        host, port = None, None
    if len(_servers) > 256:
        _servers.clear()
    _servers[id(url)] = (url, host, port)
    return host, port


def _is_ours(middleware: Any) -> bool:
    return getattr(middleware, "_wasteaudit_middleware", False) is True


def _has_our_middleware(client: Any) -> bool:
    for middleware in getattr(client, "_middleware", ()) or ():
        if _is_ours(middleware):
            return True
    return False


def _raw_mode(extra_headers: Any) -> str | None:
    if isinstance(extra_headers, dict):
        mode = extra_headers.get(RAW_RESPONSE_HEADER)
        if mode in ("raw", "stream"):
            return mode
    return None


def _set_ids(record: CallRecord, span: Any) -> None:
    ctx = span.get_span_context()
    if ctx.is_valid:
        record.trace_id = format(ctx.trace_id, "032x")
        record.span_id = format(ctx.span_id, "016x")


def _is_sdk_span(span: Any) -> bool:
    name = getattr(span, "name", None)
    return not isinstance(name, str) or name.startswith("anthropic.")


# --------------------------------------------------------------------------------------------
# one call
# --------------------------------------------------------------------------------------------


class _Call:
    """One SDK call: the shared tracker plus what Anthropic needs on top (span mode, raw mode)."""

    __slots__ = (
        "tracker",
        "mode",
        "entry_span",
        "entry_ctx",
        "filled",
        "refused",
        "token",
        "raw_mode",
        "helper",
        "proxied",
        "pending_attrs",
        "body",
        "sdk_tracer",
        "sdk",
    )

    def __init__(self, tracker: CallTracker, mode: int, entry_span: Any, entry_ctx: Any, raw_mode: str | None) -> None:
        self.tracker = tracker
        self.mode = mode
        self.entry_span = entry_span
        self.entry_ctx = entry_ctx
        self.filled = False
        self.refused = False
        self.token: Any = None
        self.raw_mode = raw_mode
        self.helper = False
        self.proxied = False
        self.pending_attrs: dict[str, Any] | None = None
        self.body: Any = _NO_BODY  # a returned Message, read into the record by the finisher
        self.sdk_tracer: Any = None  # replace mode: the client's tracer (our span is made with it)
        self.sdk: _SdkCapture | None = None  # replace mode: what the SDK handed its span functions

    @classmethod
    def start(cls, client: Any, kwargs: dict[str, Any], api: str, method: str, force_stream: bool = False, replace: bool = False) -> "_Call":
        src = kwargs
        extra = kwargs.get("extra_body")
        if isinstance(extra, dict) and extra:
            src = {**kwargs, **extra}  # the SDK merges extra_body over the named arguments
        model = src.get("model")
        host, port = _server(client)
        has_middleware = _rt.middleware is not None and _has_our_middleware(client)
        raw_mode = _raw_mode(kwargs.get("extra_headers"))
        sdk_tracer = getattr(client, "_tracer", _MISSING)
        mode = _OWN
        if replace and sdk_tracer is not None and sdk_tracer is not _MISSING and raw_mode is None and _rt.sdk is not None and not _records_content(client):
            mode = _REPLACE
        elif has_middleware and sdk_tracer is not None:
            mode = _DEFER
        tracker_args = dict(
            provider=PROVIDER,
            operation=OPERATION,
            api=api,
            method=method,
            request_model=model if isinstance(model, str) else None,
            stream=force_stream or src.get("stream") is True,
            params=_request_params(src),
            server_address=host,
            server_port=port,
        )
        entry_span = entry_ctx = None
        if mode == _DEFER:
            context, trace = _otel()
            entry_span = trace.get_current_span()
            entry_ctx = context.get_current()
            tracker = CallTracker(**tracker_args, span=_rt.invalid_span)  # type: ignore[arg-type]
        elif mode == _REPLACE:
            # the span is started where the SDK would start its own (sdk_span_start)
            context, _ = _otel()
            entry_ctx = context.get_current()
            tracker = _ReplacingTracker(**tracker_args, span=_rt.invalid_span)  # type: ignore[arg-type]
        else:
            tracker = CallTracker(**tracker_args)  # type: ignore[arg-type]
        record = tracker.record
        _capture_request(record, src)
        if record.output_type and tracker.own_span:
            late = tracker._late
            if late is not None:  # written with the end attributes
                late[sc.OUTPUT_TYPE] = record.output_type
            elif tracker.span.is_recording():
                tracker.span.set_attribute(sc.OUTPUT_TYPE, record.output_type)
        if not has_middleware:
            record.gaps.append(
                "attempts unknown: the client has no wasteaudit middleware (built before instrumenting, or an SDK without middleware)"
            )
        call = cls(tracker, mode, entry_span, entry_ctx, raw_mode)
        if mode == _REPLACE:
            call.sdk_tracer = sdk_tracer
            call.sdk = tracker.sdk = _SdkCapture(_rt.sdk)  # type: ignore[arg-type]
        return call

    # -- replace mode: the SDK's span functions, called for this call -----------------------
    def sdk_span_start(self, tracer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
        """The SDK is starting its span: start ours in its place, with its tracer and its name,
        and hand it over (True, span); (False, None) when this is not our call's span (another
        request made inside the call)."""
        sdk = self.sdk
        if sdk is None or sdk.start is not None or tracer is not self.sdk_tracer:
            return False, None
        tracker = self.tracker
        record = tracker.record
        name = getattr(args[1], "span_name", None) if len(args) > 1 else None
        early, late = tracker._split_start_attributes()
        span = tracer.start_span(
            name or SDK_SPAN_NAME,
            kind=tracing._client_kind(),
            attributes=early,
            start_time=int(record.started_at * 1e9),
            context=tracing.parent_context(tracker.run),
        )
        if not span.is_recording():
            # Nothing to replace: the client's spans do not record (no tracer provider for it, or
            # sampled out). The SDK gets what it would have had (its rule: that span if it
            # propagates a trace context, else none), and the call gets wasteaudit's own span,
            # as for a client that does not trace.
            self.own_span_instead()
            propagation = kwargs.get("propagation", True)
            if not (sdk.functions.trace_headers(span) if propagation else span.get_span_context().is_valid):
                return True, None
            return True, span
        sdk.start = (args, kwargs)
        tracker.span = span
        tracker.own_span = True
        tracker._late = late
        _set_ids(record, span)
        return True, span

    def own_span_instead(self) -> None:
        """Replace mode without an SDK span to replace: wasteaudit's own span, as for a client that does not trace."""
        self.sdk = self.tracker.sdk = None  # type: ignore[attr-defined]
        self._start_own_span()

    def sdk_span_result(self, client: Any, result: Any) -> bool:
        """The SDK is finishing its span (ours) with the call's result: keep the result for the
        finisher, which replays the SDK's recording onto a stand-in. False when the SDK must
        finish it itself: a body the app has yet to read (only a middleware can return one here,
        raw-response calls never replace), which the SDK can only observe by wrapping it now."""
        sdk = self.sdk
        if sdk is None:
            return False
        if sdk.result is not None:
            return True
        response = getattr(result, "response", None)
        if isinstance(getattr(result, "data", None), sdk.functions.streams) or response is None or response.is_closed:
            sdk.result = (client, result)
            return True
        sdk.fallback = True
        self.mode = _SDK
        self.tracker.own_span = False
        collector = _replay_sdk_span(sdk)  # its start attributes, which it set on no span
        if collector is not None and collector.attributes:
            self.tracker.span.set_attributes(collector.attributes)
        return False

    # -- context ----------------------------------------------------------------------------
    # Only this module's own context variable is set, not the shared ``_calls.active_call``: the
    # attempts come from our middleware, and the OpenAI wrappers treat any active call as
    # re-entrance, which would drop an OpenAI call made inside an Anthropic one (e.g. by a
    # fallback middleware).
    def enter(self) -> None:
        self.token = _current.set(self)

    def exit(self) -> None:
        token, self.token = self.token, None
        if token is not None:
            try:
                _current.reset(token)
            except ValueError:  # reset from another context (should not happen): just clear
                _current.set(None)

    # -- span -------------------------------------------------------------------------------
    def resolve_span(self, in_attempt: bool) -> None:
        """Deferred mode: adopt the SDK's span (inside an attempt) or start our own."""
        if self.mode != _DEFER:
            return
        tracker = self.tracker
        if in_attempt:
            _, trace = _otel()
            current = trace.get_current_span()
            if current is not self.entry_span and current.is_recording() and _is_sdk_span(current):
                tracker.span = current
                tracker.own_span = False
                self.mode = _SDK
                # the SDK's span already carries every sampling-relevant start attribute
                attrs = {k: v for k, v in tracker._split_start_attributes()[1].items() if k not in _SDK_OWNED}
                attrs[sc.WA_USAGE_SOURCE] = "missing"  # overwritten once usage arrives
                if tracker.record.stream:
                    current.set_attributes(attrs)  # a stream may be dropped before any event
                else:
                    self.pending_attrs = attrs  # written with the attempt's outcome, in one go
                _set_ids(tracker.record, current)
                return
        self._start_own_span()

    def _start_own_span(self) -> None:
        tracker = self.tracker
        record = tracker.record
        context, _ = _otel()
        token = context.attach(self.entry_ctx) if self.entry_ctx is not None else None
        try:
            name = f"{OPERATION} {record.request_model}" if record.request_model else OPERATION
            span = tracing.start_call_span(name, tracker._start_attributes(), int(record.started_at * 1e9), tracker.run)
        finally:
            if token is not None:
                context.detach(token)
        tracker.span = span
        tracker.own_span = True
        self.mode = _OWN
        _set_ids(record, span)

    def enrich(self, stream_state: str | None = None, facts: MessageFacts | None = None) -> None:
        """Write what we know now onto the SDK's span (it may end before our call finishes).

        ``facts``: what a returned Message will put in the record once the finisher reads it
        (non-stream calls), used instead of the record's fields.
        """
        if self.mode != _SDK:
            return
        span = self.tracker.span
        if not span.is_recording():
            return
        record = self.tracker.record
        reasons, source, cache_write = record.finish_reasons, record.usage_source, record.input_cache_write_tokens
        if facts is not None:
            if facts.finish_reasons is not None:
                reasons = facts.finish_reasons
            source = facts.usage_source
            if facts.cache_write is not UNCHANGED:
                cache_write = facts.cache_write
        attrs = self.pending_attrs or {}
        self.pending_attrs = None
        attrs[sc.WA_ATTEMPTS] = record.attempt_count
        attrs[sc.WA_USAGE_SOURCE] = source
        if reasons:
            attrs[sc.RESPONSE_FINISH_REASONS] = [r if r is not None else "error" for r in reasons]
            category = finish_category(reasons, refused=self.refused)
            if category:
                attrs[sc.WA_FINISH_CATEGORY] = category
        if cache_write is not None:
            attrs[sc.USAGE_CACHE_CREATION] = cache_write
            attrs[sc.USAGE_CACHE_WRITE] = cache_write
        if stream_state is not None:
            attrs[sc.WA_STREAM_STATE] = stream_state
        failed = [a.status_code or 0 for a in record.attempts if a.error_type or (a.status_code or 0) >= 400]
        if failed:
            attrs[sc.WA_ATTEMPT_STATUSES] = failed
        span.set_attributes(attrs)

    # -- attempts (called by the middleware) ----------------------------------------------------
    def attempt_begin(self) -> tuple[Any, float]:
        if self.mode == _DEFER:
            self.resolve_span(in_attempt=True)
        return self.tracker.attempt_started(), time.perf_counter()

    def attempt_failed(self, attempt: tuple[Any, float], exc: BaseException) -> None:
        record, started = attempt
        CallTracker.attempt_ended(record, started=started, error_type=error_type_of(exc))
        if self.mode == _SDK:
            self.enrich()

    def attempt_done(self, attempt: tuple[Any, float], response: Any) -> Any:
        """Record a finished attempt; returns the HTTP response when the middleware should read
        the body for the SDK's span (then it calls :meth:`take_body`), else ``None``."""
        entry, started = attempt
        status = response.status_code
        http = getattr(response, "http_response", None)
        headers = getattr(http, "headers", None)
        request_id = headers.get("request-id") if headers is not None else None
        error_type = None
        if status >= 400 and http is not None and http.is_closed:
            error_type = _error_type_from_body(http)
        CallTracker.attempt_ended(entry, started=started, status_code=status, error_type=error_type, request_id=request_id)
        if self.mode != _SDK:
            return None
        if status < 400 and not self.tracker.record.stream and http is not None and http.is_closed:
            return http
        self.enrich()
        return None

    def body_is_plain(self, request: Any) -> bool:
        """Whether the SDK will ``parse()`` this response itself right after the chain returns.

        Then parsing it here costs nothing extra (``APIResponse.parse()`` caches, so the SDK and
        the app get this very object). A raw-response call or one with a post-parser
        (``messages.parse``) is read from the already-read JSON instead, so no app-visible
        parsing runs in here.
        """
        headers = request.headers
        if isinstance(headers, dict) and headers.get(RAW_RESPONSE_HEADER):
            return False
        return not callable(getattr(getattr(request, "options", None), "post_parser", None))

    def take_body(self, data: Any) -> None:
        """The final body of a non-stream call, for a span the SDK ends before create() returns.

        Only what the span needs is read now; the finisher reads the whole body into the record.
        """
        if data is not None:
            facts = message_facts(data)
            self.refused = facts.refused
            self.body = data
            self.filled = True
            self.enrich(facts=facts)
        else:
            self.enrich()

    # -- outcomes ---------------------------------------------------------------------------
    def returned(self, result: Any, sync: bool) -> Any:
        """The SDK call returned ``result``: record it; return it (or our proxy around a stream)."""
        try:
            if self.raw_mode is not None or (_rt.raw_response and isinstance(result, _rt.raw_response)):
                self._take_raw(result)
                self.finish(None)
                return result
            if sync and isinstance(result, _rt.sync_stream):
                return self.proxy(result, True)
            if not sync and isinstance(result, _rt.async_stream):
                return self.proxy(result, False)
            if not self.filled:
                self.body = result  # read by the finisher (the SDK's Message is immutable in practice)
                self.filled = True
            self.finish(None)
            return result
        except Exception as exc:
            self._salvage(exc)
            internal_error("anthropic.result", exc)
            return result

    def _take_raw(self, response: Any) -> None:
        record = self.tracker.record
        status = getattr(response, "status_code", None)
        if type(status) is int:
            record.status_code = status
        if self.filled:
            return
        http = getattr(response, "http_response", None)
        if http is not None and not record.stream and self.raw_mode != "stream" and http.is_closed:
            try:
                data = _json_body(http)
            except Exception:
                data = None
            if data is None:
                record.usage_source = "missing"
                record.gaps.append("usage missing: the raw response body is not JSON")
                return
            self.refused = apply_message(record, data)
            self.filled = True
            return
        record.usage_source = "missing"
        record.gaps.append("usage missing: raw response whose body the app reads later (with_streaming_response or a raw stream)")

    def proxy(self, stream: Any, sync: bool) -> Any:
        response = getattr(stream, "response", None)
        status = getattr(response, "status_code", None)
        if type(status) is int:
            self.tracker.record.status_code = status
        watch = _StreamWatch(self)
        self.proxied = True
        return _SyncProxy(stream, watch) if sync else _AsyncProxy(stream, watch)

    def helper_entered(self) -> None:
        if not self.proxied and not self.tracker.finished:
            self.tracker.record.gaps.append("stream helper not observed: this SDK's helper stream could not be wrapped")
            self.finish(None)

    def failed(self, exc: BaseException) -> None:
        try:
            self.finish(exc)
        except Exception as err:
            internal_error("anthropic.failed", err)

    def finish(self, error: BaseException | None) -> None:
        tracker = self.tracker
        if tracker.finished:
            return
        record = tracker.record
        if self.mode == _DEFER:
            self.resolve_span(in_attempt=False)
        elif self.mode == _REPLACE and self.sdk is not None and self.sdk.start is None:
            self.own_span_instead()  # the SDK never started its span (the call failed before its request)
        if record.status_code is None and record.attempts:
            record.status_code = record.attempts[-1].status_code
        tracker.finish(error, refused=self.refused, fill=self._fill)

    def _fill(self) -> bool:
        """Finisher side: read a returned Message into the record; returns ``refused``."""
        record = self.tracker.record
        body, self.body = self.body, _NO_BODY
        if body is not _NO_BODY:
            try:
                self.refused = apply_message(record, body)
            except Exception as exc:
                record.gaps.append(f"instrumentation error while recording the result: {type(exc).__name__}")
                internal_error("anthropic.result", exc)
        if len(record.gaps) > 1:
            record.gaps = list(dict.fromkeys(record.gaps))
        return self.refused

    def _salvage(self, exc: BaseException) -> None:
        try:
            if not self.tracker.finished:
                self.tracker.record.gaps.append(f"instrumentation error while recording the result: {type(exc).__name__}")
                self.finish(None)
        except Exception:
            pass


def _json_body(http: Any) -> Any:
    media = (http.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media != "application/json":
        return None
    return http.json()


def _error_type_from_body(http: Any) -> str | None:
    try:
        body = _json_body(http)
    except Exception:
        return None
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and isinstance(inner.get("type"), str):
            return inner["type"]
    return None


# --------------------------------------------------------------------------------------------
# streams
# --------------------------------------------------------------------------------------------


_DELTA_FIELDS = {"text_delta": "text", "input_json_delta": "partial_json", "thinking_delta": "thinking"}


class _StreamWatch:
    """Observes raw stream events (``RawMessageStreamEvent`` or beta twins) as they pass."""

    __slots__ = (
        "call",
        "blocks",
        "parts",
        "start_usage",
        "stop_reason",
        "stop_details",
        "saw_start",
        "saw_delta",
        "saw_stop",
        "usage_seen",
        "events",
        "first",
        "keep",
    )

    def __init__(self, call: _Call) -> None:
        self.call = call
        self.blocks: dict[Any, tuple[Any, Any]] = {}
        self.parts: dict[Any, list[str]] = {}
        self.start_usage: Any = None
        self.stop_reason: Any = None
        self.stop_details: Any = None
        self.saw_start = False
        self.saw_delta = False
        self.saw_stop = False
        self.usage_seen = False
        self.events = 0
        self.first = True
        # replace mode: the events the SDK's stream recorder reads (all but content deltas, and
        # the first of those), replayed into it when the call ends
        self.keep: list[Any] | None = call.sdk.events if call.sdk is not None else None

    def on_item(self, item: Any) -> bool:
        self.events += 1
        # The hot path (one call per event): the model's own field dict, not getattr, which
        # walks the pydantic class hierarchy for every name first.
        data = getattr(item, "__dict__", None)
        if type(data) is not dict:
            return True
        kind = data.get("type")
        keep = self.keep
        if keep is not None and (kind != "content_block_delta" or self.first):
            keep.append(item)
        if kind == "content_block_delta":
            delta = getattr(data.get("delta"), "__dict__", None)
            if type(delta) is dict:
                dkind = delta.get("type")
                piece = delta.get(_DELTA_FIELDS.get(dkind, "")) if type(dkind) is str else None
                if type(piece) is str:
                    index = data.get("index")
                    if type(index) is not int:
                        index = repr(index)  # a malformed index (a list, say) must not break the dict
                    parts = self.parts.get(index)
                    if parts is None:
                        parts = self.parts[index] = []
                    parts.append(piece)
            if self.first:
                self.first = False
                self.call.tracker.first_chunk()
        elif kind == "content_block_start":
            index = getattr(item, "index", None)
            if type(index) is not int:
                index = repr(index)
            block = getattr(item, "content_block", None)
            bkind = getattr(block, "type", None)
            self.blocks[index] = (bkind, block)
            initial = getattr(block, "text", None) if bkind == "text" else getattr(block, "thinking", None) if bkind == "thinking" else None
            self.parts[index] = [initial] if type(initial) is str and initial else []
        elif kind == "message_start":
            self.saw_start = True
            message = getattr(item, "message", None)
            record = self.call.tracker.record
            response_id = getattr(message, "id", None)
            if isinstance(response_id, str):
                record.response_id = response_id
            model = getattr(message, "model", None)
            if isinstance(model, str):
                record.response_model = model
            self.start_usage = getattr(message, "usage", None)
        elif kind == "message_delta":
            self.saw_delta = True
            delta = getattr(item, "delta", None)
            stop = getattr(delta, "stop_reason", None)
            self.stop_reason = stop if isinstance(stop, str) else None
            self.stop_details = getattr(delta, "stop_details", None)
            record = self.call.tracker.record
            record.finish_reasons = [self.stop_reason]
            self.call.refused = self.stop_reason == "refusal"
            usage = getattr(item, "usage", None)
            if usage is not None:  # cumulative: the last one wins, never a sum
                apply_usage(record, usage, self.start_usage)
                self.usage_seen = True
            elif not self.usage_seen and self.start_usage is not None:
                apply_usage(record, self.start_usage, output_known=False)
            if self.call.mode == _SDK:
                self.call.enrich()
        elif kind == "message_stop":
            self.saw_stop = True
            if self.call.mode == _SDK:  # the rest was written at message_delta
                span = self.call.tracker.span
                if span.is_recording():
                    span.set_attribute(sc.WA_STREAM_STATE, "completed")
        return True

    def _state(self, error: BaseException | None, exhausted: bool) -> str:
        if error is not None:
            return "error"
        if self.saw_stop:
            return "completed"
        return "error" if exhausted else "abandoned"

    def before_close(self) -> None:
        """The app is closing the stream: the SDK ends its span right after, so write to it now."""
        if self.call.mode == _SDK and not self.call.tracker.finished:
            self._complete(None, False)
            self.call.enrich(self._state(None, False))

    def _complete(self, error: BaseException | None, exhausted: bool) -> None:
        record = self.call.tracker.record
        state = self._state(error, exhausted)
        record.stream_state = state  # type: ignore[assignment]
        record.chunks = self.events
        if not self.saw_delta:
            record.finish_reasons = [None]
            if self.start_usage is not None:
                apply_usage(record, self.start_usage, output_known=False)
                record.gaps.append("output usage missing: the stream ended before message_delta (input from message_start)")
            else:
                record.usage_source = "missing"
                record.gaps.append("usage missing: the stream ended before message_start")
        elif not self.usage_seen:
            record.gaps.append("output usage missing: message_delta carried no usage")
        if state == "error" and error is None:
            record.gaps.append("stream ended before message_stop without an error")
        texts: list[str] = []
        thinking: list[str] = []
        calls: list[dict[str, Any]] = []
        for index, (bkind, block) in self.blocks.items():
            parts = self.parts.get(index) or []
            if bkind == "text":
                texts.extend(parts)
            elif bkind == "thinking":
                thinking.extend(parts)
            elif type(bkind) is str and bkind in TOOL_BLOCKS:
                arguments = "".join(parts)
                if not arguments:
                    start_input = getattr(block, "input", None)
                    arguments = None if start_input else "{}"  # a start block with input sent whole
                calls.append(tool_call(block, bkind, arguments))
        if self.saw_start or texts or calls or thinking:
            record.choices = [
                ChoiceContent(
                    index=0,
                    text="".join(texts) if texts else None,
                    tool_calls=calls or None,
                    finish_reason=self.stop_reason if self.saw_delta else None,
                    reasoning_text="".join(thinking) if thinking else None,
                    refusal=refusal_text(self.stop_details) if self.call.refused else None,
                )
            ]

    def on_end(self, error: BaseException | None, exhausted: bool) -> None:
        try:
            self._complete(error, exhausted)
            sdk = self.call.sdk
            if sdk is not None:
                # how the SDK's body wrapper would have seen the end: read, failed (an Exception;
                # a BaseException closes the body instead) or closed
                how = "read" if exhausted else "failed" if isinstance(error, Exception) else "closed"
                sdk.end = (how, error if how == "failed" else None, self.events > 0 or exhausted or error is not None)
        finally:
            self.call.finish(error)


def _before_close(observer: Any) -> None:
    try:
        observer.before_close()
    except Exception as exc:
        internal_error("anthropic.before_close", exc)


class _SyncProxy(SyncStreamProxy):
    """The shared proxy, plus a hook that lets the SDK's span get our data before close ends it.

    ``__next__`` is the shared one inlined for our observer (which never hides an event): one
    Python call less per event.
    """

    def __next__(self) -> Any:
        try:
            item = self.__wrapped__.__next__()
        except StopIteration:
            self._self_end(None, True)
            raise
        except BaseException as exc:
            self._self_end(exc, False)
            raise
        try:
            self._self_on_item(item)
        except Exception as exc:
            internal_error("streams.on_item", exc)
        return item

    def close(self) -> Any:
        _before_close(self._self_observer)
        return SyncStreamProxy.close(self)

    def __exit__(self, *exc_info: Any) -> Any:
        _before_close(self._self_observer)
        return SyncStreamProxy.__exit__(self, *exc_info)


class _AsyncProxy(AsyncStreamProxy):
    async def __anext__(self) -> Any:
        try:
            item = await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            self._self_end(None, True)
            raise
        except BaseException as exc:
            self._self_end(exc, False)
            raise
        try:
            self._self_on_item(item)
        except Exception as exc:
            internal_error("streams.on_item", exc)
        return item

    async def close(self) -> Any:
        _before_close(self._self_observer)
        return await AsyncStreamProxy.close(self)

    async def aclose(self) -> Any:
        _before_close(self._self_observer)
        return await AsyncStreamProxy.aclose(self)

    async def __aexit__(self, *exc_info: Any) -> Any:
        _before_close(self._self_observer)
        return await AsyncStreamProxy.__aexit__(self, *exc_info)


# --------------------------------------------------------------------------------------------
# wrappers
# --------------------------------------------------------------------------------------------


def _begin(client: Any, kwargs: dict[str, Any], api: str, method: str, force_stream: bool = False) -> _Call | None:
    try:
        settings = get_settings()
        if not settings.enabled:
            return None
        return _Call.start(client, kwargs, api, method, force_stream, settings.anthropic_sdk_span == "replace")
    except Exception as exc:
        internal_error("anthropic.begin", exc)
        return None


def _sync_call(api: str, method: str) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = _begin(getattr(instance, "_client", None), kwargs, api, method)
        target, positional = _target(wrapped, instance, args, kwargs)
        if call is None:
            return target(*positional, **kwargs)
        call.enter()
        try:
            result = target(*positional, **kwargs)
        except BaseException as exc:
            call.exit()
            call.failed(exc)
            raise
        call.exit()
        return call.returned(result, True)

    return wrapper


def _async_call(api: str, method: str) -> Callable[..., Any]:
    async def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = _begin(getattr(instance, "_client", None), kwargs, api, method)
        if call is None:
            return await wrapped(*args, **kwargs)
        call.enter()
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            call.exit()
            call.failed(exc)
            raise
        call.exit()
        return call.returned(result, False)

    return wrapper


# ``required_args``-decorated sync methods (``create``): the SDK warns (deprecated model, ...) with
# ``stacklevel=3``, counting its own decorator frame. Our wrapper frame would take the decorator's
# place in that count and the warning would name wasteaudit instead of the app, so when the
# decorator's check is sure to pass (keyword arguments only, every required one given) the
# undecorated method is called directly: the app's frame is then exactly where the SDK expects it.
_bypass: dict[Any, tuple[Any, frozenset[str]]] = {}


def _register_bypass(owner: Any, name: str) -> None:
    func = vars(owner).get(name)
    inner = getattr(func, "__wrapped__", None)
    code = getattr(func, "__code__", None)
    if inner is None or code is None or code.co_name != "wrapper":
        return
    if getattr(func, "__globals__", {}).get("__name__") != "anthropic._utils._utils":  # required_args' module
        return
    if inspect.iscoroutinefunction(inner):  # awaited later: the decorator frame is gone by then anyway
        return
    params = inspect.signature(inner).parameters.values()
    required = frozenset(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty)
    _bypass[func] = (inner, required)


def _target(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    """What the wrapper calls, and with which positional arguments (called inline: no extra frame)."""
    if not args and type(wrapped) is MethodType:
        entry = _bypass.get(wrapped.__func__)
        if entry is not None and entry[1].issubset(kwargs):
            return entry[0], (instance,)
    return wrapped, args


def _manager_init(api: str) -> Callable[..., Any]:
    """``messages.stream()`` sends nothing: it builds a manager around the request it will make.

    ``stream()`` itself is left unwrapped (its warnings keep their frames); the manager's
    ``__init__`` is tagged with what the request carries (the client, the body, the options), and
    the manager's ``__enter__`` / ``__aenter__`` starts the call.
    """

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = wrapped(*args, **kwargs)
        try:
            if get_settings().enabled:
                api_request = args[0] if args else kwargs.get("api_request")
                pending = _pending_request(api_request, api)
                if pending is not None:
                    vars(instance)[_PENDING] = pending
        except Exception as exc:
            internal_error("anthropic.stream", exc)
        return result

    return wrapper


def _pending_request(api_request: Any, api: str) -> tuple[Any, dict[str, Any], str] | None:
    """(client, call arguments, api) from the helper's not-yet-made request.

    Sync: a ``functools.partial`` of the client's ``post``; async: the unstarted ``post(...)``
    coroutine, whose frame holds the same arguments.
    """
    if isinstance(api_request, functools.partial):
        client = getattr(api_request.func, "__self__", None)
        arguments: Any = api_request.keywords
    elif inspect.iscoroutine(api_request) and api_request.cr_frame is not None:
        arguments = api_request.cr_frame.f_locals
        client = arguments.get("self")
    else:
        return None
    body = arguments.get("body")
    if not isinstance(body, dict):
        return None
    options = arguments.get("options")
    kwargs = dict(body)
    if isinstance(options, dict):
        kwargs["extra_body"] = options.get("extra_json")
        kwargs["extra_headers"] = options.get("headers")
    return client, kwargs, api


def _take_pending(manager: Any) -> Any:
    try:
        return vars(manager).pop(_PENDING, None)
    except TypeError:  # no __dict__
        return None


def _manager_enter(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    pending = _take_pending(instance)
    call = _begin(*pending, "stream", True) if pending is not None else None
    if call is None:
        return wrapped(*args, **kwargs)
    call.helper = True
    call.enter()
    try:
        stream = wrapped(*args, **kwargs)
    except BaseException as exc:
        call.exit()
        call.failed(exc)
        raise
    call.exit()
    try:
        call.helper_entered()
    except Exception as exc:
        internal_error("anthropic.helper", exc)
    return stream


async def _manager_aenter(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    pending = _take_pending(instance)
    call = _begin(*pending, "stream", True) if pending is not None else None
    if call is None:
        return await wrapped(*args, **kwargs)
    call.helper = True
    call.enter()
    try:
        stream = await wrapped(*args, **kwargs)
    except BaseException as exc:
        call.exit()
        call.failed(exc)
        raise
    call.exit()
    try:
        call.helper_entered()
    except Exception as exc:
        internal_error("anthropic.helper", exc)
    return stream


def _helper_stream_init(sync: bool) -> Callable[..., Any]:
    """``MessageStream.__init__(raw_stream, ...)``: hand the helper our proxy as its raw stream."""

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = _current.get()
        if call is None or not call.helper or call.proxied:
            return wrapped(*args, **kwargs)
        swap_after = False
        try:
            if args:
                args = (call.proxy(args[0], sync), *args[1:])
            elif "raw_stream" in kwargs:
                kwargs = {**kwargs, "raw_stream": call.proxy(kwargs["raw_stream"], sync)}
            else:  # older SDKs: the helper builds its raw stream itself from (cast_to, response, client)
                swap_after = True
        except Exception as exc:
            internal_error("anthropic.helper_stream", exc)
        result = wrapped(*args, **kwargs)
        if swap_after:
            try:
                # its event generator reads ``self._raw_stream`` only when first iterated
                raw = getattr(instance, "_raw_stream", None)
                if raw is not None:
                    instance._raw_stream = call.proxy(raw, sync)
            except Exception as exc:
                internal_error("anthropic.helper_stream", exc)
        return result

    return wrapper


def _client_init(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        kwargs = _with_our_middleware(kwargs)
    except Exception as exc:
        internal_error("anthropic.client_init", exc)
    return wrapped(*args, **kwargs)


def _with_our_middleware(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Our middleware last (innermost), exactly once; iterators are left alone (never consumed)."""
    current = kwargs.get("middleware")
    if current is None:
        items: tuple[Any, ...] = ()
    elif isinstance(current, (list, tuple)):
        items = tuple(current)
    else:
        return kwargs
    if items and _is_ours(items[-1]) and not any(_is_ours(m) for m in items[:-1]):
        return kwargs
    return {**kwargs, "middleware": (*(m for m in items if not _is_ours(m)), _rt.middleware)}


# --------------------------------------------------------------------------------------------
# middleware
# --------------------------------------------------------------------------------------------

_middleware_class: Any = None


def _make_middleware(base: type) -> Any:
    global _middleware_class
    if _middleware_class is None or not issubclass(_middleware_class, base):

        class WasteauditMiddleware(base):  # type: ignore[misc, valid-type]
            """wasteaudit: records each HTTP attempt of an instrumented call; never changes it."""

            _wasteaudit_middleware = True

            def handle(self, request: Any, call_next: Any) -> Any:
                call = _current.get()
                if call is None:
                    return call_next(request)
                attempt = _attempt_begin(call)
                try:
                    response = call_next(request)
                except BaseException as exc:
                    _attempt_failed(call, attempt, exc)
                    raise
                http = _attempt_done(call, attempt, response)
                if http is not None:
                    data = None
                    try:  # a parse error is the SDK's to raise, right after the chain returns
                        data = response.parse() if call.body_is_plain(request) else _json_body(http)
                    except Exception:
                        pass
                    _take_body(call, data)
                return response

            async def handle_async(self, request: Any, call_next: Any) -> Any:
                call = _current.get()
                if call is None:
                    return await call_next(request)
                attempt = _attempt_begin(call)
                try:
                    response = await call_next(request)
                except BaseException as exc:
                    _attempt_failed(call, attempt, exc)
                    raise
                http = _attempt_done(call, attempt, response)
                if http is not None:
                    data = None
                    try:  # a parse error is the SDK's to raise, right after the chain returns
                        data = await response.parse() if call.body_is_plain(request) else _json_body(http)
                    except Exception:
                        pass
                    _take_body(call, data)
                return response

            def __repr__(self) -> str:
                return "<wasteaudit middleware>"

        _middleware_class = WasteauditMiddleware
    return _middleware_class()


def _attempt_begin(call: _Call) -> Any:
    try:
        return call.attempt_begin()
    except Exception as exc:
        internal_error("anthropic.attempt", exc)
        return None


def _attempt_failed(call: _Call, attempt: Any, exc: BaseException) -> None:
    if attempt is None:
        return
    try:
        call.attempt_failed(attempt, exc)
    except Exception as err:
        internal_error("anthropic.attempt", err)


def _attempt_done(call: _Call, attempt: Any, response: Any) -> Any:
    if attempt is None:
        return None
    try:
        return call.attempt_done(attempt, response)
    except Exception as exc:
        internal_error("anthropic.attempt", exc)
        return None


def _take_body(call: _Call, data: Any) -> None:
    try:
        call.take_body(data)
    except Exception as exc:
        internal_error("anthropic.attempt", exc)


# --------------------------------------------------------------------------------------------
# replace mode: one span per call, ours, carrying everything the SDK's would
# --------------------------------------------------------------------------------------------


class _SdkTracing:
    """The installed SDK's span functions that replace mode calls (resolved once, all or none)."""

    __slots__ = (
        "module",
        "start",
        "finish",
        "record_api_call",
        "set_response_status_code",
        "set_resend_count",
        "record_response",
        "trace_headers",
        "streamed_body_observer",
        "streams",
    )

    def __init__(self, module: Any, functions: dict[str, Any], streams: tuple[type, ...]) -> None:
        self.module = module
        for name, value in functions.items():
            setattr(self, name, value)
        self.streams = streams


def _resolve_sdk_tracing() -> _SdkTracing | None:
    """The SDK's span functions, or None when this release lacks any of them (then calls of
    clients that trace get the SDK's span enriched, as before)."""
    base_client = _import("anthropic._base_client")
    sdk_tracing = _import("anthropic._tracing")
    api_call = _import("anthropic.lib._tracing._api_call")
    streaming = _import("anthropic._streaming")
    if base_client is None or sdk_tracing is None or api_call is None or streaming is None:
        return None
    functions = {
        "start": vars(base_client).get("start_api_call_span"),
        "finish": vars(base_client).get("finish_api_call_span"),
        "record_api_call": getattr(api_call, "record_api_call", None),
        "set_response_status_code": getattr(sdk_tracing, "set_response_status_code", None),
        "set_resend_count": getattr(sdk_tracing, "set_resend_count", None),
        "record_response": getattr(sdk_tracing, "record_response", None),
        "trace_headers": getattr(sdk_tracing, "trace_headers", None),
        "streamed_body_observer": getattr(sdk_tracing, "StreamedBodyObserver", None),
    }
    if not all(callable(f) for f in functions.values()):
        return None
    if getattr(functions["start"], "_wasteaudit_hook", False) or getattr(functions["finish"], "_wasteaudit_hook", False):
        return None  # already hooked (instrumented twice without undo): never wrap our own hook
    streams = tuple(t for t in (getattr(streaming, "Stream", None), getattr(streaming, "AsyncStream", None)) if isinstance(t, type))
    return _SdkTracing(base_client, functions, streams)


def _records_content(client: Any) -> bool:
    """Whether the client's own tracing records message content (its ``content_mode``)."""
    try:
        return bool(client._otel.records_content)
    except Exception:
        return False


class _SdkCapture:
    """What the SDK handed its span functions during one call (references only; read by the finisher)."""

    __slots__ = ("functions", "start", "result", "events", "end", "fallback")

    def __init__(self, functions: _SdkTracing) -> None:
        self.functions = functions  # kept: the call may finish after uninstrument()
        self.start: tuple[tuple[Any, ...], dict[str, Any]] | None = None  # start_api_call_span's arguments but the tracer
        self.result: tuple[Any, Any] | None = None  # (client, ApiCallResult)
        self.events: list[Any] = []  # stream events the SDK's recorder reads
        self.end: tuple[str, BaseException | None, bool] | None = None  # stream end: (how, error, parsed)
        self.fallback = False  # the SDK finished our span itself (an unread body)


def _sdk_start_hook(tracer: Any, *args: Any, **kwargs: Any) -> Any:
    """``start_api_call_span`` as the SDK's request() sees it once instrumented."""
    call = _current.get()
    if call is not None and call.mode == _REPLACE:
        try:
            taken, span = call.sdk_span_start(tracer, args, kwargs)
            if taken:
                return span
        except Exception as exc:
            # the SDK makes its own span, as without wasteaudit; the call is still recorded
            call.sdk = call.tracker.sdk = None  # type: ignore[attr-defined]
            call.mode = _OWN
            internal_error("anthropic.sdk_span", exc)
    return _sdk_original("start")(tracer, *args, **kwargs)


def _sdk_finish_hook(client: Any, span: Any, result: Any) -> Any:
    """``finish_api_call_span`` as the SDK's request() sees it once instrumented."""
    call = _current.get()
    if call is not None and call.mode == _REPLACE and span is call.tracker.span:
        try:
            if call.sdk_span_result(client, result):
                return None
        except Exception as exc:
            internal_error("anthropic.sdk_span", exc)
    return _sdk_original("finish")(client, span, result)


_sdk_start_hook._wasteaudit_hook = True  # type: ignore[attr-defined]
_sdk_finish_hook._wasteaudit_hook = True  # type: ignore[attr-defined]


def _sdk_original(name: str) -> Any:
    sdk = _rt.sdk
    if sdk is not None:
        return getattr(sdk, name)
    # undone while a request was under way: the SDK's own function, from where it lives
    if name == "start":
        return importlib.import_module("anthropic._tracing").start_api_call_span
    return importlib.import_module("anthropic.lib._tracing").finish_api_call_span


class _Collector:
    """A stand-in span the SDK's recording functions write to, off the app's thread.

    Keeps what they set (attributes, status, events); ends nothing. Status follows the
    OpenTelemetry SDK's rule: once OK, it stays OK.
    """

    def __init__(self, name: str | None = None, kind: Any = None, attributes: Any = None) -> None:
        self.name = name
        self.kind = kind
        self.attributes: dict[str, Any] = dict(attributes or {})
        self.status: Any = None
        self.events: list[tuple[str, Any, Any]] = []
        self.exceptions: list[tuple[BaseException, Any, Any, bool]] = []

    def is_recording(self) -> bool:
        return True

    def get_span_context(self) -> Any:
        return _rt.invalid_span.get_span_context()

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: Any) -> None:
        self.attributes.update(attributes)

    def set_status(self, status: Any, description: str | None = None) -> None:
        from opentelemetry.trace import Status, StatusCode

        if self.status is not None and self.status.status_code is StatusCode.OK:
            return
        self.status = status if isinstance(status, Status) else Status(status, description)

    def add_event(self, name: str, attributes: Any = None, timestamp: Any = None) -> None:
        self.events.append((name, attributes, timestamp))

    def record_exception(self, exception: BaseException, attributes: Any = None, timestamp: Any = None, escaped: bool = False) -> None:
        self.exceptions.append((exception, attributes, timestamp, escaped))

    def update_name(self, name: str) -> None:
        self.name = name

    def end(self, end_time: Any = None) -> None:
        pass


class _CollectorTracer:
    """Hands the SDK's ``start_api_call_span`` a :class:`_Collector` with its start attributes."""

    def __init__(self) -> None:
        self.span: _Collector | None = None

    def start_span(self, name: str, context: Any = None, kind: Any = None, attributes: Any = None, *args: Any, **kwargs: Any) -> _Collector:
        self.span = _Collector(name, kind, attributes)
        return self.span


def _replay_sdk_span(sdk: _SdkCapture) -> _Collector | None:
    """Run the SDK's own span recording for the call onto a stand-in: what its span would carry.

    The same functions, with the same arguments, the SDK would have called on the app's thread
    (start, result, each stream event the recorder reads, the stream's end); only the URL
    attributes were set on our span by the SDK itself, as it sent the first attempt.
    """
    functions = sdk.functions
    if sdk.start is None:
        return None
    args, kwargs = sdk.start
    tracer = _CollectorTracer()
    functions.start(tracer, *args, **kwargs)
    collector = tracer.span or _Collector()
    if sdk.result is None:
        return collector
    client, result = sdk.result
    if isinstance(result.data, functions.streams):
        # finish_api_call_span for a stream, without wrapping the (live) body: the recorder it
        # returns is fed the events our proxy kept, then told how the stream ended
        observer = functions.record_api_call(client, collector, result)
        functions.set_response_status_code(collector, result)
        functions.set_resend_count(collector, result)
        functions.record_response(collector, result)
        if observer is None:
            observer = functions.streamed_body_observer(collector)
        how, error, parsed = sdk.end or ("closed", None, False)
        if parsed:
            observer.begin()
        for event in sdk.events:
            observer.item(event)
        observer.end(how, error)
    else:
        functions.finish(client, collector, result)  # a body already read: nothing is wrapped
    return collector


class _ReplacingTracker(CallTracker):
    """The tracker of a replace-mode call: its span is made with the client's tracer under the
    SDK's span name, and finished with the SDK's attributes, status and events over ours."""

    __slots__ = ("sdk",)

    def _finish_span(self, error: BaseException | None) -> None:
        sdk: _SdkCapture | None = getattr(self, "sdk", None)
        if sdk is None or sdk.fallback or not self.own_span:
            CallTracker._finish_span(self, error)
            return
        span = self.span
        if span.is_recording():
            attrs = self._end_attributes()
            collector = None
            try:
                collector = _replay_sdk_span(sdk)
            except Exception as exc:
                self.record.gaps.append(f"span: the SDK's attributes could not be replayed ({type(exc).__name__})")
                internal_error("anthropic.sdk_replay", exc)
            if collector is None:
                span.set_attributes(attrs)
                if error is not None:
                    from opentelemetry.trace import Status, StatusCode

                    span.set_status(Status(StatusCode.ERROR, self.record.error_type or type(error).__name__))
            else:
                ttfc = attrs.get(sc.RESPONSE_TTFC)
                attrs.update(collector.attributes)  # the SDK's values win: its span is the one replaced
                if ttfc is not None:
                    attrs[sc.RESPONSE_TTFC] = ttfc  # measured as the chunk passed, not at replay time
                if collector.name and collector.name != SDK_SPAN_NAME:
                    span.update_name(collector.name)
                span.set_attributes(attrs)
                for name, event_attrs, timestamp in collector.events:
                    span.add_event(name, event_attrs, timestamp)
                for exception, exc_attrs, timestamp, escaped in collector.exceptions:
                    span.record_exception(exception, exc_attrs, timestamp, escaped)
                if collector.status is not None:
                    span.set_status(collector.status)
        span.end(end_time=int(self.record.ended_at * 1e9) if self.record.ended_at else None)


# --------------------------------------------------------------------------------------------
# instrument / undo
# --------------------------------------------------------------------------------------------


class _Patcher:
    def __init__(self) -> None:
        self.done: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, wrapper: Callable[..., Any]) -> bool:
        if owner is None or not hasattr(owner, name):
            return False
        original = vars(owner).get(name, _MISSING)
        try:
            wrapt.wrap_function_wrapper(owner, name, wrapper)
        except Exception as exc:
            internal_error(f"anthropic.patch.{getattr(owner, '__name__', owner)}.{name}", exc)
            return False
        self.done.append((owner, name, original))
        return True

    def set(self, owner: Any, name: str, value: Any) -> None:
        """Replace a plain attribute (a module's function), reversibly."""
        self.done.append((owner, name, vars(owner).get(name, _MISSING)))
        setattr(owner, name, value)

    def undo(self) -> None:
        while self.done:
            owner, name, original = self.done.pop()
            try:
                if original is _MISSING:
                    delattr(owner, name)
                else:
                    setattr(owner, name, original)
            except Exception as exc:
                internal_error("anthropic.undo", exc)


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception:
        logger.debug("wasteaudit: %s not importable; skipped", name)
        return None


def _is_async(owner: Any, name: str) -> bool:
    """Whether the method is a coroutine function, looking through decorators (``required_args``)."""
    try:
        return inspect.iscoroutinefunction(inspect.unwrap(getattr(owner, name)))
    except Exception:
        return False


def _resolve_types(anthropic: Any) -> None:
    from opentelemetry.trace import INVALID_SPAN

    _rt.invalid_span = INVALID_SPAN
    _rt.sync_stream = tuple(t for t in (getattr(anthropic, "Stream", None),) if isinstance(t, type))
    _rt.async_stream = tuple(t for t in (getattr(anthropic, "AsyncStream", None),) if isinstance(t, type))
    raw: list[type] = []
    for module_name, attr in (("anthropic._response", "BaseAPIResponse"), ("anthropic._legacy_response", "LegacyAPIResponse")):
        module = _import(module_name)
        candidate = getattr(module, attr, None) if module is not None else None
        if isinstance(candidate, type):
            raw.append(candidate)
    _rt.raw_response = tuple(raw)


def instrument() -> Callable[[], None]:
    """Patch the installed anthropic SDK; returns the function that reverses every patch."""
    import anthropic

    _resolve_types(anthropic)
    patcher = _Patcher()
    for module_name, api in (("anthropic.resources.messages", "messages"), ("anthropic.resources.beta.messages", "messages.beta")):
        module = _import(module_name)
        if module is None:
            continue
        for class_name in ("Messages", "AsyncMessages"):
            owner = getattr(module, class_name, None)
            if owner is None:
                continue
            for method in ("create", "parse"):
                if hasattr(owner, method):
                    _register_bypass(owner, method)  # before wrapping: it reads the SDK's own function
                    factory = _async_call if _is_async(owner, method) else _sync_call
                    patcher.wrap(owner, method, factory(api, method))
    streaming = _import("anthropic.lib.streaming")
    if streaming is not None:
        for prefix in ("", "Beta"):
            api = "messages.beta" if prefix else "messages"
            patcher.wrap(getattr(streaming, f"{prefix}MessageStreamManager", None), "__init__", _manager_init(api))
            patcher.wrap(getattr(streaming, f"{prefix}AsyncMessageStreamManager", None), "__init__", _manager_init(api))
            patcher.wrap(getattr(streaming, f"{prefix}MessageStreamManager", None), "__enter__", _manager_enter)
            patcher.wrap(getattr(streaming, f"{prefix}AsyncMessageStreamManager", None), "__aenter__", _manager_aenter)
            patcher.wrap(getattr(streaming, f"{prefix}MessageStream", None), "__init__", _helper_stream_init(True))
            patcher.wrap(getattr(streaming, f"{prefix}AsyncMessageStream", None), "__init__", _helper_stream_init(False))
    _rt.sdk = _resolve_sdk_tracing()
    if _rt.sdk is not None:
        # Module globals the SDK's request() looks up at each call: for a call in replace mode the
        # hooks hand the SDK our span and keep what it would record; any other call goes through.
        patcher.set(_rt.sdk.module, "start_api_call_span", _sdk_start_hook)
        patcher.set(_rt.sdk.module, "finish_api_call_span", _sdk_finish_hook)
    middleware_base = getattr(anthropic, "Middleware", None)
    base_client = _import("anthropic._base_client") if middleware_base is not None else None
    if base_client is not None and isinstance(middleware_base, type):
        _rt.middleware = _make_middleware(middleware_base)
        patcher.wrap(getattr(base_client, "SyncAPIClient", None), "__init__", _client_init)
        patcher.wrap(getattr(base_client, "AsyncAPIClient", None), "__init__", _client_init)
    else:
        _rt.middleware = None

    def undo() -> None:
        _rt.sdk = None
        patcher.undo()

    return undo
