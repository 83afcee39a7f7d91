"""Scenario tests on realistic outputs: each gives the expected kind and roughly the expected share."""

from __future__ import annotations

import json

from scoring_builders import call, run, score

from wasteaudit.scoring.findings import Finding

ANSWER = (
    "HTTP caching lets browsers and proxies reuse earlier responses instead of downloading them again.\n\n"
    "The `Cache-Control` header controls it:\n"
    "- `max-age=3600` keeps a response fresh for an hour.\n"
    "- `no-store` forbids caching entirely, which suits banking pages.\n"
    "- `private` allows the browser cache but not shared proxies.\n\n"
    "When a cached copy goes stale, the browser revalidates it with `If-None-Match` and the ETag; "
    "a `304 Not Modified` reply means the cached body can be reused without sending it again."
)


def tokens(findings: list[Finding], subkind: str | None = None, call_id: str | None = None, tier: str = "confirmed") -> int:
    return sum(f.tokens for f in findings if (subkind is None or f.subkind == subkind) and (call_id is None or f.call_id == call_id) and f.tier == tier)


def test_clean_answer_returned_verbatim_scores_no_waste(scorer):
    r = run(returned=ANSWER)
    c = call(ANSWER, run=r)
    result = scorer.score([c], {r.id: r})
    assert tokens(result.findings) == 0
    assert tokens(result.findings, tier="possible") == 0
    assert result.coverage[0].use_observable


def test_clean_answers_without_use_signal_score_no_waste(scorer):
    answers = [
        ANSWER,
        "Use `git rebase -i HEAD~3` to squash the last three commits. Mark the second and third as `squash`, save, and edit the combined message.",
        "```python\ndef mean(xs):\n    return sum(xs) / len(xs)\n```\nThis raises `ZeroDivisionError` for an empty list, so check `xs` first.",
        "Paris is the capital of France. It has been the seat of government since the tenth century, apart from brief interruptions.",
    ]
    calls = [call(a, prompt=f"question {i}", at=i) for i, a in enumerate(answers)]
    result = scorer.score(calls)
    assert tokens(result.findings) == 0
    assert all(not cov.use_observable for cov in result.coverage)


def test_paragraph_repeated_three_times_is_two_thirds_repetition(scorer):
    para = (
        "Regular exercise strengthens the heart and improves circulation throughout the body. "
        "It also helps regulate blood sugar and supports a healthy weight over time. "
        "Even a brisk thirty-minute walk on most days makes a measurable difference."
    )
    c = call(f"{para}\n\n{para}\n\n{para}", prompt="Why is exercise good for you?")
    result = scorer.score([c])
    share = tokens(result.findings, "repetition") / c.output_tokens
    assert 0.6 <= share <= 0.7
    assert all(f.kind == "redundant" for f in result.findings)


def test_three_choices_with_one_used_marks_two_as_extra(scorer):
    a = "Title: Ten Habits That Quietly Improve Your Sleep Tonight"
    b = "Title: Why Your Bedroom Temperature Matters More Than You Think"
    c_ = "Title: The Science of Napping and When It Backfires"
    r = run(returned=b.removeprefix("Title: "))
    c = call([a, b, c_], run=r, params={"n": 3}, prompt="Suggest a blog post title about sleep.")
    result = scorer.score([c], {r.id: r})
    extra = [f for f in result.findings if f.subkind == "extra_choice"]
    assert {f.choice_index for f in extra} == {0, 2}
    assert 0.55 <= tokens(result.findings, "extra_choice") / c.output_tokens <= 0.75
    assert not [f for f in result.findings if f.choice_index == 1 and f.tier == "confirmed" and f.subkind != "not_in_result"]


