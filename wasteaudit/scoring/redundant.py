"""Redundant output inside one reply: repeats, loops, restatements, prompt echo, filler.

Tiers follow waste-methods §1.2: on real chat output most embedding near-duplicates are
structural (repeated headings, per-item instructions) or contrastive parallel items
("left"/"right"), so embedding-only matches are only ``possible``. ``confirmed`` needs a
stronger signal: exact or near-exact repeats of long non-structural segments, loops, a
summary / back-reference / closing segment that restates an earlier one (cos ≥ 0.85), or an
opening that restates the prompt. Embeddings are requested only for pairs that pass a lexical
prefilter, which keeps them to a few texts per hundred calls.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from wasteaudit.scoring.context import RunContext
from wasteaudit.scoring.ledger import Candidate, Claim, Deferred
from wasteaudit.scoring.lexical import (
    AFFIRMATIONS, NEGATIONS, STOPWORDS, WORD_RE, content_words, jaccard, numbers, overlap, seq_rep_n, shingles, stem, words,
)
from wasteaudit.scoring.segments import Segment
from wasteaudit.scoring.settings import ScorerConfig
from wasteaudit.scoring.texts import last_user_text, user_prompt
from wasteaudit.scoring.views import CallView, ChoiceView

__all__ = ("detect_redundant", "FillerStats", "SUMMARY_CUE", "BACKREF_CUE", "FILLER_PHRASE")

SUMMARY_CUE = re.compile(r"^\W*(?:in summary|in conclusion|to summarize|to summarise|to sum up|in short|overall|all in all|in a nutshell|to recap|in essence|ultimately|long story short)\b", re.IGNORECASE)
BACKREF_CUE = re.compile(r"\b(?:as (?:mentioned|noted|stated|discussed|explained|described|outlined|shown|said) (?:above|earlier|before|previously)?|as we (?:saw|discussed|noted)|to reiterate|once again|again,)", re.IGNORECASE)
FILLER_PHRASE = re.compile(
    r"^\W*(?:great question|good question|what a great|certainly[!.,]|sure[!.,]|of course[!.,]|absolutely[!.,]|i hope (?:this|that|these) helps?"
    r"|hope (?:this|that) helps|let me know if|feel free to|happy to help|i'd be happy to|i would be happy to|glad (?:i could|to) help"
    r"|if you have any (?:other |more |further |additional )?questions|don't hesitate to|please let me know|thanks for asking|i'm here to help)",
    re.IGNORECASE,
)
_VERSE = re.compile(r"\b(?:song|lyrics?|poem|chorus|verse|refrain|rap|hymn|chant|limerick|nursery rhyme)\b", re.IGNORECASE)
_META = frozenset(content_words("question ask asked asking want wondering know help here answer explain great good sure certainly happy glad let look talk discuss tell understand like step follow following".split()))
_NONLETTER = re.compile(r"[^A-Za-z\s]")


class FillerStats:
    """How often each opening/closing segment recurs per function (kept across batches, bounded)."""

    def __init__(self, max_keys: int = 20_000) -> None:
        self.calls: dict[str, int] = {}
        self.seen: dict[tuple[str, str], set[str]] = {}
        self.max_keys = max_keys
        self._observed: OrderedDict[str, None] = OrderedDict()

    def observe(self, function: str, call_id: str, keys: list[str]) -> None:
        if call_id in self._observed:
            return
        self._observed[call_id] = None
        if len(self._observed) > 100_000:
            self._observed.popitem(last=False)
        self.calls[function] = self.calls.get(function, 0) + 1
        for key in keys:
            slot = self.seen.get((function, key))
            if slot is None:
                if len(self.seen) >= self.max_keys:
                    continue
                slot = self.seen[(function, key)] = set()
            if len(slot) < 1000:
                slot.add(call_id)

    def recurring(self, function: str, key: str, cfg: ScorerConfig) -> tuple[int, int] | None:
        n = len(self.seen.get((function, key), ()))
        total = self.calls.get(function, 0)
        if n >= cfg.filler_min_calls and total and n / total >= cfg.filler_min_share:
            return n, total
        return None


def boundary_keys(view: CallView) -> list[str]:
    """Normalized first/last segments of each choice: the places boilerplate lives."""
    keys: list[str] = []
    for ch in view.choices:
        segs = [s for s in ch.segments if s.kind in ("sentence", "item") and s.words >= 4 and s.words <= 25]
        if len(ch.segments) <= 2:
            continue
        for seg in segs[:1] + segs[-1:]:
            keys.append(seg.norm)
    return keys


def detect_redundant(view: CallView, ctx: RunContext, cfg: ScorerConfig, filler: FillerStats | None, embeddings: bool) -> tuple[list[Candidate], list[Deferred]]:
    out: list[Candidate] = []
    deferred: list[Deferred] = []
    if view.mode == "none":
        return out, deferred
    for ch in view.choices:
        if not ch.segments:
            continue
        if view.mode == "hashed":
            out.extend(_hashed_repeats(view, ch))
            continue
        if ch.segments[0].kind == "json":
            continue
        taken: set[int] = set()
        verse = bool(_VERSE.search(user_prompt(view.rec) or ""))
        out.extend(_exact_repeats(view, ch, cfg, taken, verse))
        out.extend(_loops(view, ch, cfg, taken))
        if embeddings and not verse:
            found, more = _restatements(view, ch, cfg, taken)
            out.extend(found)
            deferred.extend(more)
            # A segment already confirmed as a restatement cannot also become a `possible`
            # near-duplicate (the ledger gives its tokens to the confirmed label): not worth embedding.
            decided = {unit[1] for c in found for unit in c.units or ()}
            deferred.extend(_near_duplicates(view, ch, cfg, taken, decided))
        echo, more = _echo(view, ch, cfg, embeddings)
        out.extend(echo)
        deferred.extend(more)
        out.extend(_filler(view, ch, cfg, filler))
    return out, deferred


# Words whose presence or absence changes what a sentence says: never ignored by the near-exact rule.
_KEEP = frozenset(
    "up down in out on off over under above below before after not no never nor more most less least only than "
    "all none any few every each both same other left right first last again against without".split()
)


def _near_key(seg: Segment) -> tuple[str, ...]:
    """Near-exact form: stemmed words, minus stopwords that do not change the meaning."""
    return tuple([stem(w) for w in seg.tokens if w not in STOPWORDS or w in _KEEP])


def _near_exact(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Same words in the same order, except for repeated function words ("after every meal and (after) every nap")."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 2 or len(a) < 4:
        return False
    shorter, longer = (a, b) if len(a) <= len(b) else (b, a)
    i = j = 0
    skipped = 0
    while i < len(shorter) and j < len(longer):
        if shorter[i] == longer[j]:
            i += 1
            j += 1
        elif longer[j] in _KEEP and longer[j] in shorter and skipped < 2:
            j += 1
            skipped += 1
        else:
            return False
    rest = longer[j:]
    return i == len(shorter) and all(w in _KEEP and w in shorter for w in rest) and skipped + len(rest) <= 2


def _contrastive(a: Segment, b: Segment) -> bool:
    """Parallel items differing in a slot ("left"/"right", "200"/"180 degrees"): both sides have their own words."""
    ca, cb = set(a.content), set(b.content)
    return bool(ca - cb) and bool(cb - ca)


def _different_parents(a: Segment, b: Segment) -> bool:
    """List items under different headings/lead-ins: per-section structure, not a repeat."""
    return a.kind == "item" and b.kind == "item" and a.parent != b.parent


def _exact_repeats(view: CallView, ch: ChoiceView, cfg: ScorerConfig, taken: set[int], verse: bool) -> list[Candidate]:
    segs = ch.segments
    first: dict[str, int] = {}
    match: list[int | None] = []
    content_first: dict[tuple[str, ...], int] = {}  # near-exact keys of long segments
    near: dict[int, int] = {}
    for seg in segs:
        key = seg.norm
        j = first.get(key) if key else None
        match.append(j)
        if key and j is None:
            first[key] = seg.index
        if j is None and seg.words >= cfg.repeat_min_words and seg.kind in ("sentence", "item"):
            ckey = _near_key(seg)
            k = content_first.get(ckey)
            if k is None and content_first:
                k = next((idx for key2, idx in content_first.items() if abs(len(key2) - len(ckey)) <= 2 and key2[:1] == ckey[:1] and _near_exact(ckey, key2)), None)
            if k is not None:
                near[seg.index] = k
            else:
                content_first.setdefault(ckey, seg.index)
    out: list[Candidate] = []
    n = len(segs)
    # Loops: the same segment again and again in a row.
    i = 1
    while i < n:
        if not segs[i].norm or segs[i].norm != segs[i - 1].norm:
            i += 1
            continue
        j = i
        while j + 1 < n and segs[j + 1].norm == segs[i].norm:
            j += 1
        copies = list(range(i, j + 1))
        # Songs and poems repeat lines on purpose: there only a long run is a loop.
        if (len(copies) >= 2 or segs[i].words >= 4) and (not verse or len(copies) >= 3):
            taken.update(copies)
            out.append(Candidate(view.id, "repetition", "confirmed", 0.95, ch.index, [("seg", k) for k in copies],
                                 evidence={"rule": "loop", "reason": f"the same segment {len(copies) + 1} times in a row", "repeats_segment": i - 1}))
        i = j + 1
    i = 0
    while i < n:
        if match[i] is None or i in taken:
            i += 1
            continue
        j = i
        while j + 1 < n and match[j + 1] is not None and match[j + 1] == match[j] + 1 and j + 1 not in taken:  # type: ignore[operator]
            j += 1
        block = list(range(i, j + 1))
        block_words = sum(segs[k].words for k in block)
        has_heading = any(segs[k].kind == "heading" for k in block)
        keep: list[int] = []
        for k in block:
            seg, orig = segs[k], segs[match[k]]  # type: ignore[index]
            if verse or seg.kind in ("heading", "table") or _different_parents(seg, orig):
                continue
            if seg.words >= cfg.repeat_min_words or (len(block) >= 2 and block_words >= cfg.repeat_block_words and not has_heading):
                keep.append(k)
        if keep:
            taken.update(keep)
            out.append(
                Candidate(view.id, "repetition", "confirmed", 0.95, ch.index, [("seg", k) for k in keep],
                          evidence={"rule": "exact_repeat", "reason": "repeats earlier text verbatim (case/punctuation ignored)",
                                    "repeats_segments": [match[k] for k in keep][:20], "words": sum(segs[k].words for k in keep)})
            )
        i = j + 1
    for k, orig in near.items():
        if k in taken or verse or _different_parents(segs[k], segs[orig]):
            continue
        taken.add(k)
        out.append(Candidate(view.id, "repetition", "confirmed", 0.9, ch.index, [("seg", k)],
                             evidence={"rule": "near_exact_repeat", "reason": "same content words in the same order as an earlier segment", "repeats_segment": orig}))
    return out


def _loops(view: CallView, ch: ChoiceView, cfg: ScorerConfig, taken: set[int]) -> list[Candidate]:
    """Degenerate loops inside one long segment ("and then and then and then ...")."""
    out: list[Candidate] = []
    text = ch.text or ""
    for seg in ch.segments:
        if seg.index in taken or seg.words < 2 * cfg.loop_min_words or seg.kind in ("code", "json", "table"):
            continue
        spans = [(m.start(), m.end(), m.group(0).lower()) for m in WORD_RE.finditer(text, seg.start, seg.end)]
        toks = [w for _, _, w in spans]
        found = _periodic_suffix(toks, cfg)
        if found is None:
            continue
        period, length = found
        start_word = len(toks) - length + period
        share = (len(toks) - start_word) / len(toks)
        taken.add(seg.index)
        out.append(
            Candidate(view.id, "repetition", "confirmed", 0.95, ch.index, [("seg", seg.index)], share={("seg", seg.index): share},
                      span=(spans[start_word][0], seg.end),
                      evidence={"rule": "loop", "reason": f"the last {length} words repeat a {period}-word pattern", "period": period,
                                "seq_rep_4": round(seq_rep_n(toks, 4), 3)})
        )
    return out


def _periodic_suffix(toks: list[str], cfg: ScorerConfig) -> tuple[int, int] | None:
    n = len(toks)
    best: tuple[int, int] | None = None
    for p in range(1, min(40, n // cfg.loop_min_repeats) + 1):
        k = n - 1
        while k - p >= 0 and toks[k] == toks[k - p]:
            k -= 1
        length = (n - 1 - k) + p  # words covered by the periodic suffix
        if length >= cfg.loop_min_repeats * p and length >= cfg.loop_min_words:
            if best is None or length - p > best[1] - best[0]:
                best = (p, length)
    return best


def _closing_blocks(segs: list[Segment]) -> set[int]:
    blocks = sorted({s.block for s in segs})
    return {blocks[-1]} if len(blocks) >= 3 else set()


def _restatements(view: CallView, ch: ChoiceView, cfg: ScorerConfig, taken: set[int]) -> tuple[list[Candidate], list[Deferred]]:
    """Summary / back-reference / closing segments that restate an earlier segment (confirmed at cos ≥ 0.85).

    A cue segment whose words after the cue repeat an earlier candidate's in order ("In summary,
    <sentence 1>") is decided here, without embeddings: such a pair's cosine is far above 0.85.
    """
    segs = ch.segments
    closing = _closing_blocks(segs)
    first_block = segs[0].block
    pairs: list[tuple[int, int, str]] = []
    lexical: list[Candidate] = []
    for seg in segs:
        if seg.index in taken or not seg.embeddable or seg.kind == "heading":
            continue
        cue = (
            "summary" if SUMMARY_CUE.search(seg.text)
            else "back_reference" if BACKREF_CUE.search(seg.text)
            else "closing" if seg.block in closing and seg.block != first_block and seg.kind == "sentence"
            else None
        )
        if cue is None:
            continue
        scored = []
        for other in segs[: seg.index]:
            if other.block == seg.block or not other.embeddable or other.kind == "heading":
                continue
            if other.norm == seg.norm or _different_parents(seg, other):
                continue  # verbatim repeats are judged by the exact-repeat rule and its structural filters
            ov = overlap(seg.content, other.content)
            # A cue word ("In summary", "as mentioned") is itself evidence; a bare closing
            # paragraph must also repeat most of an earlier segment's words to be worth embedding.
            if ov >= (cfg.restate_prefilter if cue != "closing" else cfg.restate_closing_prefilter):
                scored.append((ov, other.index))
        ranked = sorted(scored, reverse=True)[: 2 if cue != "closing" else 1]
        same = _restated_verbatim(seg, [segs[j] for _, j in ranked]) if cfg.lexical_shortcuts and cue != "closing" and ranked else None
        if same is not None:
            lexical.append(Candidate(view.id, "repetition", "confirmed", 0.9, ch.index, [("seg", seg.index)],
                                     evidence={"rule": "restatement", "cue": cue, "method": "lexical",
                                               "reason": "restates an earlier segment in the same words", "restates_segment": same}))
            continue
        for _, j in ranked:
            pairs.append((seg.index, j, cue))
    if not pairs:
        return lexical, []

    def resolve(store: Any) -> list[Candidate]:
        best: dict[int, tuple[float, int, str]] = {}
        for i, j, cue in pairs:
            cos = store.cos(segs[i].text, segs[j].text)
            if cos >= cfg.restate_cosine and cos > best.get(i, (0.0, 0, ""))[0]:
                best[i] = (cos, j, cue)
        return [
            Candidate(view.id, "repetition", "confirmed", round(0.6 + 0.3 * min(1.0, (cos - cfg.restate_cosine) / 0.1), 3), ch.index, [("seg", i)],
                      evidence={"rule": "restatement", "cue": cue, "reason": "restates an earlier segment", "cosine": round(cos, 3), "restates_segment": j})
            for i, (cos, j, cue) in best.items()
        ]

    texts = sorted({segs[i].text for p in pairs for i in p[:2]})
    claim = Claim("repetition", "confirmed", 0.9, ch.index, tuple(("seg", i) for i in sorted({p[0] for p in pairs})))
    return lexical, [Deferred(view.id, texts, resolve, claim=claim)]


def _restated_verbatim(seg: Segment, ranked: list[Segment]) -> int | None:
    """The best-ranked earlier segment that ``seg`` repeats word for word once its cue is cut off.

    Only the first-ranked candidate may decide: the embedding path would pick the highest
    cosine, and for a verbatim restatement that is the segment with the most shared words.
    """
    other = ranked[0]
    rest = SUMMARY_CUE.sub("", seg.text, count=1)
    rest = BACKREF_CUE.sub(" ", rest, count=1)
    tokens = words(rest)
    if len(tokens) < 4 or numbers(rest) != numbers(other.text):
        return None
    key = tuple(stem(w) for w in tokens if w not in STOPWORDS or w in _KEEP)
    return other.index if _near_exact(key, _near_key(other)) else None


def _near_duplicates(view: CallView, ch: ChoiceView, cfg: ScorerConfig, taken: set[int], decided: set[int] = frozenset()) -> list[Deferred]:
    """Any other pair at cos ≥ 0.90 after structural filters: `possible` only.

    ``decided``: segments already labelled confirmed; they are not labelled again, but stay
    available as the earlier half of a pair.
    """
    segs = [s for s in ch.segments if s.words >= cfg.repeat_min_words and s.kind in ("sentence", "item") and s.index not in taken]
    segs = [s for s in segs if len(_NONLETTER.findall(s.text)) <= 0.15 * len(s.text)]
    pairs: list[tuple[int, int]] = []
    for a_pos, b in enumerate(segs):
        if b.index in decided:
            continue
        cb = set(b.content)
        for a in segs[:a_pos]:
            if a.norm == b.norm:
                continue
            if a.kind == "item" and b.kind == "item" and jaccard(a.tokens, b.tokens) >= cfg.parallel_item_jaccard and _contrastive(a, b):
                continue  # contrastive parallel items ("left"/"right" pointer)
            if jaccard(a.content, cb) >= cfg.near_dup_prefilter:
                pairs.append((b.index, a.index))
        if len(pairs) >= 20:
            break
    if not pairs:
        return []
    by_index = {s.index: s for s in ch.segments}

    def resolve(store: Any) -> list[Candidate]:
        best: dict[int, tuple[float, int]] = {}
        for i, j in pairs:
            cos = store.cos(by_index[i].text, by_index[j].text)
            if cos >= cfg.near_dup_cosine and cos > best.get(i, (0.0, 0))[0]:
                best[i] = (cos, j)
        return [
            Candidate(view.id, "repetition", "possible", 0.3, ch.index, [("seg", i)],
                      evidence={"rule": "near_duplicate", "reason": "embedding near-duplicate of an earlier segment", "cosine": round(cos, 3), "similar_to_segment": j})
            for i, (cos, j) in best.items()
        ]

    texts = sorted({by_index[i].text for p in pairs for i in p})
    claim = Claim("repetition", "possible", 0.3, ch.index, tuple(("seg", i) for i in sorted({p[0] for p in pairs})))
    return [Deferred(view.id, texts, resolve, claim=claim)]


def _echo(view: CallView, ch: ChoiceView, cfg: ScorerConfig, embeddings: bool) -> tuple[list[Candidate], list[Deferred]]:
    """Segments that restate the user's prompt (verbatim 5-grams, or an opening paraphrase)."""
    prompt = user_prompt(view.rec)
    if not prompt:
        return [], []
    ptoks = words(prompt)
    if len(ptoks) < 5:
        return [], []
    pgrams = shingles(ptoks, 5)
    starts = {g[0] for g in pgrams}
    all_toks = words(ch.text or "")
    n_grams = max(0, len(all_toks) - 4)
    if n_grams and _echoed_grams(all_toks, pgrams, starts) / n_grams >= cfg.echo_transform_share:
        return [], []  # the task transforms the input (edit, translate, proofread): copying is the job
    out: list[Candidate] = []
    echoed: set[int] = set()
    for seg in ch.segments:
        if seg.kind in ("code", "json", "table") or seg.words < 5:
            continue
        share = _echoed_grams(seg.tokens, pgrams, starts) / (seg.words - 4)
        if share >= cfg.echo_ngram_share:
            echoed.add(seg.index)
            out.append(Candidate(view.id, "prompt_echo", "confirmed", 0.85, ch.index, [("seg", seg.index)],
                                 evidence={"rule": "verbatim", "reason": "repeats the prompt word for word", "echo5": round(share, 3)}))
    first = next((s for s in ch.segments if s.kind not in ("heading",)), None)
    if first is None or first.index in echoed or not first.embeddable or not embeddings:
        return out, []
    pwords = set(content_words(ptoks))
    new = set(first.content) - pwords - _META
    extra_numbers = numbers(first.text) - numbers(prompt)
    polarity = {w for w in first.tokens if (w in NEGATIONS or w in AFFIRMATIONS or w.endswith("n't"))} - set(ptoks)
    if new or extra_numbers or polarity or len(set(first.content) & pwords) < 2 or first.block != ch.segments[0].block:
        return out, []
    last_user = last_user_text(view.rec)
    target = last_user if isinstance(last_user, str) and last_user.strip() else prompt

    def resolve(store: Any) -> list[Candidate]:
        cos = store.cos(first.text, target)
        if cos >= cfg.echo_cosine:
            return [Candidate(view.id, "prompt_echo", "confirmed", 0.8, ch.index, [("seg", first.index)],
                              evidence={"rule": "opening_restatement", "reason": "the opening restates the question and adds nothing", "cosine": round(cos, 3)})]
        return []

    return out, [Deferred(view.id, [first.text, target], resolve, claim=Claim("prompt_echo", "confirmed", 0.8, ch.index, (("seg", first.index),)))]


