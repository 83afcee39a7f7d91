"""A tool-calling agent loop on the OpenAI Chat Completions API, audited as one run per question.

    python examples/agent_loop/agent_openai.py [--demo] "Where is my order B2002?"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import openai

import wasteaudit

MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
ORDERS = {"A1001": "shipped on Monday, arrives Thursday", "B2002": "waiting for the warehouse", "C3003": "delivered yesterday"}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order_status",
            "description": "Look up the shipping status of an order by its id.",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
        },
    }
]


def get_order_status(order_id: str) -> str:
    return ORDERS.get(order_id, "no such order")


@wasteaudit.audit(name="agent.orders", tags={"provider": "openai"})
def ask(client: openai.OpenAI, question: str, *, max_turns: int = 5) -> str:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are the order assistant of Workspace Shop. Use the tools."},
        {"role": "user", "content": question},
    ]
    for _ in range(max_turns):
        reply = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
        message = reply.choices[0].message
        if not message.tool_calls:
            answer = message.content or ""
            wasteaudit.score(any(order in answer for order in ORDERS))  # a cheap automatic check: it names the order
            return answer
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            arguments = json.loads(call.function.arguments or "{}")
            messages.append({"role": "tool", "tool_call_id": call.id, "content": get_order_status(**arguments)})
    return ""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="use wasteaudit's local demo endpoint (no API key)")
    parser.add_argument("questions", nargs="*", default=["Where is my order B2002?"])
    args = parser.parse_args(argv)
    if args.demo or not (os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")):
        from wasteaudit.demo.endpoint import start_demo_endpoint

        start_demo_endpoint()

    wasteaudit.configure()  # WASTEAUDIT_DATABASE_URL, default sqlite:///wasteaudit.db
    wasteaudit.instrument()
    client = openai.OpenAI()
    for question in args.questions:
        print(ask(client, question))
    wasteaudit.flush(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
