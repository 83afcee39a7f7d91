"""Benchmark: CPU added per request by the web middleware when the request makes no LLM call.

    .venv/bin/python bench/bench_middleware.py                  # 41 rounds x 2,000 requests per app
    .venv/bin/python bench/bench_middleware.py --rounds 5 --requests 500 --json

Target (issue #8): at most 20 µs of CPU per request over the bare app, same process run.

Each pair runs the same app bare and wrapped, in interleaved rounds (bare, wrapped, bare, …)
so drift hits both; each round times ``--requests`` requests with ``time.process_time``.
Printed: the median per-request CPU of each side, and the added CPU as the median of the
per-round differences (wrapped minus the bare round just before it) with its interquartile range,
and the difference of the fastest rounds (least disturbed by other load: on a shared machine the
slow frameworks' medians swing by more than the middleware costs). Requests are made in-process with a
synthetic scope/receive/send (ASGI) or environ/start_response (WSGI): no server, no sockets.

* ``asgi-raw``: a minimal ASGI app (start + one body message), driven without an event loop
  (its awaits never suspend), so the figure is the middleware's own work;
* ``starlette``: a Starlette app with a router and three routes, on one asyncio loop;
* ``wsgi-raw``: a minimal WSGI app returning a list body;
* ``wsgi-stream``: the same with a generator body (the middleware wraps and iterates it);
* ``flask``: a Flask app with three routes (skipped when Flask is not installed).

The wrapped apps use the default options plus ``run_id_header`` (one header added).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_US = 20.0


# --- ASGI ----------------------------------------------------------------------------------


def _scope(path: str = "/items/42") -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": [(b"host", b"bench")],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    return None


async def raw_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok", "more_body": False})


def asgi_loopless(app: Any, n: int) -> float:
    """CPU seconds for n requests, each coroutine stepped once (it never suspends)."""
    start = time.process_time()
    for _ in range(n):
        coro = app(_scope(), _receive, _send)
        try:
            coro.send(None)
        except StopIteration:
            pass
        else:  # pragma: no cover - the app suspended: not a loop-less app
            raise RuntimeError("app suspended")
    return time.process_time() - start


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def item(request: Any) -> Any:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/health", item), Route("/users/{uid}", item), Route("/items/{item_id}", item)])


def asgi_loop(app: Any, n: int, loop: asyncio.AbstractEventLoop) -> float:
    async def many() -> None:
        for _ in range(n):
            await app(_scope(), _receive, _send)

    start = time.process_time()
    loop.run_until_complete(many())
    return time.process_time() - start


# --- WSGI ----------------------------------------------------------------------------------


def _environ(path: str = "/items/42") -> dict[str, Any]:
    import io

    return {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "", "SERVER_NAME": "bench",
            "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
            "wsgi.run_once": False, "HTTP_HOST": "bench"}


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
    return lambda data: None


def raw_wsgi(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"ok"]


def stream_wsgi(environ: Any, start_response: Any) -> Any:
    start_response("200 OK", [("content-type", "text/plain")])
    return (chunk for chunk in (b"o", b"k"))


def wsgi_run(app: Any, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        body = app(_environ(), _start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return time.process_time() - start


def flask_app() -> Any:
    from flask import Flask

    app = Flask(__name__)

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.get("/users/<int:uid>")
    def user(uid: int) -> str:
        return "ok"

    @app.get("/items/<item_id>")
    def item(item_id: str) -> str:
        return "ok"

    return app


# --- driver --------------------------------------------------------------------------------


def measure(name: str, bare: Callable[[int], float], wrapped: Callable[[int], float], rounds: int, requests: int) -> dict[str, Any]:
    bare(requests // 10 or 1)  # warm both (imports, caches)
    wrapped(requests // 10 or 1)
    bare_us: list[float] = []
    wrapped_us: list[float] = []
    for _ in range(rounds):
        bare_us.append(bare(requests) / requests * 1e6)
        wrapped_us.append(wrapped(requests) / requests * 1e6)
    b, w = statistics.median(bare_us), statistics.median(wrapped_us)
    # Paired: each round's wrapped minus the bare run just before it, so load drift cancels.
    deltas = sorted(wi - bi for bi, wi in zip(bare_us, wrapped_us))
    added = statistics.median(deltas)
    return {"app": name, "bare_us": round(b, 2), "wrapped_us": round(w, 2), "added_us": round(added, 2),
            "added_us_p25_p75": [round(deltas[len(deltas) // 4], 2), round(deltas[(3 * len(deltas)) // 4], 2)],
            "added_us_of_fastest_rounds": round(min(wrapped_us) - min(bare_us), 2),
            "target_us": TARGET_US, "within_target": added <= TARGET_US}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    from wasteaudit import config
    from wasteaudit.integrations.asgi import WasteAuditMiddleware
    from wasteaudit.integrations.wsgi import WasteAuditWSGIMiddleware

    # Storage off: a request without an LLM call must not touch it anyway.
    config.set_settings(config.settings_from_env(storage=False, _explicit=True))
    header = "x-wasteaudit-run-id"
    results = []

    wrapped_raw = WasteAuditMiddleware(raw_asgi, run_id_header=header)
    results.append(measure("asgi-raw", lambda n: asgi_loopless(raw_asgi, n), lambda n: asgi_loopless(wrapped_raw, n), args.rounds, args.requests))

    try:
        bare_star = starlette_app()
        wrapped_star = starlette_app()
        wrapped_star.add_middleware(WasteAuditMiddleware, run_id_header=header)
    except ImportError:
        pass
    else:
        loop = asyncio.new_event_loop()
        try:
            results.append(measure("starlette", lambda n: asgi_loop(bare_star, n, loop), lambda n: asgi_loop(wrapped_star, n, loop), args.rounds, args.requests))
        finally:
            loop.close()

    wrapped_wsgi = WasteAuditWSGIMiddleware(raw_wsgi, run_id_header=header)
    results.append(measure("wsgi-raw", lambda n: wsgi_run(raw_wsgi, n), lambda n: wsgi_run(wrapped_wsgi, n), args.rounds, args.requests))
    wrapped_stream = WasteAuditWSGIMiddleware(stream_wsgi, run_id_header=header)
    results.append(measure("wsgi-stream", lambda n: wsgi_run(stream_wsgi, n), lambda n: wsgi_run(wrapped_stream, n), args.rounds, args.requests))

    try:
        bare_flask = flask_app()
        wrapped_flask = flask_app()
        wrapped_flask.wsgi_app = WasteAuditWSGIMiddleware(wrapped_flask.wsgi_app, run_id_header=header)  # type: ignore[method-assign]
    except ImportError:
        pass
    else:
        results.append(measure("flask", lambda n: wsgi_run(bare_flask, n), lambda n: wsgi_run(wrapped_flask, n), args.rounds, args.requests))

    if args.json:
        print(json.dumps({"rounds": args.rounds, "requests": args.requests, "results": results}, indent=2))
    else:
        print(f"CPU per request, median of {args.rounds} interleaved rounds x {args.requests} requests (no LLM call):")
        print(f"{'app':<12} {'bare µs':>9} {'wrapped µs':>11} {'added µs':>9} {'IQR of added':>16} {'fastest-round added':>20}  target ≤ {TARGET_US:g} µs")
        for r in results:
            iqr = f"[{r['added_us_p25_p75'][0]}, {r['added_us_p25_p75'][1]}]"
            print(f"{r['app']:<12} {r['bare_us']:>9.2f} {r['wrapped_us']:>11.2f} {r['added_us']:>9.2f} {iqr:>16} {r['added_us_of_fastest_rounds']:>20.2f}  {'ok' if r['within_target'] else 'OVER'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
