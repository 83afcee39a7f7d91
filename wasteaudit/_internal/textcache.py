"""Values computed from long strings, remembered by the string object's identity.

The same text object reaches the writer again and again: a system prompt, the conversation
history an app re-sends with every turn, tool definitions (a request keeps references to the
app's own objects). For a pure function of the text, a hit is exactly what computing it again
would give; keying by identity costs nothing on a miss (no hash of the text), and the entry holds
the text, so its id cannot be reused while it is there. Bounded by the characters held, oldest
out first.

No lock (a lock held by another thread at fork would stay held in the child): each dict
operation is atomic under the GIL, the count is approximate when threads race, the trim
recounts, and two trims at once only drop a few more entries.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable


def held_chars(entry: tuple[str, str]) -> int:
    """The characters an entry keeps alive: the text, and the value when it is another string."""
    text, value = entry
    return len(text) if value is text else len(text) + len(value)


class TextCache:
    """``text -> value`` by ``id(text)``; look up with ``held = cache.get(id(text))`` and use
    ``held[1]`` only when ``held[0] is text``."""

    __slots__ = ("entries", "get", "chars", "max_chars")

    def __init__(self, max_chars: int) -> None:
        self.entries: OrderedDict[int, tuple[str, str]] = OrderedDict()
        self.get: Callable[[int], Any] = self.entries.get  # bound once: the lookup is on hot paths
        self.chars = 0
        self.max_chars = max_chars

    def remember(self, text: str, value: str) -> None:
        size = held_chars((text, value))
        if size > self.max_chars // 8:
            return
        entries = self.entries
        entries[id(text)] = (text, value)
        self.chars += size
        if self.chars > self.max_chars:
            total = sum(map(held_chars, list(entries.values())))
            while total > self.max_chars * 3 // 4:
                try:
                    total -= held_chars(entries.popitem(last=False)[1])
                except KeyError:
                    break
            self.chars = total

    def clear(self) -> None:
        self.entries.clear()
        self.chars = 0
