"""Hypothesis strategies for damaged provider replies, app-side drivers, and stored-row checks.

The fuzz tests serve a *structurally mutated* valid reply (fields dropped, values of the wrong
type, huge or negative numbers, NUL and odd Unicode, invalid UTF-8 bytes, truncated JSON, events
dropped or duplicated, a connection cut mid-stream) from the loopback server, run the same
request through the bare SDK and the instrumented one, and compare what the app saw. The row the
writer stored for the call is then read back with plain ``sqlite3`` and checked for sanity.
"""

from __future__ import annotations

import copy
import json
import re
import sqlite3
from typing import Any, Callable

from hypothesis import strategies as st

from wasteaudit.localllm import Reply

# -- values a provider should never send ------------------------------------------------------------

HUGE_INTS = (-1, -(2**31), 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 + 7, 10**30, -(2**70))
ODD_CHARS = ("\x00", "\ud800", "\udfff", "\u202e", "\ufeff", "\u200b", "\uffff", "🧪", "👩🏽‍🔬", "\x7f", "\r\n", '"', "\\", "data: x\n\n", "</script>")
# Invalid UTF-8: a lone continuation byte, a truncated sequence, an encoded surrogate, overlong NUL.
BAD_BYTES = (b"\xff", b"\x80", b"\xc3", b"\xc3(", b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80")

odd_text = st.lists(st.one_of(st.sampled_from(ODD_CHARS), st.text(max_size=6)), max_size=6).map("".join)

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(HUGE_INTS),
    st.integers(min_value=-5, max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
)
json_values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)

# -- structural mutation of a valid body ---------------------------------------------------------------

Path = tuple[Any, ...]


