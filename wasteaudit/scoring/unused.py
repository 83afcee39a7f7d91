"""Unused output: generated, billed, and not consumed by the application.

Measured only against the app's own signals (see :mod:`context`): where a run has no captured
return value, no ``mark_used`` and no ``track_json``, use is *unknown* and nothing is claimed.

* ``extra_choice`` — n > 1 choices of which only some reached the result.
* ``not_in_result`` — segments of a used output absent from the result: verbatim or by word
  3-gram alignment (prefix truncation is the common case), then, only where the result looks
  like a paraphrase, by embedding coverage (cos ≥ 0.75 counts as used: recall-oriented, an
  error only hides waste). Unread JSON fields (``track_json``) are counted here too.
* ``abandoned_stream`` — the consumer stopped reading a stream: the billed tail beyond the text
  received, plus received segments that were not used.

An output with no trace at all in the result is only `possible` waste: it may have driven
control flow (a classifier's label) rather than text.
"""

from __future__ import annotations

from typing import Any

from wasteaudit.scoring import jsontext
from wasteaudit.scoring.context import RunContext
from wasteaudit.scoring.jsonuse import is_used_leaf
from wasteaudit.scoring.ledger import Candidate, Claim, Deferred
from wasteaudit.scoring.lexical import overlap, shingles
from wasteaudit.scoring.settings import ScorerConfig
from wasteaudit.scoring.views import CallView, ChoiceView

__all__ = ("compute_coverage", "detect_unused", "use_coverage")


def compute_coverage(view: CallView, ctx: RunContext) -> None:
    """Set ``coverage`` on every choice: per segment, the share found in the result or in later requests."""
    later = ctx.later_inputs(view.id) if len(ctx.calls) > 1 else None
    index = ctx.use.index
    for ch in view.choices:
        if view.mode == "hashed":
            lines = ctx.use.hashed_lines
            ch.coverage = [1.0 if seg.norm in lines else 0.0 for seg in ch.segments]
            continue
        if not ch.segments:
            ch.coverage = []
            continue
        covs: list[float] = []
        for seg in ch.segments:
            cov = index.coverage(seg) if index else 0.0
            if cov < 1.0 and later:
                cov = max(cov, later.coverage(seg))
            covs.append(cov)
        ch.coverage = covs


def use_coverage(view: CallView, ctx: RunContext, observable: bool) -> float | None:
    """Share of the call's billed output tokens whose use the unused detector could judge.

    Judged: the text segments of every choice and an abandoned stream's unread tail, when use is
    observable and the result was not cut at the capture cap. Not judged: reasoning and tool-call
    tokens (they drive the app, not its result), content the scorer does not hold, and every
    token of a call whose use is unknown. ``None`` when the call billed no output tokens.
    """
    if view.billed <= 0:
        return None
    if not observable or view.mode == "none":
        return 0.0
    judged = 0
    for ch in view.choices:
        if ("tail",) in ch.units and view.rec.stream_state == "abandoned":
            judged += ch.units[("tail",)].tokens
        if ctx.use.truncated and not ctx.use.json_access:
            continue
        judged += sum(ch.seg_tokens(seg.index) for seg in ch.segments)
    return round(min(1.0, judged / view.billed), 4)


def _used(cov: float, cfg: ScorerConfig) -> bool:
    return cov >= cfg.use_lexical


