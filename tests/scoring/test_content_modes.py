"""Hashed and none content modes degrade gracefully and say so in the evidence."""

from __future__ import annotations

from scoring_builders import call, run

from wasteaudit._internal.content import hash_segments, keyed_hash


def hashed(text: str) -> dict:
    return hash_segments(text, "k")


def test_hashed_mode_finds_a_repeated_block_by_line_hashes(rules_scorer):
    para = ["Regular exercise strengthens the heart.", "It also helps regulate blood sugar.", "Even a brisk walk helps."]
    text = "\n".join(para * 3)
    c = call(text, content_mode="hashed", tokens=90)
    c.choices[0].text = hashed(text)
    c.input_messages = [{"role": "user", "content": hashed("Why exercise?")}]
    result = rules_scorer.score([c])
    rep = [f for f in result.findings if f.subkind == "repetition" and f.tier == "confirmed"]
    assert sum(f.tokens for f in rep) == 60
    assert all(f.segment_start is None and f.evidence["content_mode"] == "hashed" for f in rep)
    assert any("hashed" in gap for gap in result.coverage[0].gaps)


def test_hashed_mode_finds_exact_duplicate_calls(rules_scorer):
    answer = "Canberra is the capital of Australia."
    calls = []
    for i in range(2):
        c = call(answer, prompt="x", content_mode="hashed", tokens=10, at=i * 60)
        c.choices[0].text = hashed(answer)
        c.input_messages = [{"role": "user", "content": hashed("What is the capital of Australia?")}]
        calls.append(c)
    result = rules_scorer.score(calls)
    dup = [f for f in result.findings if f.subkind == "duplicate_call"]
    assert [f.call_id for f in dup] == [calls[1].id]


def test_hashed_mode_measures_use_by_line_hash(rules_scorer):
    lines = ["Bonjour tout le monde.", "This is the French for hello everyone.", "Formal emails use another greeting."]
    text = "\n".join(lines)
    r = run(returned=None)
    r.used_values = [__import__("json").dumps(hashed(lines[0]))]
    c = call(text, run=r, content_mode="hashed", tokens=30)
    c.choices[0].text = hashed(text)
    assert hashed(lines[0])["lines"][0] == keyed_hash(lines[0], "k")
    result = rules_scorer.score([c], {r.id: r})
    unused = [f for f in result.findings if f.subkind == "not_in_result"]
    assert sum(f.tokens for f in unused) == 20


def test_none_mode_keeps_failed_and_extra_choice_only(rules_scorer):
    a = call(None, content_mode="none", tokens=50, finish="length", params={"max_tokens": 50})
    b = call([None, None, None], content_mode="none", tokens=90, params={"n": 3}, at=1)
    result = rules_scorer.score([a, b])
    kinds = {(f.call_id, f.subkind) for f in result.findings}
    assert (a.id, "truncated") in kinds
    extra = [f for f in result.findings if f.subkind == "extra_choice"]
    assert sum(f.tokens for f in extra) == 60 and all(f.tier == "possible" for f in extra)
    assert {f.subkind for f in result.findings} <= {"truncated", "extra_choice"}
    assert all("none" in " ".join(cov.gaps) for cov in result.coverage)


def test_rules_only_fallback_notes_the_gap_and_still_finds_rule_waste(rules_scorer):
    para = "Regular exercise strengthens the heart and improves circulation throughout the body."
    r = run(returned="Meeting moved to Thursday since the flight got delayed.")
    c = call(f"{para} {para} {para}", at=0)
    d = call("The meeting moved to Thursday because the client's flight was delayed.\n\nBring the signed contract.", run=r, at=1)
    result = rules_scorer.score([c, d], {r.id: r})
    assert any(f.subkind == "repetition" and f.tier == "confirmed" for f in result.findings)
    assert all(f.evidence.get("limitation") for f in result.findings)
    assert all(not cov.embeddings for cov in result.coverage)
    # paraphrased use cannot be checked without embeddings: never confirmed
    assert all(f.tier == "possible" for f in result.findings if f.call_id == d.id)


def test_missing_scorer_extra_raises_a_helpful_error_and_the_engine_falls_back(monkeypatch):
    import importlib.util

    from wasteaudit.exceptions import MissingExtraError
    from wasteaudit.scoring import Scorer
    from wasteaudit.scoring import embeddings

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sentence_transformers" else real(name, *a))
    try:
        embeddings.load_default_embedder()
    except MissingExtraError as exc:
        assert "pip install 'wasteaudit[scorer]'" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected MissingExtraError")
    scorer = Scorer()
    assert not scorer.embeddings and "wasteaudit[scorer]" in (scorer.embedding_gap or "")
