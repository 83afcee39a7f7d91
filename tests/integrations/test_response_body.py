"""A response body as the text the scorer compares outputs with, per content type."""

from __future__ import annotations

import gzip
import json

from wasteaudit.integrations._response_body import ResponseCapture, body_text


def _text(content_type: str, body: bytes, **headers: str) -> str | None:
    return body_text([(b"content-type", content_type.encode()), *((k.replace("_", "-").encode(), v.encode()) for k, v in headers.items())], body, 65_536)


def test_json_and_plain_text_are_kept_as_sent() -> None:
    assert _text("application/json", b'{"answer": "Paris"}') == '{"answer": "Paris"}'
    assert _text("application/problem+json", b'{"detail": "x"}') == '{"detail": "x"}'
    assert _text("text/plain; charset=latin-1", "café".encode("latin-1")) == "café"
    assert _text("text/plain; charset=no-such-charset", b"ok") == "ok"


def test_html_loses_tags_scripts_and_entities() -> None:
    text = _text("text/html", b"<html><script>var a = 1;</script><p>Paris &amp; Lyon</p><style>p{}</style></html>")
    assert text is not None and "Paris & Lyon" in text and "var a" not in text and "<p>" not in text and "p{}" not in text


def test_event_streams_are_joined_per_field() -> None:
    sse = b'event: delta\ndata: {"type": "delta", "text": "Hel"}\n\ndata: {"type": "delta", "text": "lo"}\n\ndata: [DONE]\n\n'
    assert json.loads(_text("text/event-stream", sse) or "") == {"type": "deltadelta", "text": "Hello"}
    ndjson = b'{"choices": [{"delta": {"content": "A"}}]}\n{"choices": [{"delta": {"content": "B"}}]}\n'
    assert json.loads(_text("application/x-ndjson", ndjson) or "") == {"choices[].delta.content": "AB"}
    assert json.loads(_text("text/event-stream", b"data: Hel\n\ndata: lo\n\n") or "") == {"(text)": "Hello"}


def test_gzip_is_inflated_and_other_encodings_or_binary_bodies_are_unknown() -> None:
    assert _text("application/json", gzip.compress(b'{"a": "b"}'), content_encoding="gzip") == '{"a": "b"}'
    assert _text("application/json", b"\x1b\x00", content_encoding="br") is None
    assert _text("image/png", b"\x89PNG\r\n") is None
    assert body_text([], b"no content type", 100) is None


def test_capture_keeps_at_most_its_limit_and_says_so() -> None:
    capture = ResponseCapture(10)
    capture.headers = [(b"content-type", b"text/plain")]
    for chunk in (b"abcdef", b"ghijkl", b"mn"):
        capture.add(chunk)
    assert capture.value() == ("abcdefghij", True)
    broken = ResponseCapture(10)
    broken.headers = [(b"content-type", b"text/plain")]
    broken.chunks.append("not bytes")  # type: ignore[arg-type]  # a misbehaving app: no exception, no result
    assert broken.value() == (None, False)
