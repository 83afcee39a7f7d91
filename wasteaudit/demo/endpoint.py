"""The demo's local LLM endpoint: answers OpenAI- and Anthropic-style requests the way real traffic goes.

Each demo app marks its requests with a scenario tag in the system prompt (``[demo:support]``…).
The endpoint answers deterministically from the request text, and plays the waste patterns real
traffic has: padded answers with filler and restating summaries, refusals, JSON that is cut at
``max_tokens`` or malformed on a first attempt, overloaded (529) and rate-limited (429) attempts,
tool calls, n-way sampling and streams. Token counts are ~4 characters per token, reported as
provider usage.

Requests without a scenario tag (the programs in ``examples/``) get the same patterns chosen from
the request itself: ``tools`` get a tool call and then an answer from the tool's result,
``response_format`` JSON gets a ticket extraction, a support question gets a support answer, and
anything else a four-paragraph answer. :func:`start_demo_endpoint` starts one in-process and
points the SDKs at it; ``python -m wasteaudit.demo.endpoint`` serves one until interrupted.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections import Counter
from typing import Any

from wasteaudit.localllm import LocalLLMServer, RecordedRequest, Reply
from wasteaudit.localllm import anthropic_bodies as ab
from wasteaudit.localllm import openai_bodies as ob

FILLER = "I hope this helps! Let me know if you have any other questions."

SUPPORT_ANSWERS = {
    "reset my password": "To reset your password, open Settings, choose Security and select Reset password. We email you a link that stays valid for thirty minutes; follow it and choose a new password of at least twelve characters.",
    "change my billing address": "You can change your billing address under Billing, then Payment details. The new address applies to the next invoice; invoices already issued keep the old address.",
    "export my data": "Go to Settings, then Privacy, and press Export data. We prepare an archive with your projects, comments and files and email you a download link within a few hours.",
    "cancel my subscription": "Open Billing and choose Cancel plan. Your workspace stays active until the end of the paid period, and you can reactivate it at any time before then without losing data.",
    "add a team member": "Admins can invite people from Team, then Invite. Enter their email address and choose a role; the invitation expires after seven days if it is not accepted.",
    "enable two-factor": "Open Settings, then Security, and switch on Two-factor authentication. Scan the QR code with an authenticator app and enter the six-digit code to confirm.",
}
REFUSAL = "I'm sorry, but I can't help with that request."

TICKETS_FIELDS = ("name", "email", "product", "issue")

ORDER_STATUS = {"A1001": "shipped on Monday and arrives Thursday", "B2002": "waiting for the warehouse", "C3003": "delivered yesterday"}


_TITLE_TEMPLATES = ("{topic}: what changed", "Inside the numbers", "Three lessons from our queue", "A week at the help desk")


def _order_id(text: str) -> str:
    """The order code a question mentions (A1001 when it names none the shop knows)."""
    return next((code for code in ORDER_STATUS if code in text), "A1001")


def _first_required(schema: Any) -> str:
    """The first required argument of a tool's JSON schema: where the order id goes."""
    if isinstance(schema, dict):
        required = schema.get("required") or list((schema.get("properties") or {}).keys())
        if required:
            return str(required[0])
    return "order_id"


def tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