def _echoed_grams(tokens: list[str], pgrams: set[tuple[str, ...]], starts: set[str]) -> int:
    """How many word 5-grams of ``tokens`` are prompt 5-grams (only positions starting a prompt 5-gram are built)."""
    return sum(1 for i in range(len(tokens) - 4) if tokens[i] in starts and tuple(tokens[i : i + 5]) in pgrams)


def _filler(view: CallView, ch: ChoiceView, cfg: ScorerConfig, stats: FillerStats | None) -> list[Candidate]:
    segs = ch.segments
    if len(segs) <= 2:
        return []
    out: list[Candidate] = []
    body = [s for s in segs if s.kind in ("sentence", "item")]
    if not body:
        return []
    edges = {body[0].index, body[-1].index}
    if len(body) > 2:
        edges.add(body[-2].index)
    for seg in segs:
        if seg.index not in edges:
            continue
        if FILLER_PHRASE.search(seg.text):
            out.append(Candidate(view.id, "filler", cfg.filler_tier, 0.5, ch.index, [("seg", seg.index)],
                                 evidence={"rule": "phrase", "reason": "boilerplate opener/closer", "text": seg.text[:120]}))
        elif stats is not None and view.rec.function and 4 <= seg.words <= 25:
            hit = stats.recurring(view.rec.function, seg.norm, cfg)
            if hit:
                out.append(Candidate(view.id, "filler", cfg.filler_tier, 0.4, ch.index, [("seg", seg.index)],
                                     evidence={"rule": "recurring", "reason": "the same opening/closing recurs across this function's outputs",
                                               "calls_with_segment": hit[0], "calls_seen": hit[1]}))
    return out


