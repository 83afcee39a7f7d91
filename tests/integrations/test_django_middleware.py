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

    urls = types.ModuleType("wasteaudit_test_django_urls")
    urls.urlpatterns = [path("tickets/<int:ticket_id>/answer", answer)]  # type: ignore[attr-defined]
    sys.modules[urls.__name__] = urls
    if not settings.configured:
        settings.configure(
            DEBUG=False, SECRET_KEY="test-only", ALLOWED_HOSTS=["*"], ROOT_URLCONF=urls.__name__,
            MIDDLEWARE=["wasteaudit.integrations.django.WasteAuditRouteMiddleware"], INSTALLED_APPS=[], DATABASES={},
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
