"""JSON in model output: strip fences, parse, canonicalize, and locate every leaf's characters.

Locating leaves lets JSON output be segmented like prose (one segment per leaf, keys and
punctuation included), so unread fields can be counted with the same ledger, and so an
output can be matched to a ``track_json`` record by a canonical fingerprint.
"""

from __future__ import annotations

import json
import re
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

from wasteaudit.scoring.lexical import digest

Path = tuple[Any, ...]

_FENCE = re.compile(r"^\s*```[\w+-]*[ \t]*\n(.*?)\n?```\s*$", re.DOTALL)
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_WS = " \t\n\r"

__all__ = ("strip_fences", "parse_json", "canonical", "fingerprint", "leaf_spans", "JsonSpanError")


class JsonSpanError(ValueError):
    pass


def strip_fences(text: str) -> tuple[str, int]:
    """The JSON body of a reply wrapped in a Markdown code fence, and its offset in ``text``."""
    match = _FENCE.match(text)
    if match:
        return match.group(1), match.start(1)
    return text, 0


def parse_json(text: str) -> tuple[bool, Any, str | None]:
    """(ok, value, error) for a reply that should be JSON (code fences tolerated)."""
    body, _ = strip_fences(text)
    try:
        return True, json.loads(body), None
    except (ValueError, RecursionError) as exc:
        return False, None, str(exc)[:200]


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def fingerprint(value: Any) -> str:
    """Stable id of a parsed JSON value: the same in the app (``track_json``) and in the scorer."""
    return digest(canonical(value))


def leaf_spans(text: str, offset: int = 0) -> list[tuple[Path, int, int, Any]]:
    """Every scalar leaf of the JSON document in ``text`` as (path, start, end, value).

    A leaf's span starts at its key (or at the value inside an array) so that the key's
    characters are apportioned to the field they name; spans do not overlap.
    Raises :class:`JsonSpanError` if ``text`` is not a single JSON document.
    """
    out: list[tuple[Path, int, int, Any]] = []
    end = _value(text, _skip(text, 0), (), out, None)
    if _skip(text, end) != len(text):
        raise JsonSpanError("trailing data")
    if offset:
        out = [(p, s + offset, e + offset, v) for p, s, e, v in out]
    return out


def _skip(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    return i


def _value(text: str, i: int, path: Path, out: list, start: int | None) -> int:
    if i >= len(text):
        raise JsonSpanError("unexpected end")
    ch = text[i]
    begin = i if start is None else start
    if ch == "{":
        return _object(text, i + 1, path, out)
    if ch == "[":
        return _array(text, i + 1, path, out)
    if ch == '"':
        value, end = scanstring(text, i + 1)
    elif text.startswith("true", i):
        value, end = True, i + 4
    elif text.startswith("false", i):
        value, end = False, i + 5
    elif text.startswith("null", i):
        value, end = None, i + 4
    else:
        match = _NUMBER.match(text, i)
        if not match:
            raise JsonSpanError(f"bad value at {i}")
        raw = match.group(0)
        value, end = (float(raw) if any(c in raw for c in ".eE") else int(raw)), match.end()
    out.append((path, begin, end, value))
    return end


def _object(text: str, i: int, path: Path, out: list) -> int:
    i = _skip(text, i)
    if i < len(text) and text[i] == "}":
        return i + 1
    while True:
        i = _skip(text, i)
        if i >= len(text) or text[i] != '"':
            raise JsonSpanError(f"expected key at {i}")
        key_start = i
        key, i = scanstring(text, i + 1)
        i = _skip(text, i)
        if i >= len(text) or text[i] != ":":
            raise JsonSpanError(f"expected ':' at {i}")
        i = _skip(text, i + 1)
        i = _value(text, i, path + (key,), out, key_start)
        i = _skip(text, i)
        if i < len(text) and text[i] == ",":
            i += 1
            continue
        if i < len(text) and text[i] == "}":
            return i + 1
        raise JsonSpanError(f"expected ',' or '}}' at {i}")


def _array(text: str, i: int, path: Path, out: list) -> int:
    i = _skip(text, i)
    if i < len(text) and text[i] == "]":
        return i + 1
    index = 0
    while True:
        i = _skip(text, i)
        i = _value(text, i, path + (index,), out, None)
        index += 1
        i = _skip(text, i)
        if i < len(text) and text[i] == ",":
            i += 1
            continue
        if i < len(text) and text[i] == "]":
            return i + 1
        raise JsonSpanError(f"expected ',' or ']' at {i}")
