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

__all__ = ("Candidate", "Claim", "Deferred", "assign", "moot")

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
    #: The most ``resolve`` can ever propose (see :class:`Claim`); ``None`` = always embed.
    claim: Claim | None = None


@dataclass(slots=True, frozen=True)
class Claim:
    """An upper bound on what a deferred check can label: its best-ranked possible candidate.

    ``tier``/``subkind``/``confidence`` are the best the check can return (confirmed beats
    possible, higher confidence beats lower); ``choice``/``units`` cover every unit any of its
    candidates can name. :func:`moot` uses it to skip a check whose candidates could only find
    their tokens already taken — embedding its texts cannot change a finding.
    """

    subkind: str
    tier: str
    confidence: float
    choice: int | None = None
    units: tuple[UnitKey, ...] | None = None

    def rank(self) -> tuple[Any, ...]:
        return (0 if self.tier == "confirmed" else 1, KIND_PRIORITY[SUBKINDS[self.subkind]], SUBKIND_ORDER[self.subkind], -self.confidence)


def _order(c: Candidate, n: int) -> tuple[Any, ...]:
    return (0 if c.tier == "confirmed" else 1, KIND_PRIORITY[c.kind], SUBKIND_ORDER[c.subkind], -c.confidence, n)


def moot(view: CallView, claim: Claim | None, decided: list[Candidate]) -> bool:
    """Would every candidate of a deferred check find all its tokens already taken?

    ``decided``: candidates of the same call that exist before any deferred check resolves.
    :func:`assign` processes candidates in ``_order``; resolved candidates come after every
    decided one in the list, so a decided candidate ranked no later than ``claim`` is processed
    first. If such candidates take each unit the check could name in full, the check's
    candidates get no tokens and emit no finding: it need not be embedded. Exact, not a heuristic.
    """
    if claim is None:
        return False
    rank = claim.rank()
    ahead = [c for c in decided if c.call_id == view.id and _order(c, 0)[:4] <= rank]
    if not ahead:
        return False
    for ch in view.choices:
        if claim.choice is not None and ch.index != claim.choice:
            continue
        keys = list(ch.units) if claim.units is None else [k for k in claim.units if k in ch.units]
        for key in keys:
            if ch.units[key].tokens > 0 and not any(_takes_all(c, ch, key) for c in ahead):
                return False
    return True


def _takes_all(c: Candidate, ch: Any, key: UnitKey) -> bool:
    """Does candidate ``c`` want every token of unit ``key`` of choice ``ch``?"""
    if c.choice is not None and c.choice != ch.index:
        return False
    if c.units is not None and key not in c.units:
        return False
    if c.share and key in c.share:
        tokens = ch.units[key].tokens
        return int(round(tokens * max(0.0, min(1.0, c.share[key])))) >= tokens
    return True


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
