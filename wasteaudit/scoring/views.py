"""A call prepared for scoring: its choices, their segments, and the billed tokens of each part.

Built once per call, before any detector runs. Tokens are split top-down from the provider's
billed output (never re-counted): call → choices (by content length) → reasoning / text
segments / tool calls / an unseen tail (billed but not in the text we hold: an abandoned
stream, or content cut at the storage cap). Each part is a *unit*: the ledger hands every
unit's tokens to at most one finding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from wasteaudit.records import CallRecord, ChoiceContent
from wasteaudit.scoring.segments import Segment, segment_output
from wasteaudit.scoring.texts import choice_text, is_hashed, json_requested, tool_call_parts
from wasteaudit.scoring.tokens import apportion, estimate_chars

__all__ = ("Unit", "ChoiceView", "CallView", "build_view")


@dataclass(slots=True)
class Unit:
    """A piece of one choice's billed output that the ledger assigns as a whole or in part."""

    key: tuple[Any, ...]  # ("seg", i) | ("tool", j) | ("refusal",) | ("reasoning",) | ("tail",) | ("body",)
    tokens: int
    start: int | None = None
    end: int | None = None


@dataclass(slots=True)
class ChoiceView:
    index: int
    choice: ChoiceContent
    text: str | None
    hashed: dict[str, Any] | None
    segments: list[Segment]
    units: dict[tuple[Any, ...], Unit]
    tokens: int
    finish_reason: str | None
    tool_calls: list[tuple[str | None, Any]] = field(default_factory=list)
    #: Per segment: share found in the run's result or later requests (set by the engine).
    coverage: list[float] | None = None

    def seg_tokens(self, i: int) -> int:
        unit = self.units.get(("seg", i))
        return unit.tokens if unit else 0

    @property
    def content_chars(self) -> int:
        if self.text is not None:
            return len(self.text)
        if self.hashed is not None:
            return int(self.hashed.get("chars") or 0)
        return 0


@dataclass(slots=True)
class CallView:
    rec: CallRecord
    choices: list[ChoiceView]
    billed: int
    tokens_source: str  # provider | estimated
    mode: str  # full | hashed | none
    json_expected: bool
    gaps: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.rec.id

    @property
    def run_id(self) -> str | None:
        return self.rec.run_id


def _as_choice(choice: Any) -> ChoiceContent:
    if isinstance(choice, ChoiceContent):
        return choice
    if isinstance(choice, dict):
        return ChoiceContent(
            index=int(choice.get("index") or 0),
            text=choice.get("text"),
            refusal=choice.get("refusal"),
            tool_calls=choice.get("tool_calls"),
            finish_reason=choice.get("finish_reason"),
            reasoning_text=choice.get("reasoning_text"),
        )
    return ChoiceContent(index=0)


def _mode(rec: CallRecord, choices: list[ChoiceContent]) -> str:
    mode = (rec.content_mode or "full").lower()
    if mode == "none":
        return "none"
    if mode == "hashed" or any(is_hashed(c.text) for c in choices):
        return "hashed"
    return "full"


def _args_text(args: Any) -> str:
    if args is None:
        return ""
    if isinstance(args, str):
        return args
    if is_hashed(args):
        return "#" * int(args.get("chars") or 1)
    return json.dumps(args, default=str)


