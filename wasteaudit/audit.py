"""``@audit``: group every LLM call made inside one task into a run, and capture its result.

The decorator only sets a contextvar on entry; nothing is stored unless an LLM call or a
score happens inside the run. The wrapped function's return value and exceptions pass
through unchanged; the return value is also captured (size-capped) so the scorer can tell
which generated text the app actually used.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, TypeVar, overload

from wasteaudit._internal import clock, pipeline
from wasteaudit._internal.runs import RunState, _current, current_run, materialize, serialize_value, to_record
from wasteaudit._internal.safety import internal_error
from wasteaudit.config import get_settings
from wasteaudit.records import ScoreRecord, new_id

F = TypeVar("F", bound=Callable[..., Any])
Validator = Callable[[Any], Any]


class _RunScope:
    """Enter/exit bookkeeping shared by the four function flavours."""

    __slots__ = ("name", "tags", "validate", "capture", "run", "token", "chunks", "chunk_bytes")

    def __init__(self, name: str, tags: dict[str, str], validate: Validator | None, capture: bool) -> None:
        self.name = name
        self.tags = tags
        self.validate = validate
        self.capture = capture
        self.run: RunState | None = None
        self.token: Any = None
        self.chunks: list[Any] | None = None
        self.chunk_bytes = 0

    def enter(self) -> None:
        try:
            parent = _current.get()
            self.run = RunState(
                name=self.name,
                tags=self.tags,
                parent=parent,
                started_at=clock.now(),
                capture_return=self.capture,
            )
            self.token = _current.set(self.run)
        except Exception as exc:
            internal_error("audit.enter", exc)

    def reset(self) -> None:
        if self.token is not None:
            try:
                _current.reset(self.token)
            except ValueError:
                # Generators resumed in another context cannot reset; restore by value instead.
                _current.set(self.run.parent if self.run is not None else None)
            self.token = None

    def collect(self, item: Any) -> None:
        """Remember what a generator yielded: for generators, that is the result."""
        if not self.capture:
            return
        if self.chunks is None:
            self.chunks = []
        limit = get_settings().max_return_bytes
        if self.chunk_bytes <= limit:
            self.chunks.append(item)
            self.chunk_bytes += len(item) if isinstance(item, (str, bytes)) else 64

    def finish(self, result: Any = None, exc: BaseException | None = None, *, generator: bool = False) -> None:
        run = self.run
        if run is None:
            return
        validation: bool | None = None
        if exc is None and self.validate is not None:
            validation = self._run_validator(run, self.chunks if generator else result)
        if not run.materialized:
            return
        try:
            settings = get_settings()
            text: str | None = None
            truncated = False
            if self.capture and settings.capture_return and exc is None:
                value = result
                if generator:
                    items = self.chunks or []
                    value = "".join(items) if all(isinstance(i, str) for i in items) else items
                text, truncated = serialize_value(value, settings.max_return_bytes)
            status = "failed" if exc is not None else "ok"
            record = to_record(
                run,
                status=status,
                error_type=type(exc).__name__ if exc is not None else None,
                return_value=text,
                truncated=truncated,
                validation=validation,
            )
            from wasteaudit._internal import tracing

            tracing.end_run_span(run, record, exc)
            pipeline.emit(record)
        except Exception as error:
            internal_error("audit.finish", error)

    def _run_validator(self, run: RunState, value: Any) -> bool:
        try:
            verdict = self.validate(value)  # type: ignore[misc]
            ok = bool(verdict) if verdict is not None else True
        except Exception:
            ok = False  # a validator that raises rejected the output
        try:
            materialize(run)
            pipeline.emit(ScoreRecord(id=new_id(), run_id=run.id, name="validation", value=1.0 if ok else 0.0, source="validator", created_at=clock.now()))
        except Exception as exc:
            internal_error("audit.validate", exc)
        return ok


def _wrap(func: Callable[..., Any], name: str, tags: dict[str, str], validate: Validator | None, capture: bool) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = _RunScope(name, tags, validate, capture)
            scope.enter()
            try:
                agen = func(*args, **kwargs)
            finally:
                scope.reset()
            sent: Any = None
            try:
                while True:
                    token = _current.set(scope.run)
                    try:
                        item = await agen.asend(sent)
                    finally:
                        _current.reset(token)
                    scope.collect(item)
                    try:
                        sent = yield item
                    except GeneratorExit:
                        await agen.aclose()
                        raise
                    except BaseException as thrown:
                        token = _current.set(scope.run)
                        try:
                            item = await agen.athrow(thrown)
                        finally:
                            _current.reset(token)
                        scope.collect(item)
                        sent = yield item
            except StopAsyncIteration:
                scope.finish(None, generator=True)
            except GeneratorExit:
                scope.finish(None, generator=True)
                raise
            except BaseException as exc:
                scope.finish(exc=exc, generator=True)
                raise

        return agen_wrapper

    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = _RunScope(name, tags, validate, capture)
            scope.enter()
            try:
                gen = func(*args, **kwargs)
            finally:
                scope.reset()
            returned: Any = None
            try:
                sent: Any = None
                while True:
                    token = _current.set(scope.run)
                    try:
                        item = gen.send(sent)
                    finally:
                        _current.reset(token)
                    scope.collect(item)
                    try:
                        sent = yield item
                    except GeneratorExit:
                        gen.close()
                        raise
                    except BaseException as thrown:
                        token = _current.set(scope.run)
                        try:
                            item = gen.throw(thrown)
                        finally:
                            _current.reset(token)
                        scope.collect(item)
                        sent = yield item
            except StopIteration as stop:
                returned = stop.value
                scope.finish(None, generator=True)
                return returned
            except GeneratorExit:
                scope.finish(None, generator=True)
                raise
            except BaseException as exc:
                scope.finish(exc=exc, generator=True)
                raise

        return gen_wrapper

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = _RunScope(name, tags, validate, capture)
            scope.enter()
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                scope.reset()
                scope.finish(exc=exc)
                raise
            scope.reset()
            scope.finish(result)
            return result

        return async_wrapper

    @functools.wraps(func)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        scope = _RunScope(name, tags, validate, capture)
        scope.enter()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            scope.reset()
            scope.finish(exc=exc)
            raise
        scope.reset()
        scope.finish(result)
        return result

    return sync_wrapper


@overload
def audit(func: F) -> F: ...


@overload
def audit(
    name: str | None = None,
    *,
    tags: dict[str, str] | None = None,
    validate: Validator | None = None,
    capture_return: bool = True,
) -> Callable[[F], F]: ...


def audit(
    name: Any = None,
    *,
    tags: dict[str, str] | None = None,
    validate: Validator | None = None,
    capture_return: bool = True,
) -> Any:
    """Make each call of the decorated function one audit run.

    Use bare (``@audit``) or with options (``@audit(name="support.answer", tags={"team": "cx"})``).
    ``validate`` receives the result and returns truthy when it is acceptable; a falsy verdict or
    an exception marks the run's output invalid (quality 0). Works on sync, async, generator and
    async-generator functions; nested audited functions become child runs.
    """
    if callable(name) and tags is None and validate is None and capture_return is True:
        func = name
        return _wrap(func, _default_name(func), {}, None, True)
    if name is not None and not isinstance(name, str):
        raise TypeError("audit(name=...) takes a string; use @audit or @audit(name='...')")
    clean_tags = {str(k): str(v) for k, v in (tags or {}).items()}

    def decorator(func: F) -> F:
        return _wrap(func, name or _default_name(func), clean_tags, validate, capture_return)  # type: ignore[return-value]

    return decorator


def _default_name(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or ""
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", "function")
    return f"{module}.{qualname}" if module and module != "__main__" else qualname


def current_run_id() -> str | None:
    """The id of the innermost run, for returning to a client that sends feedback later."""
    run = current_run()
    return run.id if run is not None else None


def mark_used(value: Any) -> Any:
    """Record that ``value`` (text, parsed JSON, a choice) was used by the app; returns it unchanged."""
    run = current_run()
    if run is None:
        return value
    try:
        limit = get_settings().max_return_bytes
        if run.used_bytes < limit:
            text, _ = serialize_value(value, limit - run.used_bytes)
            if text is not None:
                run.used_values.append(text)
                run.used_bytes += len(text)
    except Exception as exc:
        internal_error("audit.mark_used", exc)
    return value


def score(value: bool | float, name: str = "quality", *, run_id: str | None = None, source: str = "api") -> str | None:
    """Attach a quality signal in [0, 1] to the current run, or to ``run_id`` (feedback that arrives later).

    Returns the run id the score was attached to, or None outside a run without ``run_id``.
    """
    if isinstance(value, bool):
        number = 1.0 if value else 0.0
    elif isinstance(value, (int, float)):
        number = float(value)
        if not 0.0 <= number <= 1.0:
            raise ValueError(f"score value must be a bool or a number in [0, 1]; got {value!r}")
    else:
        raise TypeError(f"score value must be a bool or a number in [0, 1]; got {type(value).__name__}")
    target = run_id
    if target is None:
        run = current_run()
        if run is None:
            return None
        materialize(run)
        target = run.id
    pipeline.emit(ScoreRecord(id=new_id(), run_id=target, name=name, value=number, source=source, raw_value=value, created_at=clock.now()))
    return target
