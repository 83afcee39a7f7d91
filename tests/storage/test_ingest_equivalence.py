"""The writer's faster paths store exactly what the plain ones did.

Long texts are remembered between calls (scrubbed, JSON-escaped), call content is encoded string
by string, SQLite gets one multi-row INSERT per batch: none of that may change a stored byte.
The references here are the plain paths: ``json.dumps`` with the writer's settings and a check
of the whole encoded text, nothing remembered, and executemany on SQLite.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wasteaudit._internal import content
from wasteaudit.records import AttemptRecord, CallRecord, ChoiceContent, new_id
from wasteaudit.storage import convert
from wasteaudit.storage.convert import clean_json, encode_json, json_default
from wasteaudit.storage.writer import Writer, _Batch

ROOT = Path(__file__).resolve().parents[2]


def _reference_encode_json(value: Any, gaps: list[str] | None = None) -> str | None:
    """``encode_json`` as it was: encode, check the whole text, repair and encode again if needed."""
    if value is None:
        return None

    def dumps(item: Any) -> str:
        return json.dumps(item, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=json_default)

    try:
        text = dumps(value)
    except (ValueError, TypeError):
        text = None
    if text is not None and convert._storable(text):
        return text
    return dumps(clean_json(value, gaps))


_odd_text = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),  # anything storable
        st.sampled_from(["\x00", "\ud800", "\udfff", '"', "\\", "\n", "\t", "\x1f", "😀", "é", "\u2028"]),
    ),
    max_size=40,
)
_long_text = st.builds(lambda head, body: head + body * 300, _odd_text, st.sampled_from(["ab ", "é😀\n", "\\u0000 "]))
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), _odd_text, _long_text,
    st.just("literal \\u0000, not a NUL"),
)
_keys = st.one_of(_odd_text, st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_values)
def test_encoded_json_is_what_the_plain_encoding_gave(value: Any) -> None:
    def outcome(encode: Any, item: Any) -> tuple[Any, list[str]]:
        gaps: list[str] = []
        try:
            return encode(item, gaps), gaps
        except Exception as exc:  # e.g. an infinite float as a key: refused by both, the record dropped
            return type(exc), gaps

    expected = outcome(_reference_encode_json, copy.deepcopy(value))
    for as_content in (False, True, True):  # the second content pass hits the remembered strings
        assert outcome(lambda item, gaps: encode_json(item, gaps, content=as_content), value) == expected


_plain_scalars = st.one_of(st.none(), st.booleans(), st.integers(), _odd_text, _long_text)
_plain_values = st.recursive(
    _plain_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(_odd_text, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_plain_values)
def test_orjson_writes_the_stdlib_encoders_bytes_for_plain_data_without_floats(value: Any) -> None:
    """What ``convert._fast_dumps`` promises; it fails only where the stdlib text is not storable
    (a lone surrogate) or on an int beyond 64 bits, and both encoders refuse those to the walk."""
    dumps = convert._fast_dumps()
    assert dumps is not None
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        data = dumps(value)
    except TypeError:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return  # a lone surrogate
        assert _has_big_int(value)
    else:
        assert data == text.encode("utf-8", "surrogatepass")


def _has_big_int(value: Any) -> bool:
    if type(value) is int:
        return not -(2**63) <= value < 2**64
    if isinstance(value, dict):
        return any(map(_has_big_int, value.values()))
    if isinstance(value, (list, tuple)):
        return any(map(_has_big_int, value))
    return False


def test_a_literal_backslash_u0000_is_kept_and_a_nul_is_replaced() -> None:
    literal = "x" * 300 + "\\u0000"
    for as_content in (False, True):
        gaps: list[str] = []
        assert json.loads(encode_json([literal], gaps, content=as_content)) == [literal] and gaps == []
        assert json.loads(encode_json([literal + "\x00"], gaps, content=as_content)) == [literal + "\ufffd"]
        assert gaps == [convert.GAP_TEXT_REPLACED]


def test_remembered_encodings_stay_within_their_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = convert._encoded
    monkeypatch.setattr(cache, "max_chars", 30_000)
    convert.forget_texts()
    try:
        texts = [f"text {i} " + "é" * 700 for i in range(100)]
        assert [encode_json([text], content=True) for text in texts] == [json.dumps([t], ensure_ascii=False) for t in texts]
        held = sum(len(text) + len(encoded) for text, encoded in cache.entries.values())
        assert 0 < held <= 30_000 and cache.chars == held
    finally:
        convert.forget_texts()


# --- the rows a batch of recorded calls leaves in the database -------------------------------------


def _recorded_calls() -> list[CallRecord]:
    """The ingest benchmark's records (from the recorded traffic, else its synthetic call), plus odd ones."""
    spec = importlib.util.spec_from_file_location("bench_ingest", ROOT / "bench" / "bench_ingest.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    templates = bench.recorded_templates() or [bench.synthetic_template()]
    odd = 'tab\there\nnewline \\ backslash "quoted" \\N é 😀 \x00 \ud800 sk-' + "k" * 20 + " "
    templates.append(CallRecord(
        id="", provider="openai", operation="chat", api="chat.completions", started_at=0.0,
        input_messages=[{"role": "user", "content": "plain question, no secret " * 20, True: None, 2.5: (1, "a")}],
        system_instructions=[{"type": "text", "text": "You are terse. " * 40}],
        choices=[ChoiceContent(index=0, text="An answer " * 30, finish_reason="stop")],
        tool_definitions=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", None: ("x",)}}}],
    ))
    templates.append(CallRecord(
        id="", provider="openai", operation="chat", api="chat.completions", started_at=0.0,
        input_messages=[{"role": "user", "content": odd * 20, "n": 1.5, 7: None}],
        system_instructions="password: hunter22hunter " * 20,
        choices=[ChoiceContent(index=0, text=odd * 30, finish_reason="stop", tool_calls=[{"id": "t", "arguments": odd}])],
        error_message=odd, request_params={"temperature": float("nan")},
    ))
    # Each template twice: the second copy shares the first one's text objects (as a re-sent
    # history does), so it meets the remembered scrubs and encodings.
    return bench.build_records(templates, 2 * len(templates))


def _stored_rows(url: str, ids: list[str]) -> list[tuple[Any, ...]]:
    from wasteaudit.storage.engine import create_engine_for

    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            rows = []
            for record_id in ids:
                call = connection.exec_driver_sql("SELECT * FROM wasteaudit_calls WHERE id = ?"
                                                  if engine.dialect.name == "sqlite" else
                                                  "SELECT * FROM wasteaudit_calls WHERE id = %s", (record_id,)).one()
                attempts = connection.exec_driver_sql(
                    "SELECT * FROM wasteaudit_attempts WHERE call_id = " + ("?" if engine.dialect.name == "sqlite" else "%s")
                    + ' ORDER BY "index"', (record_id,)).all()
                rows.append((tuple(call)[1:], [tuple(a)[1:] for a in attempts]))  # without the ids
            return rows
    finally:
        engine.dispose()


def test_recorded_calls_are_stored_byte_for_byte_as_by_the_plain_paths(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _recorded_calls()
    plain = [copy.deepcopy(record) for record in records]
    for record in plain:
        record.id = new_id()
        for attempt in record.attempts:
            attempt.request_id = None
    for record in records:
        for attempt in record.attempts:
            attempt.request_id = None

    writer = Writer(db_url, queue_size=10)
    writer.shutdown(timeout=0)
    engine = writer._connect()
    try:
        content.forget_texts()
        convert.forget_texts()
        for start in range(0, len(records), 100):  # the writer's paths
            writer._insert(engine, writer._prepare(_Batch(records[start:start + 100])))
        assert writer._bulk_retries == 0

        # The plain paths: the policy's walk for every field, nothing remembered, the reference
        # encoding, executemany on SQLite (every value bound, NULLs and booleans included).
        monkeypatch.setattr(convert, "content_checker", lambda limit, **_: lambda record: {})
        monkeypatch.setattr(content, "SCRUB_CACHE_MIN_CHARS", math.inf)
        monkeypatch.setattr(convert, "ENCODED_CACHE_MIN_CHARS", math.inf)
        monkeypatch.setattr(convert, "encode_json", lambda value, gaps=None, **_: _reference_encode_json(value, gaps))
        statements = writer._statements
        assert statements is not None
        monkeypatch.setattr(statements.insert_call, "multirow", False)
        monkeypatch.setattr(statements.insert_attempt, "multirow", False)
        for start in range(0, len(plain), 100):
            writer._insert(engine, writer._prepare(_Batch(plain[start:start + 100])))
    finally:
        engine.dispose()
        content.forget_texts()
        convert.forget_texts()

    stored = _stored_rows(db_url, [record.id for record in records])
    expected = _stored_rows(db_url, [record.id for record in plain])
    assert len(stored) == len(records) and stored == expected
    assert any(content.REDACTED in str(row) for row in stored)  # the odd call's secrets were scrubbed
    if db_url.startswith("postgresql"):
        assert statements.insert_call.copy_types is not None  # calls went in by binary COPY


_content = st.one_of(
    _values,
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": _scalars}), max_size=3),
    st.sampled_from([
        [{"role": "user", "content": "my key is sk-proj-" + "A1b2C3d4" * 4}],
        [{"role": "user", "content": "x" * 300 + " password: hunter22hunter"}],
        [{"role": "user", "content": "Bearer abcdefghijklmnopqrstuvwxyz " * 3}],
        [{"role": "user", "content": "é" * 70_000}],  # over the cap below
        {"ok": ("tuple", 1)},
    ]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=_content, system=_content, text=st.one_of(st.none(), _odd_text, _long_text), tools=_values)
def test_content_stored_as_encoded_is_what_the_policy_and_encoding_give(messages: Any, system: Any, text: Any,
                                                                        tools: Any) -> None:
    """``convert.content_checker``: a field it passes is stored exactly as the policy's walk and
    the encoder would have stored it; secrets and over-long text never pass."""
    from wasteaudit.config import settings_from_env

    policy = settings_from_env({}, max_output_bytes=200_000)
    record = CallRecord(
        id="c", provider="openai", operation="chat", api="chat.completions", started_at=0.0,
        input_messages=messages, system_instructions=system, tool_definitions=tools,
        choices=[ChoiceContent(index=0, text=text, finish_reason="stop", tool_calls=[{"id": "t", "arguments": text}])],
    )
    walked = copy.deepcopy(record)
    content.apply_content_policy(walked, policy)
    expected = {
        "input_messages": encode_json(walked.input_messages, [], content=True),
        "system_instructions": encode_json(walked.system_instructions, [], content=True),
        "choices": encode_json([convert._choice(choice) for choice in walked.choices], [], content=True),
        "tool_definitions": encode_json(walked.tool_definitions, []),
    }
    fast_dumps = convert._fast_dumps
    assert fast_dumps() is not None  # orjson is installed: both encoders are checked
    founds = []
    for fast, utf8 in ((True, False), (True, True), (False, False), (False, True)):
        with mock.patch.object(convert, "_fast_dumps", fast_dumps if fast else lambda: None):
            found = convert.content_checker(policy.max_output_bytes, utf8=utf8)(record)
        for name, encoded in found.items():
            assert type(encoded) is (bytes if utf8 else str), name
            assert (encoded.decode() if utf8 else encoded) == expected[name], (name, fast)
        founds.append(set(found))
    assert all(names == founds[0] for names in founds)  # orjson refuses what the stdlib encoder would not pass
    # and the policy, told those fields pass, leaves the record as the walk did
    content.apply_content_policy(record, policy, found)
    for name in ("input_messages", "system_instructions", "tool_definitions"):
        if name not in found:  # walked the same way (compared as stored: NaN is not equal to itself)
            assert encode_json(getattr(record, name), []) == encode_json(getattr(walked, name), [])
    assert record.content_truncated == walked.content_truncated


def test_a_column_null_in_every_row_is_written_as_a_literal(tmp_path: Path) -> None:
    """SQLite: NULL columns of a whole statement are not bound, and what is stored is the same."""
    from wasteaudit.storage.engine import create_engine_for

    url = f"sqlite:///{tmp_path / 'nulls.db'}"
    writer = Writer(url, queue_size=10)
    writer.shutdown(timeout=0)
    engine = writer._connect()
    width = len(convert.ATTEMPT_COLUMNS)
    try:
        statements = writer._statements
        assert statements is not None
        compiled = statements.insert_attempt
        rows = [("c1", 0, None, None, None, None, None), ("c1", 1, None, None, 500, None, None)]
        with engine.connect() as connection:
            (sql, params), = compiled.multirow_statements(rows, connection)
            assert sql.count("?") == 3 * 2 and len(params) == 3 * 2  # call_id, index, status_code bound
            (sql, params), = compiled.multirow_statements([("c2", 0) + (None,) * (width - 2)], connection)
            assert len(params) == 2
            (sql, params), = compiled.multirow_statements([(None,) * width], connection)
            assert params == () and "?" not in sql.partition(" VALUES ")[2].partition(" ON CONFLICT")[0]
    finally:
        engine.dispose()


def test_sqlite_batches_larger_than_one_statement_allows_are_split(tmp_path: Path) -> None:
    from wasteaudit.storage.engine import create_engine_for

    url = f"sqlite:///{tmp_path / 'split.db'}"
    records = _recorded_calls()[:12]
    writer = Writer(url, queue_size=10)
    writer.shutdown(timeout=0)
    engine = writer._connect()
    try:
        statements = writer._statements
        assert statements is not None
        statements.insert_call._variables = 5 * len(convert.CALL_COLUMNS) + 3  # 5 calls per INSERT
        statements.insert_attempt._variables = 2 * len(convert.ATTEMPT_COLUMNS)
        with engine.connect() as connection:
            parts = statements.insert_call.multirow_statements([(0,) * len(convert.CALL_COLUMNS)] * 12, connection)
        assert [len(params) // len(convert.CALL_COLUMNS) for _, params in parts] == [5, 5, 2]
        writer._insert(engine, writer._prepare(_Batch(records)))
    finally:
        engine.dispose()
    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM wasteaudit_calls").scalar() == 12
            assert connection.exec_driver_sql("SELECT count(*) FROM wasteaudit_attempts").scalar() == 12
    finally:
        engine.dispose()


def test_attempt_rows_match_their_calls(db_url: str) -> None:
    """Several attempts per call, across statements: each lands under its own call."""
    records = _recorded_calls()[:3]
    for record in records:
        record.attempts = [AttemptRecord(index=i, started_at=1.0 + i, status_code=500 + i) for i in range(3)]
    writer = Writer(db_url, queue_size=10)
    writer.shutdown(timeout=0)
    engine = writer._connect()
    try:
        writer._insert(engine, writer._prepare(_Batch(records)))
    finally:
        engine.dispose()
    for (_, attempts), record in zip(_stored_rows(db_url, [r.id for r in records]), records):
        assert [a[0] for a in attempts] == [0, 1, 2] and [a[3] for a in attempts] == [500, 501, 502]
