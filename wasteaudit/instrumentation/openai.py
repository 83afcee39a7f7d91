"""OpenAI SDK instrumentation: one :class:`CallRecord` (and one span) per SDK call.

Patched at class level with wrapt (reversible; every target guarded so older SDKs get what
exists):

* ``chat.completions`` ``create`` / ``parse``, ``responses`` ``create`` / ``parse`` (and the beta
  Responses ``create``), legacy ``completions.create`` — sync and async. ``parse`` calls ``_post``
  directly, so it is wrapped on its own; a ``LengthFinishReasonError`` /
  ``ContentFilterFinishReasonError`` it raises is recorded from its ``.completion`` and re-raised
  as the same object.
* The ``.stream()`` helpers: they build the request lazily and call the patched ``create`` from
  their manager's ``__enter__``; the managers are wrapped only to label the record ``stream``, and
  the helper streams' ``close()`` (which closes the HTTP response directly, bypassing the raw
  stream) is wrapped so an early exit still finishes the record at once.
* ``SyncAPIClient._send_request`` / ``AsyncAPIClient._send_request``: every HTTP attempt (retries
  included) is appended to the active call.

Streams without usage: when the app did not set ``stream_options``, the call is not a raw-response
call, ``openai_stream_usage`` is on and the host is allow-listed, ``include_usage`` is requested and
the extra usage-only chunk is hidden from the app; otherwise usage is recorded as missing, with the
reason in ``record.gaps``. Raw responses are returned unchanged; their data is read only from a body
that is already read.

Fail-open: any error of ours goes to ``internal_error``; if setting a call up fails, the original
method runs untouched.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from wasteaudit._internal.safety import internal_error
from wasteaudit.instrumentation._calls import active_call
from wasteaudit.instrumentation._openai_attempts import async_send, sync_send
from wasteaudit.instrumentation._openai_call import SDK, helper_method, sdk_types, start_call
from wasteaudit.instrumentation._openai_patch import Patches, PatchState
from wasteaudit.instrumentation._streams import AsyncStreamProxy, SyncStreamProxy


def _sync_call(api: str, method: str, state: PatchState) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not state.active or active_call.get() is not None:
            return wrapped(*args, **kwargs)
        call = start_call(api, method, instance, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        call.enter()
        try:
            result = wrapped(*args, **call.kwargs)
        except BaseException as error:
            call.exit()
            call.failed(error)
            raise
        call.exit()
        return call.returned(result)

    return wrapper


def _async_call(api: str, method: str, state: PatchState) -> Callable[..., Any]:
    async def run(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], helper: str | None) -> Any:
        if not state.active or active_call.get() is not None:
            return await wrapped(*args, **kwargs)
        call = start_call(api, helper or method, instance, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        call.enter()
        try:
            result = await wrapped(*args, **call.kwargs)
        except BaseException as error:
            call.exit()
            call.failed(error)
            raise
        call.exit()
        return call.returned(result)

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # The async stream helpers create this coroutine in stream() and await it in __aenter__:
        # remember a helper label present at creation time too.
        return run(wrapped, instance, args, kwargs, helper_method.get())

    return wrapper


# -- stream helpers ------------------------------------------------------------------------------


def _sync_enter(state: PatchState) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not state.active:
            return wrapped(*args, **kwargs)
        token = helper_method.set("stream")
        try:
            return wrapped(*args, **kwargs)
        finally:
            helper_method.reset(token)

    return wrapper


def _async_enter(state: PatchState) -> Callable[..., Any]:
    async def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not state.active:
            return await wrapped(*args, **kwargs)
        token = helper_method.set("stream")
        try:
            return await wrapped(*args, **kwargs)
        finally:
            helper_method.reset(token)

    return wrapper


def _end_raw_stream(instance: Any) -> None:
    """The helper closed its HTTP response directly: end our proxy around its raw stream too."""
    try:
        raw = getattr(instance, "_raw_stream", None)
        if isinstance(raw, (SyncStreamProxy, AsyncStreamProxy)):
            raw._self_end(None, False)
    except Exception as exc:
        internal_error("openai.helper_close", exc)


def _sync_close(state: PatchState) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return wrapped(*args, **kwargs)
        finally:
            if state.active:
                _end_raw_stream(instance)

    return wrapper


def _async_close(state: PatchState) -> Callable[..., Any]:
    async def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return await wrapped(*args, **kwargs)
        finally:
            if state.active:
                _end_raw_stream(instance)

    return wrapper


# -- patching ------------------------------------------------------------------------------------

# (module, class, attribute, kind, api, method)
_CALL_TARGETS: tuple[tuple[str, str, str, str, str], ...] = (
    ("openai.resources.chat.completions.completions", "Completions", "create", "chat.completions", "create"),
    ("openai.resources.chat.completions.completions", "AsyncCompletions", "create", "chat.completions", "create"),
    ("openai.resources.chat.completions.completions", "Completions", "parse", "chat.completions", "parse"),
    ("openai.resources.chat.completions.completions", "AsyncCompletions", "parse", "chat.completions", "parse"),
    ("openai.resources.responses.responses", "Responses", "create", "responses", "create"),
    ("openai.resources.responses.responses", "AsyncResponses", "create", "responses", "create"),
    ("openai.resources.responses.responses", "Responses", "parse", "responses", "parse"),
    ("openai.resources.responses.responses", "AsyncResponses", "parse", "responses", "parse"),
    ("openai.resources.beta.responses.responses", "Responses", "create", "responses", "create"),
    ("openai.resources.beta.responses.responses", "AsyncResponses", "create", "responses", "create"),
    ("openai.resources.completions", "Completions", "create", "completions", "create"),
    ("openai.resources.completions", "AsyncCompletions", "create", "completions", "create"),
    # Older layouts (the same class is found once: a re-export is not wrapped twice).
    ("openai.resources.chat.completions", "Completions", "create", "chat.completions", "create"),
    ("openai.resources.chat.completions", "AsyncCompletions", "create", "chat.completions", "create"),
    ("openai.resources.chat.completions", "Completions", "parse", "chat.completions", "parse"),
    ("openai.resources.chat.completions", "AsyncCompletions", "parse", "chat.completions", "parse"),
    ("openai.resources.responses", "Responses", "create", "responses", "create"),
    ("openai.resources.responses", "AsyncResponses", "create", "responses", "create"),
    ("openai.resources.responses", "Responses", "parse", "responses", "parse"),
    ("openai.resources.responses", "AsyncResponses", "parse", "responses", "parse"),
    # SDKs before chat.completions.parse/stream left beta: a separate class then
    ("openai.resources.beta.chat.completions", "Completions", "parse", "chat.completions", "parse"),
    ("openai.resources.beta.chat.completions", "AsyncCompletions", "parse", "chat.completions", "parse"),
)

# (module, class, attribute, factory(sync), factory(async))
_HOOK_TARGETS: tuple[tuple[str, str, str, Callable[[PatchState], Any], Callable[[PatchState], Any]], ...] = (
    ("openai._base_client", "SyncAPIClient", "_send_request", sync_send, async_send),
    ("openai._base_client", "AsyncAPIClient", "_send_request", sync_send, async_send),
    ("openai.lib.streaming.chat._completions", "ChatCompletionStreamManager", "__enter__", _sync_enter, _async_enter),
    ("openai.lib.streaming.chat._completions", "AsyncChatCompletionStreamManager", "__aenter__", _sync_enter, _async_enter),
    ("openai.lib.streaming.chat._completions", "ChatCompletionStream", "close", _sync_close, _async_close),
    ("openai.lib.streaming.chat._completions", "AsyncChatCompletionStream", "close", _sync_close, _async_close),
    ("openai.lib.streaming.responses._responses", "ResponseStreamManager", "__enter__", _sync_enter, _async_enter),
    ("openai.lib.streaming.responses._responses", "AsyncResponseStreamManager", "__aenter__", _sync_enter, _async_enter),
    ("openai.lib.streaming.responses._responses", "ResponseStream", "close", _sync_close, _async_close),
    ("openai.lib.streaming.responses._responses", "AsyncResponseStream", "close", _sync_close, _async_close),
)


def _is_async(cls_name: str, attr: str) -> bool:
    # Not inspect.iscoroutinefunction: the SDK's async ``create`` is a plain function
    # (``@required_args``) returning a coroutine. The SDK names every async class ``Async*``.
    return cls_name.startswith("Async") or attr == "__aenter__"


def instrument() -> Callable[[], None]:
    """Patch the installed openai SDK; returns the function that reverses it."""
    import openai  # noqa: F401 - ImportError here means there is nothing to instrument

    if not SDK:
        SDK.update(sdk_types())
    state = PatchState()
    patches = Patches()
    try:
        for module, cls_name, attr, api, method in _CALL_TARGETS:
            make_call = _async_call if _is_async(cls_name, attr) else _sync_call
            patches.wrap(module, cls_name, attr, make_call(api, method, state))
        for module, cls_name, attr, sync_factory, async_factory in _HOOK_TARGETS:
            make_hook = async_factory if _is_async(cls_name, attr) else sync_factory
            patches.wrap(module, cls_name, attr, make_hook(state))
    except BaseException:
        patches.undo()
        raise

    def undo() -> None:
        state.active = False
        patches.undo()

    return undo


def patched_targets() -> list[str]:
    """For diagnostics and tests: what ``instrument()`` finds in the installed SDK (defining module)."""
    found: list[str] = []
    for module, cls_name, attr, *_ in (*_CALL_TARGETS, *_HOOK_TARGETS):
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError):
            continue
        name = f"{cls.__module__}.{cls.__qualname__}.{attr}"
        if attr in cls.__dict__ and name not in found:
            found.append(name)
    return found
