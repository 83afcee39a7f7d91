"""The lifecycle every instrumented SDK call goes through, shared by the provider modules.

A provider wrapper creates a :class:`CallTracker` when the SDK method is entered, fills the
record as data arrives (usage, outputs, attempts), and calls :meth:`CallTracker.finish` exactly
once — on return, on error, or when a stream ends, is closed, is abandoned or is collected.
``finish`` stamps timing on the calling thread; reading the result, deriving the finish category,
decorating the span from the record, ending the span (when it is ours, with the call's end time)
and handing the record to the pipeline run in the finisher thread (``_internal.deferred``) when
every sink allows it. Nothing here raises into the app.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any, Callable

from opentelemetry.trace import INVALID_SPAN

from wasteaudit._internal import clock, deferred, pipeline, tracing
from wasteaudit._internal import semconv as sc
from wasteaudit._internal.runs import current_run, materialize
from wasteaudit._internal.safety import internal_error
from wasteaudit.config import get_settings
from wasteaudit.export import _hook as export_hook
from wasteaudit.export import _state as export_state
from wasteaudit.records import AttemptRecord, CallRecord, new_id

# The call whose SDK method is executing in this context: attempt hooks (HTTP send wrappers,
# middleware) attach what they see to it. Also a re-entrancy guard: a helper such as
# ``chat.completions.stream()`` that calls the patched ``create()`` must yield one record.
active_call: ContextVar["CallTracker | None"] = ContextVar("wasteaudit_active_call", default=None)

_CATEGORY = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "completed": "stop",
    "pause_turn": "stop",
    "length": "length",
    "max_tokens": "length",
    "max_output_tokens": "length",
    "model_context_window_exceeded": "length",
    "incomplete:max_output_tokens": "length",
    "tool_calls": "tool",
    "tool_use": "tool",
    "function_call": "tool",
    "content_filter": "filter",
    "incomplete:content_filter": "filter",
    "refusal": "refusal",
}
_SEVERITY = {"error": 6, "refusal": 5, "filter": 4, "length": 3, "tool": 2, "stop": 1}

# request parameter -> span attribute, for the ones that are plain scalars
_PARAM_ATTRS = {
    "max_tokens": sc.REQUEST_MAX_TOKENS,
    "temperature": sc.REQUEST_TEMPERATURE,
    "top_p": sc.REQUEST_TOP_P,
    "top_k": sc.REQUEST_TOP_K,
    "n": sc.REQUEST_CHOICE_COUNT,
    "seed": sc.REQUEST_SEED,
    "frequency_penalty": sc.REQUEST_FREQUENCY_PENALTY,
    "presence_penalty": sc.REQUEST_PRESENCE_PENALTY,
}


def finish_category(reasons: list[str | None], *, refused: bool = False, failed: bool = False) -> str | None:
    """One normalized outcome per call (the worst over its choices), for the scorer."""
    if failed:
        return "error"
    worst: str | None = "refusal" if refused else None
    for reason in reasons:
        category = "error" if reason is None else _CATEGORY.get(reason, "stop")
        if worst is None or _SEVERITY[category] > _SEVERITY[worst]:
            worst = category
    return worst


class CallTracker:
    """Builds one :class:`CallRecord` and its span; finalizes exactly once."""

    __slots__ = ("record", "span", "own_span", "run", "_done", "_t0", "_token", "_late", "_late_at_end", "_pending", "_defer", "_outcome")

    def __init__(
        self,
        *,
        provider: str,
        operation: str,
        api: str,
        method: str,
        request_model: str | None,
        stream: bool,
        params: dict[str, Any],
        server_address: str | None = None,
        server_port: int | None = None,
        span: Any = None,
    ) -> None:
        now = clock.now()
        self._t0 = time.perf_counter()
        self._done = False
        self._token: Any = None
        # start attributes not needed for sampling: set with the end attributes (own span only)
        self._late: dict[str, Any] | None = None
        self._late_at_end = False  # ... read from the record when the call ends
        # our span when its start is deferred to the finisher (see tracing.start_call_span_deferred)
        self._pending: tracing.PendingSpan | None = None
        # finished on the finisher thread (decided once, when the call starts)
        self._defer = defer = export_state.recorder is None and pipeline.can_defer()
        run = current_run()
        self.run = run
        record = CallRecord(
            id=new_id(),
            provider=provider,
            operation=operation,
            api=api,
            method=method,
            started_at=now,
            request_model=request_model,
            stream=stream,
            request_params=params,
            server_address=server_address,
            server_port=server_port,
        )
        if run is not None:
            if not run.materialized:
                materialize(run)
            record.run_id = run.id
            record.function = run.name
            run.calls += 1
        self.record = record
        if span is not None:
            # Enrich a span someone else owns (the Anthropic SDK's own): never a duplicate.
            self.span = span
            self.own_span = False
            if span.is_recording():
                span.set_attributes(self._start_attributes())
        else:
            self.own_span = True
            name = f"{operation} {request_model}" if request_model else operation
            if defer:  # the rest of the start attributes is read from the record at the end
                self._late_at_end = True
                self.span, self._pending = tracing.start_call_span_deferred(name, self._early_attributes(), int(now * 1e9), run)
            else:
                early, self._late = self._split_start_attributes()
                self.span = tracing.start_call_span(name, early, int(now * 1e9), run)
        ctx = self.span.get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")

    def _start_attributes(self) -> dict[str, Any]:
        """Every attribute known when the call starts."""
        early, late = self._split_start_attributes()
        early.update(late)
        return early

    def _split_start_attributes(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(what samplers may look at, the rest): the GenAI conventions' sampling-relevant
        attributes go on the span at its start; the rest is set with the end attributes, in the
        same validation pass off the app's thread."""
        return self._early_attributes(), self._late_attributes()

    def _early_attributes(self) -> dict[str, Any]:
        record = self.record
        early: dict[str, Any] = {sc.OPERATION: record.operation, sc.PROVIDER: record.provider}
        if record.request_model:
            early[sc.REQUEST_MODEL] = record.request_model
        if record.server_address:
            early[sc.SERVER_ADDRESS] = record.server_address
        if record.server_port:
            early[sc.SERVER_PORT] = record.server_port
        return early

    def _late_attributes(self) -> dict[str, Any]:
        record = self.record
        late: dict[str, Any] = {sc.WA_CALL_ID: record.id}
        if record.stream:
            late[sc.REQUEST_STREAM] = True
        if record.run_id:
            late[sc.WA_RUN_ID] = record.run_id
            late[sc.WA_RUN_NAME] = record.function
        params = record.request_params
        if params:
            for key, value in params.items():
                name = _PARAM_ATTRS.get(key)
                if name is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
                    late[name] = value
            stop = params.get("stop")
            if isinstance(stop, str):
                late[sc.REQUEST_STOP] = [stop]
            elif isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop):
                late[sc.REQUEST_STOP] = list(stop)
        if record.output_type:
            late[sc.OUTPUT_TYPE] = record.output_type
        return late

    # -- context for attempt hooks -------------------------------------------------------------
    def activate(self) -> None:
        self._token = active_call.set(self)

    def deactivate(self) -> None:
        if self._token is not None:
            try:
                active_call.reset(self._token)
            except ValueError:
                active_call.set(None)
            self._token = None

    def context_released(self) -> None:
        """The call's span is no longer current anywhere: a span still to be made (deferred start)
        needs no placeholder until the call ends, and one object fewer waits for the finisher."""
        if self._pending is not None:
            self.span = INVALID_SPAN

    def attempt_started(self) -> AttemptRecord:
        attempt = AttemptRecord(index=len(self.record.attempts), started_at=clock.now())
        self.record.attempts.append(attempt)
        return attempt

    @staticmethod
    def attempt_ended(
        attempt: AttemptRecord,
        *,
        started: float,
        status_code: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
    ) -> None:
        attempt.duration_s = time.perf_counter() - started
        attempt.status_code = status_code
        attempt.error_type = error_type
        attempt.request_id = request_id

    def first_chunk(self) -> None:
        if self.record.time_to_first_chunk_s is None:
            self.record.time_to_first_chunk_s = time.perf_counter() - self._t0

    @property
    def finished(self) -> bool:
        return self._done

    def finish(self, error: BaseException | None = None, *, refused: bool = False, fill: Callable[[], bool] | None = None) -> None:
        """Finalize once; later calls are no-ops.

        On the calling thread only the timing and the error are taken; reading the result
        (``fill``, which returns whether the output refused), the finish category, the span's end
        attributes, ending the span (with this end time) and handing the record on run in the
        finisher thread when every sink allows it (else here, as before).
        """
        if self._done:
            return
        self._done = True
        try:
            record = self.record
            record.duration_s = time.perf_counter() - self._t0
            record.ended_at = record.started_at + record.duration_s
            if error is not None:
                record.error_type = record.error_type or error_type_of(error)
                if record.error_message is None:
                    record.error_message = str(error)[:2000]
                status = getattr(error, "status_code", None)
                if isinstance(status, int):
                    record.status_code = status
        except Exception as exc:
            internal_error("calls.finish", exc)
        if self._defer:
            # a bound method and one tuple: fewer objects for the garbage collector to meet
            # while the call waits for the finisher than a closure would hold
            self._outcome = (error, refused, fill)
            deferred.submit_or_run(self._complete_queued)
        else:
            self._complete(error, refused, fill, False)

    def _complete_queued(self) -> None:
        error, refused, fill = self._outcome
        self._outcome = None
        self._complete(error, refused, fill, True)

    def _complete(self, error: BaseException | None, refused: bool, fill: Callable[[], bool] | None, in_order: bool) -> None:
        """Everything after the timing: result, category, span, pipeline (see :meth:`finish`)."""
        try:
            record = self.record
            if fill is not None:
                refused = fill() or refused
            if record.finish_category is None:
                failed = error is not None and record.output_tokens is None and not record.choices
                record.finish_category = finish_category(record.finish_reasons, refused=refused, failed=failed)  # type: ignore[assignment]
                if record.finish_category is None and error is not None:
                    record.finish_category = "error"
            if record.usage_source == "missing" and not any("usage" in gap for gap in record.gaps):
                record.gaps.append("usage missing: " + ("call failed before usage arrived" if error is not None else "provider reported none"))
            self._finish_span(error)
        except Exception as exc:
            internal_error("calls.finish", exc)
        try:
            if in_order:  # a finisher job: already behind every earlier record
                pipeline.deliver(self.record)
            else:
                pipeline.emit(self.record)
        except Exception as exc:
            internal_error("calls.emit", exc)
        try:
            export_hook.call_finished(self.record)  # GenAI client metrics, when a MeterProvider is set
        except Exception as exc:
            internal_error("calls.export", exc)

    def _end_attributes(self) -> dict[str, Any]:
        """Everything the span gets when the call ends (the late start attributes included)."""
        attrs = tracing.call_end_attributes(self.record, started=self.own_span)
        late = self._late
        if late is None and self._late_at_end:
            late = self._late_attributes()
        if late:
            late.update(attrs)
            attrs = late
        output_type = self.record.output_type  # read from the request after the span started
        if output_type and self.own_span and sc.OUTPUT_TYPE not in attrs:
            attrs[sc.OUTPUT_TYPE] = output_type
        settings = get_settings()
        if settings.capture_content_on_spans:
            from wasteaudit._internal.content import apply_content_policy

            apply_content_policy(self.record, settings)
            attrs.update(tracing.content_attributes(self.record))
        return attrs

    def _finish_span(self, error: BaseException | None) -> None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            self.span = pending.open()
        span = self.span
        if span.is_recording():
            # one set_attributes call: the SDK validates and locks per call
            span.set_attributes(self._end_attributes())
            if error is not None and self.own_span:
                from opentelemetry.trace import Status, StatusCode

                span.set_status(Status(StatusCode.ERROR, self.record.error_type or type(error).__name__))
        if self.own_span:
            span.end(end_time=int(self.record.ended_at * 1e9) if self.record.ended_at else None)


def error_type_of(error: BaseException) -> str:
    """Low-cardinality error.type: the provider's error type when it sent one, else the class name."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        kind = inner.get("type") if isinstance(inner, dict) else None
        if isinstance(kind, str) and kind:
            return kind
    return type(error).__name__
