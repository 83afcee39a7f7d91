"""The waste `wasteaudit demo` injects, computed from what its apps and endpoint did — not by the scorer.

The demo's endpoint and apps plant known waste (wasteaudit/demo/): refusals to one support
question; extraction replies that are not JSON and are asked for again; agent answers cut at
``max_tokens`` and asked again with a larger cap; n=3 title suggestions of which one is kept;
compact support answers that show only the first paragraph; answers that restate themselves
("In summary, ..."); and requests repeated word for word that get the same answer again. This
module recomputes, from the stored calls and runs, how many output tokens each of those patterns
wasted, so a test can hold the report's figures against them.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from wasteaudit.demo.endpoint import REFUSAL

LOOK_BACK = timedelta(days=7)


@dataclass
class Truth:
    """Injected waste in output tokens, by kind, with the share of each pattern for messages."""

    failed: float = 0.0
    unused: float = 0.0
    redundant: float = 0.0
    patterns: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    output_tokens: int = 0

    def add(self, kind: str, pattern: str, tokens: float) -> None:
        setattr(self, kind, getattr(self, kind) + tokens)
        self.patterns[pattern] += tokens


def _texts(choices_json: str | None) -> list[str]:
    return [str(c.get("text") or "") for c in json.loads(choices_json or "[]")]


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def injected_waste(db: str, start: datetime, end: datetime, *, function: str | None = None) -> Truth:
    """Injected waste of the calls that started in [start, end) (naive UTC), optionally of one function."""
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "select c.id, c.run_id, c.function, c.started_at, c.output_tokens, c.finish_category, c.choices,"
        " c.request_model, c.input_messages, c.request_params, r.return_value"
        " from wasteaudit_calls c left join wasteaudit_runs r on r.id = c.run_id order by c.started_at, c.id"
    ).fetchall()
    conn.close()
    last_of_run: dict[str, str] = {}
    for call_id, run_id, *_ in rows:
        if run_id:
            last_of_run[run_id] = call_id  # ordered by start: the last one wins
    seen: dict[tuple[str, str, str], list[tuple[datetime, tuple[str, ...]]]] = defaultdict(list)
    truth = Truth()
    for call_id, run_id, name, started, tokens, finish, choices, model, messages, params, returned in rows:
        when = _when(started)
        texts = _texts(choices)
        key = (str(model), str(messages), str(params))
        earlier = [t for t, previous in seen[key] if when - t <= LOOK_BACK and previous == tuple(texts)]
        seen[key].append((when, tuple(texts)))
        if not (start <= when < end) or tokens is None or (function is not None and name != function):
            continue
        truth.output_tokens += tokens
        text = texts[0] if texts else ""
        if name == "support.answer" and text == REFUSAL:
            truth.add("failed", "refusal", tokens)
            continue
        if name == "extract.ticket" and call_id != last_of_run.get(run_id or ""):
            truth.add("failed", "reply re-asked (not JSON)", tokens)
            continue
        if name == "agent.order_status" and finish == "length":
            truth.add("failed", "answer cut at max_tokens, re-asked", tokens)
            continue
        if name == "titles.suggest" and len(texts) > 1:
            truth.add("unused", "extra choices", tokens * sum(map(len, texts[1:])) / sum(map(len, texts)))
            continue
        if name != "support.answer":
            if earlier and finish == "tool":
                truth.add("redundant", "repeated agent request", tokens)
            continue
        share = tokens / len(text) if text else 0.0
        shown = returned or ""
        unread = len(text) - len(shown) if shown and text.startswith(shown) else 0
        # A restating summary is redundant whether or not it was shown: its content is the first
        # paragraph's, which the user saw. What else the compact mode hid (the filler) is unused.
        summary = len(text.split("\n\n")[1]) if "\n\nIn summary, " in text else 0
        unused = share * max(0, unread - summary)
        if unused:
            truth.add("unused", "compact answer: paragraphs not shown", unused)
        if earlier:
            truth.add("redundant", "repeated support request", tokens - unused)
        elif summary:
            truth.add("redundant", "restating summary", share * summary)
    return truth
