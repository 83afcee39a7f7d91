"""A request run's result: the response body it sent, kept so the scorer can see which LLM output
reached the client.

``@audit`` keeps what a function returned; a request run's equivalent is the body it sent. The
middleware hands the chunks it passes on to a :class:`ResponseCapture` (references only, up to
``max_return_bytes``), and only a recorded run (one that made an LLM call) turns them into text,
when the request has ended: nothing is decoded on the way out.

What the text is depends on the content type. JSON is kept as sent (the scorer reads the strings
inside it); HTML loses its tags and entities; a stream of events (``text/event-stream``,
``application/x-ndjson``) becomes, per JSON field, the concatenation of that field over the events
(``{"delta": "Hel"}``, ``{"delta": "lo"}`` -> ``Hello``), since a streamed answer arrives in
pieces; other text is kept as is. Binary bodies and encodings other than gzip are not text:
the run's result stays unknown rather than wrong.
"""

from __future__ import annotations

import html
import json
import re
import zlib
from typing import Any, Iterable

__all__ = ("ResponseCapture", "body_text")

_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_STREAM_TYPES = ("text/event-stream", "application/x-ndjson", "application/jsonl", "application/json-seq")


class ResponseCapture:
    """The body chunks of one response, up to ``limit`` bytes (references, no copies)."""

    __slots__ = ("limit", "chunks", "size", "truncated", "headers")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False
        self.headers: Iterable[tuple[Any, Any]] | None = None

    def add(self, chunk: bytes) -> None:
        room = self.limit - self.size
        if room <= 0:
            self.truncated = self.truncated or bool(chunk)
            return
        if len(chunk) > room:
            chunk = chunk[:room]
            self.truncated = True
        self.chunks.append(chunk)
        self.size += len(chunk)

    def value(self) -> tuple[str | None, bool]:
        """``(text for use-tracking or None, whether the body was cut)``; never raises."""
        try:
            return body_text(self.headers or (), b"".join(self.chunks), self.limit), self.truncated
        except Exception:
            return None, False


def _header(headers: Iterable[tuple[Any, Any]], name: str) -> str:
    for key, value in headers:
        key = key.decode("latin-1") if isinstance(key, (bytes, bytearray)) else str(key)
        if key.lower() == name:
            return (value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)).strip()
    return ""


def body_text(headers: Iterable[tuple[Any, Any]], body: bytes, limit: int) -> str | None:
    """The text of a response body as the scorer should compare outputs with; None when unknown."""
    headers = list(headers)
    encoding = _header(headers, "content-encoding").lower()
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        body = inflater.decompress(body, limit)
    elif encoding not in ("", "identity"):
        return None  # br, zstd, deflate variants: not worth a decoder on the app's side
    content_type = _header(headers, "content-type")
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    charset = "utf-8"
    match = re.search(r"charset=\"?([\w.:-]+)", params, re.IGNORECASE)
    if match:
        charset = match.group(1)
    if not _is_text(media):
        return None
    try:
        text = body.decode(charset, "replace")
    except LookupError:
        text = body.decode("utf-8", "replace")
    if media in _STREAM_TYPES:
        return _stream_text(text, sse=media == "text/event-stream")
    if media in ("text/html", "application/xhtml+xml"):
        return html.unescape(_TAG.sub("\n", text))
    return text


def _is_text(media: str) -> bool:
    if not media:
        return False
    if media.startswith("text/") or media in _STREAM_TYPES:
        return True
    return media.endswith(("/json", "+json", "/xml", "+xml", "/javascript", "/x-www-form-urlencoded"))


def _stream_text(text: str, *, sse: bool) -> str:
    """Events' payloads joined per JSON field; plain-text payloads joined in order.

    Returned as a JSON object ``{field path: joined text}`` that the scorer expands to its strings.
    """
    joined: dict[str, list[str]] = {}
    plain: list[str] = []
    for line in text.splitlines():
        if sse:
            if not line.startswith("data:"):
                continue
            payload = line[5:].removeprefix(" ")
        else:
            payload = line
        if not payload.strip() or payload.strip() == "[DONE]":
            continue
        try:
            value = json.loads(payload)
        except ValueError:
            plain.append(payload)
            continue
        _collect(value, "", joined)
    out = {path: "".join(parts) for path, parts in joined.items()}
    if plain:
        out["(text)"] = "".join(plain) if sse else "\n".join(plain)
    return json.dumps(out, ensure_ascii=False)


def _collect(value: Any, path: str, joined: dict[str, list[str]]) -> None:
    if isinstance(value, str):
        joined.setdefault(path or "(value)", []).append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _collect(item, f"{path}.{key}" if path else str(key), joined)
    elif isinstance(value, list):
        for item in value:  # list positions are dropped: choices[0].delta and choices[1].delta would interleave
            _collect(item, f"{path}[]", joined)
