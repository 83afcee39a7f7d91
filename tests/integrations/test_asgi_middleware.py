"""ASGI middleware with real FastAPI and Starlette apps under their test client, real OpenAI SDK calls
against the loopback server: one run per request, named by route template, feedback by run id."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

fastapi = pytest.importorskip("fastapi")
from contextlib import asynccontextmanager  # noqa: E402

from fastapi import FastAPI, WebSocket  # noqa: E402
from fastapi.responses import StreamingResponse  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from instrumentation.openai_support import _shared_llm_server, aoai, instrumented, llm_server, oai  # noqa: E402,F401
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse  # noqa: E402
from starlette.routing import Mount, Route  # noqa: E402

import wasteaudit  # noqa: E402
from wasteaudit.integrations.asgi import NO_ROUTE, WasteAuditMiddleware  # noqa: E402
from wasteaudit.integrations.feedback import feedback_route, feedback_router  # noqa: E402
from wasteaudit.localllm import Reply  # noqa: E402
from wasteaudit.localllm import openai_bodies as ob  # noqa: E402

HEADER = "x-wasteaudit-run-id"
MESSAGES = [{"role": "user", "content": "Say hello"}]


def make_app(client_factory: Any, aclient_factory: Any, **options: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(WasteAuditMiddleware, **options)
    client = client_factory()
    aclient = aclient_factory()
    seen: dict[str, Any] = {}
    app.state.seen = seen

    @app.get("/users/{user_id}/greeting")
    def greeting(user_id: int) -> dict[str, Any]:  # sync: FastAPI runs it in a thread pool
        seen["run_id"] = wasteaudit.current_run_id()
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return {"user": user_id, "text": reply.choices[0].message.content}

    @app.post("/items/{item_id}/summary")
    async def summary(item_id: str) -> dict[str, Any]:
        reply = await aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return {"item": item_id, "text": reply.choices[0].message.content}

    @app.get("/health")
    def health() -> dict[str, str]:
        seen["health_run_id"] = wasteaudit.current_run_id()
        return {"ok": "yes"}

    @app.get("/boom/{n}")
    def boom(n: int) -> dict[str, str]:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        raise RuntimeError("handler failed after the LLM call")

    @app.get("/stream/{topic}")
    async def stream(topic: str) -> StreamingResponse:
        async def events() -> Any:
            chunks = await aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield f"data: {chunk.choices[0].delta.content}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app.include_router(feedback_router(), prefix="/api")
    return app


@pytest.fixture
def app(oai, aoai) -> FastAPI:
    return make_app(oai, aoai, run_id_header=HEADER)


def test_each_request_is_one_run_named_by_its_route_template(app, llm_server, records) -> None:
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi user")), Reply(json=ob.chat_completion("Hi item")))
    with TestClient(app) as http:
        first = http.get("/users/42/greeting")
        second = http.post("/items/abc/summary")
    assert first.json() == {"user": 42, "text": "Hi user"}
    assert second.json() == {"item": "abc", "text": "Hi item"}
    runs = {r.name: r for r in records.runs}
    assert set(runs) == {"/users/{user_id}/greeting", "/items/{item_id}/summary"}
    get_run, post_run = runs["/users/{user_id}/greeting"], runs["/items/{item_id}/summary"]
    assert get_run.tags == {"http.request.method": "GET", "http.response.status_code": "200"}
    assert post_run.tags == {"http.request.method": "POST", "http.response.status_code": "200"}
    assert get_run.status == "ok" and get_run.ended_at >= get_run.started_at
    by_run = {c.run_id: c for c in records.calls}
    assert by_run[get_run.id].function == "/users/{user_id}/greeting"
    assert by_run[post_run.id].function == "/items/{item_id}/summary"


def test_run_id_reaches_the_handler_and_the_opt_in_header(app, llm_server, records) -> None:
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi")))
    with TestClient(app) as http:
        response = http.get("/users/7/greeting")
    (run,) = records.runs
    assert response.headers[HEADER] == run.id == app.state.seen["run_id"]


def test_no_header_unless_asked(oai, aoai, llm_server, records) -> None:
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi")))
    with TestClient(make_app(oai, aoai)) as http:
        response = http.get("/users/7/greeting")
    assert response.status_code == 200
    assert HEADER not in response.headers
    assert len(records.runs) == 1


def test_request_without_llm_call_records_nothing(app, records) -> None:
    with TestClient(app) as http:
        response = http.get("/health")
    assert response.json() == {"ok": "yes"}
    assert app.state.seen["health_run_id"] == response.headers[HEADER]  # the handler still had a run id
    assert records.runs == [] and records.calls == []


def test_record_all_requests_stores_runs_without_calls(oai, aoai, records) -> None:
    with TestClient(make_app(oai, aoai, record_all_requests=True, tags={"service": "api"})) as http:
        http.get("/health")
        http.get("/no/such/page")
    runs = sorted(records.runs, key=lambda r: r.name)
    assert [(r.name, r.tags["http.response.status_code"], r.status) for r in runs] == [("(no route)", "404", "ok"), ("/health", "200", "ok")]
    assert all(r.tags["service"] == "api" and r.tags["http.request.method"] == "GET" for r in runs)


def test_handler_error_fails_the_run_and_still_propagates(app, llm_server, records) -> None:
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi")))
    with TestClient(app, raise_server_exceptions=True) as http:
        with pytest.raises(RuntimeError, match="handler failed"):
            http.get("/boom/3")
    (run,) = records.runs
    assert run.name == "/boom/{n}" and run.status == "failed" and run.error_type == "RuntimeError"
    assert run.tags["http.response.status_code"] == "500"
    assert records.calls[0].run_id == run.id


def test_streamed_response_ends_the_run_after_the_last_chunk(app, llm_server, records) -> None:
    llm_server.enqueue(Reply(sse=ob.chat_chunks(["Hel", "lo", " there"], include_usage=True)))
    with TestClient(app) as http:
        with http.stream("GET", "/stream/news") as response:
            body = "".join(response.iter_text())
            run_id = response.headers[HEADER]
    assert body == "data: Hel\n\ndata: lo\n\ndata:  there\n\ndata: [DONE]\n\n"
    (run,) = records.runs
    (call,) = records.calls
    assert run.id == run_id and run.name == "/stream/{topic}"
    assert call.run_id == run.id and call.output_tokens is not None
    assert call.ended_at <= run.ended_at  # the call (consumed while streaming) lies inside the run


def test_client_disconnect_mid_stream_still_records_the_run(app, llm_server, records) -> None:
    """Drive the ASGI app directly: the client hangs up after the first event."""
    llm_server.enqueue(Reply(sse=ob.chat_chunks(["a", "b", "c", "d"]), event_delay_s=0.02))
    sent: list[dict[str, Any]] = []
    first_body = asyncio.Event()

    received: list[int] = []

    async def receive() -> dict[str, Any]:
        received.append(1)
        if len(received) == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await first_body.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            first_body.set()

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/stream/late", "raw_path": b"/stream/late", "root_path": "", "query_string": b"", "headers": [],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}

    async def main() -> None:
        await asyncio.wait_for(app(scope, receive, send), timeout=20)

    asyncio.run(main())
    (run,) = records.runs
    assert run.name == "/stream/{topic}" and run.tags["http.response.status_code"] == "200"
    assert not any(m["type"] == "http.response.body" and not m.get("more_body") for m in sent[1:-1])
    assert records.calls and records.calls[0].run_id == run.id


def test_feedback_by_run_id_lands_as_a_score(app, llm_server, records) -> None:
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi")))
    with TestClient(app) as http:
        run_id = http.get("/users/1/greeting").headers[HEADER]
        thumbs = http.post("/api/feedback", json={"run_id": run_id, "score": "up"})
        number = http.post("/api/feedback", json={"run_id": run_id, "score": 0.25, "name": "helpful"})
    assert thumbs.status_code == 202 and thumbs.json() == {"run_id": run_id, "name": "feedback", "score": 1.0}
    assert number.status_code == 202
    assert [(s.run_id, s.name, s.value, s.source) for s in records.scores] == [
        (run_id, "feedback", 1.0, "feedback"),
        (run_id, "helpful", 0.25, "feedback"),
    ]
    # the feedback requests themselves made no LLM call: no extra runs
    assert [r.id for r in records.runs] == [run_id]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"run_id": "42", "score": 1}', 422, "run_id"),
        (b'{"run_id": "' + b"a" * 32 + b'", "score": 1.5}', 422, "score"),
        (b'{"run_id": "' + b"a" * 32 + b'", "score": "meh"}', 422, "score"),
        (b'{"run_id": "' + b"a" * 32 + b'", "score": 1, "name": "bad name!"}', 422, "name"),
        (b'{"run_id": "' + b"a" * 32 + b'", "score": 1, "extra": 2}', 422, "unknown"),
        (b'{"run_id": "' + b"a" * 32 + b'", "score": 1, "name": "' + b"x" * 5000 + b'"}', 413, "4096"),
    ],
)
def test_invalid_feedback_is_refused_with_the_reason(app, records, body: bytes, status: int, message: str) -> None:
    with TestClient(app) as http:
        response = http.post("/api/feedback", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert message in response.json()["error"]
    assert records.scores == []


def test_starlette_mounts_name_runs_with_the_mount_prefix(oai, llm_server, records) -> None:
    client = oai()

    def answer(request: Any) -> JSONResponse:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return JSONResponse({"id": request.path_params["doc_id"], "text": reply.choices[0].message.content})

    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        await PlainTextResponse("raw")(scope, receive, send)

    inner = Starlette(routes=[Route("/docs/{doc_id}", answer)])
    app = Starlette(routes=[Mount("/v1", app=inner), Mount("/files", app=raw_app), feedback_route("/feedback")])
    app.add_middleware(WasteAuditMiddleware)
    llm_server.enqueue(Reply(json=ob.chat_completion("A")), Reply(json=ob.chat_completion("B")))
    with TestClient(app) as http:
        assert http.get("/v1/docs/9").json() == {"id": "9", "text": "A"}
        assert http.get("/files/x/y.txt").text == "raw"
        run_id = records.runs[0].id
        assert http.post("/feedback", json={"run_id": run_id, "score": True}).status_code == 202
    assert sorted(r.name for r in records.runs) == ["/files/{path}", "/v1/docs/{doc_id}"]
    assert records.scores[0].run_id == run_id


def test_custom_run_name_for_apps_without_a_router(oai, llm_server, records) -> None:
    client = oai()

    async def bare_asgi(scope: Any, receive: Any, send: Any) -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        await PlainTextResponse("ok")(scope, receive, send)

    llm_server.enqueue(Reply(json=ob.chat_completion("A")), Reply(json=ob.chat_completion("B")))
    # no ``with``: a bare app has no lifespan protocol
    assert TestClient(WasteAuditMiddleware(bare_asgi)).get("/anything/1").text == "ok"
    assert TestClient(WasteAuditMiddleware(bare_asgi, run_name=lambda scope: f"bare {scope['method']}")).get("/anything/2").text == "ok"
    assert [r.name for r in records.runs] == [NO_ROUTE, "bare GET"]


def test_responses_are_unchanged_by_the_middleware(oai, aoai, llm_server, records) -> None:
    def fetch(app: FastAPI) -> tuple[int, dict[str, Any], Any]:
        llm_server.enqueue(Reply(json=ob.chat_completion("Same")))
        with TestClient(app) as http:
            response = http.get("/users/5/greeting")
        headers = {k: v for k, v in response.headers.items() if k != HEADER}
        return response.status_code, headers, response.json()

    plain = FastAPI()
    plain.router = make_app(oai, aoai).router  # same routes, no middleware
    assert fetch(make_app(oai, aoai, run_id_header=HEADER)) == fetch(plain)


def test_websocket_and_lifespan_pass_through(records) -> None:
    started: list[bool] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        started.append(True)
        yield

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(WasteAuditMiddleware, record_all_requests=True)

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text(str(wasteaudit.current_run_id()))
        await socket.close()

    with TestClient(app) as http:
        with http.websocket_connect("/ws") as socket:
            assert socket.receive_text() == "None"
    assert started == [True]
    assert records.runs == []


def test_run_span_is_named_by_route_and_parents_the_call_span(app, llm_server, records, spans) -> None:
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi")))
    with TestClient(app) as http:
        http.get("/users/3/greeting")
    by_name = {s.name: s for s in spans.spans}
    run_span = by_name["audit /users/{user_id}/greeting"]
    (call_span,) = [s for s in spans.spans if s is not run_span]
    assert call_span.parent is not None and call_span.parent.span_id == run_span.context.span_id
    assert run_span.attributes["wasteaudit.run.name"] == "/users/{user_id}/greeting"
    assert '"http.response.status_code": "200"' in run_span.attributes["wasteaudit.run.tags"]


# -- the response body as the run's result ---------------------------------------------------------


def _unused_tokens(records: Any) -> int:
    """Tokens the rules scorer (no embeddings) labels unused for these records' calls."""
    from wasteaudit.scoring.engine import Scorer

    result = Scorer(embedder=None).score(records.calls, {r.id: r for r in records.runs})
    return sum(f.tokens for f in result.findings if f.kind == "unused")