def detect_unused(view: CallView, ctx: RunContext, cfg: ScorerConfig, embeddings: bool) -> tuple[list[Candidate], list[Deferred], bool]:
    """Candidates for the unused kind on one call; the flag says whether use was observable."""
    rec = view.rec
    out: list[Candidate] = []
    deferred: list[Deferred] = []
    abandoned = rec.stream_state == "abandoned"
    if abandoned:
        for ch in view.choices:
            if ("tail",) in ch.units:
                out.append(
                    Candidate(rec.id, "abandoned_stream", "confirmed", 0.8, ch.index, [("tail",)],
                              evidence={"reason": "billed output beyond what the consumer read", "tail": "estimated from usage minus text received"})
                )
    if view.mode == "none":
        if len(view.choices) > 1:
            out.extend(_extra_none(view))
        return out, deferred, False
    observable = ctx.use.observable or any(a for a in ctx.use.json_access)
    if not observable:
        return out, deferred, False

    shares = [_share(ch, cfg) for ch in view.choices]
    main: list[ChoiceView] = list(view.choices)
    if len(view.choices) > 1:
        used = [ch for ch, s in zip(view.choices, shares) if s >= 0.3]
        if not used:
            best = max(range(len(view.choices)), key=lambda i: (shares[i], -i))
            used = [view.choices[best]]
            why = "no choice visibly used; the best-covered one is kept as the answer"
        else:
            why = "choice not found in the result"
        for ch, s in zip(view.choices, shares):
            if ch not in used:
                out.append(Candidate(rec.id, "extra_choice", "confirmed", 0.9, ch.index,
                                     evidence={"reason": why, "n": len(view.choices), "used_choices": [c.index for c in used], "used_share": round(s, 3)}))
        main = used

    subkind = "abandoned_stream" if abandoned else "not_in_result"
    for ch in main:
        if view.mode == "hashed":
            out.extend(_hashed(view, ch, subkind))
            continue
        if not ch.segments or ch.coverage is None:
            continue
        access = _json_access(ch, ctx)
        if access is not None:
            out.extend(_json_fields(view, ch, access, cfg))
            continue
        unmatched = [seg.index for seg, cov in zip(ch.segments, ch.coverage) if not _used(cov, cfg)]
        if not unmatched:
            continue
        any_used = len(unmatched) < len(ch.segments)
        best_cov = max((c for c in ch.coverage), default=0.0)
        base = {"method": "lexical", "use_sources": ctx.use.sources, "best_unmatched_coverage": round(max(ch.coverage[i] for i in unmatched), 3)}
        if ctx.use.truncated:
            out.append(Candidate(rec.id, subkind, "possible", 0.4, ch.index, [("seg", i) for i in unmatched],
                                 evidence={**base, "reason": "segments not found in a result that was cut at the capture cap"}))
            continue
        if _paraphrase_possible(ch, ctx, cfg):
            # Cheap paraphrase test first: most content words of the segment in one result segment.
            # Generous on purpose: a false "used" only hides waste.
            reworded = [i for i in unmatched if _reworded(ch.segments[i], ctx)]
            if reworded:
                unmatched = [i for i in unmatched if i not in reworded]
                any_used = True
                if not unmatched:
                    continue
            # Only segments sharing some vocabulary with the result can be paraphrased in it;
            # the others need no embedding to be called unused.
            targets = _unexplained_targets(ch, ctx)
            segs = {i: ch.segments[i].text for i in unmatched if ch.segments[i].embeddable and _shares(ch.segments[i], targets, cfg)}
            if embeddings and segs and targets:
                deferred.append(_paraphrase_check(view, ch, segs, [t.text for t in targets], unmatched, subkind, base, any_used, cfg))
                continue
            if not embeddings:
                out.append(Candidate(rec.id, subkind, "possible", 0.4, ch.index, [("seg", i) for i in unmatched],
                                     evidence={**base, "reason": "segments not found verbatim; paraphrased use could not be checked (no embeddings)"}))
                continue
        tier = "confirmed" if any_used else "possible"
        reason = "segments absent from the result" if any_used else "output absent from the result (may have been used for control flow)"
        out.append(Candidate(rec.id, subkind, tier, 0.85 if any_used else 0.4, ch.index, [("seg", i) for i in unmatched],
                             evidence={**base, "reason": reason, "best_coverage": round(best_cov, 3)}))
    return out, deferred, True


def _share(ch: ChoiceView, cfg: ScorerConfig) -> float:
    if not ch.coverage or not ch.segments:
        return 0.0
    total = used = 0
    for seg, cov in zip(ch.segments, ch.coverage):
        tokens = ch.seg_tokens(seg.index)
        total += tokens
        used += tokens if _used(cov, cfg) else 0
    return used / total if total else 0.0


def _paraphrase_possible(ch: ChoiceView, ctx: RunContext, cfg: ScorerConfig) -> bool:
    """Is the result more than a verbatim extract of this output, and does it share its vocabulary?"""
    index = ctx.use.index
    if not index or ch.text is None or all(s.kind == "json" for s in ch.segments):
        return False
    grams: set[tuple[str, ...]] = set()
    content: list[str] = []
    for seg in ch.segments:
        if len(seg.tokens) >= 3:
            grams.update(shingles(seg.tokens, 3))
        content.extend(seg.content)
    if index.explained_by(grams) >= 0.9:
        return False
    return overlap(content, index.content) >= 0.2  # some shared vocabulary at all


def _unexplained_targets(ch: ChoiceView, ctx: RunContext) -> list[Any]:
    """Result segments that are not verbatim copies of this output: only those can paraphrase it."""
    grams: set[tuple[str, ...]] = set()
    for seg in ch.segments:
        grams.update(shingles(seg.tokens, 3))
    out = []
    for u in ctx.use.index.segments:
        ug = shingles(u.tokens, 3)
        if not ug or len(ug & grams) / len(ug) < 0.5:
            out.append(u)
    return out[:64]


def _shares(seg: Any, targets: list[Any], cfg: ScorerConfig) -> bool:
    """Does the segment share enough content words with one result segment to be its paraphrase?"""
    content = set(seg.content)
    if not content:
        return False
    need = cfg.use_paraphrase_min_overlap * len(content)
    return any(len(content & set(t.content)) >= need for t in targets)


_GENERIC = frozenset({"step", "item", "point", "note", "option", "tip", "first", "second", "third", "next", "final"})


