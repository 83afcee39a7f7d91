"""The demo's applications: four small LLM features written the way teams write them.

Each is an ``@audit``-ed function using the real SDKs, so the demo exercises exactly what an app
would: a support bot (OpenAI chat), a JSON extraction job with a validator and retries, an order
agent with tool calls (Anthropic), a streaming RAG answerer that stops reading once it has enough,
and a title suggester that samples n=3 choices and keeps one.
"""

from __future__ import annotations

import json
from typing import Any

import wasteaudit

SUPPORT_SYSTEM = "[demo:support] You are the support assistant of Workspace. Answer briefly and precisely."
EXTRACT_SYSTEM = "[demo:extract] Extract name, email, product and issue from the ticket. Reply with one JSON object."
RAG_SYSTEM = "[demo:rag] Answer from the retrieved documents only."
TITLES_SYSTEM = "[demo:titles] Suggest a short title for the text."
AGENT_SYSTEM = (
    "[demo:agent] You are the order assistant of Workspace Shop. Use the get_order_status tool to look orders up. "
    "Be accurate; quote the order number; never promise delivery dates the tool did not give. "
    "Policies: refunds within 30 days, exchanges within 60 days, free returns for members. " * 2
)
ORDER_TOOL = {
    "name": "get_order_status",
    "description": "Look up the shipping status of an order by its id.",
    "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
}
ORDER_STATUS = {"A1001": "shipped", "B2002": "processing", "C3003": "delivered"}


def valid_ticket(result: Any) -> bool:
    return isinstance(result, dict) and all(result.get(key) for key in ("name", "email", "product", "issue"))


class DemoApps:
    """The demo's features, bound to one OpenAI client and one Anthropic client."""

    def __init__(self, openai_client: Any, anthropic_client: Any, *, openai_model: str = "gpt-4o-mini", anthropic_model: str = "claude-sonnet-4-6") -> None:
        self.openai = openai_client
        self.anthropic = anthropic_client
        self.openai_model = openai_model
        self.anthropic_model = anthropic_model

    @wasteaudit.audit(name="support.answer", tags={"team": "support"})
    def support_answer(self, question: str, *, brief: bool = False) -> str:
        reply = self.openai.chat.completions.create(
            model=self.openai_model,
            messages=[{"role": "system", "content": SUPPORT_SYSTEM}, {"role": "user", "content": question}],
            max_tokens=300,
        )
        text = reply.choices[0].message.content or ""
        # The chat widget shows only the first paragraph in its compact mode.
        return text.split("\n\n")[0] if brief else text

    @wasteaudit.audit(name="extract.ticket", tags={"team": "ops"}, validate=valid_ticket)
    def extract_ticket(self, ticket: str) -> dict[str, Any] | None:
        max_tokens = 40
        for _ in range(3):
            reply = self.openai.chat.completions.create(
                model=self.openai_model,
                messages=[{"role": "system", "content": EXTRACT_SYSTEM}, {"role": "user", "content": ticket}],
                response_format={"type": "json_object"},
                max_tokens=max_tokens,
            )
            choice = reply.choices[0]
            if choice.finish_reason == "length":
                max_tokens *= 4
                continue
            try:
                return json.loads(choice.message.content or "")
            except ValueError:
                continue
        return None

    @wasteaudit.audit(name="agent.order_status", tags={"team": "shop"})
    def order_agent(self, question: str, *, max_tokens: int = 400) -> str:
        messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
        for _ in range(4):
            reply = self.anthropic.messages.create(
                model=self.anthropic_model, system=AGENT_SYSTEM, max_tokens=max_tokens, tools=[ORDER_TOOL], messages=messages
            )
            if reply.stop_reason == "tool_use":
                messages.append({"role": "assistant", "content": [block.model_dump() for block in reply.content]})
                results = []
                for block in reply.content:
                    if block.type == "tool_use":
                        status = ORDER_STATUS.get(str(block.input.get("order_id")), "unknown")
                        results.append({"type": "tool_result", "tool_use_id": block.id, "content": status})
                messages.append({"role": "user", "content": results})
                continue
            if reply.stop_reason == "max_tokens":
                max_tokens *= 4  # the answer was cut: ask again with room to finish
                continue
            return "".join(block.text for block in reply.content if block.type == "text")
        return ""

    @wasteaudit.audit(name="rag.answer", tags={"team": "docs"})
    def rag_answer(self, question: str, *, paragraphs: int = 2) -> str:
        stream = self.openai.chat.completions.create(
            model=self.openai_model,
            messages=[{"role": "system", "content": RAG_SYSTEM}, {"role": "user", "content": question}],
            stream=True,
        )
        text = ""
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if text.count("\n\n") >= paragraphs:
                break  # enough for the answer card: stop reading
        stream.close()
        return text.strip()

    @wasteaudit.audit(name="titles.suggest", tags={"team": "docs"})
    def suggest_title(self, text: str) -> str:
        reply = self.openai.chat.completions.create(
            model=self.openai_model,
            messages=[{"role": "system", "content": TITLES_SYSTEM}, {"role": "user", "content": text}],
            n=3,
            max_tokens=30,
        )
        return reply.choices[0].message.content or ""