class DemoEndpoint:
    """A request handler for :class:`~wasteaudit.localllm.LocalLLMServer`."""

    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()

    def attempt(self, key: str) -> int:
        """How many times this exact request was seen before (retries get different answers)."""
        with self._lock:
            count = self._seen[key]
            self._seen[key] += 1
        return count

    def __call__(self, request: RecordedRequest) -> Reply:
        body = request.json if isinstance(request.json, dict) else {}
        if request.path.startswith("/v1/messages"):
            return self._anthropic(body)
        if request.path.startswith("/v1/chat/completions"):
            return self._openai_chat(body)
        return Reply(status=404, json=ob.error_body("unknown path", type="not_found_error"))

    # -- OpenAI ---------------------------------------------------------------------------------
    def _openai_chat(self, body: dict[str, Any]) -> Reply:
        messages = body.get("messages") or []
        system = " ".join(str(m.get("content")) for m in messages if m.get("role") == "system")
        user = str(messages[-1].get("content")) if messages else ""
        prompt_tokens = sum(tokens(str(m.get("content") or "")) for m in messages) + 8
        key = json.dumps(body, sort_keys=True)
        attempt = self.attempt(key)
        model = body.get("model") or "gpt-4o-mini"
        tagged = "[demo:" in system
        if "[demo:extract]" in system or (not tagged and (body.get("response_format") or {}).get("type") in ("json_object", "json_schema")):
            return self._extract(body, user, prompt_tokens, attempt, model)
        if "[demo:titles]" in system:
            n = int(body.get("n") or 1)
            options = [template.format(topic=user[:40].strip()) for template in _TITLE_TEMPLATES[:n]]
            completion = sum(tokens(o) for o in options)
            return Reply(json=ob.chat_completion(options, model=model, prompt_tokens=prompt_tokens, completion_tokens=completion))
        if not tagged and body.get("tools"):
            return self._openai_tools(body, messages, prompt_tokens, model)
        support = "[demo:support]" in system or (not tagged and any(key in user.lower() for key in SUPPORT_ANSWERS))
        text = self._support_text(user) if support else self._rag_text(user)
        if attempt == 0 and _digest(user) % 11 == 0:
            return ob.error_reply(429, "Rate limit reached for requests", retry_after_ms=1)
        if body.get("stream"):
            words = text.split(" ")
            deltas = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
            usage = ob.chat_usage(prompt_tokens, tokens(text), cached_tokens=(prompt_tokens // 2 // 64) * 64)
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            return Reply(sse=ob.chat_chunks(deltas, model=model, include_usage=include, usage=usage))
        usage = ob.chat_usage(prompt_tokens, tokens(text), cached_tokens=(prompt_tokens // 2 // 64) * 64)
        return Reply(json=ob.chat_completion(text, model=model, usage=usage))

    def _openai_tools(self, body: dict[str, Any], messages: list[dict[str, Any]], prompt_tokens: int, model: str) -> Reply:
        """An agent turn: call the first tool with the order id from the question, then answer from its result."""
        results = [str(m.get("content")) for m in messages if m.get("role") == "tool"]
        question = next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")
        if not results:
            function = (body["tools"][0] or {}).get("function") or {}
            name = str(function.get("name") or "lookup")
            argument = _first_required(function.get("parameters"))
            call = ob.tool_call(name, {argument: _order_id(question)}, call_id=f"call_{_digest(question) % 100000}")
            usage = ob.chat_usage(prompt_tokens, 24)
            return Reply(json=ob.chat_completion(None, model=model, finish_reason="tool_calls", tool_calls=[call], usage=usage))
        text = f"Order {_order_id(question)}: {results[-1]}. {FILLER}"
        return Reply(json=ob.chat_completion(text, model=model, usage=ob.chat_usage(prompt_tokens, tokens(text))))

    def _support_text(self, question: str) -> str:
        low = question.lower()
        if "hack" in low or "password of my colleague" in low:
            return REFUSAL
        core = next((answer for key, answer in SUPPORT_ANSWERS.items() if key in low), None)
        if core is None:
            core = "Thanks for reaching out. Our help centre covers this topic in detail, and our team can look at your account if you reply with more details."
        style = _digest(question) % 3
        if style == 0:
            return core
        first = core.split(". ")[0].rstrip(".")
        if style == 1:
            return f"{core}\n\n{FILLER}"
        return f"{core}\n\nIn summary, {first[0].lower() + first[1:]}.\n\n{FILLER}"

    def _rag_text(self, question: str) -> str:
        topic = question.strip().rstrip("?")
        paragraphs = [
            f"Based on the retrieved documents, {topic.lower()} is handled by the platform team and documented in the operations handbook.",
            "The handbook describes the steps in order: check the dashboard, confirm the alert, and follow the runbook linked from the alert.",
            "Older versions of the handbook described a manual process; that process was retired last quarter and should no longer be used.",
            "In summary, follow the runbook linked from the alert and check the dashboard first.",
        ]
        return "\n\n".join(paragraphs)

    def _extract(self, body: dict[str, Any], user: str, prompt_tokens: int, attempt: int, model: str) -> Reply:
        name = user.split("From: ")[-1].split("\n")[0].strip() if "From: " in user else "Unknown"
        email = name.lower().replace(" ", ".") + "@example.com"
        lines = user.split("\n")
        record = {"name": name, "email": email, "product": "Workspace", "issue": (lines[1] if len(lines) > 1 else lines[-1])[:80]}
        text = json.dumps(record)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        fault = _digest(user) % 4
        if max_tokens and tokens(text) > int(max_tokens):
            cut = text[: int(max_tokens) * 4]
            usage = ob.chat_usage(prompt_tokens, int(max_tokens))
            return Reply(json=ob.chat_completion(cut, model=model, finish_reason="length", usage=usage))
        if attempt == 0 and fault == 1:
            broken = "Here is the extracted data:\n" + text.replace('"email"', "email")
            return Reply(json=ob.chat_completion(broken, model=model, usage=ob.chat_usage(prompt_tokens, tokens(broken))))
        return Reply(json=ob.chat_completion(text, model=model, usage=ob.chat_usage(prompt_tokens, tokens(text))))

    # -- Anthropic ------------------------------------------------------------------------------
    def _anthropic(self, body: dict[str, Any]) -> Reply:
        messages = body.get("messages") or []
        system = body.get("system") or ""
        system_text = system if isinstance(system, str) else " ".join(str(b.get("text", "")) for b in system if isinstance(b, dict))
        key = json.dumps(body, sort_keys=True)
        attempt = self.attempt(key)
        input_tokens = sum(tokens(json.dumps(m.get("content"))) for m in messages) + tokens(system_text)
        cache_read = 1024 if len(system_text) > 200 else 0
        model = body.get("model") or "claude-sonnet-4-6"
        last = messages[-1] if messages else {}
        question = messages[0].get("content") if messages else ""
        question = question if isinstance(question, str) else json.dumps(question)
        if attempt == 0 and _digest(question) % 5 == 0:
            return ab.reply_overloaded(retry_after_ms=1)
        content = last.get("content")
        has_tool_result = isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
        order = _order_id(question)
        if not has_tool_result and body.get("tools"):
            tool = body["tools"][0] or {}
            call = {_first_required(tool.get("input_schema")): order}
            blocks = [ab.text_block("Let me look that up."), ab.tool_use_block(str(tool.get("name") or "get_order_status"), call)]
            msg = ab.message(blocks, model=model, stop_reason="tool_use", usage=ab.usage(input_tokens, 28, cache_read=cache_read))
        else:
            text = (
                f"Your order {order} {ORDER_STATUS[order]}. You can follow the parcel from the link in your confirmation email. "
                f"If anything looks wrong, reply to this message and we will check with the carrier. {FILLER}"
            )
            max_tokens = int(body.get("max_tokens") or 1024)
            if tokens(text) > max_tokens:
                cut = text[: max_tokens * 4]
                msg = ab.message(cut, model=model, stop_reason="max_tokens", usage=ab.usage(input_tokens, max_tokens, cache_read=cache_read))
            else:
                msg = ab.message(text, model=model, usage=ab.usage(input_tokens, tokens(text), cache_read=cache_read))
        if body.get("stream"):
            return ab.reply_stream(msg)
        return ab.reply_message(msg)


def start_demo_endpoint(*, set_environment: bool = True) -> LocalLLMServer:
    """Start the demo endpoint on 127.0.0.1 (a free port) in a background thread.

    With ``set_environment`` the ``openai`` and ``anthropic`` SDKs of this process are pointed at
    it through ``OPENAI_BASE_URL``/``ANTHROPIC_BASE_URL``, with placeholder API keys: clients
    built afterwards need no arguments. Call ``stop()`` on the result when done.
    """
    server = LocalLLMServer(handler=DemoEndpoint()).start()
    if set_environment:
        os.environ["OPENAI_BASE_URL"] = server.openai_base_url
        os.environ["ANTHROPIC_BASE_URL"] = server.anthropic_base_url
        os.environ["OPENAI_API_KEY"] = "sk-demo-local-endpoint"
        os.environ["ANTHROPIC_API_KEY"] = "sk-ant-demo-local-endpoint"
    return server


def main(argv: list[str] | None = None) -> int:
    """Serve the demo endpoint until interrupted (``python -m wasteaudit.demo.endpoint --port 8765``)."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python -m wasteaudit.demo.endpoint", description=main.__doc__)
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    server = LocalLLMServer(handler=DemoEndpoint(), port=args.port).start()
    print(f"export OPENAI_BASE_URL={server.openai_base_url} OPENAI_API_KEY=sk-demo-local-endpoint")
    print(f"export ANTHROPIC_BASE_URL={server.anthropic_base_url} ANTHROPIC_API_KEY=sk-ant-demo-local-endpoint", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
