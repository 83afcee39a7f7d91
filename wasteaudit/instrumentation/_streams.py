"""Transparent stream proxies that observe every item and finalize exactly once.

The proxy is a ``wrapt.ObjectProxy``: every attribute of the SDK stream (``response``,
``close``, helper internals) still resolves and ``isinstance`` still passes. Only iteration,
the context-manager protocol and ``close``/``aclose`` are overridden. The observer sees each
item as it passes (and may hide one: the usage-only chunk we asked for on the app's behalf),
and ``on_end`` runs once on whichever comes first: exhaustion, an error, ``close()``, context
exit, or garbage collection of an abandoned stream.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Protocol

import wrapt

from wasteaudit._internal.safety import internal_error
from wasteaudit.export import _hook as export_hook


class StreamObserver(Protocol):
    def on_item(self, item: Any) -> bool:
        """Record an item; return False to hide it from the app."""
        ...

    # Optional: ``items(next_item, end)``, a generator yielding the items the app sees, recording
    # each as ``on_item`` would (an observer's own loop, for its common items inline); ``end`` is
    # the proxy's end-once callback. Used by ``for`` loops while chunks are not timed.

    def on_end(self, error: BaseException | None, exhausted: bool) -> None:
        """The stream ended: ``exhausted`` when the SDK iterator finished by itself."""
        ...


def _end_once(observer: StreamObserver, state: list[bool], error: BaseException | None, exhausted: bool) -> None:
    if state[0]:
        return
    state[0] = True
    try:
        observer.on_end(error, exhausted)
    except Exception as exc:
        internal_error("streams.on_end", exc)


def _timed(observer: StreamObserver) -> Callable[[Any], Any]:
    """``observer.on_item``, noting each chunk's arrival on the call's record while metrics are
    recorded (``time_per_output_chunk``); untouched, and free per chunk, otherwise."""
    on_item = observer.on_item
    try:
        tracker = getattr(observer, "tracker", None) or getattr(getattr(observer, "call", None), "tracker", None)
        record = getattr(tracker, "record", None)
        if record is None or not export_hook.metrics_active():
            return on_item
        times: list[float] = []
        record.chunk_times = times
    except Exception as exc:
        internal_error("streams.timing", exc)
        return on_item
    note, clock = times.append, time.perf_counter

    def timed(item: Any) -> Any:
        note(clock())
        return on_item(item)

    return timed


def _collected(proxy: Any) -> None:
    try:
        state = proxy._self_state
    except AttributeError:  # __init__ did not complete
        return
    if not state[0]:
        _end_once(proxy._self_observer, state, None, False)


class SyncStreamProxy(wrapt.ObjectProxy):  # type: ignore[misc]
    """Wraps ``openai.Stream`` / ``anthropic.Stream`` (and anything iterable like them)."""

    def __init__(self, wrapped: Any, observer: StreamObserver) -> None:
        super().__init__(wrapped)
        self._self_observer = observer
        self._self_on_item = _timed(observer)
        self._self_state = [False]

    def _self_end(self, error: BaseException | None, exhausted: bool) -> None:
        _end_once(self._self_observer, self._self_state, error, exhausted)

    def __del__(self) -> None:
        # An abandoned stream (dropped without close): finish the record. A ``__del__`` rather
        # than ``weakref.finalize``, which costs a registry entry per stream.
        _collected(self)

    def __iter__(self) -> Iterator[Any]:
        # ``for chunk in stream`` resumes a generator once per chunk, which costs less than a
        # call to ``__next__`` (kept for apps that call ``next(stream)`` directly): the
        # observer's own when it has one, else the generic one. The SDK's own
        # ``Stream.__iter__`` also hands out an iterator other than the stream.
        observer = self._self_observer
        items = getattr(observer, "items", None)
        if items is not None and self._self_on_item == observer.on_item:  # chunks not timed
            return items(self.__wrapped__.__next__, self._self_end)  # type: ignore[no-any-return]
        return self._self_items()

    def _self_items(self) -> Iterator[Any]:
        next_item = self.__wrapped__.__next__
        on_item = self._self_on_item
        while True:
            try:
                item = next_item()
            except StopIteration:
                self._self_end(None, True)
                return
            except BaseException as exc:
                self._self_end(exc, False)
                raise
            try:
                keep = on_item(item) is not False
            except Exception as exc:
                internal_error("streams.on_item", exc)
                keep = True
            if keep:
                yield item

    def __next__(self) -> Any:
        # Once per chunk for ``next(stream)``: one call into the observer's bound method, nothing else.
        wrapped = self.__wrapped__
        on_item = self._self_on_item
        while True:
            try:
                item = wrapped.__next__()
            except StopIteration:
                self._self_end(None, True)
                raise
            except BaseException as exc:
                self._self_end(exc, False)
                raise
            try:
                if on_item(item) is not False:
                    return item
            except Exception as exc:
                internal_error("streams.on_item", exc)
                return item

    def __enter__(self) -> "SyncStreamProxy":
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc_info)
        finally:
            self._self_end(None, False)

    def close(self) -> Any:
        try:
            return self.__wrapped__.close()
        finally:
            self._self_end(None, False)


class AsyncStreamProxy(wrapt.ObjectProxy):  # type: ignore[misc]
    """Wraps ``openai.AsyncStream`` / ``anthropic.AsyncStream``."""

    def __init__(self, wrapped: Any, observer: StreamObserver) -> None:
        super().__init__(wrapped)
        self._self_observer = observer
        self._self_on_item = _timed(observer)
        self._self_state = [False]

    def _self_end(self, error: BaseException | None, exhausted: bool) -> None:
        _end_once(self._self_observer, self._self_state, error, exhausted)

    def __del__(self) -> None:
        # On collection only the record is finalized: no I/O, no awaiting from a finalizer.
        _collected(self)

    def __aiter__(self) -> "AsyncStreamProxy":
        return self

    async def __anext__(self) -> Any:
        wrapped = self.__wrapped__
        while True:
            try:
                item = await wrapped.__anext__()
            except StopAsyncIteration:
                self._self_end(None, True)
                raise
            except BaseException as exc:
                self._self_end(exc, False)
                raise
            try:
                if self._self_on_item(item) is not False:
                    return item
            except Exception as exc:
                internal_error("streams.on_item", exc)
                return item

    async def __aenter__(self) -> "AsyncStreamProxy":
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc_info)
        finally:
            self._self_end(None, False)

    async def close(self) -> Any:
        try:
            return await self.__wrapped__.close()
        finally:
            self._self_end(None, False)

    async def aclose(self) -> Any:
        try:
            closer = getattr(self.__wrapped__, "aclose", None) or self.__wrapped__.close
            return await closer()
        finally:
            self._self_end(None, False)
