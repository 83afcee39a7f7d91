"""Which fields of a parsed JSON reply did the app read? An access-tracking wrapper and its reader.

App side (request path, stdlib only)::

    data = wasteaudit.scoring.track_json(json.loads(reply.choices[0].message.content))
    return {"title": data["title"]}          # "summary", "tags", ... were never read

``track_json`` returns a ``dict``/``list`` subclass that behaves like the original and records
the path of every leaf value read (``obj["a"]["b"]``, ``.get``, iteration). Bulk operations —
``.items()``, ``.values()``, ``dict(obj)``, ``{**obj}``, ``json.dumps(obj)`` of a mapping,
``str()``/``repr()``, ``copy`` — mark the whole subtree as read (conservative: unread fields are
under-, never over-reported). The record reaches the scorer inside the run's ``used_values``
(one encoded entry, see :data:`JSON_ACCESS_PREFIX`), keyed by a canonical fingerprint of the
object, so the scorer can find the call whose reply it was without any id plumbing.

Known blind spot: the C JSON encoder reads ``list`` subclasses without calling Python methods,
so ``json.dumps(data["items"])`` is not seen as a read; the scorer still counts such leaves as
used when their values appear in the function's captured return value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from wasteaudit.scoring.jsontext import canonical
from wasteaudit.scoring.lexical import digest

__all__ = ("track_json", "JsonAccess", "JSON_ACCESS_PREFIX", "parse_access", "split_used_values", "is_used_leaf")

#: Marks a used_values entry that is a JSON access record, not text the app used.
JSON_ACCESS_PREFIX = "\x00wasteaudit:json-access:"
MAX_PATHS = 2000


class _Tracker:
    """Collects accessed paths for one tracked object; encoded into the run record at its end."""

    __slots__ = ("fp", "leaves", "bulk", "overflow")

    def __init__(self, fp: str) -> None:
        self.fp = fp
        self.leaves: set[tuple[Any, ...]] = set()
        self.bulk: set[tuple[Any, ...]] = set()
        self.overflow = False

    def leaf(self, path: tuple[Any, ...]) -> None:
        if len(self.leaves) < MAX_PATHS:
            self.leaves.add(path)
        else:
            self.overflow = True

    def mark_bulk(self, path: tuple[Any, ...]) -> None:
        if len(self.bulk) < MAX_PATHS:
            self.bulk.add(path)
        else:
            self.overflow = True

    def wrap(self, value: Any, path: tuple[Any, ...]) -> Any:
        if isinstance(value, dict) and not isinstance(value, _TDict):
            return _TDict(value, self, path)
        if isinstance(value, list) and not isinstance(value, _TList):
            return _TList(value, self, path)
        if not isinstance(value, (_TDict, _TList)):
            self.leaf(path)
        return value

    def to_used_value(self) -> str:
        """The encoded record stored in ``RunRecord.used_values``."""
        payload = {
            "v": 1,
            "fp": self.fp,
            "leaves": sorted((list(p) for p in self.leaves), key=str),
            "bulk": sorted((list(p) for p in self.bulk), key=str),
            "overflow": self.overflow,
        }
        return JSON_ACCESS_PREFIX + json.dumps(payload, separators=(",", ":"), default=str)


class _TDict(dict):
    """A dict that reports which of its values were read."""

    def __init__(self, data: dict, tracker: _Tracker, path: tuple[Any, ...]) -> None:
        super().__init__(data)
        self._wa = (tracker, path)

    def __getitem__(self, key: Any) -> Any:
        tracker, path = self._wa
        return tracker.wrap(dict.__getitem__(self, key), path + (key,))

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if dict.__contains__(self, key) else default

    def __iter__(self) -> Any:
        # Overriding __iter__ also turns off CPython's dict-merge fast path, so dict(obj) and
        # {**obj} go through __getitem__ and are seen.
        return dict.__iter__(self)

    def _bulk(self) -> None:
        tracker, path = self._wa
        tracker.mark_bulk(path)

    def items(self) -> Any:  # type: ignore[override]
        self._bulk()
        tracker, path = self._wa
        return [(k, tracker.wrap(dict.__getitem__(self, k), path + (k,))) for k in dict.keys(self)]

    def values(self) -> Any:  # type: ignore[override]
        self._bulk()
        tracker, path = self._wa
        return [tracker.wrap(dict.__getitem__(self, k), path + (k,)) for k in dict.keys(self)]

    def pop(self, key: Any, *default: Any) -> Any:
        if dict.__contains__(self, key):
            value = self[key]
            dict.pop(self, key)
            return value
        return dict.pop(self, key, *default)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if dict.__contains__(self, key):
            return self[key]
        return dict.setdefault(self, key, default)

    def copy(self) -> dict:
        self._bulk()
        return _plain(self)

    def __repr__(self) -> str:
        self._bulk()
        return repr(_plain(self))

    __str__ = __repr__

    def __reduce_ex__(self, protocol: Any) -> Any:
        self._bulk()
        return (dict, (_plain(self),))

    def __eq__(self, other: Any) -> bool:
        self._bulk()
        return dict.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]


class _TList(list):
    """A list that reports which of its items were read."""

    def __init__(self, data: list, tracker: _Tracker, path: tuple[Any, ...]) -> None:
        super().__init__(data)
        self._wa = (tracker, path)

    def __getitem__(self, index: Any) -> Any:
        tracker, path = self._wa
        if isinstance(index, slice):
            size = list.__len__(self)
            return [tracker.wrap(list.__getitem__(self, i), path + (i,)) for i in range(*index.indices(size))]
        i = index if index >= 0 else list.__len__(self) + index
        return tracker.wrap(list.__getitem__(self, index), path + (i,))

    def __iter__(self) -> Any:
        tracker, path = self._wa
        for i in range(list.__len__(self)):
            yield tracker.wrap(list.__getitem__(self, i), path + (i,))

    def __reversed__(self) -> Any:
        tracker, path = self._wa
        for i in range(list.__len__(self) - 1, -1, -1):
            yield tracker.wrap(list.__getitem__(self, i), path + (i,))

    def copy(self) -> list:
        self._wa[0].mark_bulk(self._wa[1])
        return _plain(self)

    def __repr__(self) -> str:
        self._wa[0].mark_bulk(self._wa[1])
        return repr(_plain(self))

    __str__ = __repr__

    def __reduce_ex__(self, protocol: Any) -> Any:
        self._wa[0].mark_bulk(self._wa[1])
        return (list, (_plain(self),))

    def __eq__(self, other: Any) -> bool:
        self._wa[0].mark_bulk(self._wa[1])
        return list.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(dict.__getitem__(value, k)) for k in dict.keys(value)}
    if isinstance(value, list):
        return [_plain(list.__getitem__(value, i)) for i in range(list.__len__(value))]
    return value


def track_json(obj: Any) -> Any:
    """Wrap parsed JSON so the fields the app reads are recorded on the current ``@audit`` run.

    Returns ``obj`` unchanged when it is not a dict/list or when called outside a run. Never
    raises into the app: any internal failure returns the original object.
    """
    if not isinstance(obj, (dict, list)) or isinstance(obj, (_TDict, _TList)):
        return obj
    try:
        from wasteaudit._internal.runs import attach_json_tracker

        tracker = _Tracker(digest(canonical(obj)))
        if not attach_json_tracker(tracker):
            return obj
        return tracker.wrap(obj, ())
    except Exception:
        return obj


# --------------------------------------------------------------------------- scorer side


@dataclass(slots=True, frozen=True)
class JsonAccess:
    """What the app read of one tracked JSON object (decoded from ``used_values``)."""

    fp: str
    leaves: frozenset[tuple[Any, ...]]
    bulk: tuple[tuple[Any, ...], ...]
    overflow: bool = False


def parse_access(entry: str) -> JsonAccess | None:
    if not entry.startswith(JSON_ACCESS_PREFIX):
        return None
    try:
        data = json.loads(entry[len(JSON_ACCESS_PREFIX) :])
        return JsonAccess(
            fp=str(data["fp"]),
            leaves=frozenset(tuple(p) for p in data.get("leaves") or []),
            bulk=tuple(tuple(p) for p in data.get("bulk") or []),
            overflow=bool(data.get("overflow")),
        )
    except (ValueError, KeyError, TypeError):
        return None


def split_used_values(values: list[str] | None) -> tuple[list[str], list[JsonAccess]]:
    """Separate plain used texts from JSON access records."""
    texts: list[str] = []
    access: list[JsonAccess] = []
    for value in values or []:
        if isinstance(value, str) and value.startswith(JSON_ACCESS_PREFIX):
            parsed = parse_access(value)
            if parsed is not None:
                access.append(parsed)
        elif isinstance(value, str):
            texts.append(value)
    return texts, access


def is_used_leaf(path: tuple[Any, ...], access: JsonAccess) -> bool:
    """A leaf counts as read if it was read itself or a container above it was read in bulk."""
    if access.overflow or path in access.leaves:
        return True
    return any(path[: len(b)] == b for b in access.bulk)
