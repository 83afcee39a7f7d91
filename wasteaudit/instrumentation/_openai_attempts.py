"""Every HTTP attempt of an OpenAI call, retries included: a wrapper on the SDK's ``_send_request``.

``SyncAPIClient._send_request`` / ``AsyncAPIClient._send_request`` run once per attempt inside
the SDK's retry loop, in the caller's thread or task, so the call being made is the one in the
``active_call`` context variable. Each attempt appends an :class:`AttemptRecord` (status code,
the transport error's class for connection errors and timeouts, request id, duration). Requests
outside an instrumented call pass straight through.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any, Callable

from wasteaudit._internal.safety import internal_error
from wasteaudit.instrumentation._calls import CallTracker, active_call
from wasteaudit.instrumentation._openai_patch import PatchState

# Set while an attempt is being recorded, so a second patch layer never records it twice.
in_send: ContextVar[bool] = ContextVar("wasteaudit_openai_send", default=False)


def _attempt_fields(response: Any) -> tuple[int | None, str | None]:
    status = getattr(response, "status_code", None)
    headers = getattr(response, "headers", None)
    request_id = headers.get("x-request-id") if headers is not None else None
    return (status if type(status) is int else None), (request_id if type(request_id) is str else None)


def sync_send(state: PatchState) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        tracker = active_call.get()
        if tracker is None or not state.active or in_send.get():
            return wrapped(*args, **kwargs)
        try:
            attempt = tracker.attempt_started()
        except Exception as exc:
            internal_error("openai.attempt", exc)
            return wrapped(*args, **kwargs)
        started = time.perf_counter()
        token = in_send.set(True)
        try:
            response = wrapped(*args, **kwargs)
        except BaseException as error:
            CallTracker.attempt_ended(attempt, started=started, error_type=type(error).__name__)
            raise
        finally:
            in_send.reset(token)
        try:
            status, request_id = _attempt_fields(response)
            CallTracker.attempt_ended(attempt, started=started, status_code=status, request_id=request_id)
        except Exception as exc:
            internal_error("openai.attempt", exc)
        return response

    return wrapper


def async_send(state: PatchState) -> Callable[..., Any]:
    async def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        tracker = active_call.get()
        if tracker is None or not state.active or in_send.get():
            return await wrapped(*args, **kwargs)
        try:
            attempt = tracker.attempt_started()
        except Exception as exc:
            internal_error("openai.attempt", exc)
            return await wrapped(*args, **kwargs)
        started = time.perf_counter()
        token = in_send.set(True)
        try:
            response = await wrapped(*args, **kwargs)
        except BaseException as error:
            CallTracker.attempt_ended(attempt, started=started, error_type=type(error).__name__)
            raise
        finally:
            in_send.reset(token)
        try:
            status, request_id = _attempt_fields(response)
            CallTracker.attempt_ended(attempt, started=started, status_code=status, request_id=request_id)
        except Exception as exc:
            internal_error("openai.attempt", exc)
        return response

    return wrapper
