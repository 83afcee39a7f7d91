"""``instrument()``, ``instrument_openai()``, ``instrument_anthropic()``: reversible, idempotent patches.

Each provider module is imported only when its instrument function is called, so
``import wasteaudit`` never imports an SDK. Each call returns a :class:`Handle` whose ``undo()``
(or ``with`` exit) reverses the patch; instrumenting twice returns the live handle again.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from typing import Any, Callable

from wasteaudit._internal.safety import internal_error

_lock = threading.Lock()
_active: dict[str, "Handle"] = {}


class Handle:
    """Reverses one instrumentation; also a context manager (``with instrument_openai(): ...``)."""

    def __init__(self, name: str, undo: Callable[[], None]) -> None:
        self.name = name
        self._undo: Callable[[], None] | None = undo

    @property
    def active(self) -> bool:
        return self._undo is not None

    def undo(self) -> None:
        with _lock:
            undo, self._undo = self._undo, None
            if _active.get(self.name) is self:
                del _active[self.name]
        if undo is not None:
            undo()

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.undo()

    def __repr__(self) -> str:
        return f"<wasteaudit instrumentation {self.name} {'active' if self.active else 'undone'}>"


class MultiHandle(Handle):
    """The handle ``instrument()`` returns: undoes every provider it instrumented."""

    def __init__(self, handles: list[Handle]) -> None:
        self.handles = handles
        super().__init__("all", self._undo_all)

    def _undo_all(self) -> None:
        for handle in reversed(self.handles):
            handle.undo()


def _instrument(name: str, module: str) -> Handle:
    with _lock:
        existing = _active.get(name)
        if existing is not None:
            return existing
        provider = importlib.import_module(module)
        undo = provider.instrument()
        handle = Handle(name, undo)
        _active[name] = handle
        return handle


def instrument_openai() -> Handle:
    """Record every call made through the ``openai`` SDK (all clients, sync and async)."""
    return _instrument("openai", "wasteaudit.instrumentation.openai")


def instrument_anthropic() -> Handle:
    """Record every call made through the ``anthropic`` SDK (all clients, sync and async)."""
    return _instrument("anthropic", "wasteaudit.instrumentation.anthropic")


def instrument() -> MultiHandle:
    """Instrument every supported SDK that is installed; skips the ones that are not."""
    handles: list[Handle] = []
    for name, fn in (("openai", instrument_openai), ("anthropic", instrument_anthropic)):
        if importlib.util.find_spec(name) is None:
            continue
        try:
            handles.append(fn())
        except Exception as exc:  # an SDK we cannot patch must not stop the app
            internal_error(f"instrument.{name}", exc)
    return MultiHandle(handles)


def active_instrumentations() -> dict[str, Any]:
    with _lock:
        return dict(_active)
