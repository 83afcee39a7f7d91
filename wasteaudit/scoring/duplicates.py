"""Duplicate calls: the same request answered again within the look-back window (cacheable work).

Rule (waste-methods §1.2 d): call B duplicates an earlier call A when they share model and
generation parameters, the requests match (identical after whitespace/case normalization, or
the last user turn at cos ≥ 0.95 in the same context), **and** the two responses agree
(equal parsed JSON, equal text, equal tool calls, or cos ≥ 0.90). Responses agreeing is direct
evidence that a cache would have served B correctly — which a live cache cannot know, but an
audit can. Prompt-only semantic matches are guarded against the classic false hits: different
numbers, a negation, a one-word substitution ("raw chicken" vs "raw carrots"); reordered words
("USD to EUR" vs "EUR to USD") are at most ``possible``.

:class:`DuplicateIndex` holds the look-back window in memory: exact request hashes and an
inverted index of prompt words per (model, parameters) key; prompts are embedded only for the
few entries the word index proposes. A PostgreSQL deployment with many workers rebuilds the
window from the database with :func:`load_rows` (one function taking rows, no SQL here).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from wasteaudit.records import CallRecord, ChoiceContent
from wasteaudit.scoring import jsontext
from wasteaudit.scoring.ledger import Candidate, Claim, Deferred
from wasteaudit.scoring.lexical import content_words, digest, negation_count, normalize, numbers, words
from wasteaudit.scoring.settings import ScorerConfig
from wasteaudit.scoring.texts import context_hash, is_hashed, json_requested, last_user_text, params_key, request_hash
from wasteaudit.scoring.views import CallView

__all__ = ("IndexEntry", "DuplicateIndex", "entry_for", "detect_duplicate", "load_rows", "prompt_guard")

_FAILED_CATEGORIES = frozenset({"error", "length", "filter", "refusal"})
MAX_PROMPT_CHARS = 2000
MAX_RESPONSE_CHARS = 2000
_POSTING_CAP = 2000  # a word in more prompts than this says nothing about similarity
_RARE_POSTING = 200  # candidate generation stops at words this common


@dataclass(slots=True)
class IndexEntry:
    """What the window remembers of one call: request identity, prompt, and a response digest."""

    call_id: str
    started_at: float
    key: str
    request_hash: str
    context: str
    prompt: str | None
    prompt_words: frozenset[str]
    response_text: str | None
    response_norm: str | None
    response_json: str | None
    tools: str | None
    usable: bool
    run_id: str | None = None


def _response(rec: CallRecord) -> tuple[str | None, str | None, str | None, str | None]:
    choice: Any = rec.choices[0] if rec.choices else None
    if choice is None:
        return None, None, None, None
    if isinstance(choice, dict):
        choice = ChoiceContent(index=0, text=choice.get("text"), tool_calls=choice.get("tool_calls"))
    text = choice.text
    tools = None
    if choice.tool_calls:
        tools = digest(jsontext.canonical([[tc.get("name") or (tc.get("function") or {}).get("name"),
                                            tc.get("arguments") or (tc.get("function") or {}).get("arguments")] for tc in choice.tool_calls if isinstance(tc, dict)]))
    if is_hashed(text):
        return None, str(text.get("sha")), None, tools
    if not isinstance(text, str) or not text.strip():
        return None, None, None, tools
    ok, value, _ = jsontext.parse_json(text) if text.lstrip()[:1] in "{[`" else (False, None, None)
    return text[:MAX_RESPONSE_CHARS], digest(normalize(text)), jsontext.fingerprint(value) if ok else None, tools


def entry_for(rec: CallRecord) -> IndexEntry:
    prompt = last_user_text(rec)
    text = prompt if isinstance(prompt, str) else None
    response_text, response_norm, response_json, tools = _response(rec)
    usable = (rec.finish_category not in _FAILED_CATEGORIES and rec.error_type is None
              and (response_norm is not None or tools is not None))
    if json_requested(rec) and response_text is not None:
        # A JSON reply agrees only as parsed JSON; one that does not parse is a failure, not a cache entry.
        usable = usable and response_json is not None
        response_norm = None
    if rec.choices and getattr(rec.choices[0], "refusal", None):
        usable = False
    return IndexEntry(
        call_id=rec.id,
        started_at=float(rec.started_at or 0.0),
        key=params_key(rec),
        request_hash=request_hash(rec),
        context=context_hash(rec),
        prompt=text[:MAX_PROMPT_CHARS] if text else None,
        prompt_words=frozenset(content_words(words(text))) if text else frozenset(),
        response_text=response_text,
        response_norm=response_norm,
        response_json=response_json,
        tools=tools,
        usable=usable,
        run_id=rec.run_id,
    )


class DuplicateIndex:
    """The duplicate look-back window: bounded, oldest entries evicted first."""

    def __init__(self, *, window_s: float = 7 * 86400.0, max_entries: int = 200_000) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, IndexEntry] = OrderedDict()
        self._exact: dict[tuple[str, str], list[str]] = {}
        self._words: dict[tuple[str, str], dict[str, list[str]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, call_id: str) -> bool:
        return call_id in self._entries

    def get(self, call_id: str) -> IndexEntry | None:
        """The stored entry of a call (a worker's window usually holds the batch's own calls already)."""
        return self._entries.get(call_id)

    def add(self, entry: IndexEntry) -> None:
        if entry.call_id in self._entries or not entry.usable:
            return
        self._entries[entry.call_id] = entry
        self._exact.setdefault((entry.key, entry.request_hash), []).append(entry.call_id)
        if entry.prompt_words:
            postings = self._words.setdefault((entry.key, entry.context), {})
            for word in entry.prompt_words:
                slot = postings.setdefault(word, [])
                if len(slot) < _POSTING_CAP:
                    slot.append(entry.call_id)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, call_id: str) -> None:
        entry = self._entries.pop(call_id, None)
        if entry is None:
            return
        ids = self._exact.get((entry.key, entry.request_hash))
        if ids is not None:
            if call_id in ids:
                ids.remove(call_id)
            if not ids:
                del self._exact[(entry.key, entry.request_hash)]
        postings = self._words.get((entry.key, entry.context))
        if postings is not None:
            for word in entry.prompt_words:
                slot = postings.get(word)
                if slot and call_id in slot:
                    slot.remove(call_id)
                    if not slot:
                        del postings[word]

    def evict_before(self, ts: float) -> int:
        """Drop entries that started before ``ts`` (entries are roughly in time order)."""
        old = [cid for cid, e in self._entries.items() if e.started_at < ts]
        for cid in old:
            self._drop(cid)
        return len(old)

    def _in_window(self, entry: IndexEntry, probe: IndexEntry) -> bool:
        # Re-asks inside one run are retries (discarded_retry judges them), not cacheable repeats:
        # counting both would label the same re-ask twice.
        if probe.run_id is not None and entry.run_id == probe.run_id:
            return False
        return entry.call_id != probe.call_id and probe.started_at - self.window_s <= entry.started_at <= probe.started_at

    def exact(self, probe: IndexEntry) -> list[IndexEntry]:
        """Earlier entries with the same normalized request, newest first."""
        ids = self._exact.get((probe.key, probe.request_hash), [])
        found = [self._entries[i] for i in ids if i in self._entries]
        return sorted((e for e in found if self._in_window(e, probe)), key=lambda e: -e.started_at)

    def similar(self, probe: IndexEntry, min_jaccard: float, limit: int) -> list[tuple[float, IndexEntry]]:
        """Earlier entries in the same context whose prompt words overlap enough to be worth embedding.

        Candidates come from the probe's *rarest* words (a word in every prompt of a template
        says nothing), so the cost stays flat as the window grows; Jaccard is then exact.
        """
        postings = self._words.get((probe.key, probe.context))
        if not postings or not probe.prompt_words:
            return []
        lists = sorted((postings[w] for w in probe.prompt_words if w in postings), key=len)
        if not lists:
            return []
        candidates: set[str] = set()
        for ids in lists:
            if candidates and len(ids) > _RARE_POSTING:
                break
            candidates.update(ids[-_RARE_POSTING:])
            if len(candidates) >= 4 * _RARE_POSTING:
                break
        scored: list[tuple[float, IndexEntry]] = []
        words = probe.prompt_words
        n = len(words)
        entries = self._entries
        for cid in candidates:
            entry = entries.get(cid)
            if entry is None:
                continue
            # Jaccard first (most candidates fail it), bounded by the size ratio before any set work.
            m = len(entry.prompt_words)
            if min(n, m) < min_jaccard * max(n, m):
                continue
            shared = len(words & entry.prompt_words)
            score = shared / (n + m - shared)
            if score < min_jaccard or entry.request_hash == probe.request_hash or not self._in_window(entry, probe):
                continue
            scored.append((score, entry))
        scored.sort(key=lambda item: (-item[0], -item[1].started_at))
        return scored[:limit]


def prompt_guard(a: str, b: str) -> str | None:
    """Why two similar prompts are *different questions*, or None.

    'reordered' is returned for same words in another order: the caller caps those at possible.
    """
    ta, tb = words(a), words(b)
    if numbers(a) != numbers(b):
        return "different numbers"
    if (negation_count(ta) > 0) != (negation_count(tb) > 0):
        return "negation differs"
    ca, cb = content_words(ta), content_words(tb)
    only_a, only_b = set(ca) - set(cb), set(cb) - set(ca)
    if len(only_a) == 1 and len(only_b) == 1:
        return "one word substituted"
    if (only_a and not only_b) or (only_b and not only_a):
        if len(only_a | only_b) <= 2 and len(set(ca) | set(cb)) <= 6:
            return "a qualifier added or removed"
    if not only_a and not only_b and ca != cb and sorted(ca) == sorted(cb):
        return "reordered"
    return None


#: Words whose change changes an answer: a lexical "same answer" never lets them differ.
_PIVOTS = frozenset(
    "not no never none nor neither nothing nobody cannot yes true false correct incorrect wrong right left up down "
    "more less most least before after above below over under only all any every each first last".split()
)
_SAME_ANSWER_MIN_WORDS = 20
_SAME_ANSWER_MAX_CHANGED = 0.05


def same_answer(a: str, b: str) -> bool:
    """Two answers that are the same text but for a few substituted words (≤ 5 %, at least 20 words).

    Numbers, negations and pivot words ("left", "more", "before") must not be among the changes,
    and no words may be added or dropped: those are the edits that change what an answer says.
    """
    if not a or not b or numbers(a) != numbers(b):
        return False
    ta, tb = words(a), words(b)
    if len(ta) != len(tb) or len(ta) < _SAME_ANSWER_MIN_WORDS:
        return False
    changed = [(x, y) for x, y in zip(ta, tb) if x != y]
    if len(changed) > _SAME_ANSWER_MAX_CHANGED * len(ta):
        return False
    return all(x not in _PIVOTS and y not in _PIVOTS and negation_count((x, y)) == 0 for x, y in changed)


def _agree_cheap(a: IndexEntry, b: IndexEntry) -> str | None:
    if a.response_json is not None and b.response_json is not None:
        return "equal parsed JSON" if a.response_json == b.response_json else "json-differs"
    if a.tools is not None and b.tools is not None:
        return "equal tool calls" if a.tools == b.tools else "tools-differ"
    if a.response_norm is not None and a.response_norm == b.response_norm:
        return "equal text"
    return None


def detect_duplicate(view: CallView, probe: IndexEntry, index: DuplicateIndex, cfg: ScorerConfig, embeddings: bool) -> tuple[list[Candidate], list[Deferred]]:
    """Propose ``duplicate_call`` for ``view`` against the window (``probe`` = its own entry)."""
    if not probe.usable:
        return [], []
    exact = index.exact(probe)[: cfg.dup_max_candidates]
    pending: list[IndexEntry] = []
    for earlier in exact:
        agree = _agree_cheap(earlier, probe)
        if agree in ("json-differs", "tools-differ"):
            continue
        if agree is not None:
            return [_candidate(view, earlier, "exact", agree, "confirmed", 0.95, {})], []
        if earlier.response_text and probe.response_text:
            pending.append(earlier)
    if pending and cfg.lexical_shortcuts and embeddings and view.mode == "full" and same_answer(probe.response_text or "", pending[0].response_text or ""):
        # The newest earlier answer differs only in a few harmless words: its cosine is far above
        # the threshold, so it is the match the embedding check would return first.
        return [_candidate(view, pending[0], "exact", "responses agree", "confirmed", 0.9, {"response_match": "lexical"})], []
    if not embeddings or view.mode != "full":
        return [], []
    semantic: list[tuple[IndexEntry, str | None]] = []
    if not exact and probe.prompt and len(probe.prompt_words) >= 2:
        for _, earlier in index.similar(probe, cfg.dup_prefilter_jaccard, cfg.dup_max_candidates):
            if not earlier.prompt:
                continue
            guard = prompt_guard(probe.prompt, earlier.prompt)
            if guard is not None and guard != "reordered":
                continue
            agree = _agree_cheap(earlier, probe)
            if agree in ("json-differs", "tools-differ"):
                continue
            if agree is None and not (earlier.response_text and probe.response_text):
                continue
            semantic.append((earlier, guard))
    if not pending and not semantic:
        return [], []

    def resolve(store: Any) -> list[Candidate]:
        for earlier in pending:
            cos = store.cos(probe.response_text, earlier.response_text)
            if cos >= cfg.dup_response_cosine:
                return [_candidate(view, earlier, "exact", "responses agree", "confirmed", 0.9, {"response_cosine": round(cos, 3)})]
        best: Candidate | None = None
        for earlier, guard in semantic:
            pcos = store.cos(probe.prompt, earlier.prompt)
            if pcos < cfg.dup_possible_prompt_cosine:
                continue
            agree = _agree_cheap(earlier, probe)
            extra: dict[str, Any] = {"prompt_cosine": round(pcos, 3)}
            if agree is None and earlier.call_id in lexical_same:
                agree = "responses agree"
                extra["response_match"] = "lexical"
            elif agree is None:
                na, nb = numbers(probe.response_text or ""), numbers(earlier.response_text or "")
                if not (na <= nb or nb <= na):
                    continue  # the answers state different figures: not the same answer
                rcos = store.cos(probe.response_text, earlier.response_text)
                extra["response_cosine"] = round(rcos, 3)
                if rcos < cfg.dup_response_cosine:
                    continue
                agree = "responses agree"
            strong = pcos >= cfg.dup_prompt_cosine and guard is None
            if guard:
                extra["guard"] = guard
            cand = _candidate(view, earlier, "semantic", agree, "confirmed" if strong else "possible", 0.8 if strong else 0.4, extra)
            if strong:
                return [cand]
            best = best or cand
        return [best] if best else []

    texts: list[str] = []
    for earlier in pending:
        texts += [probe.response_text or "", earlier.response_text or ""]
    lexical_same: set[str] = set()
    for earlier, _ in semantic:
        texts += [probe.prompt or "", earlier.prompt or ""]
        if probe.response_text and earlier.response_text:
            if cfg.lexical_shortcuts and same_answer(probe.response_text, earlier.response_text):
                lexical_same.add(earlier.call_id)
            else:
                texts += [probe.response_text, earlier.response_text]
    return [], [Deferred(view.id, [t for t in texts if t], resolve, claim=Claim("duplicate_call", "confirmed", 0.9))]


def _candidate(view: CallView, earlier: IndexEntry, match: str, agree: str, tier: str, confidence: float, extra: dict[str, Any]) -> Candidate:
    evidence = {"reason": "same request answered before with an agreeing response (a cache could have served it)",
                "matching_call_id": earlier.call_id, "request_match": match, "responses": agree,
                "seconds_since_match": round(view.rec.started_at - earlier.started_at, 3), **extra}
    return Candidate(view.id, "duplicate_call", tier, confidence, None, evidence=evidence)


def load_rows(index: DuplicateIndex, rows: Iterable[Mapping[str, Any]]) -> int:
    """Fill ``index`` from stored call rows (``wasteaudit_calls`` columns as a mapping).

    For workers that rebuild the look-back window from the database: select the calls of the
    last ``window_s`` seconds ordered by ``started_at`` and pass the rows here. Returns how many
    entries were added.
    """
    from wasteaudit.scoring.records_io import call_from_row

    added = 0
    for row in rows:
        rec = call_from_row(row)
        before = len(index)
        index.add(entry_for(rec))
        added += len(index) - before
    return added
