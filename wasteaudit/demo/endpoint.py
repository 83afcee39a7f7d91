"""The demo's local LLM endpoint: answers OpenAI- and Anthropic-style requests the way real traffic goes.

Each demo app marks its requests with a scenario tag in the system prompt (``[demo:support]``…).
The endpoint answers deterministically from the request text, and plays the waste patterns real
traffic has: padded answers with filler and restating summaries, refusals, JSON that is cut at
``max_tokens`` or malformed on a first attempt, overloaded (529) and rate-limited (429) attempts,
tool calls, n-way sampling and streams. Token counts are ~4 characters per token, reported as
provider usage.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import Counter
from typing import Any

from wasteaudit.localllm import RecordedRequest, Reply
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
        if "[demo:extract]" in system:
            return self._extract(body, user, prompt_tokens, attempt, model)
        if "[demo:titles]" in system:
            n = int(body.get("n") or 1)
            options = [f"Title idea {i + 1}: {user[:40].strip()} explained" for i in range(n)]
            completion = sum(tokens(o) for o in options)
            return Reply(json=ob.chat_completion(options, model=model, prompt_tokens=prompt_tokens, completion_tokens=completion))
        text = self._support_text(user) if "[demo:support]" in system else self._rag_text(user)
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
        order = next((code for code in ORDER_STATUS if code in question), "A1001")
        if not has_tool_result and body.get("tools"):
            blocks = [ab.text_block("Let me look that up."), ab.tool_use_block("get_order_status", {"order_id": order})]
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
