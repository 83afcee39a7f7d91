"""A streamed chat answer whose reader stops early, audited as one run per question.

    python examples/streaming_chat/chat.py [--demo] [--read-paragraphs N] "question"
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator

import openai

import wasteaudit

MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")


@wasteaudit.audit(name="chat.stream", tags={"ui": "terminal"})
def stream_answer(client: openai.OpenAI, question: str) -> Iterator[str]:
    """Yield the answer as it arrives. What the generator yielded is the run's result."""
    with client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Answer in short paragraphs."}, {"role": "user", "content": question}],
        stream=True,
    ) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content


def read(client: openai.OpenAI, question: str, paragraphs: int) -> str:
    """The user: reads until it has seen ``paragraphs`` paragraphs, then stops (closes the stream)."""
    shown = ""
    answer = stream_answer(client, question)
    for delta in answer:
        shown += delta
        print(delta, end="", flush=True)
        if shown.count("\n\n") >= paragraphs:
            break
    answer.close()  # closing the generator leaves the `with` block: the HTTP stream is closed
    print()
    return shown


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="use wasteaudit's local demo endpoint (no API key)")
    parser.add_argument("--read-paragraphs", type=int, default=1, help="paragraphs the user reads before leaving")
    parser.add_argument("questions", nargs="*", default=["How are database failovers handled?"])
    args = parser.parse_args(argv)
    if args.demo or not (os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")):
        from wasteaudit.demo.endpoint import start_demo_endpoint

        start_demo_endpoint()

    wasteaudit.configure()  # WASTEAUDIT_DATABASE_URL, default sqlite:///wasteaudit.db
    wasteaudit.instrument()
    client = openai.OpenAI()
    for question in args.questions:
        read(client, question, args.read_paragraphs)
    wasteaudit.flush(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