def _hashed_repeats(view: CallView, ch: ChoiceView) -> list[Candidate]:
    """Hashed mode: repeated line hashes. Loops and repeated 3+-line blocks are confirmed, other repeats possible.

    Without text there is no word count and no structure, so a single repeated line (a heading,
    a separator) is never more than possible.
    """
    segs = ch.segments
    n = len(segs)
    out: list[Candidate] = []
    taken: set[int] = set()
    i = 1
    while i < n:
        if segs[i].norm != segs[i - 1].norm:
            i += 1
            continue
        j = i
        while j + 1 < n and segs[j + 1].norm == segs[i].norm:
            j += 1
        copies = list(range(i, j + 1))
        taken.update(copies)
        strong = len(copies) >= 2
        out.append(Candidate(view.id, "repetition", "confirmed" if strong else "possible", 0.9 if strong else 0.3, ch.index, [("seg", k) for k in copies],
                             evidence={"rule": "line_hash_loop", "reason": "the same line repeated in a row (hash match)", "lines": copies[:50]}))
        i = j + 1
    first: dict[str, int] = {}
    match: list[int | None] = []
    for seg in segs:
        match.append(first.get(seg.norm))
        first.setdefault(seg.norm, seg.index)
    i = 0
    while i < n:
        if match[i] is None or i in taken:
            i += 1
            continue
        j = i
        while j + 1 < n and match[j + 1] is not None and match[j + 1] == match[j] + 1 and j + 1 not in taken:  # type: ignore[operator]
            j += 1
        block = list(range(i, j + 1))
        strong = len(block) >= 3
        out.append(Candidate(view.id, "repetition", "confirmed" if strong else "possible", 0.9 if strong else 0.3, ch.index, [("seg", k) for k in block],
                             evidence={"rule": "line_hash_repeat", "reason": "lines repeat earlier lines exactly (hash match)", "lines": block[:50],
                                       "repeats_lines": [match[k] for k in block][:50]}))
        i = j + 1
    return out
