"""ASGI middleware: each HTTP request is one audit run, named by its route template.

    from fastapi import FastAPI
    from wasteaudit.integrations.asgi import WasteAuditMiddleware

    app = FastAPI()
    app.add_middleware(WasteAuditMiddleware, run_id_header="x-wasteaudit-run-id")

Works with any ASGI 3 app and needs no dependency. LLM calls made while serving a request (in
the handler, in a streamed body, in a threadpool the framework copies the context into) belong
to its run; ``wasteaudit.current_run_id()`` returns the run id inside the handler. A request
that makes no LLM call and no score records nothing (see ``record_all_requests``).

The run's name is the route template (``/users/{user_id}``, not ``/users/42``), read from
``scope["route"]`` that Starlette and FastAPI set after routing (mount prefixes included);
other frameworks can pass ``run_name``. Tags: ``http.request.method`` and
``http.response.status_code``. The run ends when the last body chunk is sent
(``more_body=False``), so a streamed (SSE) response's calls are inside it; it is recorded when
the app returns (background tasks included), or when the client went away and the app stopped.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping, MutableMapping

from wasteaudit._internal import clock
from wasteaudit._internal.runs import RunState, _current
from wasteaudit.integrations._request import NO_ROUTE, ROUTE_KEY, RUN_ID_KEY, clean_header, clean_tags, close_run, keep_body, open_run
from wasteaudit.integrations._response_body import ResponseCapture

__all__ = ("WasteAuditMiddleware", "route_template", "NO_ROUTE", "RUN_ID_KEY")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def route_template(scope: Mapping[str, Any], root_path: str = "") -> str | None:
    """The matched route's template (``/items/{item_id}``) after routing, or None.

    ``root_path``: the scope's ``root_path`` before routing; what a mount added to it since is
    the mount's prefix, put in front of the inner route's template.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    current = scope.get("root_path") or ""
    prefix = current[len(root_path):] if current.startswith(root_path) else ""
    if type(route).__name__ == "Mount":  # a mounted app with no router of its own: the mount is the route
        return (prefix or path) + "/{path}"
    return prefix + path if prefix else path


class _Exchange:
    """Per-request state: the run, the status, when the body ended; wraps ``send``."""

    __slots__ = ("middleware", "scope", "root_path", "downstream", "run", "status", "ended_at", "headers", "capture")

    def __init__(self, middleware: "WasteAuditMiddleware", scope: Scope, downstream: Send) -> None:
        self.middleware = middleware
        self.scope = scope
        self.root_path = scope.get("root_path") or ""
        self.downstream = downstream
        self.status: int | None = None
        self.ended_at: float | None = None
        self.run: RunState | None = None
        self.headers: Any = ()
        self.capture: ResponseCapture | None = None

    def name(self) -> str | None:
        namer = self.middleware.run_name
        if namer is not None:
            return namer(self.scope)
        return route_template(self.scope, self.root_path) or self.scope.get(ROUTE_KEY)

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message.get("status")
            self.headers = message.get("headers") or ()
            header = self.middleware.header
            if header is not None and self.run is not None:
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), (header, self.run.id.encode("ascii"))]
        elif kind == "http.response.body":
            run = self.run
            if run is not None and run.materialized and self.middleware.capture_response:
                body = message.get("body")
                if body:
                    keep_body(self, body)
            if not message.get("more_body", False) and self.ended_at is None:
                run = self.run
                if run is not None and (run.materialized or self.middleware.record_all):  # else nothing will be recorded
                    self.ended_at = clock.now()
        await self.downstream(message)


class WasteAuditMiddleware:
    """Make each HTTP request one audit run (a pure ASGI middleware; no framework needed).

    Args:
        app: the ASGI app to wrap.
        run_id_header: also send the run id in this response header (opt-in, e.g.
            ``"x-wasteaudit-run-id"``), so a front end can send feedback for it later.
        record_all_requests: record a run for every request, even those that made no LLM call
            and no score (default False: such requests cost a few microseconds and store nothing).
        run_name: ``scope -> name`` for apps whose router does not set ``scope["route"]``
            (return None to keep the default).
        tags: static tags put on every recorded run (``{"service": "support-api"}``).
        capture_response: keep the response body (up to ``max_return_bytes``) as the run's
            result, as ``@audit`` keeps a return value, so the scorer can tell which LLM output
            reached the client (``unused`` waste); the content mode applies to it. Also off
            when the ``capture_return`` setting is.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        run_id_header: str | None = None,
        record_all_requests: bool = False,
        run_name: Callable[[Mapping[str, Any]], str | None] | None = None,
        tags: Mapping[str, str] | None = None,
        capture_response: bool = True,
    ) -> None:
        self.app = app
        self.capture_response = capture_response
        header = clean_header(run_id_header)
        self.header: bytes | None = header.encode("ascii") if header else None
        self.record_all = record_all_requests
        self.run_name = run_name
        self.tags = clean_tags(tags)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(self, scope, send)
        run, token = open_run(self.tags, exchange.name)
        exchange.run = run
        scope[RUN_ID_KEY] = run.id
        try:
            await self.app(scope, receive, exchange.send)
        except BaseException as exc:
            _reset(token, run)
            close_run(run, method=scope.get("method", ""), status=exchange.status or 500, exc=exc, ended_at=exchange.ended_at, record_all=self.record_all)
            run.namer = None  # break the run <-> exchange cycle: freed by refcounting, not the cyclic GC
            raise
        _reset(token, run)
        if run.materialized or self.record_all:
            close_run(run, method=scope.get("method", ""), status=exchange.status, exc=None, ended_at=exchange.ended_at, record_all=self.record_all, response=exchange.capture)
        run.namer = None  # break the run <-> exchange cycle: freed by refcounting, not the cyclic GC


def _reset(token: Any, run: RunState) -> None:
    try:
        _current.reset(token)
    except ValueError:  # the app returned in another context (should not happen in ASGI); restore by value
        _current.set(run.parent)

