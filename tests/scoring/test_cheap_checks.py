"""Cheap checks first: lexical shortcuts and background encoding change the cost, not the findings."""

from __future__ import annotations

import sys
from pathlib import Path

from scoring_builders import call, run

from wasteaudit.scoring import Scorer, ScorerConfig
from wasteaudit.scoring.duplicates import same_answer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bench_scorer  # noqa: E402

ANSWER = ("The nightly backup copies the primary database to the remote bucket at two in the morning, "
          "then verifies the checksum of every file and deletes copies older than thirty days.")


def _ledger(findings: list) -> list[tuple]:
    return sorted((f.call_id, f.subkind, f.tier, f.tokens, f.choice_index, f.segment_start, f.segment_end) for f in findings)


def _score(scorer: Scorer, calls: list, runs: dict) -> list:
    found = []
    for start in range(0, len(calls), 50):
        chunk = calls[start : start + 50]
        found += scorer.score(chunk, {c.run_id: runs[c.run_id] for c in chunk if c.run_id in runs}).findings
    return found


def test_same_answer_accepts_a_few_substituted_words_but_not_numbers_negations_or_pivots():
    assert same_answer(ANSWER, ANSWER.replace("The nightly", "Our nightly"))
    assert not same_answer(ANSWER + " Keep the left copy.", ANSWER + " Keep the right copy.")  # a pivot word
    assert not same_answer(ANSWER, ANSWER.replace("verifies", "never verifies"))  # a word added
    assert not same_answer(ANSWER, ANSWER.replace("older", "newer").replace("remote", "local").replace("primary", "shared"))  # > 5 % changed
    assert not same_answer(ANSWER + " Run it 3 times.", ANSWER + " Run it 4 times.")  # numbers differ
    assert not same_answer(ANSWER, ANSWER.replace("every file", "no file"))  # a negation
    assert not same_answer("Yes, it is safe.", "No, it is safe.")  # too short to judge by words


def test_a_summary_repeating_an_earlier_sentence_is_confirmed_without_embedding_it(scorer):
    first = "Regular exercise strengthens the heart and improves circulation throughout the body."
    text = (f"{first} It also lowers blood pressure over time.\n\nSleep matters as much as training does.\n\n"
            f"Hydration helps recovery after long sessions.\n\nIn summary, {first[0].lower()}{first[1:]}")
    r = run(name="app.health", returned=text)
    c = call(text, run=r)
    result = scorer.score([c], {r.id: r})
    restated = [f for f in result.findings if f.evidence.get("rule") == "restatement"]
    assert len(restated) == 1 and restated[0].tier == "confirmed" and restated[0].evidence["method"] == "lexical"
    assert text[restated[0].segment_start : restated[0].segment_end].strip().startswith("In summary")
    assert result.stats["texts_embedded"] == 0


def test_lexical_shortcuts_give_the_findings_embeddings_give_while_embedding_fewer_texts(embedder):
    calls, runs = bench_scorer.build_mix(300, seed=11)
    fast = Scorer(embedder=embedder)
    slow = Scorer(ScorerConfig(lexical_shortcuts=False), embedder=embedder)
    with_shortcuts = _score(fast, calls, runs)
    without = _score(slow, calls, runs)
    assert _ledger(with_shortcuts) == _ledger(without)
    assert fast.store.encoded < slow.store.encoded


def test_background_encoding_gives_the_findings_of_encoding_on_the_calling_thread(embedder):
    calls, runs = bench_scorer.build_mix(200, seed=5)
    background = Scorer(embedder=embedder, background=True)
    inline = Scorer(embedder=embedder, background=False)
    assert _ledger(_score(background, calls, runs)) == _ledger(_score(inline, calls, runs))
    assert background.store.encode_calls > 0 and background.store.encoded == inline.store.encoded
    background.store.close()
