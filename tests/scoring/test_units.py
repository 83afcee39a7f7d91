"""Segmentation, token apportioning, duplicate window and row conversion."""

from __future__ import annotations

from datetime import datetime, timezone

from scoring_builders import call

from wasteaudit.scoring.duplicates import DuplicateIndex, entry_for, load_rows, prompt_guard
from wasteaudit.scoring.records_io import call_from_row
from wasteaudit.scoring.segments import segment_output
from wasteaudit.scoring.views import build_view


def test_code_blocks_stay_whole_and_lists_split_per_item():
    text = "Intro sentence here. Second sentence!\n\n```python\nx = 1. \nprint(x)\n```\n\n- First item. Still first.\n- Second item\n\n## Heading\nEnd."
    segs = segment_output(text)
    kinds = [s.kind for s in segs]
    assert kinds == ["sentence", "sentence", "code", "item", "item", "item", "heading", "sentence"]
    assert segs[2].text.startswith("```python") and segs[2].text.rstrip().endswith("```")
    assert segs[0].start == 0 and segs[-1].end == len(text)
    assert all(a.end == b.start for a, b in zip(segs, segs[1:]))


def test_abbreviations_do_not_split_sentences():
    segs = segment_output("Use e.g. a cache, i.e. Redis. Then restart it.")
    assert [s.text for s in segs] == ["Use e.g. a cache, i.e. Redis.", "Then restart it."]


def test_segment_tokens_reconcile_with_billed_tokens_across_choices():
    c = call(["A first answer. With two sentences.", "Another, much longer answer that goes on for a while. And more."], tokens=37, reasoning=10, params={"n": 2})
    view = build_view(c)
    assert sum(u.tokens for ch in view.choices for u in ch.units.values()) == 37
    assert sum(ch.tokens for ch in view.choices) == 37
    assert view.choices[1].tokens > view.choices[0].tokens


def test_json_reply_is_segmented_per_leaf():
    segs = segment_output('{"name": "Ada", "langs": ["en", "fr"], "meta": {"ok": true}}')
    assert [s.path for s in segs] == [("name",), ("langs", 0), ("langs", 1), ("meta", "ok")]


def test_prompt_guard_separates_different_questions():
    assert prompt_guard("Is it safe to eat raw chicken?", "Is it safe to eat raw carrots?") == "one word substituted"
    assert prompt_guard("What is 17 times 23?", "What is 17 times 24?") == "different numbers"
    assert prompt_guard("Is it safe?", "Is it not safe?") == "negation differs"
    assert prompt_guard("Convert USD to EUR", "Convert EUR to USD") == "reordered"
    assert prompt_guard("How can I reset my password?", "How can I reset my password please?") is None


def test_duplicate_window_is_bounded_and_time_limited():
    index = DuplicateIndex(window_s=100, max_entries=3)
    calls = [call("Canberra.", prompt="capital of Australia?", at=i * 10) for i in range(5)]
    for c in calls:
        index.add(entry_for(c))
    assert len(index) == 3 and calls[0].id not in index
    probe = entry_for(call("Canberra.", prompt="capital of Australia?", at=500))
    assert index.exact(probe) == []
    assert index.evict_before(calls[3].started_at) == 1


def test_rows_from_the_database_become_records_and_fill_the_window():
    c = call("Canberra is the capital.", prompt="capital of Australia?")
    row = {
        "id": c.id, "provider": "openai", "operation": "chat", "api": "chat.completions",
        "started_at": datetime.fromtimestamp(c.started_at, timezone.utc), "request_model": c.request_model,
        "request_params": c.request_params, "usage_source": "provider", "output_tokens": c.output_tokens,
        "finish_reasons": ["stop"], "finish_category": "stop", "attempts": 1, "input_messages": c.input_messages,
        "choices": [{"index": 0, "text": "Canberra is the capital.", "finish_reason": "stop"}], "content_mode": "full",
        "gaps": None, "priced": "priced", "scored_version": None,
    }
    rec = call_from_row(row)
    assert rec.started_at == c.started_at and rec.choices[0].text == "Canberra is the capital." and rec.gaps == []
    index = DuplicateIndex()
    assert load_rows(index, [row]) == 1 and c.id in index
