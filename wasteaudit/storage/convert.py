"""Records to row dicts for the writer's INSERTs (pure Python, no SQLAlchemy import).

Column names are the record field names (``attempts`` holds the attempt count; the attempts
themselves go to their own table). JSON columns come out already encoded as JSON text, and
timestamps as epoch seconds; the writer turns those into each driver's form.

Text is made storable on both databases here, once: PostgreSQL rejects NUL characters in text
and JSONB, and neither driver can encode a lone surrogate, so those become U+FFFD (same length,
so segment offsets still line up) and the call's ``gaps`` says so. Non-finite floats in JSON
(which JSONB rejects) become null. The clean case costs one check of the encoded text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from wasteaudit._internal.textcache import TextCache
from wasteaudit.records import CallRecord, ChoiceContent, RunRecord, ScoreRecord

__all__ = (
    "GAP_TEXT_REPLACED",
    "GAP_NUMBER_REPLACED",
    "CALL_COLUMNS",
    "ATTEMPT_COLUMNS",
    "run_row",
    "call_values",
    "score_row",
    "clean_text",
    "clean_json",
    "encode_json",
    "json_default",
)

GAP_TEXT_REPLACED = "content: NUL or invalid Unicode characters replaced with U+FFFD for storage"
GAP_NUMBER_REPLACED = "content: non-finite numbers (NaN, Infinity) stored as null"

_REPLACEMENT = "\ufffd"
_TEXT, _NUMBER = 1, 2  # problems found, as bit flags


def _str_problem(value: str) -> bool:
    if "\x00" in value:
        return True
    if value.isascii():  # O(1) in CPython
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _fix_str(value: str) -> str:
    value = value.replace("\x00", _REPLACEMENT)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Valid surrogate pairs are merged, each lone surrogate becomes one U+FFFD.
        value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback: anything JSON cannot encode is stored as its (storable) ``str``."""
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return _fix_str(str(value))


# Encoded long strings of call content, by the string object's identity (``textcache``, as
# ``content.scrub`` keeps scrubbed ones, and for the same reason).
ENCODED_CACHE_MIN_CHARS = 256
_encoded = TextCache(max_chars=4_000_000)


# Short strings by value: keys and roles ("role", "content", "user", ...) come in every call.
_short_escaped: dict[str, str] = {}


def _remember_short(value: str, text: str) -> None:
    if len(_short_escaped) >= 4096:
        _short_escaped.clear()
    _short_escaped[value] = text


class _Unstorable(ValueError):
    """A string holds a NUL or a lone surrogate: the value is repaired and encoded again."""


class _NeedsPolicy(ValueError):
    """A string may be changed by the content policy (longer than the cap allows)."""


def _string_encoder(escape: Any, longest: float = math.inf, seen: list[str] | None = None) -> Callable[[str], str]:
    """``encode_string`` for the C encoder: a string's JSON escaping (``escape``), after a check
    that it is storable (``_Unstorable`` if not), remembered: short strings by value, long ones by
    identity (the same system prompt and history come with call after call, and escaping them is
    most of the encoding's cost).

    For ``content_checker``: a string longer than ``longest`` raises ``_NeedsPolicy``, and the
    strings the secret gates must rule out (15+ characters, not remembered as clean) are
    gathered in ``seen``.
    """
    short_get, cached = _short_escaped.get, _encoded.get
    add: Callable[[str], None] | None = None
    is_known_clean: Callable[[str], bool] = bool
    min_secret = 0
    if seen is not None:
        from wasteaudit._internal import content

        add, is_known_clean, min_secret = seen.append, content.is_known_clean, content.MIN_SECRET_CHARS

    def encode_string(value: str) -> str:
        size = len(value)
        if size > longest:  # the policy caps text at `limit` bytes, 4 at most per code point
            raise _NeedsPolicy
        if size < ENCODED_CACHE_MIN_CHARS:
            text = short_get(value) if type(value) is str else None
            if text is None:
                if "\x00" in value or (not value.isascii() and _str_problem(value)):
                    raise _Unstorable
                text = escape(value)
                if size <= 64 and type(value) is str:
                    _remember_short(value, text)
            if add is not None and size >= min_secret:
                add(value)
            return text
        held = cached(id(value))
        if held is not None and held[0] is value:
            text = held[1]
        else:
            if "\x00" in value or (not value.isascii() and _str_problem(value)):
                raise _Unstorable
            text = escape(value)
            _encoded.remember(value, text)
        if add is not None and not is_known_clean(value):
            add(value)
        return text

    return encode_string


