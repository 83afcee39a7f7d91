"""The content policy: secrets never survive, modes decide what text is kept, sizes are capped."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest

from wasteaudit._internal.content import REDACTED, apply_content_policy, scrub
from wasteaudit.config import settings_from_env
from wasteaudit.records import CallRecord, ChoiceContent

KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"


def make_record(text: str = "The answer is 42.") -> CallRecord:
    return CallRecord(
        id="c1",
        provider="openai",
        operation="chat",
        api="chat.completions",
        started_at=0.0,
        input_messages=[{"role": "user", "content": f"my key is {KEY}, what is 6*7?"}],
        choices=[ChoiceContent(index=0, text=text, tool_calls=[{"id": "t1", "name": "calc", "arguments": '{"x": 6}'}])],
    )


@pytest.mark.parametrize(
    "secret",
    [KEY, "sk-ant-api03-" + "x" * 40, "Bearer abcdefghijklmnopqrstuvwxyz012345", "AKIAABCDEFGHIJKLMNOP", "api_key=supersecretvalue123"],
)
def test_scrub_removes_credentials(secret):
    cleaned = scrub(f"before {secret} after")
    assert secret not in cleaned and REDACTED in cleaned and cleaned.startswith("before")


def test_scrub_leaves_ordinary_text_alone():
    text = "Skip the sk- prefix; tokens are counted per request. Bearer of bad news."
    assert scrub(text) == text


def test_full_mode_keeps_text_but_never_the_key():
    record = apply_content_policy(make_record(), settings_from_env({}))
    assert KEY not in str(record.input_messages)
    assert "what is 6*7" in str(record.input_messages)
    assert record.choices[0].text == "The answer is 42."


def test_none_mode_keeps_no_text_at_all():
    record = apply_content_policy(make_record(), settings_from_env({}, content_mode="none"))
    assert record.input_messages is None
    assert record.choices[0].text is None
    assert record.choices[0].tool_calls == [{"id": "t1", "name": "calc"}]


def test_hashed_mode_keeps_line_hashes_not_text():
    record = apply_content_policy(make_record("line one\nline two\nline one"), settings_from_env({}, content_mode="hashed"))
    hashed = record.choices[0].text
    assert isinstance(hashed, dict) and "line one" not in str(hashed)
    assert hashed["lines"][0] == hashed["lines"][2] != hashed["lines"][1]


def test_redacted_mode_applies_the_hook_and_a_failing_hook_hides_everything():
    record = apply_content_policy(make_record("call me at 555-1234"), settings_from_env({}, content_mode="redacted", redact=lambda s: s.replace("555-1234", "<phone>")))
    assert record.choices[0].text == "call me at <phone>"

    def broken(_: str) -> str:
        raise RuntimeError("hook bug")

    record = apply_content_policy(make_record("secret plan"), settings_from_env({}, content_mode="redacted", redact=broken))
    assert record.choices[0].text == REDACTED


def test_outputs_are_capped_and_the_gap_is_recorded():
    record = apply_content_policy(make_record("é" * 1000), settings_from_env({}, max_output_bytes=101))
    assert record.choices[0].text == "é" * 50
    assert record.content_truncated
    assert "content truncated at max_output_bytes" in record.gaps


def test_policy_is_applied_once():
    settings = settings_from_env({}, content_mode="redacted", redact=lambda s: s + "!")
    record = apply_content_policy(make_record("x"), settings)
    apply_content_policy(record, settings)
    assert record.choices[0].text == "x!"


def test_text_shorter_than_any_secret_is_never_scanned():
    """``scrub`` skips text below MIN_SECRET_CHARS: that must stay the regex's shortest match."""
    import re._parser as sre_parse

    from wasteaudit._internal.content import _SECRET_PATTERNS, MIN_SECRET_CHARS

    assert sre_parse.parse(_SECRET_PATTERNS.pattern).getwidth()[0] == MIN_SECRET_CHARS
    assert scrub("secret=12345678") == REDACTED  # exactly the shortest secret
    assert scrub("secret=1234567") == "secret=1234567"