def test_the_response_body_is_the_runs_result_and_shows_which_output_was_used(oai, aoai, llm_server, records) -> None:
    answer = "Paris is the capital of France.\nIt lies on the Seine.\nIts population is about two million."
    app = make_app(oai, aoai)
    client = oai()

    @app.get("/short")
    def short() -> dict[str, Any]:  # shows only the first line of the answer
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return {"answer": (reply.choices[0].message.content or "").splitlines()[0]}

    llm_server.enqueue(Reply(json=ob.chat_completion(answer)), Reply(json=ob.chat_completion(answer)))
    with TestClient(app) as http:
        assert http.get("/users/7/greeting").json() == {"user": 7, "text": answer}
        assert http.get("/short").json() == {"answer": "Paris is the capital of France."}
    runs = {r.name: r for r in records.runs}
    full, short_run = runs["/users/{user_id}/greeting"], runs["/short"]
    assert json.loads(full.return_value) == {"user": 7, "text": answer} and not full.return_truncated
    assert json.loads(short_run.return_value) == {"answer": "Paris is the capital of France."}

    full_calls = [c for c in records.calls if c.run_id == full.id]
    short_calls = [c for c in records.calls if c.run_id == short_run.id]
    records_full = type("R", (), {"calls": full_calls, "runs": [full]})()
    records_short = type("R", (), {"calls": short_calls, "runs": [short_run]})()
    assert _unused_tokens(records_full) == 0  # everything the model wrote reached the client
    assert _unused_tokens(records_short) > 0  # two of its three lines never did