def _make_encoders() -> tuple[Any, Any]:
    """Compact, NaN-rejecting JSON encoders with the C encoder built once: ``(plain, content)``.

    ``json.dumps``/``JSONEncoder.encode`` build a new C encoder on every call, which costs more
    than encoding a typical small value; the writer encodes ~10 values per call.

    ``content`` is for the call's messages and responses: each string (value or key) goes
    through ``_string_encoder``'s function (a storability check, the C escaping, remembered).
    That costs a Python call per string, so values made of many short strings (parameters, tool
    schemas) use ``plain``, whose text ``encode_json`` checks instead.
    """
    from json import encoder

    join = "".join
    if encoder.c_make_encoder is None or encoder.c_encode_basestring is None:  # pragma: no cover - no C speedups
        return json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=json_default).encode, None
    escape = encoder.c_encode_basestring
    encode_string = _string_encoder(escape)

    # (markers, default, encoder, indent, key_separator, item_separator, sort_keys, skipkeys, allow_nan);
    # markers=None: no cycle bookkeeping, a cycle ends in RecursionError instead.
    plain_chunks = encoder.c_make_encoder(None, json_default, escape, None, ":", ",", False, False, False)
    content_chunks = encoder.c_make_encoder(None, json_default, encode_string, None, ":", ",", False, False, False)

    def plain(value: Any) -> str:
        return join(plain_chunks(value, 0))

    def content(value: Any) -> str:
        return join(content_chunks(value, 0))

    return plain, content


def forget_texts() -> None:
    """Empty the cache of long texts (benchmarks measuring texts never seen before)."""
    _encoded.clear()


_encode, _encode_content = _make_encoders()


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def _fast_dumps() -> Callable[[Any], bytes] | None:
    """orjson's ``dumps`` (UTF-8 JSON, compact), or None if orjson is not installed.

    For the values ``content_checker`` hands it (exact ``str``, ``int``, ``bool``, ``None``,
    ``dict`` with ``str`` keys, ``list``, ``tuple``; no float) it writes the bytes the stdlib
    encoder's text has in UTF-8 (tests/storage/test_ingest_equivalence.py checks), about ten
    times faster: no Python call per string, no wide intermediate string for emoji text.
    """
    try:
        import orjson
    except ImportError:  # pragma: no cover - a dependency; the stdlib encoder then
        return None
    dumps, options = orjson.dumps, orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS

    def fast(value: Any) -> bytes:
        return dumps(value, default=_refuse, option=options)

    return fast


# Deeper content goes the stdlib encoder's way (orjson stops at 254 levels, this walk's recursion sooner).
_FAST_DEPTH = 64