def test_ascii_outputs_are_capped_at_the_byte_limit():
    record = apply_content_policy(make_record("abcdef" * 20), settings_from_env({}, max_output_bytes=101))
    assert record.choices[0].text == ("abcdef" * 20)[:101]
    assert record.content_truncated
    fits = apply_content_policy(make_record("a" * 101), settings_from_env({}, max_output_bytes=101))
    assert fits.choices[0].text == "a" * 101 and not fits.content_truncated


def test_sdk_objects_and_odd_values_in_messages_become_plain_filtered_json():
    class Message:
        def model_dump(self, mode: str, exclude_unset: bool) -> dict:
            return {"role": "assistant", "content": f"echo {KEY}", "n": 1}

    record = make_record()
    record.input_messages = [Message(), {"role": "user", "content": b"raw", 7: (True, None, 1.5)}]
    apply_content_policy(record, settings_from_env({}))
    assert record.input_messages == [
        {"role": "assistant", "content": f"echo {REDACTED}", "n": 1},
        {"role": "user", "content": "<3 bytes>", "7": [True, None, 1.5]},
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Keep the secret: the password is in the vault; the api key rotates.",  # keywords alone
        "A task-based, risk-free plan with gh_pages and xo-xo.",  # prefixes without a key after them
        "Authorization is granted per team.",
    ],
)
def test_words_that_only_resemble_secrets_are_kept(text):
    assert scrub(text) == text


@pytest.mark.parametrize(
    "secret",
    [
        "password: hunter22hunter",
        'secret="0123456789abcdef"',
        "x-api-key: abcdefgh12345678",
        "Authorization = dXNlcjpwYXNzd29yZA",
        "ghp_" + "a" * 36,
        "xoxb-1234567890-abc",
        "AIza" + "B" * 35,
    ],
)
def test_each_kind_of_secret_is_found_past_the_cheap_checks(secret):
    cleaned = scrub(f"Long enough prose before it, then {secret} and after.")
    assert REDACTED in cleaned and secret not in cleaned


def _run_record(**fields):
    from wasteaudit.records import RunRecord

    return RunRecord(id="r1", name="task", started_at=0.0, **fields)


def test_run_values_follow_the_mode_and_json_access_records_keep_no_text():
    from wasteaudit._internal.content import apply_run_policy
    from wasteaudit.scoring.jsonuse import JSON_ACCESS_PREFIX

    access = JSON_ACCESS_PREFIX + '{"v":1,"fp":"ab","leaves":[["answer"]],"bulk":[],"overflow":false}'
    values = {"return_value": f'{{"answer": "line one\\nline two", "key": "{KEY}"}}', "used_values": ["line two", access]}

    full = apply_run_policy(_run_record(**values), settings_from_env({}))
    assert KEY not in full.return_value and "line one" in full.return_value and full.used_values == ["line two", access]

    hashed = apply_run_policy(_run_record(**values), settings_from_env({}, content_mode="hashed"))
    digest = json.loads(hashed.return_value)
    line_two = json.loads(hashed.used_values[0])["lines"][0]
    assert "line one" not in hashed.return_value and line_two in digest["lines"]  # lines inside the JSON answer are hashed
    assert len(hashed.used_values) == 1  # the JSON access record names output fields: not kept
    again = apply_run_policy(hashed, settings_from_env({}, content_mode="hashed"))
    assert json.loads(again.return_value) == digest  # applied once

    none = apply_run_policy(_run_record(**values), settings_from_env({}, content_mode="none"))
    assert none.return_value is None and none.used_values == []

    def broken(_: str) -> str:
        raise RuntimeError("hook bug")

    redacted = apply_run_policy(_run_record(**values), settings_from_env({}, content_mode="redacted", redact=broken))
    assert redacted.return_value == REDACTED and redacted.used_values == [REDACTED, access]


