"""WSGI middleware with a real Flask app under its test client and real OpenAI SDK calls against
the loopback server: one run per request named by the URL rule, streamed bodies inside the run."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

flask = pytest.importorskip("flask")
from flask import Flask, Response, stream_with_context  # noqa: E402
from instrumentation.openai_support import _shared_llm_server, instrumented, llm_server, oai  # noqa: E402,F401

import wasteaudit  # noqa: E402
from wasteaudit.integrations.feedback import feedback_blueprint  # noqa: E402
from wasteaudit.integrations.wsgi import NO_ROUTE, WasteAuditWSGIMiddleware  # noqa: E402
from wasteaudit.localllm import Reply  # noqa: E402
from wasteaudit.localllm import openai_bodies as ob  # noqa: E402

HEADER = "x-wasteaudit-run-id"
MESSAGES = [{"role": "user", "content": "Say hello"}]


def make_app(client_factory: Any, **options: Any) -> Flask:
    app = Flask(__name__)
    client = client_factory()
    seen: dict[str, Any] = {}
    app.config["SEEN"] = seen

    @app.get("/users/<int:user_id>/greeting")
    def greeting(user_id: int) -> Any:
        seen["run_id"] = wasteaudit.current_run_id()
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return {"user": user_id, "text": reply.choices[0].message.content}

    @app.get("/health")
    def health() -> Any:
        return {"ok": "yes"}

    @app.get("/boom")
    def boom() -> Any:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        raise RuntimeError("handler failed after the LLM call")

    @app.get("/stream/<topic>")
    def stream(topic: str) -> Response:
        def events() -> Iterator[str]:
            chunks = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield f"data: {chunk.choices[0].delta.content}\n\n"

        return Response(stream_with_context(events()), mimetype="text/event-stream")

    @app.get("/plain-stream")
    def plain_stream() -> Response:
        def events() -> Iterator[str]:  # no stream_with_context: Flask's request is gone while it runs
            reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            yield reply.choices[0].message.content or ""

        return Response(events(), mimetype="text/plain")

    app.register_blueprint(feedback_blueprint("/api/feedback"))
    app.wsgi_app = WasteAuditWSGIMiddleware(app.wsgi_app, **options)  # type: ignore[method-assign]
    return app


@pytest.fixture
def app(oai) -> Flask:
    return make_app(oai, run_id_header=HEADER)


def test_each_request_is_one_run_named_by_its_url_rule(app, llm_server, records) -> None:
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi user")))
    response = app.test_client().get("/users/42/greeting")
    assert response.get_json() == {"user": 42, "text": "Hi user"}
    (run,) = records.runs
    (call,) = records.calls
    assert run.name == "/users/<int:user_id>/greeting" and call.function == run.name and call.run_id == run.id
    assert run.tags == {"http.request.method": "GET", "http.response.status_code": "200"}
    assert response.headers[HEADER] == run.id == app.config["SEEN"]["run_id"]


def test_request_without_llm_call_records_nothing(app, records) -> None:
    response = app.test_client().get("/health")
    assert response.get_json() == {"ok": "yes"} and HEADER in response.headers
    response.close()
    assert records.runs == []


def test_record_all_requests_names_unmatched_requests(oai, records) -> None:
    http = make_app(oai, record_all_requests=True).test_client()
    assert http.get("/health").get_data()  # a server reads every body
    missing = http.get("/missing")
    assert missing.status_code == 404 and missing.get_data()
    assert sorted((r.name, r.tags["http.response.status_code"]) for r in records.runs) == [(NO_ROUTE, "404"), ("/health", "200")]


def test_handler_error_gives_a_failed_run(app, llm_server, records) -> None:
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi")))
    response = app.test_client().get("/boom")  # Flask turns the exception into a 500
    assert response.status_code == 500 and response.get_data()
    (run,) = records.runs
    assert run.name == "/boom" and run.status == "failed" and run.error_type == "HTTP 500"


def test_streamed_body_calls_belong_to_the_run(app, llm_server, records) -> None:
    llm_server.enqueue(Reply(sse=ob.chat_chunks(["Hel", "lo"], include_usage=True)), Reply(json=ob.chat_completion("late")))
    http = app.test_client()
    first = http.get("/stream/news")
    second = http.get("/plain-stream")
    assert first.get_data(as_text=True) == "data: Hel\n\ndata: lo\n\n"
    assert second.get_data(as_text=True) == "late"
    runs = {r.name: r for r in records.runs}
    assert set(runs) == {"/stream/<topic>", "/plain-stream"}  # named at start_response, before Flask forgot the request
    calls = {c.run_id: c for c in records.calls}
    assert calls[runs["/stream/<topic>"].id].ended_at <= runs["/stream/<topic>"].ended_at
    assert runs["/plain-stream"].id in calls


def test_body_closed_early_still_records_the_run(app, llm_server, records) -> None:
    llm_server.enqueue(Reply(sse=ob.chat_chunks(["a", "b", "c"])))
    response = app.test_client().get("/stream/early", buffered=False)
    iterator = iter(response.response)
    assert next(iterator) == b"data: a\n\n"
    response.close()  # the client went away: the server closes the body
    (run,) = records.runs
    assert run.name == "/stream/<topic>" and records.calls[0].run_id == run.id


def test_feedback_blueprint_records_scores(app, llm_server, records) -> None:
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi")))
    http = app.test_client()
    first = http.get("/users/1/greeting")
    run_id = first.headers[HEADER]
    assert first.get_json()["text"] == "Hi"
    accepted = http.post("/api/feedback", json={"run_id": run_id, "score": "down"})
    refused = http.post("/api/feedback", json={"run_id": run_id, "score": 7})
    assert accepted.status_code == 202 and accepted.get_json()["score"] == 0.0
    assert refused.status_code == 422 and "score" in refused.get_json()["error"]
    assert [(s.run_id, s.name, s.value) for s in records.scores] == [(run_id, "feedback", 0.0)]


def test_plain_wsgi_app_with_custom_name(oai, llm_server, records) -> None:
    client = oai()

    def plain(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        start_response("201 Created", [("content-type", "text/plain")])
        return [b"made"]

    from werkzeug.test import Client

    llm_server.enqueue(Reply(json=ob.chat_completion("x")))
    wrapped = WasteAuditWSGIMiddleware(plain, run_name=lambda environ: "plain " + environ["REQUEST_METHOD"])
    response = Client(wrapped).post("/whatever")
    assert response.status_code == 201 and response.get_data() == b"made"
    (run,) = records.runs
    assert run.name == "plain POST" and run.tags["http.response.status_code"] == "201"


def test_the_response_body_is_the_runs_result(app, llm_server, records) -> None:
    """Built (Flask's list body) and streamed bodies: the run keeps what the client received."""
    llm_server.enqueue(
        Reply(json=ob.chat_completion("Hi user")),
        Reply(sse=ob.chat_chunks(["Hel", "lo"], include_usage=True)),
        Reply(json=ob.chat_completion("plain words")),
    )
    client = app.test_client()
    assert client.get("/users/3/greeting").get_json() == {"user": 3, "text": "Hi user"}
    assert client.get("/stream/x").get_data(as_text=True) == "data: Hel\n\ndata: lo\n\n"
    assert client.get("/plain-stream").get_data(as_text=True) == "plain words"
    results = {r.name: r.return_value for r in records.runs}
    assert json.loads(results["/users/<int:user_id>/greeting"]) == {"user": 3, "text": "Hi user"}
    assert json.loads(results["/stream/<topic>"]) == {"(text)": "Hello"}
    assert results["/plain-stream"] == "plain words"


def test_no_result_is_kept_when_capture_is_off(oai, llm_server, records) -> None:
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi")))
    assert make_app(oai, capture_response=False).test_client().get("/users/1/greeting").get_json() == {"user": 1, "text": "Hi"}
    (run,) = records.runs
    assert run.return_value is None
