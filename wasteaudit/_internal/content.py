"""Content policy: what text of a call may be stored or exported, applied off the request path.

The request path only keeps references (a shallow copy of the request messages and the texts
received). The writer applies this policy before anything is persisted, and the span code before
anything is exported: secrets are scrubbed in every mode, sizes are capped, and the content mode
(``full``, ``redacted``, ``hashed``, ``none``) decides whether text survives at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import TYPE_CHECKING, Any, Callable

from wasteaudit._internal.textcache import TextCache

if TYPE_CHECKING:
    from collections.abc import Collection

    from wasteaudit.config import Settings
    from wasteaudit.records import CallRecord, RunRecord, ScoreRecord

# Credentials that must never reach storage, logs or spans, whatever the mode.
_SECRET_PATTERNS = re.compile(
    r"(?:"
    r"sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}"  # OpenAI / Anthropic keys
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{16,}"  # bearer tokens
    r"|AKIA[0-9A-Z]{16}"  # AWS access key ids
    r"|AIza[0-9A-Za-z_\-]{35}"  # Google API keys
    r"|gh[pousr]_[A-Za-z0-9]{36,}"  # GitHub tokens
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}"  # Slack tokens
    r"|(?i:(?:api[_-]?key|x-api-key|authorization|password|secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]{8,}"
    r")"
)
REDACTED = "[REDACTED]"
# The shortest text the patterns can match (``xoxa-`` + 10, ``secret:`` + 8); shorter text such
# as a message's role is never scanned. tests/test_content.py checks it against the regex.
MIN_SECRET_CHARS = 15

# Gates: cheap necessary conditions for a match, so ordinary text never runs the regex (which
# tries every alternative at every position). They run on the text's UTF-8, where a scan is as
# fast for any text as for ASCII, and lower-casing touches ASCII letters only: each is a C-speed
# substring scan or a regex with a literal prefix (searched like a substring), most behind a
# one-byte check (memchr speed) for a character the pattern cannot match without. Every part of
# a pattern that may match non-ASCII characters (whitespace, a value) is allowed any byte >= 0x80
# here. The regex above still decides what is replaced; tests/test_content.py checks that every
# match of it passes the gates.
_KEY_PREFIXES = (re.compile(rb"sk-[A-Za-z0-9_\-]{16}"), re.compile(rb"gh[pousr]_[A-Za-z0-9]{36}"))
# Case-insensitive parts on the lower-cased bytes; a key=value secret needs its separator and an
# 8-character value right after the keyword ("secret" and "password" are common words alone).
_KV_WORDS = (b"password", b"secret", b"authorization", b"api_key", b"api-key", b"apikey")
_SPACE = rb"[\t\n\v\f\r\x1c-\x1f \x80-\xff]"  # \s of a str pattern, and anything non-ASCII
_VALUE = rb"[^\t\n\v\f\r\x1c-\x1f \"',;&]{8}"
_KV_TAIL = re.compile(rb"[\"']?" + _SPACE + rb"*[:=]" + _SPACE + rb"*[\"']?" + _VALUE)
_KV_VALUE = re.compile(_SPACE + rb"*[\"']?" + _VALUE)  # what follows the separator
_SPACE_BYTES = bytes([9, 10, 11, 12, 13, 28, 29, 30, 31, 32, *range(0x80, 0x100)])
# More separators than this: scan for the words instead (six scans of the whole text; a separator
# costs about what a scan of 128 bytes does).
_KV_SEPARATORS_SCANNED = 24
_KV_BYTES_PER_SEPARATOR = 128
_KV_LONGEST = max(map(len, _KV_WORDS)) + 1  # a keyword and its quote
_KV_WINDOW = 64  # bytes looked at before a separator
# Non-ASCII characters the patterns' case-insensitive parts match as ASCII letters ("paſſword",
# "authorİzation"): folded to those letters first, or the gate would miss what the regex
# matches. tests/test_content.py derives this set from ``re`` itself.
_FOLDS_TO_ASCII = "\u0130\u0131\u017f\u212a"
_FOLD_TO_ASCII = str.maketrans(dict(zip(_FOLDS_TO_ASCII, "iisk")))


def _may_fold(data: bytes) -> bool:
    """Whether UTF-8 may hold one of ``_FOLDS_TO_ASCII`` (\\xc4\\xb0, \\xc4\\xb1, \\xc5\\xbf, \\xe2\\x84\\xaa):
    one-byte scans first, as lead bytes \\xc4 and \\xc5 are rare outside Central European text."""
    return b"\xc4" in data or b"\xc5" in data or (b"\xaa" in data and b"\xe2\x84\xaa" in data)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: three bytes >= 0x80, like any other non-ASCII character
        return text.encode("utf-8", "surrogatepass")


def _kv_value_follows(folded: bytes, word: bytes) -> bool:
    start = folded.find(word)
    while start >= 0:
        if _KV_TAIL.match(folded, start + len(word)) is not None:
            return True
        start = folded.find(word, start + 1)
    return False


def _kv_secret_at_separators(folded: bytes) -> bool | None:
    """Whether a key=value secret may be in ``folded``, looked for from its ``:`` and ``=``
    (a keyword, an optional quote and whitespace before one, a value after it); None when
    there are too many separators to look at one by one."""
    found, most = 0, max(_KV_SEPARATORS_SCANNED, len(folded) // _KV_BYTES_PER_SEPARATOR)
    for separator in b":=":
        at = folded.find(separator)
        while at >= 0:
            found += 1
            if found > most:
                return None
            start = max(0, at - _KV_WINDOW)
            before = folded[start:at].rstrip(_SPACE_BYTES)
            if start and len(before) <= _KV_LONGEST:  # whitespace back to the window's start: undecided
                return None
            if before[-1:] in (b"'", b'"'):
                before = before[:-1]
            if before.endswith(_KV_WORDS) and _KV_VALUE.match(folded, at + 1) is not None:
                return True
            at = folded.find(separator, at + 1)
    return False


def _native_gate() -> Callable[[bytes], bool] | None:
    """The gates above as one RE2 automaton (google-re2, the ``fast`` extra), or None.

    One pass over the text's UTF-8 in C++ instead of a dozen scans and a Python loop over the
    separators: about a third of the time. The same necessary conditions, case-insensitive
    (only ever a superset): a key's prefix, ``bearer``, or a keyword, an optional quote,
    whitespace, a separator, whitespace, an optional quote and 8 value bytes, any byte >= 0x80
    counting as whitespace and as a value byte. Text is folded first as for the other gates.
    tests/test_content.py checks both gates against the regex.
    """
    try:
        import re2
    except ImportError:
        return None
    try:
        options = re2.Options()
        options.encoding = re2.Options.Encoding.LATIN1  # bytes, not UTF-8 characters
        options.case_sensitive = False
        keys = b"|".join(prefix.pattern for prefix in _KEY_PREFIXES)  # sk-..., gh?_...
        keywords = b"|".join(_KV_WORDS)
        pattern = (
            keys + rb"|xox|akia|aiza|bearer"
            rb"|(?:" + keywords + rb")[\"']?" + _SPACE + rb"*[:=]" + _SPACE + rb"*[\"']?" + _VALUE
        )
        compiled = re2.compile(pattern, options)
    except Exception:  # pragma: no cover - an incompatible re2 module: the gates above then
        return None
    search = compiled.search

    def found(data: bytes) -> bool:
        return search(data) is not None

    try:  # the wrapper's search builds a generator and a match object per call: call RE2 itself
        match, unanchored, nothing = compiled._regexp.Match, re2._Anchor.UNANCHORED, re2._NULL_SPAN

        def found_directly(data: bytes) -> bool:
            return match(unanchored, data, 0, len(data))[0] != nothing

        probes = (b"a password: hunter22hunter", b"Ordinary prose, nothing to see.", b"Bearer", b"")
        if [found_directly(probe) for probe in probes] == [found(probe) for probe in probes] == [True, False, True, False]:
            return found_directly
    except Exception:  # pragma: no cover - another release of the wrapper: its public search
        pass
    return found


_UNRESOLVED: Any = object()
_native_search: Any = _UNRESOLVED  # resolved at the first check, off the app's import path


def _may_hold_secret(text: str) -> bool:
    global _native_search
    if _native_search is _UNRESOLVED:
        _native_search = _native_gate()
    data = _utf8(text)
    if _native_search is not None:
        if len(data) != len(text) and _may_fold(data):
            data = _utf8(text.translate(_FOLD_TO_ASCII))
        return _native_search(data)
    if b"-" in data and (b"xox" in data or _KEY_PREFIXES[0].search(data) is not None):  # sk-..., xox?-...
        return True
    if b"_" in data and _KEY_PREFIXES[1].search(data) is not None:  # gh?_...
        return True
    if (b"K" in data and b"AKIA" in data) or (b"z" in data and b"AIza" in data):
        return True
    if len(data) != len(text) and _may_fold(data):
        data = _utf8(text.translate(_FOLD_TO_ASCII))
    folded = data.lower()  # ASCII letters only: the non-ASCII ones that matter were folded above
    if b"bearer" in folded:
        return True
    if b":" not in folded and b"=" not in folded:
        return False
    at_separators = _kv_secret_at_separators(folded)
    if at_separators is not None:
        return at_separators
    for word in _KV_WORDS:
        if word in folded and _kv_value_follows(folded, word):
            return True
    return False


def may_hold_secret(text: str) -> bool:
    """Whether ``scrub`` could change ``text``: False is certain. Several texts can be checked at
    once, joined by newlines: a match in one of them is still there (one spanning two is only a
    false alarm)."""
    return len(text) >= MIN_SECRET_CHARS and _may_hold_secret(text)


def passes_text_unchanged(settings: "Settings") -> bool:
    """Whether the settings' content mode stores text as it is, once scrubbed and capped
    (``full``, or ``redacted`` without a hook): text ``may_hold_secret`` rules out passes unchanged."""
    return settings.content_mode == "full" or (settings.content_mode == "redacted" and settings.redact is None)


def _scrub(text: str) -> str:
    if not _may_hold_secret(text):
        return text
    return _SECRET_PATTERNS.sub(REDACTED, text)


# Scrubbed long texts, by the text object's identity (``textcache``): a hit is exactly what
# scanning again would give. Shorter texts are scanned each time (a lookup would cost about as much).
SCRUB_CACHE_MIN_CHARS = 256
_scrubbed = TextCache(max_chars=4_000_000)


def scrub(text: str) -> str:
    """Replace credentials by a marker; ordinary text costs a few substring scans (once per long text object)."""
    size = len(text)
    if size < MIN_SECRET_CHARS:
        return text
    if size < SCRUB_CACHE_MIN_CHARS:
        return _scrub(text)
    held = _scrubbed.get(id(text))
    if held is not None and held[0] is text:
        return held[1]
    clean = _scrub(text)
    _scrubbed.remember(text, clean)
    return clean


def forget_texts() -> None:
    """Empty the cache of long texts (benchmarks measuring texts never seen before)."""
    _scrubbed.clear()


def is_known_clean(text: str) -> bool:
    """Whether ``text`` (this object) is remembered as one ``scrub`` leaves as it is."""
    held = _scrubbed.get(id(text))
    return held is not None and held[0] is text and held[1] is text


def remember_clean(text: str) -> None:
    """Remember a long text ``may_hold_secret`` ruled out, as ``scrub`` would have."""
    if len(text) >= SCRUB_CACHE_MIN_CHARS:
        _scrubbed.remember(text, text)


def to_jsonable(value: Any, _depth: int = 0) -> Any:
    """Plain JSON data from SDK objects (pydantic models, TypedDicts, iterables)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if _depth > 32:
        return repr(value)
    if isinstance(value, dict):
        return {_json_key(k): to_jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, _depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return to_jsonable(dump(mode="json", exclude_unset=True), _depth + 1)
        except Exception:
            pass
    return repr(value)


_JSON_KEYS = {True: "true", False: "false", None: "null"}


def _json_key(key: Any) -> str:
    """A dict key as JSON writes it (``true``, ``null``, ``1.5``), so a value filtered here and
    one encoded as it is (``storage.convert.content_checker``) are stored alike; others as ``str``."""
    if key is True or key is False or key is None:
        return _JSON_KEYS[key]
    if isinstance(key, str):  # a str subclass (an Enum's member): its text, as JSON takes it
        return str.__str__(key)
    if isinstance(key, float):
        return float.__repr__(key)
    if isinstance(key, int):
        return int.__repr__(key)
    return str(key)


def _filtered(value: Any, fn: Any, _depth: int = 0) -> Any:
    """``_map_strings(to_jsonable(value), fn)`` in one walk: plain JSON data with ``fn`` applied to its strings."""
    kind = type(value)  # plain dicts, lists and strings first: what messages are made of
    if kind is str:
        return fn(value)
    if _depth <= 32:
        if kind is dict:
            return {
                (k if type(k) is str else _json_key(k)): (fn(v) if type(v) is str else _filtered(v, fn, _depth + 1))
                for k, v in value.items()
            }
        if kind is list:
            return [fn(v) if type(v) is str else _filtered(v, fn, _depth + 1) for v in value]
    return _filtered_any(value, fn, _depth)


def _filtered_any(value: Any, fn: Any, _depth: int) -> Any:
    if isinstance(value, str):
        return fn(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if _depth > 32:
        return fn(repr(value))
    if isinstance(value, dict):
        return {_json_key(k): _filtered(v, fn, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_filtered(v, fn, _depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return fn(f"<{len(value)} bytes>")
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            dumped = dump(mode="json", exclude_unset=True)
        except Exception:
            pass
        else:
            return _filtered(dumped, fn, _depth + 1)
    return fn(repr(value))


def _cap(text: str, limit: int) -> tuple[str, bool]:
    if len(text) * 4 <= limit:  # a code point is at most 4 bytes of UTF-8 (3 for a lone surrogate)
        return text, False
    if text.isascii():
        return (text, False) if len(text) <= limit else (text[:limit], True)
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return text, False
    return encoded[:limit].decode("utf-8", "ignore"), True


def keyed_hash(text: str, key: str) -> str:
    return hmac.new(key.encode() or b"wasteaudit", text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]


def hash_segments(text: str, key: str) -> dict[str, Any]:
    """Hashed mode keeps per-line keyed hashes: exact repeats stay detectable, text does not."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return {"sha": keyed_hash(text, key), "chars": len(text), "lines": [keyed_hash(line, key) for line in lines]}


def _redacted(text: str, mode: str, redact: Any) -> str:
    """``text`` scrubbed of secrets and, in ``redacted`` mode, passed through the user's hook
    (scrubbed again); a failing hook hides the whole text rather than leak what it was meant to hide."""
    clean = scrub(text)
    if mode == "redacted" and redact is not None:
        try:
            clean = scrub(str(redact(clean)))
        except Exception:
            clean = REDACTED
    return clean


CONTENT_FIELDS = ("input_messages", "system_instructions", "choices", "tool_definitions")


def apply_content_policy(
    record: "CallRecord", settings: "Settings", unchanged: "Collection[str]" = ()
) -> "CallRecord":
    """Filter a record's content in place according to the settings; idempotent.

    ``unchanged``: fields of ``CONTENT_FIELDS`` already known to pass unchanged (the writer
    checks them as it encodes them, ``storage.convert.content_checker``); they are not walked.
    """
    if record.policy_applied:
        return record
    mode = settings.content_mode
    record.content_mode = mode
    limit = settings.max_output_bytes
    redact = settings.redact
    key = settings.hash_key

    def text_fn(text: str) -> Any:
        clean = _redacted(text, mode, redact)
        if mode == "hashed":
            return hash_segments(clean, key)
        capped, cut = _cap(clean, limit)
        if cut:
            record.content_truncated = True
        return capped

    if mode == "full" or (mode == "redacted" and redact is None):

        def text_fn(text: str) -> Any:  # the same, without the steps that do nothing here
            clean = scrub(text)
            if len(clean) * 4 <= limit:
                return clean
            capped, cut = _cap(clean, limit)
            if cut:
                record.content_truncated = True
            return capped

    if mode == "none":
        record.input_messages = None
        record.system_instructions = None
        record.tool_definitions = None
        for choice in record.choices:
            choice.text = None
            choice.refusal = None
            choice.reasoning_text = None
            if choice.tool_calls:
                choice.tool_calls = [{"id": c.get("id"), "name": c.get("name")} for c in choice.tool_calls]
    else:
        if record.input_messages is not None and "input_messages" not in unchanged:
            record.input_messages = _filtered(record.input_messages, text_fn)
        if record.system_instructions is not None and "system_instructions" not in unchanged:
            record.system_instructions = _filtered(record.system_instructions, text_fn)
        if record.tool_definitions is not None and "tool_definitions" not in unchanged:
            record.tool_definitions = to_jsonable(record.tool_definitions)
        for choice in () if "choices" in unchanged else record.choices:
            if choice.text is not None:
                choice.text = text_fn(choice.text)
            if choice.refusal is not None:
                choice.refusal = text_fn(choice.refusal)
            if choice.reasoning_text is not None:
                choice.reasoning_text = text_fn(choice.reasoning_text)
            if choice.tool_calls:
                choice.tool_calls = _filtered(choice.tool_calls, text_fn)
    record.response_format = to_jsonable(record.response_format) if record.response_format is not None else None
    if record.error_message:
        record.error_message = scrub(record.error_message)[:2000]
    if record.content_truncated and "content truncated at max_output_bytes" not in record.gaps:
        record.gaps.append("content truncated at max_output_bytes")
    record.policy_applied = True
    return record


def _is_hashed_text(text: str) -> bool:
    return text.startswith('{"sha"')


def _use_text_policy(settings: "Settings") -> Any:
    """``text -> stored text or None`` for what an app returned or marked used, per content mode."""
    mode, redact, key = settings.content_mode, settings.redact, settings.hash_key

    def apply(text: str) -> str | None:
        if mode == "none":
            return None
        if mode == "hashed":
            if _is_hashed_text(text):
                return text  # already applied
            from wasteaudit.scoring.context import use_texts

            # Line hashes of the value and of the strings inside it: an output line the app
            # returned inside a JSON answer is still found (``scoring.unused`` by line hash).
            return json.dumps(hash_segments("\n".join(use_texts(scrub(text))), key), separators=(",", ":"))
        return _redacted(text, mode, redact)

    return apply


def apply_run_policy(record: "RunRecord", settings: "Settings") -> "RunRecord":
    """Filter what a run returned and marked used, in place, as the call content of its mode is:
    scrubbed in every mode, redacted by the hook, line-hashed, or dropped (``none``)."""
    from wasteaudit.scoring.jsonuse import JSON_ACCESS_PREFIX

    text_fn = _use_text_policy(settings)
    if record.return_value is not None:
        record.return_value = text_fn(record.return_value)
    if record.used_values:
        kept: list[str] = []
        for value in record.used_values:
            if not isinstance(value, str):
                continue
            if value.startswith(JSON_ACCESS_PREFIX):
                if settings.content_mode in ("full", "redacted"):
                    kept.append(value)  # key paths of the model's JSON output the app read, no text
                continue
            stored = text_fn(value)
            if stored is not None:
                kept.append(stored)
        record.used_values = kept
    return record


def apply_score_policy(record: "ScoreRecord", settings: "Settings") -> "ScoreRecord":
    """Filter a score's raw value (feedback text, a judge's rationale) like call content."""
    raw = record.raw_value
    if raw is None or isinstance(raw, (bool, int, float)):
        return record
    mode, key = settings.content_mode, settings.hash_key
    if mode == "none":
        record.raw_value = None
        return record
    text_fn = _use_text_policy(settings)
    if mode == "hashed":
        record.raw_value = _filtered(raw, lambda text: hash_segments(scrub(text), key))
    else:
        record.raw_value = _filtered(raw, text_fn)
    return record
