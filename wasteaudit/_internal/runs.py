"""Run context: which ``@audit`` run an LLM call belongs to.

A run is a contextvar entry that costs nothing until used: its record (and span) are
materialized only when the first LLM call or score happens inside it (or inside a child).
Contextvars give each thread and each asyncio task its own current run.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable

from wasteaudit._internal import clock
from wasteaudit.records import RunRecord, new_id

_current: ContextVar["RunState | None"] = ContextVar("wasteaudit_run", default=None)


@dataclass(slots=True)
class RunState:
    name: str
    tags: dict[str, str]
    parent: "RunState | None"
    started_at: float
    capture_return: bool = True
    id: str = field(default_factory=new_id)
    materialized: bool = False
    used_values: list[str] = field(default_factory=list)
    used_bytes: int = 0
    span: Any = None
    entry_span: Any = None
    trace_id: str | None = None
    span_id: str | None = None
    calls: int = 0
    # ``wasteaudit.scoring.track_json`` trackers: which fields of parsed JSON replies were read.
    json_trackers: list[Any] | None = None
    # Names that become known only after the run started (a web request's route template is
    # known after routing): asked for the name when the run materializes and when it ends.
    namer: Callable[[], str | None] | None = None


def current_run() -> RunState | None:
    return _current.get()


def materialize(run: RunState) -> None:
    """Mark a run (and its ancestors) as worth storing; start its span with its real start time."""
    node: RunState | None = run
    chain = []
    while node is not None and not node.materialized:
        node.materialized = True
        chain.append(node)
        node = node.parent
    for item in reversed(chain):  # parents first, so a child's span has its parent's span
        if item.namer is not None:
            resolve_name(item)
        _start_span(item)


def resolve_name(run: RunState) -> None:
    """Ask a run's ``namer`` for its name (fail-open: a namer that fails or says None keeps the old one)."""
    try:
        name = run.namer() if run.namer is not None else None
    except Exception as exc:
        from wasteaudit._internal.safety import internal_error

        internal_error("runs.namer", exc)
        return
    if name and name != run.name:
        run.name = name


def _start_span(run: RunState) -> None:
    try:
        from wasteaudit._internal import tracing

        tracing.start_run_span(run)
    except Exception as exc:
        from wasteaudit._internal.safety import internal_error

        internal_error("runs.span", exc)


def attach_json_tracker(tracker: Any) -> bool:
    """Register a JSON access tracker on the current run (False outside a run).

    The tracker's accessed paths are encoded into the run record's ``used_values`` when the
    run ends (``to_record``), so no new record field or column is needed.
    """
    run = _current.get()
    if run is None:
        return False
    if run.json_trackers is None:
        run.json_trackers = []
    run.json_trackers.append(tracker)
    return True


def _json_access_values(run: RunState) -> list[str]:
    out: list[str] = []
    for tracker in run.json_trackers or ():
        try:
            out.append(tracker.to_used_value())
        except Exception:
            continue
    return out


def serialize_value(value: Any, limit: int) -> tuple[str | None, bool]:
    """Text form of a value for use-tracking, capped at ``limit`` bytes (UTF-8)."""
    if value is None:
        return None, False
    try:
        if isinstance(value, str):
            text = value
        elif isinstance(value, (bytes, bytearray)):
            text = bytes(value).decode("utf-8", "replace")
        elif hasattr(value, "model_dump_json"):
            text = value.model_dump_json()
        else:
            text = json.dumps(value, default=str, ensure_ascii=False)
    except Exception:
        try:
            text = repr(value)
        except Exception:
            return None, False
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return text, False
    return encoded[:limit].decode("utf-8", "ignore"), True


def to_record(run: RunState, *, status: str, error_type: str | None, return_value: str | None, truncated: bool, validation: bool | None) -> RunRecord:
    return RunRecord(
        id=run.id,
        name=run.name,
        started_at=run.started_at,
        parent_id=run.parent.id if run.parent is not None else None,
        tags=dict(run.tags),
        ended_at=clock.now(),
        status=status,  # type: ignore[arg-type]
        error_type=error_type,
        validation=validation,
        return_value=return_value,
        return_truncated=truncated,
        used_values=list(run.used_values) + _json_access_values(run),
        trace_id=run.trace_id,
        span_id=run.span_id,
    )