def test_score_raw_values_follow_the_mode():
    from wasteaudit._internal.content import apply_score_policy
    from wasteaudit.records import ScoreRecord

    def score(raw):
        return ScoreRecord(id="s1", run_id="r1", name="judge", value=0.5, raw_value=raw)

    raw = {"rationale": f"good answer, key {KEY}", "score": 7}
    assert KEY not in str(apply_score_policy(score(dict(raw)), settings_from_env({})).raw_value)
    hashed = apply_score_policy(score(dict(raw)), settings_from_env({}, content_mode="hashed")).raw_value
    assert "good answer" not in json.dumps(hashed) and hashed["score"] == 7
    assert apply_score_policy(score(dict(raw)), settings_from_env({}, content_mode="none")).raw_value is None
    assert apply_score_policy(score(0.75), settings_from_env({}, content_mode="none")).raw_value == 0.75  # a number is no text


# --- remembered scrubs: a long text scrubbed again gives exactly what a fresh scan gives ---------

_SECRETS = [
    KEY, "sk-ant-api03-" + "x" * 40, "sk-svcacct-" + "Z" * 20, "Bearer abcdefghijklmnopqrstuvwxyz012345",
    "bearer\t" + "q" * 16, "AKIAABCDEFGHIJKLMNOP", "AIza" + "B" * 35, "ghp_" + "a" * 36, "gho_" + "9" * 40,
    "xoxb-1234567890-abc", "xoxp-" + "1" * 10, "api_key=supersecretvalue123", "API-KEY: abcdefgh", "apikey='12345678'",
    "x-api-key: abcdefgh12345678", "password: hunter22hunter", 'secret="0123456789abcdef"',
    "Authorization = dXNlcjpwYXNzd29yZA", "PASSWORD\n:\n hunter22",
    "paſſword: hunter22hunter", "api_\u212aey=abcdefghij",  # LONG S, KELVIN SIGN: letters to the regex's (?i)
    "authorİzation:\u00a0\u2028'abcdefgh'", "password" + " " * 90 + "= hunter22hunter",
]
_NEAR_MISSES = [
    "sk-" + "a" * 15, "sk-short", "Bearer of bad news", "bearer " + "x" * 15, "AKIA" + "A" * 15, "akia" + "A" * 16,
    "AIza" + "B" * 34, "ghp_" + "a" * 35, "ghx_" + "a" * 36, "xoxz-1234567890", "xoxb-123456789",
    "password: short", "secret=1234567", "the secret of it", "api key: value",
]


def _fresh_scrub(text: str) -> str:
    """``scrub`` as it was before long texts were remembered: the gates, then the regex."""
    from wasteaudit._internal.content import _SECRET_PATTERNS, MIN_SECRET_CHARS, _may_hold_secret

    if len(text) < MIN_SECRET_CHARS or not _may_hold_secret(text):
        return text
    return _SECRET_PATTERNS.sub(REDACTED, text)


@pytest.mark.parametrize("padding", [0, 300, 5000])
def test_a_remembered_scrub_is_exactly_a_fresh_one(padding):
    prose = ("Ordinary prose — with ünïcödé, emoji 😀, quotes \" and \\ backslashes.\n" * 200)[:padding]
    texts = [f"{prose}{piece}{prose[:40]}" for piece in _SECRETS + _NEAR_MISSES]
    texts += [f"{prose}{a} then {b}" for a, b in zip(_SECRETS, reversed(_NEAR_MISSES))]
    for text in texts:
        expected = _fresh_scrub(text)
        assert scrub(text) == expected  # first time: scanned (and remembered if long)
        assert scrub(text) == expected  # again: remembered
        assert scrub("".join([text[:1], text[1:]])) == expected  # an equal text, another object
    assert all(REDACTED in scrub(f"{prose}{secret}") for secret in _SECRETS)


def test_remembered_scrubs_stay_within_their_budget(monkeypatch):
    from wasteaudit._internal import content

    from wasteaudit._internal.textcache import held_chars

    cache = content._scrubbed
    monkeypatch.setattr(cache, "max_chars", 20_000)
    content.forget_texts()
    try:
        texts = [f"text {i} " + "x" * 700 for i in range(200)]
        for text in texts:
            assert scrub(text) == text
        held = sum(held_chars(entry) for entry in cache.entries.values())
        assert 0 < held <= 20_000 and cache.chars == held
        assert all(entry[0] is texts[-1] for entry in [cache.entries[id(texts[-1])]])  # the newest are kept
        secret = "y" * 700 + " password: hunter22hunter"
        assert scrub(secret) == scrub(secret) == "y" * 700 + " " + REDACTED
    finally:
        content.forget_texts()