def content_checker(limit: int, *, utf8: bool = False) -> Callable[[CallRecord], dict[str, str | bytes]]:
    """``unchanged(record)``: the content fields (``content.CONTENT_FIELDS``) that the content
    policy of ``full`` mode (``max_output_bytes=limit``) would leave exactly as they are, each
    with its stored JSON (UTF-8 bytes when ``utf8``, else text); the other fields need the
    policy's walk. For one thread.

    The writer's common case, in one pass: the strings are encoded as the ``content`` encoder
    does (C escaping, remembered for long texts), and those the policy could change are gathered
    and ruled out at once (``content.may_hold_secret`` over them joined; long texts already ruled
    out are remembered by ``content``'s scrub cache). Plain data only: anything else, a NaN, a
    NUL or a lone surrogate, or a string over the cap, leaves the field to the walk. Tool
    definitions, which the policy only makes plain, are plain data encoded as they are.
    (One difference from the walk: it stops at 32 levels of nesting, this encodes them all.)

    With orjson installed, a value of plain types and no float is encoded by it (``_fast_dumps``)
    after one walk that gathers its strings for the gates; the rest as above.
    """
    from json import encoder

    from wasteaudit._internal import content

    escape = encoder.c_encode_basestring
    if encoder.c_make_encoder is None or escape is None:  # pragma: no cover - no C speedups
        return lambda record: {}
    longest = limit // 4  # the policy caps text at `limit` bytes, 4 at most per code point
    seen: list[str] = []  # the strings of the value being encoded that may hold a secret
    encode_string = _string_encoder(escape, longest, seen)
    chunks = encoder.c_make_encoder(None, _refuse, encode_string, None, ":", ",", False, False, False)
    # Tool definitions: not content the policy scrubs, only made plain JSON; many short strings.
    plain_chunks = encoder.c_make_encoder(None, _refuse, escape, None, ":", ",", False, False, False)
    join = "".join
    fast_dumps = _fast_dumps()
    add, is_known_clean = seen.append, content.is_known_clean
    min_secret, cached_from = content.MIN_SECRET_CHARS, content.SCRUB_CACHE_MIN_CHARS

    def gather(value: Any, depth: int) -> bool:
        """Whether ``value`` is for the fast path; its strings the gates must see go to ``seen``."""
        kind = type(value)
        if kind is str:
            size = len(value)
            if size >= min_secret:
                if size > longest:
                    return False
                if size < cached_from or not is_known_clean(value):
                    add(value)
            return True
        if kind is dict:
            if depth >= _FAST_DEPTH:
                return False
            for key, item in value.items():
                if type(key) is not str:
                    return False
                if len(key) >= min_secret and not gather(key, depth):
                    return False
                if type(item) is str:  # most values: no call
                    size = len(item)
                    if size >= min_secret:
                        if size > longest:
                            return False
                        if size < cached_from or not is_known_clean(item):
                            add(item)
                elif item is not None and not gather(item, depth + 1):
                    return False
            return True
        if kind is list or kind is tuple:
            if depth >= _FAST_DEPTH:
                return False
            for item in value:
                if not gather(item, depth + 1):
                    return False
            return True
        return value is None or kind is int or kind is bool  # a float's text differs between the encoders

    def text_of(value: Any) -> str | bytes | None:
        """The stored JSON of ``value``, or None (not plain data, NaN, NUL, over the cap, a cycle)."""
        seen.clear()
        if fast_dumps is not None:
            if gather(value, 0):
                try:
                    data = fast_dumps(value)
                except TypeError:  # a lone surrogate, an int beyond 64 bits
                    data = None
                if data is not None and b"\\u0000" not in data:
                    return data if utf8 else data.decode()
            seen.clear()
        try:
            text = join(chunks(value, 0))
        except (ValueError, TypeError, RecursionError):
            return None
        return text.encode() if utf8 else text

    def field(value: Any) -> str | bytes | None:
        text = text_of(value)
        if text is None:
            return None
        if seen:
            if content.may_hold_secret(seen[0] if len(seen) == 1 else "\n".join(seen)):
                return None
            for string in seen:
                content.remember_clean(string)
        return text

    def unchanged(record: CallRecord) -> dict[str, str | bytes]:
        found: dict[str, str | bytes] = {}
        if record.input_messages is not None:
            text = field(record.input_messages)
            if text is not None:
                found["input_messages"] = text
        if record.system_instructions is not None:
            text = field(record.system_instructions)
            if text is not None:
                found["system_instructions"] = text
        choices = record.choices
        if choices and all(type(choice) is ChoiceContent for choice in choices):
            text = field([_choice(choice) for choice in choices])
            if text is not None:
                found["choices"] = text
        if record.tool_definitions is not None:
            try:
                text = join(plain_chunks(record.tool_definitions, 0))
            except (ValueError, TypeError, RecursionError):  # SDK objects, NaN, a cycle: to_jsonable's
                pass
            else:
                if _storable(text):
                    found["tool_definitions"] = text.encode() if utf8 else text
        return found

    return unchanged


def clean_text(value: str | None) -> tuple[str | None, bool]:
    """``(storable text, whether it changed)``."""
    if value is None or type(value) is not str or not _str_problem(value):
        return value, False
    return _fix_str(value), True


def _scan(value: Any) -> int:
    """Which problems a JSON-bound value contains (only walked when encoding hit one)."""
    if isinstance(value, str):
        return _TEXT if _str_problem(value) else 0
    if isinstance(value, dict):
        found = 0
        for key, item in value.items():
            if isinstance(key, str) and _str_problem(key):
                found |= _TEXT
            found |= _scan(item)
        return found
    if isinstance(value, (list, tuple)):
        found = 0
        for item in value:
            found |= _scan(item)
        return found
    if isinstance(value, float) and not math.isfinite(value):
        return _NUMBER
    return 0


def _fix_key(key: Any) -> Any:
    if isinstance(key, str):
        return _fix_str(key) if _str_problem(key) else key
    if key is None or isinstance(key, (int, float)):  # JSON turns these into strings itself
        return key
    return _fix_str(str(key))


