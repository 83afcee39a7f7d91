"""A FastAPI service whose endpoints are audited runs, with user feedback posted back by run id.

    python examples/fastapi_service/app.py [--demo] [--port 8000]

The client receives ``run_id`` with every answer and sends ``POST /feedback {run_id, score}``
when the user rates it, seconds or days later: the score joins the run's quality, which every
efficiency figure of the report is weighted by.
"""

from __future__ import annotations

import functools
import os
import sys

import openai
from fastapi import FastAPI
from pydantic import BaseModel, Field

import wasteaudit

MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")

wasteaudit.configure()  # WASTEAUDIT_DATABASE_URL, default sqlite:///wasteaudit.db
wasteaudit.instrument()  # every openai/anthropic client of this process

app = FastAPI(title="wasteaudit example: support answers")


@functools.cache
def llm() -> openai.OpenAI:
    """The OpenAI client, built on first use (OPENAI_BASE_URL and OPENAI_API_KEY from the environment)."""
    return openai.OpenAI()


@functools.cache
def async_llm() -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI()


class Question(BaseModel):
    question: str
    compact: bool = False  # the chat widget's compact mode shows only the first paragraph


class Document(BaseModel):
    text: str


class Reply(BaseModel):
    text: str
    run_id: str | None  # the client keeps it to send feedback later


class Feedback(BaseModel):
    run_id: str
    score: float = Field(ge=0.0, le=1.0)


@app.post("/answer")
@wasteaudit.audit(name="support.answer", tags={"service": "support-api"}, capture_return=False)
def answer(body: Question) -> Reply:
    reply = llm().chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are the support assistant of Workspace. Answer briefly."},
            {"role": "user", "content": body.question},
        ],
        max_tokens=300,
    )
    text = reply.choices[0].message.content or ""
    shown = text.split("\n\n")[0] if body.compact else text
    # What the user saw is what was used; the run id in the response is not model output.
    return Reply(text=wasteaudit.mark_used(shown), run_id=wasteaudit.current_run_id())


@app.post("/summarize")
@wasteaudit.audit(name="docs.summarize", tags={"service": "support-api"}, capture_return=False)
async def summarize(body: Document) -> Reply:
    reply = await async_llm().chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Summarize the text in one paragraph."}, {"role": "user", "content": body.text}],
        max_tokens=200,
    )
    text = reply.choices[0].message.content or ""
    return Reply(text=wasteaudit.mark_used(text), run_id=wasteaudit.current_run_id())


@app.post("/feedback")
def feedback(body: Feedback) -> dict[str, str]:
    """User feedback on an earlier answer: attached to its run, whenever it arrives."""
    wasteaudit.score(body.score, run_id=body.run_id, source="user")
    return {"run_id": body.run_id}


def main(argv: list[str]) -> int:
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="answer from wasteaudit's local demo endpoint (no API key)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if args.demo or not (os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")):
        from wasteaudit.demo.endpoint import start_demo_endpoint

        print(f"using the local demo endpoint at {start_demo_endpoint().url}")
    uvicorn.run(app, host="127.0.0.1", port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
