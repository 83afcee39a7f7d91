"""A tool-calling agent loop on the Anthropic Messages API, audited as one run per question.

    python examples/agent_loop/agent_anthropic.py [--demo] "Has order C3003 arrived?"
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import anthropic

import wasteaudit

MODEL = os.environ.get("ANTHROPIC_MODEL", "claude-haiku-4-5")
ORDERS = {"A1001": "shipped on Monday, arrives Thursday", "B2002": "waiting for the warehouse", "C3003": "delivered yesterday"}
TOOLS = [
    {
        "name": "get_order_status",
        "description": "Look up the shipping status of an order by its id.",
        "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    }
]


def get_order_status(order_id: str) -> str:
    return ORDERS.get(order_id, "no such order")


@wasteaudit.audit(name="agent.orders", tags={"provider": "anthropic"})
def ask(client: anthropic.Anthropic, question: str, *, max_turns: int = 5) -> str:
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    for _ in range(max_turns):
        reply = client.messages.create(
            model=MODEL, max_tokens=1024, system="You are the order assistant of Workspace Shop.", tools=TOOLS, messages=messages
        )
        if reply.stop_reason != "tool_use":
            answer = "".join(block.text for block in reply.content if block.type == "text")
            wasteaudit.score(any(order in answer for order in ORDERS))  # a cheap automatic check: it names the order
            return answer
        messages.append({"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in reply.content]})
        results = [
            {"type": "tool_result", "tool_use_id": block.id, "content": get_order_status(**block.input)}
            for block in reply.content
            if block.type == "tool_use"
        ]
        messages.append({"role": "user", "content": results})
    return ""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="use wasteaudit's local demo endpoint (no API key)")
    parser.add_argument("questions", nargs="*", default=["Has order C3003 arrived?"])
    args = parser.parse_args(argv)
    if args.demo or not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_BASE_URL")):
        from wasteaudit.demo.endpoint import start_demo_endpoint

        start_demo_endpoint()

    wasteaudit.configure()  # WASTEAUDIT_DATABASE_URL, default sqlite:///wasteaudit.db
    wasteaudit.instrument()
    client = anthropic.Anthropic()
    for question in args.questions:
        print(ask(client, question))
    wasteaudit.flush(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