def paths(value: Any, prefix: Path = ()) -> list[Path]:
    """Every location in a JSON value, the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def _parent(body: Any, path: Path) -> Any:
    for step in path[:-1]:
        body = body[step]
    return body


@st.composite
def mutated(draw: st.DrawFn, base: Any, max_mutations: int = 3) -> Any:
    """``base`` with 1..max_mutations random damages at random places (the root included)."""
    body = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=max_mutations))):
        path = draw(st.sampled_from(paths(body)))
        kind = draw(st.sampled_from(("delete", "replace", "number", "text", "null")))
        if not path:  # the whole body
            if kind == "delete":
                return draw(json_values)
            continue
        parent, key = _parent(body, path), path[-1]
        if kind == "delete":
            del parent[key]
            continue
        if kind == "replace":
            new: Any = draw(json_values)
        elif kind == "number":
            new = draw(st.sampled_from(HUGE_INTS))
        elif kind == "text":
            new = draw(odd_text)
        else:
            new = None
        parent[key] = new
    return body


@st.composite
def encoded(draw: st.DrawFn, body: Any) -> bytes:
    """JSON bytes of ``body``, sometimes damaged: truncated, invalid UTF-8 inside, garbage after."""
    ensure_ascii = draw(st.booleans())
    raw = json.dumps(body, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
    damage = draw(st.sampled_from(("none", "none", "none", "truncate", "invalid_utf8", "garbage_tail")))
    if damage == "truncate" and raw:
        raw = raw[: draw(st.integers(min_value=0, max_value=len(raw) - 1))]
    elif damage == "invalid_utf8":
        quotes = [m.end() for m in re.finditer(b'"', raw)] or [len(raw)]
        at = draw(st.sampled_from(quotes))  # mostly inside a string value or key
        raw = raw[:at] + draw(st.sampled_from(BAD_BYTES)) + raw[at:]
    elif damage == "garbage_tail":
        raw += draw(st.sampled_from((b"}", b"\x00", b" trailing", b"\n{}")))
    return raw


def json_reply(raw: bytes) -> Reply:
    return Reply(body=raw, headers={"content-type": "application/json", "x-should-retry": "false"})


def _split_event(event: str) -> tuple[str, Any]:
    """``("event: x\\n", payload)`` for an SSE text with a JSON data line, else ``(event, None)``."""
    head, sep, data = event.rpartition("data: ")
    if not sep:
        return event, None
    try:
        return head, json.loads(data)
    except ValueError:
        return event, None


@st.composite
def damaged_stream(draw: st.DrawFn, events: list[str]) -> Reply:
    """A valid SSE stream with a few events damaged, dropped, duplicated or garbled, maybe cut."""
    out: list[str | bytes] = list(events)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        if not out:
            break
        index = draw(st.integers(min_value=0, max_value=len(out) - 1))
        kind = draw(st.sampled_from(("mutate", "mutate", "mutate", "drop", "duplicate", "garble", "truncate_list")))
        event = out[index]
        if kind == "mutate" and isinstance(event, str):
            head, payload = _split_event(event)
            if payload is not None:
                out[index] = head.encode() + b"data: " + draw(encoded(draw(mutated(payload))))
        elif kind == "drop":
            del out[index]
        elif kind == "duplicate":
            out.insert(index, event)
        elif kind == "garble":
            out.insert(index, draw(st.sampled_from((b"data: {", b"data: \xff\xfe", b": comment \x00", b"event: \xc3(\ndata: {}", b"data: null", b"data: []", b"retry: x"))))
        else:
            del out[index:]
    cut = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=max(0, len(out)))))
    return Reply(sse=out, cut_after=cut, headers={"x-should-retry": "false"})


# -- what the app sees ---------------------------------------------------------------------------------

_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


def dump(value: Any) -> Any:
    if isinstance(value, list):
        return [dump(item) for item in value]
    if hasattr(value, "model_dump"):
        try:
            return value.model_dump(mode="json", warnings=False)
        except Exception as exc:  # noqa: BLE001 - an odd model the SDK built: compare the failure too
            return ("dump failed", type(exc).__name__)
    return value


def failure(exc: BaseException) -> tuple[Any, ...]:
    return ("raised", type(exc).__qualname__, type(exc).__module__, _ADDRESS.sub("0x?", str(exc)), getattr(exc, "status_code", None), dump(getattr(exc, "body", None)))


def observe(fn: Callable[[], Any]) -> tuple[Any, ...]:
    """("ok", what the call returned) or ("raised", ...) for a non-streaming call."""
    try:
        return ("ok", dump(fn()))
    except Exception as exc:  # noqa: BLE001 - the point is to compare whatever happened
        return failure(exc)


def observe_stream(open_stream: Callable[[], Any]) -> tuple[Any, ...]:
    """Every item the app iterated, then how the stream ended (None, or the exception)."""
    seen: list[Any] = []
    try:
        for item in open_stream():
            seen.append(dump(item))
    except Exception as exc:  # noqa: BLE001
        return ("stream", seen, failure(exc))
    return ("stream", seen, None)


def canonical(observation: Any) -> str:
    """A comparable form (NaN equals NaN here; types by name)."""
    return json.dumps(observation, default=repr, ensure_ascii=True)


def raised(observation: tuple[Any, ...]) -> bool:
    return observation[0] == "raised" or (observation[0] == "stream" and observation[2] is not None)


# -- the stored row --------------------------------------------------------------------------------

JSON_COLUMNS = ("request_params", "usage_details", "finish_reasons", "input_messages", "system_instructions", "choices", "tool_definitions", "response_format", "gaps")
TOKEN_COLUMNS = ("input_tokens", "input_cache_read_tokens", "input_cache_write_tokens", "output_tokens", "output_reasoning_tokens")
FINISH_CATEGORIES = (None, "stop", "length", "tool", "filter", "refusal", "error")


def stored_call(db_path: str, call_id: str) -> dict[str, Any]:
    """The ``wasteaudit_calls`` row, JSON columns decoded (a row that does not decode fails here)."""
    with sqlite3.connect(db_path) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM wasteaudit_calls WHERE id = ?", (call_id,)).fetchone()
        assert row is not None, f"call {call_id} was not stored"
        data = dict(row)
        data["attempt_rows"] = conn.execute("SELECT COUNT(*) FROM wasteaudit_attempts WHERE call_id = ?", (call_id,)).fetchone()[0]
    for column in JSON_COLUMNS:
        if data[column] is not None:
            data[column] = json.loads(data[column])
    return data


def check_row_sane(row: dict[str, Any]) -> None:
    """What any stored call must satisfy, whatever the provider sent."""
    for column in TOKEN_COLUMNS:
        value = row[column]
        assert value is None or (type(value) is int and 0 <= value < 2**63), (column, value)
    assert row["usage_source"] in ("provider", "estimated", "missing")
    gaps = row["gaps"]
    assert isinstance(gaps, list) and all(isinstance(g, str) for g in gaps)
    if row["usage_source"] == "missing":
        assert row["output_tokens"] is None, (row["output_tokens"], gaps)
        assert any("usage" in gap for gap in gaps), gaps
    assert row["finish_category"] in FINISH_CATEGORIES
    assert isinstance(row["choices"], list)
    for choice in row["choices"]:
        for key in ("text", "refusal", "reasoning_text"):
            assert choice.get(key) is None or isinstance(choice[key], str)
    for column in ("error_message", "response_model", "response_id", "service_tier"):
        value = row[column]
        if value is not None:
            assert "\x00" not in value, (column, value)
            value.encode("utf-8")  # no lone surrogate survived
