"""Replay the recorded provider traffic in ../shared/cassettes through the local LLM server.

Each recorded response is served byte for byte (decompressed where it was gzip) so the real
SDKs parse exactly what the provider sent; the manifest's ground truth says what wasteaudit
must record for each call.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wasteaudit.localllm import Reply

CASSETTE_DIR = Path(os.environ.get("WASTEAUDIT_CASSETTES", Path(__file__).resolve().parents[2] / "shared" / "cassettes"))
_SKIP_HEADERS = {"content-length", "content-encoding", "transfer-encoding", "connection", "content-type"}


@dataclass
class Interaction:
    cassette: str
    index: int
    request_body: Any
    request_path: str
    reply: Reply
    truth: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.cassette}#{self.index}"


def available() -> bool:
    return (CASSETTE_DIR / "manifest.json").is_file()


def manifest() -> dict[str, Any]:
    return json.loads((CASSETTE_DIR / "manifest.json").read_text())


def _body_bytes(body: Any) -> bytes:
    raw = body.get("string", b"") if isinstance(body, dict) else body
    if raw is None:
        return b""
    data = raw if isinstance(raw, bytes) else str(raw).encode()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def interactions(provider: str | None = None) -> list[Interaction]:
    """Every recorded call (optionally of one provider), with its reply and ground truth."""
    if not available():
        return []
    result: list[Interaction] = []
    for entry in manifest()["cassettes"]:
        if provider is not None and entry["provider"] != provider:
            continue
        doc = yaml.safe_load((CASSETTE_DIR / entry["file"]).read_text())
        recorded = doc.get("interactions", [])
        for truth in entry["interactions"]:
            item = recorded[truth["index"]]
            request, response = item["request"], item["response"]
            headers = {k: v[0] for k, v in (response.get("headers") or {}).items() if k.lower() not in _SKIP_HEADERS and v}
            content_type = next((v[0] for k, v in (response.get("headers") or {}).items() if k.lower() == "content-type" and v), "application/json")
            if truth.get("stream") and response["status"]["code"] < 400:
                content_type = "text/event-stream; charset=utf-8"
            headers["content-type"] = content_type
            headers.setdefault("x-should-retry", "false")
            try:
                request_body = json.loads(request.get("body") or "null")
            except (TypeError, ValueError):
                request_body = None
            result.append(
                Interaction(
                    cassette=entry["file"],
                    index=truth["index"],
                    request_body=request_body,
                    request_path=truth["path"],
                    reply=Reply(status=response["status"]["code"], body=_body_bytes(response.get("body")), headers=headers),
                    truth={**truth, "categories": entry["categories"]},
                )
            )
    return result
