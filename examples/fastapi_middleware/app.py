"""A FastAPI support service audited per request, without a decorator.

Every request that calls the model becomes one wasteaudit run, named by its route template
(``/tickets/{ticket_id}/answer``), tagged with method and status; the run id goes back in the
``x-wasteaudit-run-id`` header (and in the JSON body) so the front end can send feedback to
``POST /api/feedback``. Requests that call no model (``/healthz``) store nothing.

    OPENAI_API_KEY=sk-... uvicorn app:app              # real OpenAI
    OPENAI_BASE_URL=http://127.0.0.1:8001/v1 ...       # any OpenAI-compatible server

See README.md beside this file.
"""

import os
from typing import Any, AsyncIterator

import openai
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

import wasteaudit
from wasteaudit.integrations.asgi import WasteAuditMiddleware
from wasteaudit.integrations.feedback import feedback_router

MODEL = os.environ.get("SUPPORT_MODEL", "gpt-4o-mini")
SYSTEM = "You are a concise support agent. Answer in at most three sentences."


class Question(BaseModel):
    text: str


def create_app(client: openai.OpenAI | None = None, aclient: openai.AsyncOpenAI | None = None) -> FastAPI:
    """The service; tests pass clients bound to a local server."""
    wasteaudit.instrument_openai()  # idempotent: capture every OpenAI call made by this process
    sync = client or openai.OpenAI()
    streaming = aclient or openai.AsyncOpenAI()

    app = FastAPI(title="support-bot")
    app.add_middleware(WasteAuditMiddleware, run_id_header="x-wasteaudit-run-id", tags={"service": "support-bot"})
    app.include_router(feedback_router(), prefix="/api")  # POST /api/feedback {run_id, score}

    @app.post("/tickets/{ticket_id}/answer")
    def answer(ticket_id: int, question: Question) -> dict[str, Any]:
        reply = sync.chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question.text}],
        )
        text = reply.choices[0].message.content or ""
        return {"ticket_id": ticket_id, "answer": text, "run_id": wasteaudit.current_run_id()}

    @app.get("/tickets/{ticket_id}/summary")
    async def summary(ticket_id: int) -> StreamingResponse:
        """Server-sent events: the run ends when the last event is sent."""

        async def events() -> AsyncIterator[str]:
            stream = await streaming.chat.completions.create(
                model=MODEL,
                messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Summarize ticket {ticket_id}."}],
                stream=True,
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield f"data: {chunk.choices[0].delta.content}\n\n"
            yield "event: done\ndata: {}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


if os.environ.get("OPENAI_API_KEY"):
    app = create_app()
