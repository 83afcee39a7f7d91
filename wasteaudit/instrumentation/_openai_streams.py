"""Stream observers for OpenAI streams: per-item work is a few attribute reads and list appends.

``ChatStreamObserver`` handles Chat Completions chunks (and legacy Completions chunks with
``legacy=True``): text, refusal, reasoning and tool-call deltas accumulated per choice index,
finish reasons per choice verbatim, and the usage chunk — hidden from the app when wasteaudit
asked for it (``hide_usage``). ``ResponsesStreamObserver`` handles Responses API events: usage
and the authoritative output come from the terminal event (``response.completed`` /
``response.incomplete`` / ``response.failed``); deltas are kept so an abandoned or cut stream
still records what was received. Both finish their :class:`CallTracker` exactly once, from
``on_end`` (the proxy guarantees one call).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from wasteaudit._internal.safety import internal_error
from wasteaudit.instrumentation._calls import CallTracker
from wasteaudit.instrumentation._openai_extract import ResponseOutput, apply_response
from wasteaudit.instrumentation._openai_usage import apply_chat_usage
from wasteaudit.records import ChoiceContent


def _state(error: BaseException | None, exhausted: bool) -> str:
    if error is not None:
        return "error"
    return "completed" if exhausted else "abandoned"


class _Choice:
    __slots__ = ("text", "refusal", "reasoning", "tools", "finish")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.refusal: list[str] | None = None
        self.reasoning: list[str] | None = None
        self.tools: dict[Any, dict[str, Any]] | None = None
        self.finish: str | None = None


class ChatStreamObserver:
    """Chat Completions / legacy Completions chunks."""

    __slots__ = ("tracker", "hide_usage", "legacy", "expected", "usage_gap", "choices", "usage", "count", "hidden", "need_ids", "text0")

    def __init__(self, tracker: CallTracker, *, hide_usage: bool, legacy: bool, expected: int, usage_gap: str) -> None:
        self.tracker = tracker
        self.hide_usage = hide_usage
        self.legacy = legacy
        self.expected = expected
        self.usage_gap = usage_gap
        self.choices: dict[Any, _Choice] = {}
        self.usage: Any = None
        self.count = 0
        self.hidden = 0
        self.need_ids = True
        # choice 0's text parts, once its first chunk and the response ids have been seen: the
        # short path of :meth:`items` then applies to the chunks that only add text to it
        self.text0: list[str] | None = None

    def items(self, next_item: Callable[[], Any], end: Callable[[BaseException | None, bool], None]) -> Iterator[Any]:
        """The chunks as the app's ``for`` loop takes them, each recorded as it passes.

        Most chunks carry a bit of choice 0's text and nothing else; once choice 0 and the
        response's ids have been seen, such a chunk is recorded here, inline, with the fewest
        reads — exactly what :meth:`on_item` would record. Streams run this between the SDK's
        own work per chunk, with our objects out of the CPU's caches, so every read and call
        counts. ``end`` is the proxy's end-once callback.
        """
        on_item = self.on_item
        while True:
            try:
                chunk = next_item()
            except StopIteration:
                end(None, True)
                return
            except BaseException as exc:
                end(exc, False)
                raise
            text0 = self.text0
            if text0 is not None:
                try:
                    choices = chunk.choices
                    if type(choices) is list and len(choices) == 1 and chunk.usage is None:
                        choice = choices[0]
                        if choice.index == 0 and choice.finish_reason is None:
                            delta = choice.delta
                            if delta.tool_calls is None and delta.refusal is None and not delta.__pydantic_extra__:
                                text = delta.content
                                if text and type(text) is str:
                                    text0.append(text)
                                self.count += 1
                                yield chunk
                                continue
                except AttributeError:
                    pass
            try:
                keep = on_item(chunk) is not False
            except Exception as exc:
                internal_error("streams.on_item", exc)
                keep = True
            if keep:
                yield chunk

    def on_item(self, chunk: Any) -> bool:
        count = self.count
        self.count = count + 1
        if count == 0:
            self.tracker.first_chunk()
        if self.need_ids:
            self._ids(chunk)
        choices = getattr(chunk, "choices", None)
        if choices and type(choices) is list:
            accs = self.choices
            legacy = self.legacy
            for choice in choices:
                # Fast path: plain attribute reads (the SDK's models always have these fields);
                # everything is read before anything is recorded, so a malformed choice falls
                # back to the careful path without double-counting.
                try:
                    index = choice.index
                    finish = choice.finish_reason
                    if legacy:
                        text = choice.text
                        refusal = calls = extra = None
                    else:
                        delta = choice.delta
                        text = delta.content
                        refusal = delta.refusal
                        calls = delta.tool_calls
                        extra = delta.__pydantic_extra__
                except AttributeError:
                    index = getattr(choice, "index", 0)
                    finish = getattr(choice, "finish_reason", None)
                    if legacy:
                        text = getattr(choice, "text", None)
                        refusal = calls = extra = None
                    else:
                        delta = getattr(choice, "delta", None)
                        text = getattr(delta, "content", None)
                        refusal = getattr(delta, "refusal", None)
                        calls = getattr(delta, "tool_calls", None)
                        extra = getattr(delta, "__pydantic_extra__", None)
                if type(index) is not int:
                    index = 0
                acc = accs.get(index)
                if acc is None:
                    acc = accs[index] = _Choice()
                if text and type(text) is str:
                    acc.text.append(text)
                if refusal and type(refusal) is str:
                    if acc.refusal is None:
                        acc.refusal = []
                    acc.refusal.append(refusal)
                if calls:
                    self._tool_deltas(acc, calls)
                if extra and type(extra) is dict:
                    reasoning = extra.get("reasoning_content") or extra.get("reasoning")
                    if reasoning and type(reasoning) is str:
                        if acc.reasoning is None:
                            acc.reasoning = []
                        acc.reasoning.append(reasoning)
                if finish is not None:
                    acc.finish = finish
                    if self.usage is None:
                        self._host_usage(chunk)
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
            if self.hide_usage and not choices:
                self.hidden += 1
                return False
        if self.text0 is None and not self.need_ids and not self.legacy:
            first = self.choices.get(0)
            if first is not None:
                self.text0 = first.text
        return True

    def _host_usage(self, chunk: Any) -> None:
        """Usage a host puts in its own extension of the finishing chunk (Groq: ``x_groq.usage``);
        a standard usage chunk that follows replaces it. Read once per choice's end, not per chunk."""
        extra = getattr(chunk, "__pydantic_extra__", None)
        host = extra.get("x_groq") if type(extra) is dict else None
        usage = host.get("usage") if type(host) is dict else None
        if type(usage) is dict:
            self.usage = usage

    def _ids(self, chunk: Any) -> None:
        """Response id, model and tier from the first chunk that has them (Azure's first is blank)."""
        record = self.tracker.record
        rid = getattr(chunk, "id", None)
        if record.response_id is None and type(rid) is str and rid:
            record.response_id = rid
        model = getattr(chunk, "model", None)
        if record.response_model is None and type(model) is str and model:
            record.response_model = model
        tier = getattr(chunk, "service_tier", None)
        if record.service_tier is None and type(tier) is str and tier:
            record.service_tier = tier
        if record.response_id is not None and record.response_model is not None:
            self.need_ids = False

    @staticmethod
    def _tool_deltas(acc: _Choice, calls: Any) -> None:
        if type(calls) is not list:
            return
        tools = acc.tools
        if tools is None:
            tools = acc.tools = {}
        for call in calls:
            index = getattr(call, "index", None)
            if type(index) is not int:  # hosts that omit the index: one slot per id, else the last one
                cid = getattr(call, "id", None)
                index = cid if type(cid) is str and cid else (next(reversed(tools)) if tools else 0)
            slot = tools.get(index)
            if slot is None:
                slot = tools[index] = {"id": None, "type": None, "name": None, "arguments": []}
            cid = getattr(call, "id", None)
            if cid:
                slot["id"] = cid
            kind = getattr(call, "type", None)
            if kind:
                slot["type"] = kind
            fn = getattr(call, "function", None)
            if fn is not None:
                name = getattr(fn, "name", None)
                if name:
                    slot["name"] = name
                args = getattr(fn, "arguments", None)
                if args and type(args) is str:
                    slot["arguments"].append(args)

    def on_end(self, error: BaseException | None, exhausted: bool) -> None:
        # The accumulators are ours (the app never sees them): they are assembled into the record
        # by whoever completes the call, the finisher thread as a rule.
        state = _state(error, exhausted)
        self.tracker.finish(error, fill=lambda: self._assemble(state))

    def _assemble(self, state: str) -> bool:
        """The record's outputs, finish reasons and usage from what the stream delivered; whether it refused."""
        record = self.tracker.record
        refused = False
        try:
            record.chunks = self.count
            record.stream_state = state  # type: ignore[assignment]
            accs = self.choices
            if state != "completed" and self.expected > len(accs):
                # choices the app asked for that never started
                for missing in range(self.expected):
                    if missing not in accs:
                        accs[missing] = _Choice()
            indices = sorted(accs)
            choices: list[ChoiceContent] = []
            reasons: list[str | None] = []
            for index in indices:
                acc = accs[index]
                finish = acc.finish if type(acc.finish) is str else None
                tools = None
                if acc.tools:
                    tools = [{"id": t["id"], "type": t["type"] or "function", "name": t["name"], "arguments": "".join(t["arguments"])} for t in acc.tools.values()]
                refusal = "".join(acc.refusal) if acc.refusal else None
                refused = refused or bool(refusal)
                choices.append(
                    ChoiceContent(
                        index=index,
                        text="".join(acc.text) if acc.text else None,
                        refusal=refusal,
                        tool_calls=tools,
                        finish_reason=finish,
                        reasoning_text="".join(acc.reasoning) if acc.reasoning else None,
                    )
                )
                reasons.append(finish)
            record.choices = choices
            record.finish_reasons = reasons
            if state == "abandoned" and any(r is None for r in reasons):
                record.finish_category = "error"
            if self.usage is not None:
                apply_chat_usage(record, self.usage)
            elif state == "completed":
                record.gaps.append(self.usage_gap)
            else:
                record.gaps.append(f"usage missing: stream {'failed' if state == 'error' else 'was closed'} before the usage chunk")
        except Exception as exc:
            internal_error("openai.stream_end", exc)
        return refused