def test_truncated_answer_then_retry_marks_the_first_as_truncated(scorer):
    r = run(name="app.summarize")
    full = ANSWER
    cut = ANSWER[: len(ANSWER) // 2]
    first = call(cut, run=r, finish="length", params={"max_tokens": 60}, at=0)
    second = call(full, run=r, params={"max_tokens": 400}, at=3)
    r.return_value = full
    result = scorer.score([first, second], {r.id: r})
    assert tokens(result.findings, "truncated", first.id) == first.output_tokens
    assert tokens(result.findings, call_id=second.id) == 0


def test_invalid_json_then_valid_json_marks_the_first_invalid(scorer):
    r = run(name="app.extract")
    fmt = {"type": "json_object"}
    bad = call('{"name": "Ada Lovelace", "born": 1815, "field": "mathematics"', run=r, response_format=fmt, prompt="Extract the person as JSON.", at=0)
    good = call('{"name": "Ada Lovelace", "born": 1815, "field": "mathematics"}', run=r, response_format=fmt, prompt="Extract the person as JSON.", at=2)
    r.return_value = json.dumps({"name": "Ada Lovelace", "born": 1815, "field": "mathematics"})
    result = scorer.score([bad, good], {r.id: r})
    assert tokens(result.findings, "invalid_output", bad.id) == bad.output_tokens
    assert tokens(result.findings, call_id=good.id) == 0


def test_schema_violation_is_invalid_output(scorer):
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object", "required": ["name", "born"],
                                                                          "properties": {"name": {"type": "string"}, "born": {"type": "integer"}}}}}
    c = call('{"name": "Ada Lovelace", "born": "December 1815"}', response_format=fmt)
    result = scorer.score([c])
    finding = next(f for f in result.findings if f.subkind == "invalid_output")
    assert finding.tokens == c.output_tokens and "born" in json.dumps(finding.evidence)


def test_refusal_in_text_is_failed(scorer):
    c = call("I'm sorry, but I can't help with creating malware or anything designed to harm computer systems.", prompt="Write a keylogger that hides from antivirus.")
    result = scorer.score([c])
    assert tokens(result.findings, "refusal") == c.output_tokens


def test_refusal_field_and_content_filter_are_failed(scorer):
    a = call(None, refusal="I can't assist with that.", tokens=9)
    b = call("Partial text before the filter", finish="content_filter", tokens=12, at=1)
    result = scorer.score([a, b])
    assert tokens(result.findings, "refusal", a.id) == 9
    assert tokens(result.findings, "refusal", b.id) == 12


def test_long_answer_with_a_caveat_is_not_a_refusal(scorer):
    text = ("I can't give medical advice, but here is general information. " + ANSWER.replace("HTTP", "Sleep")) * 2
    c = call(text)
    result = scorer.score([c])
    assert tokens(result.findings, "refusal") == 0


def test_first_line_only_consumer_leaves_the_rest_unused(scorer):
    text = (
        "Bonjour tout le monde.\n\n"
        "This is the French for 'hello everyone'. 'Bonjour' is the everyday greeting used until evening, "
        "and 'tout le monde' literally means 'all the world'. In a formal email you would rather write "
        "'Mesdames et Messieurs', and among friends 'Salut tout le monde' sounds more relaxed."
    )
    r = run(name="app.translate", returned="Bonjour tout le monde.")
    c = call(text, run=r, prompt="Translate 'hello everyone' to French.")
    result = scorer.score([c], {r.id: r})
    share = tokens(result.findings, "not_in_result") / c.output_tokens
    assert 0.8 <= share <= 0.97
    assert all(f.segment_start is not None and f.segment_start >= len("Bonjour tout le monde.") for f in result.findings if f.subkind == "not_in_result")


def test_first_line_of_an_abandoned_stream_counts_the_rest_as_abandoned(scorer):
    received = "Bonjour tout le monde.\n\nThis is the French for 'hello everyone'."
    r = run(name="app.translate", returned="Bonjour tout le monde.")
    c = call(received, run=r, tokens=120, finish=None, category="error", stream_state="abandoned")
    c.error_type = None
    result = scorer.score([c], {r.id: r})
    assert tokens(result.findings, "abandoned_stream") > 100
    assert tokens(result.findings) <= 120


def test_same_question_asked_three_times_flags_the_repeats(scorer):
    answer = "The boiling point of water at sea level is 100 °C (212 °F). At higher altitude it boils at a lower temperature."
    calls = [call(answer, prompt="What is the boiling point of water?", run=run(at=i * 3600.0), at=i * 3600.0) for i in range(3)]
    result = scorer.score(calls)
    dup = [f for f in result.findings if f.subkind == "duplicate_call"]
    assert {f.call_id for f in dup} == {calls[1].id, calls[2].id}
    assert all(f.tier == "confirmed" and f.tokens == calls[0].output_tokens for f in dup)
    assert dup[0].evidence["matching_call_id"] == calls[0].id