def _reworded(seg: Any, ctx: RunContext) -> bool:
    content = {w for w in seg.content if not w.isdigit() and w not in _GENERIC}
    if len(content) < 3:
        return False
    return any(len(content & set(u.content)) >= 0.6 * len(content) for u in ctx.use.index.segments)


def _paraphrase_check(view: CallView, ch: ChoiceView, seg_texts: dict[int, str], targets: list[str], unmatched: list[int], subkind: str,
                      base: dict, any_used: bool, cfg: ScorerConfig) -> Deferred:
    def resolve(store: Any) -> list[Candidate]:
        still: list[int] = []
        best = 0.0
        covered = 0
        for i in unmatched:
            text = seg_texts.get(i)
            if text is None:
                still.append(i)
                continue
            cos, _ = store.max_cos(text, targets)
            if cos >= cfg.use_cosine:
                covered += 1
            else:
                still.append(i)
                best = max(best, cos)
        if not still:
            return []
        used_somewhere = any_used or covered > 0
        tier = "confirmed" if used_somewhere else "possible"
        evidence = {**base, "method": "embedding", "reason": "segments not covered by the result (best cosine below threshold)",
                    "best_cosine": round(best, 3), "threshold": cfg.use_cosine, "paraphrased_segments": covered}
        return [Candidate(view.id, subkind, tier, 0.8 if used_somewhere else 0.4, ch.index, [("seg", i) for i in still], evidence=evidence)]

    def fallback() -> list[Candidate]:
        return [Candidate(view.id, subkind, "possible", 0.4, ch.index, [("seg", i) for i in unmatched],
                          evidence={**base, "reason": "segments not found verbatim; paraphrased use could not be checked (no embeddings)"})]

    claim = Claim(subkind, "confirmed", 0.8, ch.index, tuple(("seg", i) for i in unmatched))
    return Deferred(view.id, list(seg_texts.values()) + targets, resolve, fallback, gap="paraphrased use not checked (no embeddings)", claim=claim)


def _json_access(ch: ChoiceView, ctx: RunContext) -> Any:
    if not ctx.use.json_access or ch.text is None or not ch.segments or ch.segments[0].kind != "json":
        return None
    ok, value, _ = jsontext.parse_json(ch.text)
    if not ok:
        return None
    fp = jsontext.fingerprint(value)
    for access in ctx.use.json_access:
        if access.fp == fp:
            return access
    return None


def _json_fields(view: CallView, ch: ChoiceView, access: Any, cfg: ScorerConfig) -> list[Candidate]:
    """Leaves never read. A leaf whose value shows up in the result also counts as read (a bulk
    ``json.dumps`` of a list is invisible to the tracker) — for short values only when every
    leaf of the same top-level field shows up, since "sleep" can appear in a title by chance."""
    covs = ch.coverage or []
    present: dict[Any, bool] = {}
    for seg, cov in zip(ch.segments, covs):
        top = seg.path[0] if seg.path else None
        present[top] = present.get(top, True) and _used(cov, cfg)

    def read(seg: Any, cov: float) -> bool:
        if is_used_leaf(tuple(seg.path), access):
            return True
        if not _used(cov, cfg):
            return False
        return seg.words >= 3 or present.get(seg.path[0] if seg.path else None, False)

    unread = [seg.index for seg, cov in zip(ch.segments, covs) if not read(seg, cov)]
    if not unread:
        return []
    paths = [".".join(str(p) for p in ch.segments[i].path) for i in unread[:50]]
    return [Candidate(view.id, "not_in_result", "confirmed", 0.9, ch.index, [("seg", i) for i in unread],
                      evidence={"method": "json_access", "reason": "JSON fields never read by the app", "unread_fields": paths,
                                "bulk_reads": len(access.bulk)})]


def _hashed(view: CallView, ch: ChoiceView, subkind: str) -> list[Candidate]:
    covs = ch.coverage or []
    unmatched = [seg.index for seg, cov in zip(ch.segments, covs) if cov < 1.0]
    if not unmatched or not ch.segments:
        return []
    any_used = len(unmatched) < len(ch.segments)
    return [Candidate(view.id, subkind, "confirmed" if any_used else "possible", 0.7 if any_used else 0.3, ch.index, [("seg", i) for i in unmatched],
                      evidence={"method": "line_hash", "reason": "lines whose hash is absent from the result's line hashes", "lines": unmatched[:100]})]


def _extra_none(view: CallView) -> list[Candidate]:
    """content_mode none: which choice was used cannot be seen; assume one (tokens split equally)."""
    evidence = {"reason": "n > 1 choices; which one was used is unknown without content (assumes one)", "n": len(view.choices)}
    return [Candidate(view.id, "extra_choice", "possible", 0.5, ch.index, evidence=dict(evidence)) for ch in view.choices[1:]]