def _fix(value: Any) -> Any:
    if isinstance(value, str):
        return _fix_str(value) if _str_problem(value) else value
    if isinstance(value, dict):
        return {_fix_key(k): _fix(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_fix(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def clean_json(value: Any, gaps: list[str] | None = None) -> Any:
    """``value`` made storable as JSON on SQLite and PostgreSQL; a note is appended to ``gaps`` if changed."""
    if value is None:
        return None
    found = _scan(value)
    if gaps is not None:
        if found & _TEXT and GAP_TEXT_REPLACED not in gaps:
            gaps.append(GAP_TEXT_REPLACED)
        if found & _NUMBER and GAP_NUMBER_REPLACED not in gaps:
            gaps.append(GAP_NUMBER_REPLACED)
    return _fix(value)


def encode_json(value: Any, gaps: list[str] | None = None, *, content: bool = False) -> str | None:
    """``value`` as JSON text both databases accept (see ``clean_json``); None stays SQL NULL.

    Encodes first and inspects the text: NUL is always escaped as ``\\u0000``, a non-finite
    number fails ``allow_nan=False``, an odd dict key fails too; only non-ASCII text needs a
    UTF-8 check for lone surrogates. Only when one of those hits is the value walked and repaired.
    ``content=True``: call content, whose long strings are likely to come again (``_make_encoders``).
    """
    if value is None:
        return None
    if content and _encode_content is not None:  # strings checked one by one as they are encoded (only a real NUL or lone surrogate fails)
        try:
            return _encode_content(value)
        except (ValueError, TypeError):  # NUL, lone surrogate, NaN/Infinity, a tuple as a key, ...
            return _encode_content(clean_json(value, gaps))
    try:
        text = _encode(value)
    except (ValueError, TypeError):  # NaN/Infinity, a tuple as a key, ... (a cycle fails the repair too)
        text = None
    if text is not None and _storable(text):
        return text
    return _encode(clean_json(value, gaps))


def _storable(text: str) -> bool:
    """Whether encoded JSON text holds no NUL (always escaped as ``\\u0000``) and no lone surrogate."""
    if "\\u0000" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _choice(choice: ChoiceContent | Any) -> Any:
    if type(choice) is not ChoiceContent:
        return choice  # already a dict (or something json can take); cleaned below
    return {
        "index": choice.index,
        "text": choice.text,
        "refusal": choice.refusal,
        "tool_calls": choice.tool_calls,
        "finish_reason": choice.finish_reason,
        "reasoning_text": choice.reasoning_text,
    }


# The ``wasteaudit_calls`` columns in table order (``models.CallRow``; a test checks they agree):
# ``call_values`` builds rows in this order, which is what both drivers take without re-keying.
CALL_COLUMNS = (
    "id", "provider", "operation", "api", "started_at", "run_id", "function", "method", "request_model",
    "response_model", "response_id", "server_address", "server_port", "stream", "ended_at", "duration_s",
    "time_to_first_chunk_s", "request_params", "output_type", "usage_source", "input_tokens",
    "input_cache_read_tokens", "input_cache_write_tokens", "output_tokens", "output_reasoning_tokens",
    "usage_details", "service_tier", "finish_reasons", "finish_category", "stream_state", "chunks", "status_code",
    "error_type", "error_message", "attempts", "input_messages", "system_instructions", "choices",
    "tool_definitions", "response_format", "content_mode", "content_truncated", "trace_id", "span_id", "gaps",
    "cost_usd", "price_version", "priced", "scored_version", "claimed_by", "lease_until", "score_error",
    "score_attempts", "use_observed", "use_coverage", "scorer_config",
)
ATTEMPT_COLUMNS = ("call_id", "index", "started_at", "duration_s", "status_code", "error_type", "request_id")

_CALL_TEXT_COLUMNS = (
    "provider",
    "operation",
    "api",
    "function",
    "method",
    "request_model",
    "response_model",
    "response_id",
    "server_address",
    "output_type",
    "service_tier",
    "error_type",
    "error_message",
)
_CALL_JSON_COLUMNS = (
    "request_params",
    "usage_details",
    "finish_reasons",
    "input_messages",
    "system_instructions",
    "choices",
    "tool_definitions",
    "response_format",
)
_TEXT_AT = tuple(CALL_COLUMNS.index(name) for name in _CALL_TEXT_COLUMNS)
_JSON_AT = tuple(CALL_COLUMNS.index(name) for name in _CALL_JSON_COLUMNS)
# Long texts: the messages sent (with the history re-sent each turn), system prompts, responses.
_CONTENT_AT = frozenset(CALL_COLUMNS.index(name) for name in ("input_messages", "system_instructions", "choices"))
_ENCODED_AT = {name: CALL_COLUMNS.index(name) for name in ("input_messages", "system_instructions", "choices", "tool_definitions")}
_GAPS_AT = CALL_COLUMNS.index("gaps")


def call_values(
    record: CallRecord,
    cost_usd: float | None,
    price_version: str | None,
    priced: str,
    encoded: Mapping[str, str] | None = None,
) -> tuple[list[Any], list[list[Any]]]:
    """The ``wasteaudit_calls`` row (``CALL_COLUMNS`` order) and the attempt rows (``ATTEMPT_COLUMNS``).

    ``encoded``: content fields already encoded (``content_checker``), stored as they are.
    """
    gaps = list(record.gaps) if record.gaps else []
    choices = record.choices
    finish_reasons = record.finish_reasons
    row: list[Any] = [
        record.id,
        record.provider,
        record.operation,
        record.api,
        record.started_at,
        record.run_id,
        record.function,
        record.method,
        record.request_model,
        record.response_model,
        record.response_id,
        record.server_address,
        record.server_port,
        bool(record.stream),
        record.ended_at,
        record.duration_s,
        record.time_to_first_chunk_s,
        record.request_params,
        record.output_type,
        record.usage_source,
        record.input_tokens,
        record.input_cache_read_tokens,
        record.input_cache_write_tokens,
        record.output_tokens,
        record.output_reasoning_tokens,
        record.usage_details,
        record.service_tier,
        list(finish_reasons) if finish_reasons is not None else None,
        record.finish_category,
        record.stream_state,
        record.chunks,
        record.status_code,
        record.error_type,
        record.error_message,
        max(1, len(record.attempts)),
        record.input_messages,
        record.system_instructions,
        [_choice(c) for c in choices] if choices and not (encoded and "choices" in encoded) else [],
        record.tool_definitions,
        record.response_format,
        record.content_mode,
        bool(record.content_truncated),
        record.trace_id,
        record.span_id,
        None,  # gaps, below
        cost_usd,
        price_version,
        priced,
        None,  # scored_version
        None,  # claimed_by
        None,  # lease_until
        None,  # score_error
        None,  # score_attempts
        None,  # use_observed
        None,  # use_coverage
        None,  # scorer_config
    ]
    changed = False
    for at in _TEXT_AT:
        value = row[at]
        if value is None:
            continue
        if type(value) is not str:
            row[at] = value = str(value)
        if "\x00" in value or (not value.isascii() and _str_problem(value)):
            row[at] = _fix_str(value)
            changed = True
    if changed and GAP_TEXT_REPLACED not in gaps:
        gaps.append(GAP_TEXT_REPLACED)
    done: list[int] = []
    if encoded:
        for name, text in encoded.items():
            at = _ENCODED_AT[name]
            row[at] = text
            done.append(at)
    for at in _JSON_AT:
        value = row[at]
        if value is not None and at not in done:
            row[at] = encode_json(value, gaps, content=at in _CONTENT_AT)
    row[_GAPS_AT] = encode_json(gaps) if gaps else "[]"  # last: the encodings above may have added to it

    call_id = record.id
    attempts = [
        [
            call_id,
            attempt.index,
            attempt.started_at,
            attempt.duration_s,
            attempt.status_code,
            clean_text(attempt.error_type)[0],
            clean_text(attempt.request_id)[0],
        ]
        for attempt in record.attempts
    ]
    return row, attempts


def run_row(record: RunRecord) -> dict[str, Any]:
    """The ``wasteaudit_runs`` row for a run (the whole row: runs are upserted)."""
    return {
        "id": record.id,
        "parent_id": record.parent_id,
        "name": clean_text(record.name)[0],
        "tags": encode_json(dict(record.tags)) if record.tags else None,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "status": record.status,
        "error_type": clean_text(record.error_type)[0],
        "validation": record.validation,
        "return_value": clean_text(record.return_value)[0],
        "return_truncated": bool(record.return_truncated),
        "used_values": encode_json(list(record.used_values)) if record.used_values else None,
        "trace_id": record.trace_id,
        "span_id": record.span_id,
    }


def score_row(record: ScoreRecord) -> dict[str, Any]:
    """The ``wasteaudit_scores`` row for a score."""
    value = float(record.value)
    if not math.isfinite(value):
        raise ValueError(f"score {record.name!r} has a non-finite value")
    return {
        "id": record.id,
        "run_id": record.run_id,
        "name": clean_text(record.name)[0],
        "value": value,
        "source": clean_text(record.source)[0],
        "created_at": record.created_at,
        "raw_value": encode_json(record.raw_value),
    }