def test_paraphrased_question_with_agreeing_answer_is_a_duplicate(scorer):
    a = call("To reset your password, open Settings, choose Security, and click 'Reset password'. You will get an email with a link.",
             prompt="How can I reset my password?", at=0)
    b = call("Open Settings, go to Security and click 'Reset password'; we then email you a reset link.",
             prompt="How can I reset my password please?", at=60)
    result = scorer.score([a, b])
    dup = [f for f in result.findings if f.subkind == "duplicate_call"]
    assert [f.call_id for f in dup] == [b.id]


def test_similar_questions_with_different_answers_are_not_duplicates(scorer):
    a = call("No. Raw chicken often carries Salmonella and Campylobacter; cook it to 74 °C (165 °F).", prompt="Is it safe to eat raw chicken?", at=0)
    b = call("Yes. Raw carrots are safe and nutritious; just wash or peel them first.", prompt="Is it safe to eat raw carrots?", at=60)
    c = call("Convert with the current rate: 100 USD is about 92 EUR today.", prompt="Convert 100 USD to EUR", at=120)
    d = call("Convert with the current rate: 100 EUR is about 109 USD today.", prompt="Convert 100 EUR to USD", at=180)
    result = scorer.score([a, b, c, d])
    assert not [f for f in result.findings if f.subkind == "duplicate_call" and f.tier == "confirmed"]


def test_anthropic_max_tokens_then_retry_marks_the_first_truncated(scorer):
    r = run(name="app.essay")
    first = call(ANSWER[:300], run=r, provider="anthropic", finish="max_tokens", params={"max_tokens": 80}, model="claude-sonnet-4-5", at=0)
    second = call(ANSWER, run=r, provider="anthropic", finish="end_turn", params={"max_tokens": 1024}, model="claude-sonnet-4-5", at=4)
    r.return_value = ANSWER
    result = scorer.score([first, second], {r.id: r})
    assert tokens(result.findings, "truncated", first.id) == first.output_tokens
    assert tokens(result.findings, call_id=second.id) == 0
    f = next(f for f in result.findings if f.subkind == "truncated")
    assert f.evidence["finish_reason"] == "max_tokens"


def test_same_request_retried_in_a_run_discards_the_unused_first_answer(scorer):
    r = run(name="app.slogan")
    first = call("Fresh bread, every morning, right around the corner.", run=r, prompt="Write a slogan for a bakery.", params={"temperature": 1.0}, at=0)
    second = call("Baked at dawn, loved all day.", run=r, prompt="Write a slogan for a bakery.", params={"temperature": 1.0}, at=2)
    r.return_value = "Baked at dawn, loved all day."
    result = scorer.score([first, second], {r.id: r})
    assert tokens(result.findings, "discarded_retry", first.id) == first.output_tokens
    assert tokens(result.findings, call_id=second.id) == 0


def test_validator_rejection_marks_the_runs_output_invalid(scorer):
    r = run(name="app.sql", validation=False, returned="SELECT * FROM users WHERE")
    c = call("SELECT * FROM users WHERE", run=r)
    result = scorer.score([c], {r.id: r}, [score(r, "validation", 0.0)])
    assert tokens(result.findings, "invalid_output") == c.output_tokens


def test_error_after_output_counts_billed_tokens(scorer):
    c = call("Partial answer that was streaming when the connection", tokens=40, finish=None, error="APIConnectionError", stream_state="error")
    result = scorer.score([c])
    assert tokens(result.findings, "error") == 40


def test_summary_restating_the_answer_is_confirmed_repetition(scorer):
    text = (
        "Compound interest means you earn interest on your interest, not just on the money you deposited.\n\n"
        "For example, $1,000 at 5% grows to $1,050 after one year and to $1,102.50 after two years.\n\n"
        "The longer the money stays invested, the faster the balance grows.\n\n"
        "In summary, compound interest means you earn interest on previously earned interest as well as on your deposit."
    )
    c = call(text, prompt="What is compound interest?")
    result = scorer.score([c])
    rep = [f for f in result.findings if f.subkind == "repetition" and f.tier == "confirmed"]
    assert rep and rep[0].evidence["rule"] == "restatement"
    assert text[rep[0].segment_start : rep[0].segment_end].startswith("In summary")


