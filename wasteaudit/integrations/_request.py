"""One web request as one audit run: the lifecycle shared by the ASGI and WSGI middleware.

A request run is an ordinary :class:`~wasteaudit._internal.runs.RunState` set in the run
contextvar while the app serves the request, so every LLM call made while serving it (in the
handler, in a streamed body, in a thread the framework copies the context into) belongs to it.
It costs what ``@audit`` costs: nothing is recorded unless an LLM call or a score materializes
the run (or ``record_all_requests`` asks for every request). Its name is the route template,
which frameworks know only after routing, so it is resolved lazily through ``RunState.namer``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from wasteaudit._internal import clock, pipeline
from wasteaudit._internal.runs import RunState, _current, materialize, resolve_name, to_record
from wasteaudit._internal.safety import internal_error
from wasteaudit.config import get_settings
from wasteaudit.integrations._response_body import ResponseCapture

#: Tag keys (OpenTelemetry HTTP semantic-convention names), e.g. ``report --by tag:http.response.status_code``.
METHOD_TAG = "http.request.method"
STATUS_TAG = "http.response.status_code"
#: The run name of a request that matched no route (a 404, or a framework that exposes no route).
NO_ROUTE = "(no route)"
#: Key under which the run id is put into the ASGI scope / WSGI environ, for code outside the run's context.
RUN_ID_KEY = "wasteaudit.run_id"
#: Where a framework adapter that knows the route (Django's) puts its template for the default namers.
ROUTE_KEY = "wasteaudit.route"


def clean_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (tags or {}).items()}


def clean_header(name: str | None) -> str | None:
    """The response header that carries the run id (opt-in), validated once at construction."""
    if name is None:
        return None
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"run_id_header must be a plain header name such as 'x-wasteaudit-run-id'; got {name!r}")
    return name.lower()


def keep_body(exchange: Any, chunk: bytes) -> None:
    """Keep a body chunk of a recorded run's response as part of its result; fail-open.

    ``exchange``: the middleware's per-request state, with ``capture`` (None until the first
    kept chunk, made then: requests without an LLM call never pay for it) and ``headers`` (the
    response's, once it started).
    """
    try:
        capture = exchange.capture
        if capture is None:
            settings = get_settings()
            if not settings.capture_return:
                return
            capture = exchange.capture = ResponseCapture(settings.max_return_bytes)
            capture.headers = exchange.headers
        capture.add(chunk)
    except Exception as error:  # never the app's problem
        internal_error("request.capture", error)


def open_run(static_tags: dict[str, str], namer: Callable[[], str | None]) -> tuple[RunState, object]:
    """Start a pending run (nothing recorded yet) and make it current; returns it and the reset token."""
    run = RunState(name=NO_ROUTE, tags=static_tags, parent=_current.get(), started_at=clock.now(), capture_return=False, namer=namer)
    return run, _current.set(run)


def close_run(
    run: RunState,
    *,
    method: str,
    status: int | None,
    exc: BaseException | None,
    ended_at: float | None,
    record_all: bool,
    response: ResponseCapture | None = None,
) -> None:
    """Record the run if it was used (or ``record_all``); fail-open.

    ``ended_at``: when the last body chunk left (None: now). A 5xx response or an exception
    makes the run ``failed`` (quality 0 in reports); 4xx responses are the client's error, not the run's.
    ``response``: the body sent, the run's result (kept like ``@audit``'s return value) when it did not fail.
    """
    if not run.materialized:
        if not record_all:
            return
        try:
            materialize(run)
        except Exception as error:
            internal_error("request.materialize", error)
            return
    try:
        old_name = run.name
        resolve_name(run)
        run.tags = {**run.tags, METHOD_TAG: method}
        if status is not None:
            run.tags[STATUS_TAG] = str(status)
        failed = exc is not None or (status is not None and status >= 500)
        error_type = type(exc).__name__ if exc is not None else (f"HTTP {status}" if failed else None)
        result, truncated = response.value() if response is not None and not failed else (None, False)
        record = to_record(run, status="failed" if failed else "ok", error_type=error_type, return_value=result, truncated=truncated, validation=None)
        if ended_at is not None:
            record.ended_at = ended_at
        from wasteaudit._internal import tracing

        if run.name != old_name and run.span is not None:
            _rename_span(run)
        tracing.end_run_span(run, record, exc)
        pipeline.emit(record)
    except Exception as error:
        internal_error("request.close", error)


def _rename_span(run: RunState) -> None:
    from wasteaudit._internal import semconv as sc

    span = run.span
    if span.is_recording():
        span.update_name(f"audit {run.name}")
        span.set_attribute(sc.WA_RUN_NAME, run.name)
