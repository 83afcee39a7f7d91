"""Stored rows back to records, so the scorer sees the same objects in-process and in a worker.

Takes plain mappings (``row._mapping`` of a SQLAlchemy result, or dicts), never a session:
the scoring code stays free of SQL. Timestamps may be datetimes (from the DB) or epoch floats.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from wasteaudit.records import CallRecord, ChoiceContent, RunRecord, ScoreRecord

__all__ = ("call_from_row", "run_from_row", "score_from_row", "epoch")

_CALL_FIELDS = {f.name for f in dataclasses.fields(CallRecord)}
_RUN_FIELDS = {f.name for f in dataclasses.fields(RunRecord)}
_SCORE_FIELDS = {f.name for f in dataclasses.fields(ScoreRecord)}
_TIME_FIELDS = {"started_at", "ended_at", "created_at"}


def epoch(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    return value


def _kwargs(row: Mapping[str, Any], names: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in names:
        if key in row:
            value = row[key]
            out[key] = epoch(value) if key in _TIME_FIELDS else value
    return out


def _choice(value: Any) -> ChoiceContent:
    if isinstance(value, ChoiceContent):
        return value
    value = value or {}
    return ChoiceContent(
        index=int(value.get("index") or 0),
        text=value.get("text"),
        refusal=value.get("refusal"),
        tool_calls=value.get("tool_calls"),
        finish_reason=value.get("finish_reason"),
        reasoning_text=value.get("reasoning_text"),
    )


def call_from_row(row: Mapping[str, Any]) -> CallRecord:
    kwargs = _kwargs(row, _CALL_FIELDS - {"attempts", "choices"})
    for key, default in (("request_params", {}), ("finish_reasons", []), ("gaps", [])):
        if kwargs.get(key) is None:
            kwargs[key] = default
    kwargs.setdefault("provider", "unknown")
    kwargs.setdefault("operation", "chat")
    kwargs.setdefault("api", "unknown")
    kwargs.setdefault("started_at", 0.0)
    kwargs.setdefault("content_mode", "full")
    if kwargs.get("content_mode") is None:
        kwargs["content_mode"] = "full"
    if kwargs.get("usage_source") is None:
        kwargs["usage_source"] = "missing"
    rec = CallRecord(**kwargs)
    rec.choices = [_choice(c) for c in (row.get("choices") or [])]
    return rec


def run_from_row(row: Mapping[str, Any]) -> RunRecord:
    kwargs = _kwargs(row, _RUN_FIELDS)
    if kwargs.get("tags") is None:
        kwargs["tags"] = {}
    if kwargs.get("used_values") is None:
        kwargs["used_values"] = []
    kwargs.setdefault("name", "")
    kwargs.setdefault("started_at", 0.0)
    if kwargs.get("return_truncated") is None:
        kwargs["return_truncated"] = False
    return RunRecord(**kwargs)


def score_from_row(row: Mapping[str, Any]) -> ScoreRecord:
    kwargs = _kwargs(row, _SCORE_FIELDS)
    return ScoreRecord(**kwargs)
