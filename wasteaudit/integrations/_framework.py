"""Shared lifecycle for framework callbacks (LangChain, LiteLLM) that feed the same CallRecords.

A framework reports a model call in two halves (start, end/error), and usually runs it through an SDK
wasteaudit may already instrument (ChatOpenAI -> openai SDK). One call must give one record, and the
SDK-level record is the richer one (attempts, cache tokens, verbatim finish reasons), so:

* at start, a :class:`PendingCall` notes what is known and marks itself active in the context;
* any CallRecord finished while it is active (the instrumented SDK call underneath) marks it covered;
* at the end, a covered call is dropped; otherwise a CallRecord is built, with the real start time,
  through the same :class:`~wasteaudit.instrumentation._calls.CallTracker` lifecycle (span, run,
  pipeline, metrics) as the SDK wrappers use.
"""

from __future__ import annotations

import contextvars
import threading
import time
from contextvars import ContextVar
from typing import Any, Callable

from wasteaudit._internal import clock, pipeline, tracing
from wasteaudit._internal.runs import current_run, materialize
from wasteaudit._internal.safety import internal_error
from wasteaudit.records import CallRecord

#: Calls a handler keeps waiting for their end; beyond it the oldest are forgotten (never reported).
MAX_PENDING = 10_000

_active: ContextVar["PendingCall | None"] = ContextVar("wasteaudit_framework_call", default=None)
_sink_lock = threading.Lock()
_sink: Any = None


class _CoverageSink:
    """Marks the active framework call as covered when an instrumented SDK call finishes inside it."""

    def submit(self, record: Any) -> bool:
        if isinstance(record, CallRecord):
            pending = _active.get()
            if pending is not None:
                pending.covered = True
        return True


def _ensure_sink() -> None:
    global _sink
    if _sink is None:
        with _sink_lock:
            if _sink is None:
                _sink = _CoverageSink()
                pipeline.add_sink(_sink)


class PendingCall:
    """What a framework said at the start of a model call, until its end arrives."""

    def __init__(
        self,
        *,
        provider: str,
        operation: str,
        api: str,
        method: str,
        request_model: str | None,
        stream: bool = False,
        params: dict[str, Any] | None = None,
        server_address: str | None = None,
        server_port: int | None = None,
        defer_to_sdk: bool = True,
        capture_context: bool = False,
    ) -> None:
        self.provider = provider
        self.operation = operation
        self.api = api
        self.method = method
        self.request_model = request_model
        self.stream = stream
        self.params = params or {}
        self.server_address = server_address
        self.server_port = server_port
        run = current_run()
        if run is not None and not run.materialized:
            # the call is under way: the run is worth storing, and its span starts now, while it is current
            materialize(run)
        self.started_at = clock.now()
        self.t0 = time.perf_counter()
        self.time_to_first_chunk_s: float | None = None
        self.covered = False
        self.input_messages: Any = None
        self.system_instructions: Any = None
        self._previous: PendingCall | None = None
        self._defer = defer_to_sdk
        # frameworks that report the end from another thread: finish in the start's context (run, span)
        self.context = contextvars.copy_context() if capture_context else None
        if defer_to_sdk:
            _ensure_sink()
            self._previous = _active.get()
            _active.set(self)

    def first_chunk(self) -> None:
        if self.time_to_first_chunk_s is None:
            self.time_to_first_chunk_s = time.perf_counter() - self.t0

    def _leave(self) -> None:
        if self._defer and _active.get() is self:
            _active.set(self._previous)

    def finish(
        self,
        fill: Callable[[CallRecord], None] | None = None,
        error: BaseException | None = None,
        *,
        refused: bool = False,
        duration_s: float | None = None,
    ) -> CallRecord | None:
        """Build, fill and finish the record (None when an instrumented SDK call already recorded it).

        ``duration_s``: the framework's own measure, when its end is reported late (from a queue)."""
        self._leave()
        if self.covered:
            return None
        if self.context is not None:
            context, self.context = self.context, None
            return context.run(self._finish, fill, error, refused, duration_s)
        return self._finish(fill, error, refused, duration_s)

    def _finish(self, fill: Callable[[CallRecord], None] | None, error: BaseException | None, refused: bool, duration_s: float | None) -> CallRecord:
        from wasteaudit.instrumentation._calls import CallTracker

        run = current_run()
        if run is not None and not run.materialized:
            materialize(run)  # its span first, so the call's span nests under it
        name = f"{self.operation} {self.request_model}" if self.request_model else self.operation
        span = tracing.start_call_span(name, {}, int(self.started_at * 1e9), run)
        tracker = CallTracker(
            provider=self.provider,
            operation=self.operation,
            api=self.api,
            method=self.method,
            request_model=self.request_model,
            stream=self.stream,
            params=self.params,
            server_address=self.server_address,
            server_port=self.server_port,
            span=span,
        )
        tracker.own_span = True  # started here with the call's real start time; finish() ends it
        tracker._t0 = self.t0
        record = tracker.record
        record.started_at = self.started_at
        record.time_to_first_chunk_s = self.time_to_first_chunk_s
        record.input_messages = self.input_messages
        record.system_instructions = self.system_instructions
        if fill is not None:
            try:
                fill(record)
            except Exception as exc:
                record.gaps.append("response not fully captured")
                internal_error(f"{self.api}.response", exc)
        if duration_s is not None and duration_s >= 0:
            tracker._t0 = time.perf_counter() - duration_s
        tracker.finish(error, refused=refused)
        return record

    def abandon(self) -> None:
        """Forget the call (the framework will never report its end)."""
        self._leave()


def int_or_none(value: Any) -> int | None:
    return value if type(value) is int else None
