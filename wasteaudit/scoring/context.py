"""What the scorer knows about a run: what it returned or marked used, its verdicts, its calls.

"Unused" can only be measured against the app's own use signals (DESIGN §3): the audited
function's captured return value, ``mark_used`` values and ``track_json`` access records. A
run with none of them has *unknown* use, and the scorer records that as a coverage gap
instead of guessing. Later calls of the same run are a use signal too: text fed back into the
next request (agent loops, draft → revise chains) was consumed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from wasteaudit.records import RunRecord, ScoreRecord
from wasteaudit.scoring.jsonuse import JsonAccess, split_used_values
from wasteaudit.scoring.lexical import content_words, normalize, shingles, words
from wasteaudit.scoring.segments import Segment, segment_text
from wasteaudit.scoring.texts import is_hashed, message_list
from wasteaudit.scoring.views import CallView

__all__ = ("TextIndex", "UseEvidence", "RunContext", "build_use")


class TextIndex:
    """Normalized text, word 3-gram shingles and content words of a set of texts, for fast coverage tests."""

    __slots__ = ("texts", "blob", "grams", "content", "_segments", "nwords")

    def __init__(self, texts: list[str]) -> None:
        self.texts = [t for t in texts if t]
        # " | " cannot occur inside a normalized segment, so a match never spans two texts.
        self.blob = " " + " | ".join(normalize(t) for t in self.texts) + " "
        toks = [words(t) for t in self.texts]
        self.grams: set[tuple[str, ...]] = set()
        self.content: set[str] = set()
        self.nwords = 0
        for tk in toks:
            self.nwords += len(tk)
            if len(tk) >= 3:
                self.grams.update(shingles(tk, 3))
            self.content.update(content_words(tk))
        self._segments: list[Segment] | None = None

    def __bool__(self) -> bool:
        return bool(self.texts)

    def coverage(self, seg: Segment) -> float:
        """Share of the segment found in these texts: 1.0 verbatim, else the share of its word 3-grams."""
        if not seg.tokens:
            return 0.0
        norm = seg.norm
        if norm and f" {norm} " in self.blob:
            return 1.0
        if len(seg.tokens) < 3:
            return 0.0
        grams = shingles(seg.tokens, 3)
        return len(grams & self.grams) / len(grams)

    def explained_by(self, grams: set[tuple[str, ...]]) -> float:
        """Share of *these* texts' 3-grams that appear in ``grams`` (is the use text a verbatim extract?)."""
        if not self.grams:
            return 1.0
        return len(self.grams & grams) / len(self.grams)

    @property
    def segments(self) -> list[Segment]:
        """Segments of the texts to compare against (for paraphrase coverage).

        Unlike the output side, short result segments are kept ("1) Open Settings."): a
        result is often terser than the output it paraphrases.
        """
        if self._segments is None:
            segs: list[Segment] = []
            for text in self.texts:
                segs.extend(s for s in segment_text(text) if s.words >= 2 and s.kind not in ("code", "table"))
            self._segments = segs
        return self._segments



def _string_leaves(value: Any, out: list[str], depth: int = 0) -> None:
    if depth > 20:
        return
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _string_leaves(v, out, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _string_leaves(v, out, depth + 1)


@dataclass(slots=True)
class UseEvidence:
    """The app's use signals for one run."""

    observable: bool
    index: TextIndex
    json_access: list[JsonAccess] = field(default_factory=list)
    truncated: bool = False
    hashed_lines: set[str] = field(default_factory=set)
    sources: list[str] = field(default_factory=list)


def use_texts(text: str) -> list[str]:
    """A captured value as texts: itself plus the strings inside it when it is JSON (the content
    policy hashes the lines of exactly these in ``hashed`` mode)."""
    out = [text]
    stripped = text.strip()
    if stripped[:1] in ("{", "[", '"'):
        try:
            value = json.loads(stripped)
        except ValueError:
            return out
        leaves: list[str] = []
        _string_leaves(value, leaves)
        if leaves:
            out = leaves if isinstance(value, str) else out + leaves
    return out


def build_use(run: RunRecord | None) -> UseEvidence:
    if run is None:
        return UseEvidence(False, TextIndex([]))
    used_texts, access = split_used_values(run.used_values)
    texts: list[str] = []
    hashed: set[str] = set()
    sources: list[str] = []
    for label, raw in [("return_value", run.return_value)] + [("mark_used", t) for t in used_texts]:
        if raw is None:
            continue
        value: Any = raw
        if isinstance(raw, str) and raw.startswith("{") and '"sha"' in raw[:200]:
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        if is_hashed(value):
            hashed.update(str(h) for h in value.get("lines") or [])
            sources.append(label)
            continue
        if isinstance(value, str):
            texts.extend(use_texts(value))
            sources.append(label)
    if access:
        sources.append("track_json")
    observable = bool(texts or hashed or access)
    return UseEvidence(observable, TextIndex(texts), access, bool(run.return_truncated), hashed, sources)


@dataclass(slots=True)
class RunContext:
    """One run's record, scores, use evidence, and all its known calls in start order."""

    run_id: str | None
    run: RunRecord | None
    scores: list[ScoreRecord]
    use: UseEvidence
    calls: list[CallView]
    _later: dict[str, TextIndex] = field(default_factory=dict)
    _later_out: dict[str, TextIndex] = field(default_factory=dict)

    @property
    def validation_failed(self) -> bool:
        if self.run is not None and self.run.validation is False:
            return True
        return any(s.name == "validation" and s.value <= 0.0 for s in self.scores)

    def later_inputs(self, call_id: str) -> TextIndex:
        """Texts sent in requests made after ``call_id`` in this run (what fed the next step)."""
        cached = self._later.get(call_id)
        if cached is not None:
            return cached
        texts: list[str] = []
        seen = False
        for view in self.calls:
            if view.id == call_id:
                seen = True
                continue
            if seen:
                for role, text in message_list(view.rec.input_messages):
                    if isinstance(text, str) and role != "system":
                        texts.append(text)
        index = TextIndex(texts)
        self._later[call_id] = index
        return index

    def later_outputs(self, call_id: str) -> TextIndex:
        """Outputs of later calls of the same function in this run (a retry regenerating the same text)."""
        cached = self._later_out.get(call_id)
        if cached is not None:
            return cached
        texts: list[str] = []
        me = next((v for v in self.calls if v.id == call_id), None)
        seen = False
        for view in self.calls:
            if view.id == call_id:
                seen = True
                continue
            if seen and me is not None and view.rec.function == me.rec.function:
                texts.extend(ch.text for ch in view.choices if ch.text)
        index = TextIndex(texts)
        self._later_out[call_id] = index
        return index
