"""Django through its real ASGI and WSGI handlers, with the route middleware: runs named by the
URL pattern, calls linked, run id header; real OpenAI SDK calls against the loopback server."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

django = pytest.importorskip("django")
from django.conf import settings  # noqa: E402
from instrumentation.openai_support import _shared_llm_server, instrumented, llm_server, oai  # noqa: E402,F401

from wasteaudit.integrations.asgi import WasteAuditMiddleware  # noqa: E402
from wasteaudit.integrations.wsgi import WasteAuditWSGIMiddleware  # noqa: E402
from wasteaudit.localllm import Reply  # noqa: E402
from wasteaudit.localllm import openai_bodies as ob  # noqa: E402

HEADER = "x-wasteaudit-run-id"
CLIENT: dict[str, Any] = {}


def answer(request: Any, ticket_id: int) -> Any:
    from django.http import JsonResponse

    import wasteaudit

    reply = CLIENT["client"].chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    return JsonResponse({"ticket": ticket_id, "text": reply.choices[0].message.content, "run_id": wasteaudit.current_run_id()})


def _configure() -> None:
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    from wasteaudit.integrations.django import feedback_view

    urls = types.ModuleType("wasteaudit_test_django_urls")
    urls.urlpatterns = [  # type: ignore[attr-defined]
        path("tickets/<int:ticket_id>/answer", answer),
        path("api/feedback", csrf_exempt(feedback_view(names={"feedback", "helpful"}))),
        path("web/feedback", feedback_view()),
    ]
    sys.modules[urls.__name__] = urls
    if not settings.configured:
        settings.configure(
            DEBUG=False, SECRET_KEY="test-only", ALLOWED_HOSTS=["*"], ROOT_URLCONF=urls.__name__,
            MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware", "wasteaudit.integrations.django.WasteAuditRouteMiddleware"],
            INSTALLED_APPS=[], DATABASES={},
        )
        django.setup()


@pytest.fixture
def client(oai) -> Any:
    _configure()
    CLIENT["client"] = oai()
    return CLIENT["client"]


def test_django_asgi_runs_are_named_by_url_pattern(client, llm_server, records) -> None:
    from django.core.asgi import get_asgi_application
    from starlette.testclient import TestClient

    llm_server.enqueue(Reply(json=ob.chat_completion("From Django")))
    app = WasteAuditMiddleware(get_asgi_application(), run_id_header=HEADER)
    response = TestClient(app).get("/tickets/5/answer")
    assert response.status_code == 200 and response.json()["text"] == "From Django"
    (run,) = records.runs
    assert run.name == "/tickets/<int:ticket_id>/answer"
    assert response.headers[HEADER] == run.id == response.json()["run_id"]
    assert records.calls[0].run_id == run.id and run.tags["http.response.status_code"] == "200"


def test_django_wsgi_runs_are_named_by_url_pattern(client, llm_server, records) -> None:
    from django.core.wsgi import get_wsgi_application
    from werkzeug.test import Client

    llm_server.enqueue(Reply(json=ob.chat_completion("Sync Django")))
    response = Client(WasteAuditWSGIMiddleware(get_wsgi_application())).get("/tickets/6/answer")
    assert response.status_code == 200 and response.get_json()["text"] == "Sync Django"
    (run,) = records.runs
    assert run.name == "/tickets/<int:ticket_id>/answer" and records.calls[0].run_id == run.id


def test_django_feedback_view_records_scores_and_refuses_bad_feedback(client, llm_server, records) -> None:
    from django.core.wsgi import get_wsgi_application
    from werkzeug.test import Client

    llm_server.enqueue(Reply(json=ob.chat_completion("Rate me")))
    http = Client(WasteAuditWSGIMiddleware(get_wsgi_application(), run_id_header=HEADER))
    run_id = http.get("/tickets/7/answer").headers[HEADER]
    accepted = http.post("/api/feedback", json={"run_id": run_id, "score": "up", "name": "helpful"})
    assert accepted.status_code == 202 and accepted.get_json() == {"run_id": run_id, "name": "helpful", "score": 1.0}
    refusals = {
        "score": http.post("/api/feedback", json={"run_id": run_id, "score": 2}),
        "name": http.post("/api/feedback", json={"run_id": run_id, "score": 1, "name": "quality"}),
        "json": http.post("/api/feedback", data=b"{not json", content_type="application/json"),
        "size": http.post("/api/feedback", data=b"{" + b" " * 5000 + b"}", content_type="application/json"),
        "method": http.get("/api/feedback"),
    }
    assert {k: r.status_code for k, r in refusals.items()} == {"score": 422, "name": 422, "json": 400, "size": 413, "method": 405}
    assert "score" in refusals["score"].get_json()["error"] and refusals["method"].headers["Allow"] == "POST"
    assert [(s.run_id, s.name, s.value, s.source) for s in records.scores] == [(run_id, "helpful", 1.0, "feedback")]


def test_django_feedback_view_keeps_csrf_protection_unless_exempted(client, records) -> None:
    from django.core.wsgi import get_wsgi_application
    from werkzeug.test import Client

    forged = Client(get_wsgi_application()).post("/web/feedback", json={"run_id": "a" * 32, "score": 0})
    assert forged.status_code == 403 and records.scores == []