_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesStreamObserver:
    """Responses API stream events."""

    __slots__ = ("tracker", "count", "output", "final", "error_event", "pending_tools")

    def __init__(self, tracker: CallTracker) -> None:
        self.tracker = tracker
        self.count = 0
        self.output = ResponseOutput()
        self.final: Any = None
        self.error_event: Any = None
        # function-call arguments streamed before their output_item.done
        self.pending_tools: dict[Any, list[str]] | None = None

    def on_item(self, event: Any) -> bool:
        count = self.count
        self.count = count + 1
        if count == 0:
            self.tracker.first_chunk()
        kind = getattr(event, "type", None)
        if kind == "response.output_text.delta":
            delta = getattr(event, "delta", None)
            if type(delta) is str:
                self.output.text.append(delta)
        elif kind == "response.function_call_arguments.delta":
            delta = getattr(event, "delta", None)
            if type(delta) is str:
                pending = self.pending_tools
                if pending is None:
                    pending = self.pending_tools = {}
                index = getattr(event, "output_index", None)
                pending.setdefault(index if type(index) is int else None, []).append(delta)
        elif kind == "response.refusal.delta":
            delta = getattr(event, "delta", None)
            if type(delta) is str:
                self.output.refusal.append(delta)
        elif kind == "response.output_item.done":
            item = getattr(event, "item", None)
            item_kind = getattr(item, "type", None)
            if type(item_kind) is str and item_kind.endswith("_call"):
                self.output.add_item(item)
                if self.pending_tools:
                    index = getattr(event, "output_index", None)
                    self.pending_tools.pop(index if type(index) is int else None, None)
            elif item_kind == "reasoning":
                self.output.add_item(item)
        elif type(kind) is str and kind in _TERMINAL:
            self.final = getattr(event, "response", None)
        elif kind == "response.created":
            response = getattr(event, "response", None)
            record = self.tracker.record
            rid = getattr(response, "id", None)
            if type(rid) is str:
                record.response_id = rid
            model = getattr(response, "model", None)
            if type(model) is str and model:
                record.response_model = model
        elif kind == "error":
            self.error_event = event
        return True

    def on_end(self, error: BaseException | None, exhausted: bool) -> None:
        state = _state(error, exhausted)
        self.tracker.finish(error, fill=lambda: self._assemble(state))

    def _assemble(self, state: str) -> bool:
        """The record from the terminal event's response, or from the deltas when there was none."""
        record = self.tracker.record
        refused = False
        try:
            record.chunks = self.count
            record.stream_state = state  # type: ignore[assignment]
            output = self.output
            if self.pending_tools:  # arguments of calls whose item never finished
                for args in self.pending_tools.values():
                    output.tools.append({"id": None, "type": "function_call", "name": None, "arguments": "".join(args)})
            if self.final is not None:
                refused = apply_response(record, self.final, fallback=output)
            else:
                record.choices = [output.choice(None)]
                record.finish_reasons = [None]
                refused = bool(output.refusal)
                record.finish_category = "error"
                if state == "completed":
                    record.gaps.append("usage missing: stream ended without response.completed")
                else:
                    record.gaps.append(f"usage missing: stream {'failed' if state == 'error' else 'was closed'} before response.completed")
            if self.error_event is not None:
                event = self.error_event
                code = getattr(event, "code", None)
                record.error_type = code if type(code) is str and code else "error"
                message = getattr(event, "message", None)
                if type(message) is str:
                    record.error_message = message[:2000]
                record.finish_category = "error"
        except Exception as exc:
            internal_error("openai.stream_end", exc)
        return refused
