"""Reversible class-level patching with wrapt, guarded per target.

A target that does not exist in the installed SDK is skipped (older SDKs get what exists). Undo
restores the original where our wrapper is still outermost, splices it out from under someone
else's wrapt wrapper where wrapt can (2.x), and otherwise leaves it inert: every wrapper checks
its :class:`PatchState` and passes straight through once undone.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import wrapt

from wasteaudit._internal.safety import internal_error


class PatchState:
    """Per-instrumentation switch: an undone wrapper that could not be removed passes through."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = True


class Patches:
    """The wrappers one ``instrument()`` installed, in order, so ``undo()`` can reverse them."""

    def __init__(self) -> None:
        self.items: list[tuple[type, str, Any, Any]] = []

    def wrap(self, module: str, cls_name: str, attr: str, wrapper: Callable[..., Any]) -> bool:
        """Wrap ``cls.attr`` where it is defined; False when the target does not exist here."""
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError):
            return False
        original = cls.__dict__.get(attr)
        if original is None or not callable(original):
            return False
        if any(c is cls and a == attr for c, a, _, _ in self.items):
            return False  # the same class re-exported under another module path
        patched = wrapt.FunctionWrapper(original, wrapper)
        setattr(cls, attr, patched)
        self.items.append((cls, attr, original, patched))
        return True

    def undo(self) -> None:
        for cls, attr, original, wrapper in reversed(self.items):
            try:
                if cls.__dict__.get(attr) is wrapper:
                    setattr(cls, attr, original)
                elif hasattr(wrapt, "unwrap_object"):  # someone wrapped on top of us: splice out
                    wrapt.unwrap_object(cls, attr, wrapper, missing_ok=True)
            except Exception as exc:  # left in place, passing through (state.active is False)
                internal_error("patch.undo", exc)
        self.items.clear()