def build_view(rec: CallRecord, *, segment: bool = True) -> CallView:
    """Prepare one call: segment every choice and split the billed output tokens over the units.

    ``segment=False`` is for context-only calls (other calls of a run, not being scored).
    """
    choices = sorted((_as_choice(c) for c in rec.choices), key=lambda c: c.index)
    mode = _mode(rec, choices)
    json_expected = json_requested(rec)
    gaps: list[str] = []

    # Per-choice content: text, segments, tool-call and refusal sizes.
    prepared: list[tuple[ChoiceContent, str | None, dict | None, list[Segment], list[tuple[str | None, Any]], float]] = []
    for ch in choices:
        raw = choice_text(ch)
        text = raw if isinstance(raw, str) else None
        hashed = raw if is_hashed(raw) else None
        tools = tool_call_parts(ch)
        segs: list[Segment] = []
        if not segment:
            pass
        elif text:
            segs = segment_output(text, json_expected=json_expected)
        elif hashed is not None:
            segs = _hashed_segments(hashed)
        size = float(len(text) if text else int((hashed or {}).get("chars") or 0))
        size += sum(len(_args_text(a)) + len(n or "") for n, a in tools)
        if isinstance(ch.refusal, str):
            size += len(ch.refusal)
        elif is_hashed(ch.refusal):
            size += int(ch.refusal.get("chars") or 0)
        prepared.append((ch, text, hashed, segs, tools, size))

    if rec.output_tokens is not None:
        billed = max(0, int(rec.output_tokens))
        source = "provider" if rec.usage_source != "estimated" else "estimated"
    else:
        billed = sum(estimate_chars(int(p[5])) for p in prepared)
        source = "estimated"
        if billed:
            gaps.append("usage missing: output tokens estimated from the text received (~4 chars/token)")
    reasoning = min(billed, max(0, int(rec.output_reasoning_tokens or 0)))
    visible = billed - reasoning
    if not prepared:
        prepared.append((ChoiceContent(index=0), None, None, [], [], 0.0))
    weights = [p[5] for p in prepared] if mode != "none" else [1.0] * len(prepared)
    if sum(weights) <= 0:
        weights = [1.0] * len(prepared)
    per_choice = apportion(visible, weights)
    per_choice_r = apportion(reasoning, weights)

    partial_text = rec.stream_state == "abandoned" or rec.content_truncated
    views: list[ChoiceView] = []
    for (ch, text, hashed, segs, tools, size), vis, rsn in zip(prepared, per_choice, per_choice_r):
        units: dict[tuple[Any, ...], Unit] = {}
        if rsn:
            units[("reasoning",)] = Unit(("reasoning",), rsn)
        budget = vis
        if partial_text and source == "provider" and mode != "none":
            held = estimate_chars(int(size))
            if held < vis:
                units[("tail",)] = Unit(("tail",), vis - held)
                budget = held
        parts: list[tuple[tuple[Any, ...], float, int | None, int | None]] = []
        for seg in segs:
            parts.append((("seg", seg.index), float(max(1, seg.end - seg.start)) if text else 1.0, seg.start if text else None, seg.end if text else None))
        if hashed is not None and not segs:
            parts.append((("body",), float(max(1, int(hashed.get("chars") or 1))), None, None))
        for j, (name, args) in enumerate(tools):
            parts.append((("tool", j), float(max(1, len(_args_text(args)) + len(name or ""))), None, None))
        if ch.refusal:
            parts.append((("refusal",), float(max(1, len(ch.refusal) if isinstance(ch.refusal, str) else int(ch.refusal.get("chars") or 1))), None, None))
        if not parts:
            parts.append((("body",), 1.0, None, None))
        if hashed is not None and segs:
            # Hashed mode keeps no per-line lengths: lines share the text's tokens equally.
            text_total = float(max(1, int(hashed.get("chars") or 1)))
            per_line = text_total / len(segs)
            parts = [(k, per_line if k[0] == "seg" else w, s, e) for k, w, s, e in parts]
        for (key, _w, start, end), tokens in zip(parts, apportion(budget, [p[1] for p in parts])):
            units[key] = Unit(key, tokens, start, end)
        finish = ch.finish_reason
        if finish is None and len(rec.finish_reasons) > len(views):
            finish = rec.finish_reasons[len(views)]
        views.append(ChoiceView(ch.index, ch, text, hashed, segs, units, vis + rsn, finish, tools))
    if mode == "hashed":
        gaps.append("content_mode hashed: only exact (hash) comparisons; line tokens split equally")
    elif mode == "none":
        gaps.append("content_mode none: no text, only failed and extra-choice findings")
    if rec.content_truncated:
        gaps.append("content truncated at the storage cap: the unstored tail is only counted by whole-output rules")
    return CallView(rec, views, billed, source, mode, json_expected, gaps)


def _hashed_segments(hashed: dict[str, Any]) -> list[Segment]:
    out: list[Segment] = []
    for i, line_hash in enumerate(hashed.get("lines") or []):
        seg = Segment(i, 0, 0, "", "line", i)
        seg._norm = str(line_hash)
        out.append(seg)
    return out