def test_new_conclusion_is_not_repetition(scorer):
    text = (
        "Compound interest means you earn interest on your interest, not just on the money you deposited.\n\n"
        "For example, $1,000 at 5% grows to $1,050 after one year and to $1,102.50 after two years.\n\n"
        "The longer the money stays invested, the faster the balance grows.\n\n"
        "In summary, start saving early, pick accounts that compound monthly, and avoid withdrawing the interest."
    )
    c = call(text, prompt="What is compound interest?")
    result = scorer.score([c])
    assert tokens(result.findings, "repetition") == 0


def test_parallel_list_items_are_not_repetition(scorer):
    text = (
        "Two-pointer technique:\n"
        "- Move the left pointer one step to the right while the sum is too small.\n"
        "- Move the right pointer one step to the left while the sum is too large.\n"
        "- Stop when the left pointer meets the right pointer in the middle."
    )
    c = call(text, prompt="Explain the two-pointer technique.")
    result = scorer.score([c])
    assert tokens(result.findings, "repetition") == 0
    assert tokens(result.findings, "repetition", tier="possible") == 0


def test_opening_that_restates_the_question_is_prompt_echo(scorer):
    text = (
        "You are asking how to make your Python script run faster.\n\n"
        "Profile it first with `cProfile` to find the hot spots, then move inner loops into NumPy or use `functools.lru_cache` for repeated pure calls."
    )
    c = call(text, prompt="How can I make my Python script run faster?")
    result = scorer.score([c])
    echo = [f for f in result.findings if f.subkind == "prompt_echo"]
    assert echo and echo[0].segment_start == 0


def test_answer_that_states_the_verdict_is_not_prompt_echo(scorer):
    c = call("No, it is not safe to eat raw chicken. Cook it to 74 °C to kill Salmonella.", prompt="Is it safe to eat raw chicken?")
    result = scorer.score([c])
    assert tokens(result.findings, "prompt_echo") == 0


def test_degenerate_loop_is_repetition(scorer):
    text = "The answer is " + "and then it repeats " * 30
    c = call(text)
    result = scorer.score([c])
    assert tokens(result.findings, "repetition") >= 0.8 * c.output_tokens


def test_filler_phrase_is_possible_waste(scorer):
    text = ANSWER + "\n\nI hope this helps! Let me know if you have any other questions."
    c = call(text)
    result = scorer.score([c])
    filler = [f for f in result.findings if f.subkind == "filler"]
    assert filler and all(f.tier == "possible" for f in filler)
    assert tokens(result.findings) == 0  # nothing confirmed


def test_paraphrased_use_counts_as_used(scorer):
    text = (
        "The meeting moved to Thursday at 3 pm because the client's flight was delayed.\n\n"
        "Please bring the revised budget spreadsheet and the signed contract.\n\n"
        "The office coffee machine is broken again, so grab a coffee on the way."
    )
    r = run(returned="Meeting rescheduled to Thursday 3 pm since the client's flight got delayed. Bring the updated budget spreadsheet and signed contract.")
    c = call(text, run=r, prompt="Summarize the email.")
    result = scorer.score([c], {r.id: r})
    unused = [f for f in result.findings if f.subkind == "not_in_result" and f.tier == "confirmed"]
    assert len(unused) == 1
    assert text[unused[0].segment_start : unused[0].segment_end].startswith("The office coffee")


def test_output_absent_from_result_is_only_possible(scorer):
    r = run(returned="Your ticket was routed to the billing team.")
    c = call("billing", run=r, prompt="Classify this ticket: I was charged twice.")
    result = scorer.score([c], {r.id: r})
    assert tokens(result.findings) == 0


def test_same_question_three_times_in_one_run_is_counted_once_per_extra_answer(scorer):
    r = run(name="app.ask")
    answer = "The boiling point of water at sea level is 100 °C (212 °F)."
    calls = [call(answer, prompt="What is the boiling point of water?", run=r, at=i) for i in range(3)]
    r.return_value = answer
    result = scorer.score(calls, {r.id: r})
    by_call = {c.id: [f.subkind for f in result.findings if f.call_id == c.id and f.tier == "confirmed"] for c in calls}
    assert not any("duplicate_call" in kinds for kinds in by_call.values())
    # exactly two of the three identical answers are waste; which is unknowable, the last is credited
    assert by_call[calls[0].id] == ["discarded_retry"] and by_call[calls[1].id] == ["discarded_retry"] and by_call[calls[2].id] == []