# --- the gates: every text the patterns match passes them ------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PIECES = st.sampled_from(
    _SECRETS + _NEAR_MISSES + [
        "password", "PassWord", "secret", "authorization", "api_key", "api-key", "APIKEY", "bearer", "Bearer ",
        ":", "=", '"', "'", '\\"', " ", "\t", "\n", "\x0b", "\x1c", "\u00a0", "\u2028", "\u3000", " " * 70,
        "ſ", "İ", "ı", "\u212a", "é", "😀", "\ud800", "AKIA", "AIza", "sk-", "sk-proj-", "ghp_", "_", "-", "xoxb-",
        "x" * 16, "A" * 16, "0123456789abcdef", "a:b=c;d&e,f", ":" * 30,
    ]
)
_TEXTS = st.lists(st.one_of(_PIECES, st.text(max_size=6)), max_size=14).map("".join)


def _both_gates() -> Any:
    """The RE2 gate (the ``fast`` extra, installed for the tests) and the pure-Python gates."""
    from wasteaudit._internal import content

    content._may_hold_secret("resolve the RE2 gate")
    native = content._native_search
    assert native is not None, "google-re2 is not installed: the RE2 gate would go untested"
    for search in (native, None):
        with mock.patch.object(content, "_native_search", search):
            yield search is not None


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXTS)
def test_every_text_the_patterns_match_passes_the_gates(text: str) -> None:
    from wasteaudit._internal.content import _SECRET_PATTERNS, _may_hold_secret, scrub

    if _SECRET_PATTERNS.search(text) is not None:
        for native in _both_gates():
            assert _may_hold_secret(text), native
            assert scrub(text) != text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(_TEXTS, max_size=4))
def test_texts_checked_together_keep_each_ones_secret(texts: list[str]) -> None:
    from wasteaudit._internal.content import _SECRET_PATTERNS, may_hold_secret

    if any(_SECRET_PATTERNS.search(text) is not None for text in texts):
        for native in _both_gates():
            assert may_hold_secret("\n".join(texts)), native


@pytest.mark.parametrize("text", [
    "Ordinary prose: no keys, no key=value, nothing to scrub at all.",
    "The secret of a good password is its length: twenty characters beat eight.",
    '{"role": "user", "content": "Summarize the ticket: printer jam on floor 3 (x=4, y=5)."}',
    "Ünïcödé prose — with emoji 😀, a URL https://example.com/a?b=c&d=e and sk- in passing.",
])
def test_both_gates_let_ordinary_text_through(text: str) -> None:
    """The gates exist to spare ordinary text the regex: neither fires on it."""
    from wasteaudit._internal.content import _SECRET_PATTERNS, _may_hold_secret

    assert _SECRET_PATTERNS.search(text) is None
    assert [_may_hold_secret(text) for _ in _both_gates()] == [False, False]


def test_the_folded_characters_are_all_those_the_patterns_take_for_ascii_letters() -> None:
    """``re`` matches a few non-ASCII characters to ASCII letters under (?i); the gates fold those."""
    import re
    import sys

    from wasteaudit._internal.content import _FOLDS_TO_ASCII

    letter = re.compile("(?i)[a-z]")
    found = {chr(cp) for cp in range(128, sys.maxunicode + 1) if letter.fullmatch(chr(cp))}
    assert found == set(_FOLDS_TO_ASCII)


def test_a_keyword_far_from_its_separator_is_still_looked_at() -> None:
    from wasteaudit._internal.content import scrub

    text = "x " * 40 + "password" + "\u00a0" * 100 + ":" + " " * 3 + "hunter22hunter"
    assert REDACTED in scrub(text)
    many = "a: b, " * 60 + "secret = 0123456789abcdef"
    assert REDACTED in scrub(many)  # past the separators looked at one by one: the keywords scanned
    long = "x" * 10_000 + many  # a long text: more separators looked at one by one
    assert REDACTED in scrub(long) and REDACTED not in scrub(long.replace("secret", "secrets"))
