"""The ledger: turns detector candidates into findings, labelling each billed token at most once.

Detectors only *propose* (a :class:`Candidate` names a call, a choice, some units and a
reason). The ledger decides: candidates are taken confirmed-tier first, then by kind priority
failed > unused > redundant (DESIGN §3), then by subkind order and confidence; each takes only
the tokens of its units that no earlier candidate took. So the waste of a call can never
exceed its billed output tokens, confirmed and possible together, whatever the detectors say.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from wasteaudit.scoring.findings import KIND_PRIORITY, SUBKIND_ORDER, SUBKINDS, Finding
from wasteaudit.scoring.views import CallView

__all__ = ("Candidate", "Deferred", "assign")

UnitKey = tuple[Any, ...]


@dataclass(slots=True)
class Candidate:
    """A proposed label. ``choice=None`` means every choice of the call; ``units=None`` every unit.

    ``share`` optionally claims only part of a unit (a loop that starts mid-sentence):
    unit key → fraction of that unit's tokens, with ``span`` giving its character range.
    """

    call_id: str
    subkind: str
    tier: str
    confidence: float
    choice: int | None = None
    units: list[UnitKey] | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    share: dict[UnitKey, float] | None = None
    span: tuple[int, int] | None = None

    @property
    def kind(self) -> str:
        return SUBKINDS[self.subkind]


@dataclass(slots=True)
class Deferred:
    """A check that needs embeddings: the texts to embed, and how to decide once they are.

    The engine embeds the texts of every deferred check of a batch in one ``encode`` call, then
    calls ``resolve(store)``. Without embeddings it calls ``fallback()`` (rules only) and notes
    ``gap`` on the call.
    """

    call_id: str
    texts: list[str]
    resolve: Callable[[Any], list[Candidate]]
    fallback: Callable[[], list[Candidate]] | None = None
    gap: str = ""


def _order(c: Candidate, n: int) -> tuple[Any, ...]:
    return (0 if c.tier == "confirmed" else 1, KIND_PRIORITY[c.kind], SUBKIND_ORDER[c.subkind], -c.confidence, n)


def assign(views: dict[str, CallView], candidates: list[Candidate]) -> list[Finding]:
    """Resolve overlapping candidates into disjoint findings (see module docstring)."""
    remaining: dict[tuple[str, int, UnitKey], int] = {}
    for view in views.values():
        for ch in view.choices:
            for key, unit in ch.units.items():
                remaining[(view.id, ch.index, key)] = unit.tokens
    findings: list[Finding] = []
    ordered = sorted(enumerate(candidates), key=lambda item: _order(item[1], item[0]))
    for _, cand in ordered:
        view = views.get(cand.call_id)
        if view is None:
            continue
        choices = [ch for ch in view.choices if cand.choice is None or ch.index == cand.choice]
        whole_call_taken = 0
        whole_call_wanted = 0
        for ch in choices:
            keys = list(ch.units) if cand.units is None else [k for k in cand.units if k in ch.units]
            taken: list[tuple[UnitKey, int]] = []
            wanted = 0
            for key in keys:
                unit = ch.units[key]
                want = unit.tokens
                if cand.share and key in cand.share:
                    want = int(round(unit.tokens * max(0.0, min(1.0, cand.share[key]))))
                wanted += want
                slot = (view.id, ch.index, key)
                got = min(want, remaining.get(slot, 0))
                if got > 0:
                    remaining[slot] -= got
                    taken.append((key, got))
            if cand.choice is None:
                whole_call_taken += sum(t for _, t in taken)
                whole_call_wanted += wanted
                continue
            findings.extend(_emit(view, ch, cand, taken, wanted))
        if cand.choice is None and whole_call_taken > 0:
            findings.append(_finding(view, cand, None, whole_call_taken, None, None, whole_call_wanted - whole_call_taken))
    return findings


def _emit(view: CallView, ch: Any, cand: Candidate, taken: list[tuple[UnitKey, int]], wanted: int) -> list[Finding]:
    if not taken:
        return []
    total = sum(t for _, t in taken)
    if cand.units is None:
        return [_finding(view, cand, ch.index, total, None, None, wanted - total)]
    # Segment-level candidates: one finding per contiguous run of segments (spans stay meaningful).
    out: list[Finding] = []
    run: list[tuple[UnitKey, int]] = []

    def flush() -> None:
        if not run:
            return
        tokens = sum(t for _, t in run)
        first, last = ch.units[run[0][0]], ch.units[run[-1][0]]
        start, end = first.start, last.end
        if cand.span is not None and len(run) == 1:
            start, end = cand.span
        out.append(_finding(view, cand, ch.index, tokens, start, end, 0))
        run.clear()

    prev: int | None = None
    for key, got in taken:
        index = key[1] if key[0] == "seg" else None
        if run and (index is None or prev is None or index != prev + 1):
            flush()
        run.append((key, got))
        prev = index
    flush()
    short = wanted - total
    if short > 0 and out:
        out[-1].evidence = {**out[-1].evidence, "tokens_already_labelled": short}
    return out


def _finding(view: CallView, cand: Candidate, choice: int | None, tokens: int, start: int | None, end: int | None, short: int) -> Finding:
    evidence = dict(cand.evidence)
    evidence.setdefault("tokens_source", view.tokens_source)
    if view.mode != "full":
        evidence.setdefault("content_mode", view.mode)
    if short > 0:
        evidence["tokens_already_labelled"] = short
    if view.mode != "full":
        start = end = None
    return Finding(
        call_id=view.id,
        run_id=view.run_id,
        kind=cand.kind,
        subkind=cand.subkind,
        tier=cand.tier,
        tokens=tokens,
        confidence=round(float(cand.confidence), 3),
        choice_index=choice,
        segment_start=start,
        segment_end=end,
        evidence=evidence,
    )
