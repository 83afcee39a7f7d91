"""The shipped labelled set holds the confirmed tier to precision ≥ 0.9 (with the real MiniLM)."""

from __future__ import annotations

from collections import Counter

from wasteaudit.scoring.calibration import evaluate, load_items


def test_calibration_set_is_large_and_covers_every_category():
    items = load_items()
    assert len(items) >= 150
    cats = Counter(i["category"] for i in items)
    for needed in ("paraphrase", "same_topic", "repeated_list_item", "parallel_list", "restating_summary", "new_conclusion",
                   "negated_question", "reversed_question", "different_slot", "exact_duplicate"):
        assert cats[needed] >= 5, needed
    assert len({i["id"] for i in items}) == len(items)


def test_confirmed_tier_precision_is_at_least_0_9(scorer):
    table = evaluate(scorer)
    overall = table[("ALL confirmed findings", "all", "confirmed")]
    assert overall.precision is not None and overall.precision >= 0.9, overall.false_positives
    for (rule, _kind, tier), counts in table.items():
        if tier == "confirmed" and counts.tp + counts.fp >= 5:
            assert counts.precision >= 0.8, (rule, counts.false_positives)
    # The "must not be duplicates" categories never produce a confirmed duplicate.
    dup = table[("duplicate_call", "requests", "confirmed")]
    assert not [i for i in dup.false_positives]