def test_a_streamed_body_is_joined_back_into_the_answer(app, llm_server, records) -> None:
    llm_server.enqueue(Reply(sse=ob.chat_chunks(["Hel", "lo", " there"], include_usage=True)))
    with TestClient(app) as http:
        with http.stream("GET", "/stream/news") as response:
            "".join(response.iter_text())
    (run,) = records.runs
    assert json.loads(run.return_value) == {"(text)": "Hello there"}


def test_no_result_is_kept_when_capture_is_off_or_the_request_failed(oai, aoai, llm_server, records) -> None:
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi")), Reply(json=ob.chat_completion("Hi")))
    with TestClient(make_app(oai, aoai, capture_response=False)) as http:
        assert http.get("/users/1/greeting").status_code == 200
    with TestClient(make_app(oai, aoai), raise_server_exceptions=False) as http:
        assert http.get("/boom/1").status_code == 500
    assert [r.return_value for r in records.runs] == [None, None]


def test_the_result_is_capped_at_max_return_bytes(oai, aoai, llm_server, records) -> None:
    from wasteaudit import config

    previous = config.get_settings()
    config.set_settings(config.settings_from_env(max_return_bytes=1024, _explicit=True))
    try:
        llm_server.enqueue(Reply(json=ob.chat_completion("word " * 2000)))
        with TestClient(make_app(oai, aoai)) as http:
            assert len(http.get("/users/1/greeting").content) > 10_000
    finally:
        config.set_settings(previous)
    (run,) = records.runs
    assert run.return_truncated and len(run.return_value.encode()) <= 1024
