"""Markdown-aware segmentation: the unit every detector compares and every token is counted in.

Model output is mostly Markdown, so a plain sentence splitter is not enough (waste-methods
§1.1): fenced code blocks are one segment each and never sentence-split; lines are split on
list markers, headings and table rows; prose lines are split into sentences. JSON replies are
segmented per leaf instead, so unread fields can be counted.

Segment spans *partition* the text (whitespace and markers belong to a neighbour), so
apportioning the billed tokens by span length reconciles exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from wasteaudit.scoring import jsontext
from wasteaudit.scoring.lexical import content_words, normalize, words

__all__ = ("Segment", "segment_text", "segment_json", "segment_output", "SHORT_WORDS")

#: Segments with fewer words keep their tokens but are never embedded ("Ingredients:" matches everything).
SHORT_WORDS = 4

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]*\1[ \t]*$|\Z)", re.DOTALL | re.MULTILINE)
_HEADING = re.compile(r"^[ \t]*(#{1,6})[ \t]+")
_BOLD_LINE = re.compile(r"^[ \t]*(\*\*|__)[^*_\n]{1,120}\1:?[ \t]*$")
_ITEM = re.compile(r"^([ \t]*)(?:[-*+•]|\d{1,3}[.)]|[a-zA-Z][.)])[ \t]+")
_TABLE = re.compile(r"^[ \t]*\|")
# A short line ending in a colon introduces what follows ("Tips for better sleep:"): a heading.
_LEAD_IN = re.compile(r"^[ \t]*[^\s\-*+>|#][^.!?\n]{0,60}:[ \t]*$")
_QUOTE = re.compile(r"^[ \t]*>[ \t]?")
_SENT_END = re.compile(r"[.!?…]+[\"'”’)\]*_]*\s+(?=[\"'“‘(\[*_]*[A-Z0-9])")
_ABBREV = frozenset("e.g i.e etc vs mr mrs ms dr prof sr jr st no fig approx inc ltd co u.s u.k a.m p.m".split())


@dataclass(slots=True)
class Segment:
    """One comparable unit of an output.

    ``kind`` is code | heading | item | sentence | table | json. ``block`` counts blank-line
    separated blocks (paragraphs); ``parent`` is the index of the heading (or list lead-in)
    the segment sits under, so repeated per-section instructions can be told from real repeats.
    """

    index: int
    start: int
    end: int
    text: str
    kind: str
    block: int
    parent: int = -1
    item: int = -1
    path: tuple = ()
    tokens: list[str] = field(default_factory=list)
    _norm: str | None = None
    _content: list[str] | None = None

    @property
    def words(self) -> int:
        return len(self.tokens)

    @property
    def norm(self) -> str:
        if self._norm is None:
            self._norm = normalize(self.text)
        return self._norm

    @property
    def content(self) -> list[str]:
        if self._content is None:
            self._content = content_words(self.tokens)
        return self._content

    @property
    def embeddable(self) -> bool:
        return self.words >= SHORT_WORDS and self.kind not in ("code", "json", "table")


class _Builder:
    def __init__(self, text: str) -> None:
        self.text = text
        self.out: list[Segment] = []
        self.block = 0
        self.parent = -1
        self.item_no = -1
        self.lead_in = -1

    def add(self, start: int, content: str, kind: str, *, item: int = -1) -> None:
        tokens = words(content)
        if not tokens and kind != "code":
            return  # punctuation-only: its characters go to the neighbour
        self.out.append(
            Segment(len(self.out), start, start, content.strip(), kind, self.block, self.parent if kind != "heading" else -1, item, (), tokens)
        )


def segment_text(text: str) -> list[Segment]:
    """Segments of a Markdown/plain reply, with spans partitioning ``text``."""
    b = _Builder(text)
    pos = 0
    for match in _FENCE.finditer(text):
        _prose(b, text, pos, match.start())
        b.block += 1
        b.add(match.start(), match.group(0), "code")
        b.block += 1
        pos = match.end()
    _prose(b, text, pos, len(text))
    return _close(b.out, len(text))


def _prose(b: _Builder, text: str, lo: int, hi: int) -> None:
    pos = lo
    while pos < hi:
        nl = text.find("\n", pos, hi)
        end = hi if nl < 0 else nl
        _line(b, text, pos, end)
        pos = end + 1


def _line(b: _Builder, text: str, lo: int, hi: int) -> None:
    line = text[lo:hi]
    if not line.strip():
        b.block += 1
        b.item_no = -1
        return
    heading = _HEADING.match(line)
    if heading or _BOLD_LINE.match(line) or _LEAD_IN.match(line):
        b.add(lo, line[heading.end() :] if heading else line, "heading")
        if b.out and b.out[-1].kind == "heading":
            b.parent = b.out[-1].index
        b.item_no = -1
        return
    if _TABLE.match(line):
        b.add(lo, line, "table")
        return
    item = _ITEM.match(line)
    if item:
        b.item_no += 1
        if b.item_no == 0 and b.out and b.out[-1].kind != "item" and b.out[-1].kind != "heading":
            b.lead_in = b.out[-1].index
        _sentences(b, line, lo, item.end(), "item", b.item_no)
        return
    quote = _QUOTE.match(line)
    start = quote.end() if quote else 0
    _sentences(b, line, lo, start, "sentence", -1)
    if line.rstrip().endswith(":") and b.out:
        b.lead_in = b.out[-1].index


def _sentences(b: _Builder, line: str, lo: int, body: int, kind: str, item: int) -> None:
    """Split one line's content into sentences; the first one's span starts at the line start."""
    starts = [body]
    for match in _SENT_END.finditer(line, body):
        before = line[starts[-1] : match.start()].rstrip(".!?…")
        last = before.rsplit(None, 1)[-1].lower() if before.split() else ""
        if last.rstrip(".") in _ABBREV or (len(last) == 1 and last.isalpha()):
            continue
        starts.append(match.end())
    saved_parent = b.parent
    if kind == "item" and b.lead_in >= 0 and (b.parent < 0 or b.lead_in > b.parent):
        b.parent = b.lead_in
    for n, s in enumerate(starts):
        e = starts[n + 1] if n + 1 < len(starts) else len(line)
        before = len(b.out)
        b.add(lo + (0 if n == 0 else s), line[s:e], kind, item=item)
        if len(b.out) > before and n == 0:
            b.out[-1].start = lo
    b.parent = saved_parent


def _close(out: list[Segment], length: int) -> list[Segment]:
    """Make spans a partition: each segment runs to the next one's start; the first from 0."""
    for i, seg in enumerate(out):
        seg.index = i
        seg.end = out[i + 1].start if i + 1 < len(out) else length
    if out:
        out[0].start = 0
    return out


def segment_json(text: str) -> list[Segment] | None:
    """One segment per JSON leaf (key included), or None when ``text`` is not a JSON document."""
    body, offset = jsontext.strip_fences(text)
    try:
        leaves = jsontext.leaf_spans(body, offset)
    except (jsontext.JsonSpanError, ValueError, RecursionError):
        return None
    out: list[Segment] = []
    for path, start, _end, value in leaves:
        shown = value if isinstance(value, str) else ("" if value is None else str(value).lower())
        out.append(Segment(len(out), start, start, str(shown), "json", 0, -1, -1, path, words(str(shown))))
    if not out:
        return None
    return _close(out, len(text))


def segment_output(text: str, *, json_expected: bool = False) -> list[Segment]:
    """Segments of one reply: per JSON leaf when the reply is a JSON object/array, else Markdown."""
    stripped = text.lstrip()
    if json_expected or stripped[:1] in ("{", "[") or stripped.startswith("```json"):
        segs = segment_json(text)
        if segs is not None:
            return segs
    return segment_text(text)
