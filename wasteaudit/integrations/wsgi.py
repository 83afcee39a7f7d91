"""WSGI middleware: each HTTP request is one audit run, named by its route template.

    from flask import Flask
    from wasteaudit.integrations.wsgi import WasteAuditWSGIMiddleware

    app = Flask(__name__)
    app.wsgi_app = WasteAuditWSGIMiddleware(app.wsgi_app, run_id_header="x-wasteaudit-run-id")

Works with any WSGI app and needs no dependency. The run is current while the app builds the
response and while the server iterates a streamed body (each ``next()`` runs inside it), so
LLM calls made by a generator response belong to it too. It ends when the body is exhausted
or closed (PEP 3333: the server always calls ``close()``, also when the client went away).

The name is Flask's/Werkzeug's matched rule (``/users/<int:user_id>``, from
``environ["werkzeug.request"].url_rule``); other frameworks can pass ``run_name``.
A request that makes no LLM call and no score records nothing (see ``record_all_requests``).
"""

from __future__ import annotations

from contextvars import Context, copy_context
from typing import Any, Callable, Iterable, Iterator, Mapping

from wasteaudit._internal import clock
from wasteaudit._internal.runs import RunState, _current, resolve_name
from wasteaudit.integrations._request import NO_ROUTE, ROUTE_KEY, RUN_ID_KEY, clean_header, clean_tags, close_run, keep_body, open_run
from wasteaudit.integrations._response_body import ResponseCapture

__all__ = ("WasteAuditWSGIMiddleware", "werkzeug_rule", "NO_ROUTE", "RUN_ID_KEY")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def werkzeug_rule(environ: Mapping[str, Any]) -> str | None:
    """The URL rule Werkzeug (Flask) matched for this request (``/users/<int:user_id>``), or None."""
    request = environ.get("werkzeug.request")
    rule = getattr(request, "url_rule", None)
    text = getattr(rule, "rule", None)
    return text if isinstance(text, str) else None


class _Exchange:
    """Per-request state: the run, the status, the body's end; wraps ``start_response``."""

    __slots__ = ("middleware", "environ", "downstream", "run", "status", "ended_at", "finished", "headers", "capture")

    def __init__(self, middleware: "WasteAuditWSGIMiddleware", environ: Environ, downstream: StartResponse) -> None:
        self.middleware = middleware
        self.environ = environ
        self.downstream = downstream
        self.status: str | None = None
        self.ended_at: float | None = None
        self.finished = False
        self.run: RunState | None = None
        self.headers: list[tuple[str, str]] = []
        self.capture: ResponseCapture | None = None

    def name(self) -> str | None:
        namer = self.middleware.run_name
        if namer is not None:
            return namer(self.environ)
        return werkzeug_rule(self.environ) or self.environ.get(ROUTE_KEY)

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status = status
        self.headers = headers
        run = self.run
        if run is not None:
            # Flask forgets its request once the app returns: take the route name while it is known.
            resolve_name(run)
            header = self.middleware.header
            if header is not None:
                headers = [*headers, (header, run.id)]
        if exc_info is None:
            return self.downstream(status, headers)
        return self.downstream(status, headers, exc_info)

    def keep(self, chunk: bytes) -> None:
        """Keep a body chunk as part of the run's result (only once the run is recorded)."""
        if chunk and self.middleware.capture_response:
            keep_body(self, chunk)

    def status_code(self) -> int | None:
        try:
            return int(self.status[:3]) if self.status else None
        except ValueError:
            return None

    def finish(self, exc: BaseException | None = None) -> None:
        if self.finished or self.run is None:
            return
        self.finished = True
        run = self.run
        if run.materialized or self.middleware.record_all or exc is not None:
            close_run(
                run,
                method=self.environ.get("REQUEST_METHOD", ""),
                status=self.status_code() or (500 if exc is not None else None),
                exc=exc,
                ended_at=self.ended_at,
                record_all=self.middleware.record_all,
                response=self.capture,
            )
        run.namer = None  # break the run <-> exchange cycle: freed by refcounting, not the cyclic GC


class _Body:
    """The response body, iterated inside the request's run; ends the run at exhaustion or close().

    Each step runs in a copy of the request's context taken while its run was current
    (``Context.run``: one C call per chunk instead of a contextvar set and reset).
    """

    __slots__ = ("exchange", "body", "iterator", "context")

    def __init__(self, exchange: _Exchange, body: Iterable[bytes], context: Context) -> None:
        self.exchange = exchange
        self.body = body
        self.context = context
        self.iterator: Iterator[bytes] = context.run(iter, body)

    def __iter__(self) -> "_Body":
        return self

    def __next__(self) -> bytes:
        try:
            chunk = self.context.run(next, self.iterator)
            exchange = self.exchange
            if exchange.run.materialized:  # type: ignore[union-attr]
                exchange.keep(chunk)
            return chunk
        except StopIteration:
            exchange = self.exchange
            if exchange.ended_at is None:
                exchange.ended_at = clock.now()
            exchange.finish()  # exhausted: the run is over (close() will find it finished)
            raise
        except BaseException as exc:
            self.exchange.finish(exc)
            raise

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                self.context.run(close)
        finally:
            self.exchange.finish()


class WasteAuditWSGIMiddleware:
    """Make each HTTP request one audit run (a pure WSGI middleware; no framework needed).

    Args:
        app: the WSGI app to wrap (for Flask: ``app.wsgi_app``).
        run_id_header: also send the run id in this response header (opt-in).
        record_all_requests: record a run for every request, even those with no LLM call.
        run_name: ``environ -> name`` for apps that are not Werkzeug/Flask (None keeps the default).
        tags: static tags put on every recorded run.
        capture_response: keep the response body (up to ``max_return_bytes``) as the run's
            result, so the scorer can tell which LLM output reached the client (see the ASGI
            middleware); the content mode applies to it.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        run_id_header: str | None = None,
        record_all_requests: bool = False,
        run_name: Callable[[Mapping[str, Any]], str | None] | None = None,
        tags: Mapping[str, str] | None = None,
        capture_response: bool = True,
    ) -> None:
        self.app = app
        self.capture_response = capture_response
        self.header = clean_header(run_id_header)
        self.record_all = record_all_requests
        self.run_name = run_name
        self.tags = clean_tags(tags)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        exchange = _Exchange(self, environ, start_response)
        run, token = open_run(self.tags, exchange.name)
        exchange.run = run
        environ[RUN_ID_KEY] = run.id
        try:
            body = self.app(environ, exchange.start_response)
            if type(body) is list or type(body) is tuple:
                # Already built: no more LLM calls can happen for it; end now (ended_at: now), no wrapper.
                _current.reset(token)  # type: ignore[arg-type]
                if run.materialized:
                    for chunk in body:
                        exchange.keep(chunk)
                exchange.finish()
                return body
            wrapped = _Body(exchange, body, copy_context())
        except BaseException as exc:
            _current.reset(token)  # type: ignore[arg-type]
            exchange.finish(exc)
            raise
        _current.reset(token)  # type: ignore[arg-type]
        return wrapped
