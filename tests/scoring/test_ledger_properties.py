"""The ledger's invariants, checked on generated records: every token labelled at most once."""

from __future__ import annotations

from collections import defaultdict

from scoring_builders import call, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wasteaudit.scoring import Scorer
from wasteaudit.scoring.tokens import apportion

SENTENCES = [
    "The cache stores responses for an hour.",
    "Restart the service after changing the configuration file.",
    "This sentence is long enough to count as a real repeat of earlier text.",
    "I hope this helps!",
    "## Details",
    "- First item in the list of steps to follow carefully.",
    "```python\nprint('hello')\n```",
    "In summary, the cache stores responses for an hour.",
    "I'm sorry, but I can't help with that.",
    "Yes.",
]

texts = st.lists(st.sampled_from(SENTENCES), min_size=0, max_size=12).map(lambda parts: "\n\n".join(parts))
finishes = st.sampled_from(["stop", "length", "content_filter", "end_turn", "max_tokens", None])


@st.composite
def records(draw):
    n = draw(st.integers(1, 3))
    choice_texts = [draw(texts) for _ in range(n)]
    tokens = draw(st.one_of(st.none(), st.integers(0, 600)))
    returned = draw(st.one_of(st.none(), st.sampled_from(SENTENCES), texts))
    r = run(returned=returned, validation=draw(st.sampled_from([None, True, False])))
    c = call(
        choice_texts,
        run=r,
        tokens=tokens,
        usage_source="provider" if tokens is not None else "missing",
        finish=draw(finishes),
        reasoning=draw(st.one_of(st.none(), st.integers(0, 300))),
        stream_state=draw(st.sampled_from([None, "completed", "abandoned", "error"])),
        content_mode=draw(st.sampled_from(["full", "full", "none"])),
        params={"n": n},
        response_format=draw(st.sampled_from([None, {"type": "json_object"}])),
    )
    return c, r


_scorer = Scorer(embedder=None)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_waste_never_exceeds_billed_output_tokens(sample):
    c, r = sample
    result = _scorer.score([c], {r.id: r})
    billed = result.coverage[0].billed_output_tokens
    limit = billed if billed is not None else max(1, sum(len(ch.text or "") for ch in c.choices))
    confirmed = sum(f.tokens for f in result.findings if f.tier == "confirmed")
    total = sum(f.tokens for f in result.findings)
    assert confirmed <= limit
    assert total <= limit
    assert all(f.tokens > 0 for f in result.findings)


@settings(max_examples=100, deadline=None)
@given(records())
def test_segment_findings_never_overlap(sample):
    c, r = sample
    result = _scorer.score([c], {r.id: r})
    spans = defaultdict(list)
    for f in result.findings:
        if f.segment_start is not None:
            spans[f.choice_index].append((f.segment_start, f.segment_end))
    for items in spans.values():
        items.sort()
        for (s1, e1), (s2, _e2) in zip(items, items[1:]):
            assert e1 <= s2


@given(st.integers(0, 10_000), st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=30))
def test_apportion_parts_sum_to_the_total(total, weights):
    parts = apportion(total, weights)
    assert sum(parts) == total
    assert all(p >= 0 for p in parts)
    if sum(weights) > 0:
        for p, w in zip(parts, weights):
            assert abs(p - total * w / sum(weights)) < 1.0 + 1e-9


def test_failed_beats_unused_beats_redundant_on_the_same_tokens():
    para = "This paragraph is long enough to be a real repeat of the earlier text in the answer."
    r = run(returned="something else entirely")
    c = call(f"{para}\n\n{para}", run=r, finish="length")
    result = _scorer.score([c], {r.id: r})
    assert [f.subkind for f in result.findings] == ["truncated"]
    assert result.findings[0].tokens == c.output_tokens
