"""Ingest benchmark: how many call records per second the storage Writer stores.

The Writer is fed pre-built ``CallRecord``s, so only the writer's own cost is measured (not the
SDK's, not capture's). The records are built from the real recorded provider traffic in
``../shared/cassettes`` (``$WASTEAUDIT_CASSETTES``): each recorded call's models, normalized
usage, finish reasons, status, request messages and response text (for non-streamed JSON
replies). Without the cassettes, a realistic synthetic chat call is used instead. Records are
cloned round-robin with fresh ids, spread over runs of 4 calls, and built before the clock starts.

The Writer runs as deployed, including the configured content policy (secret scrubbing, size
caps; ``--no-content-policy`` leaves it out). Measured per database: wall-clock records/s from
the first ``submit`` until ``flush`` returns,
the caller's cost per ``submit``, and records per CPU-second of the writer thread (a steadier
figure on a shared machine). Warm-up first: schema migrated, price table loaded.

    PYTHONPATH=. .venv/bin/python bench/bench_ingest.py [--records 50000] [--only sqlite|postgresql]

PostgreSQL: a fresh database is created on ``$WASTEAUDIT_BENCH_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) and dropped afterwards; skipped if unreachable.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from wasteaudit.records import AttemptRecord, CallRecord, ChoiceContent, new_id
from wasteaudit.storage.writer import Writer

ROOT = Path(__file__).resolve().parents[1]
CASSETTES = Path(os.environ.get("WASTEAUDIT_CASSETTES", ROOT.parent / "shared" / "cassettes"))
PG_SERVER = os.environ.get("WASTEAUDIT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
FINISH_CATEGORY = {
    "stop": "stop", "end_turn": "stop", "stop_sequence": "stop", "completed": "stop",
    "length": "length", "max_tokens": "length", "incomplete:max_output_tokens": "length",
    "tool_calls": "tool", "tool_use": "tool", "content_filter": "filter", "refusal": "refusal",
}


# --- records from recorded traffic -------------------------------------------------------------


def _response_json(response: dict[str, Any]) -> Any:
    body = response.get("body")
    raw = body.get("string") if isinstance(body, dict) else body
    if isinstance(raw, bytes):
        import gzip

        raw = gzip.decompress(raw).decode() if raw[:2] == b"\x1f\x8b" else raw.decode("utf-8", "replace")
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None  # a stream


def _choices(provider: str, body: Any) -> list[ChoiceContent]:
    if not isinstance(body, dict):
        return []
    if provider == "anthropic":
        text = "".join(b.get("text", "") for b in body.get("content") or [] if b.get("type") == "text")
        return [ChoiceContent(index=0, text=text, finish_reason=body.get("stop_reason"))]
    if "choices" in body:
        return [
            ChoiceContent(
                index=c.get("index", 0),
                text=(c.get("message") or {}).get("content") or c.get("text"),
                tool_calls=(c.get("message") or {}).get("tool_calls"),
                finish_reason=c.get("finish_reason"),
            )
            for c in body["choices"]
        ]
    texts = [
        part.get("text", "")
        for item in body.get("output") or []
        if item.get("type") == "message"
        for part in item.get("content") or []
    ]
    return [ChoiceContent(index=0, text="".join(texts), finish_reason=body.get("status"))] if texts else []


def recorded_templates() -> list[CallRecord]:
    """One CallRecord per recorded call in the cassettes (empty if they are not available)."""
    manifest_path = CASSETTES / "manifest.json"
    if not manifest_path.is_file():
        return []
    import yaml

    templates: list[CallRecord] = []
    for entry in json.loads(manifest_path.read_text())["cassettes"]:
        recorded = yaml.safe_load((CASSETTES / entry["file"]).read_text()).get("interactions", [])
        for truth in entry["interactions"]:
            request, response = recorded[truth["index"]]["request"], recorded[truth["index"]]["response"]
            try:
                sent = json.loads(request.get("body") or "null") or {}
            except (TypeError, ValueError):
                sent = {}
            provider = truth["provider"] if truth["provider"] in ("openai", "anthropic") else "openai"
            cached, created = truth.get("cached_tokens"), truth.get("cache_creation_tokens")
            input_tokens = truth.get("input_tokens")
            if provider == "anthropic" and input_tokens is not None:
                input_tokens += (cached or 0) + (created or 0)  # normalized: input includes cache
            reasons = truth.get("finish_reasons") or []
            params = {k: sent[k] for k in ("max_tokens", "max_output_tokens", "temperature", "n") if k in sent}
            templates.append(
                CallRecord(
                    id="",
                    provider=provider,
                    operation="chat",
                    api=truth["endpoint"],
                    started_at=0.0,
                    function=entry["file"].split("/")[1],
                    request_model=truth.get("request_model"),
                    response_model=truth.get("response_model"),
                    server_address=truth.get("host"),
                    server_port=443,
                    stream=bool(truth.get("stream")),
                    request_params=params,
                    usage_source="provider" if truth.get("usage_present") else "missing",
                    input_tokens=input_tokens,
                    input_cache_read_tokens=cached,
                    input_cache_write_tokens=created,
                    output_tokens=truth.get("output_tokens"),
                    output_reasoning_tokens=truth.get("reasoning_tokens"),
                    finish_reasons=list(reasons),
                    finish_category=FINISH_CATEGORY.get(reasons[0], "stop") if reasons else None,
                    status_code=truth.get("status"),
                    error_type=truth.get("error_type"),
                    error_message=truth.get("error_message"),
                    input_messages=sent.get("messages") or sent.get("input"),
                    system_instructions=sent.get("system") or sent.get("instructions"),
                    tool_definitions=sent.get("tools"),
                    choices=_choices(provider, _response_json(response)),
                    trace_id=uuid.uuid4().hex,
                    span_id=uuid.uuid4().hex[:16],
                )
            )
    return templates


def synthetic_template() -> CallRecord:
    return CallRecord(
        id="", provider="openai", operation="chat", api="chat.completions", started_at=0.0,
        function="summarize", request_model="gpt-4o-mini", response_model="gpt-4o-mini-2024-07-18",
        server_address="api.openai.com", server_port=443, request_params={"max_tokens": 256, "temperature": 0.2},
        usage_source="provider", input_tokens=1200, input_cache_read_tokens=0, output_tokens=180,
        output_reasoning_tokens=0, finish_reasons=["stop"], finish_category="stop", status_code=200,
        input_messages=[{"role": "system", "content": "You are helpful."},
                        {"role": "user", "content": "Summarize the following text. " * 20}],
        choices=[ChoiceContent(index=0, text="A summary of the text. " * 30, finish_reason="stop")],
        trace_id=uuid.uuid4().hex, span_id=uuid.uuid4().hex[:16],
    )


def build_records(templates: list[CallRecord], count: int) -> list[CallRecord]:
    now = time.time()
    records = []
    run_id = new_id()
    for i in range(count):
        record = copy.copy(templates[i % len(templates)])
        if i % 4 == 0:
            run_id = new_id()
        record.id, record.run_id = new_id(), run_id
        record.choices = [copy.copy(choice) for choice in record.choices]  # the content policy edits these
        record.gaps = list(record.gaps)
        record.started_at, record.ended_at, record.duration_s = now - 1.0, now, 1.0
        record.attempts = [AttemptRecord(index=0, started_at=now - 1.0, duration_s=1.0, status_code=record.status_code)]
        records.append(record)
    return records


# --- measurement -------------------------------------------------------------------------------


def _thread_cpu(thread: threading.Thread | None) -> float | None:
    if thread is None or thread.ident is None or not hasattr(time, "pthread_getcpuclockid"):
        return None
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except OSError:
        return None


def measure(url: str, records: list[CallRecord], batch_size: int, content_policy: bool) -> dict[str, float]:
    options: dict[str, Any] = {} if content_policy else {"content_policy": None}
    writer = Writer(url, queue_size=len(records) + 10, batch_size=batch_size, **options)
    try:
        warm = build_records(records[:50], 50)
        for record in warm:
            writer.submit(record)
        if not writer.flush(120):
            raise RuntimeError(f"warm-up did not finish: {writer.stats()}")
        cpu_before = _thread_cpu(writer._thread)
        started = time.perf_counter()
        for record in records:
            writer.submit(record)
        submitted = time.perf_counter()
        if not writer.flush(600):
            raise RuntimeError(f"flush did not finish: {writer.stats()}")
        elapsed = time.perf_counter() - started
        cpu_after = _thread_cpu(writer._thread)
        stats = writer.stats()
        if stats["written"] != len(records) + len(warm):
            raise RuntimeError(f"not everything was written: {stats}")
    finally:
        writer.shutdown(timeout=30)
    result = {
        "records_per_s": len(records) / elapsed,
        "submit_us": (submitted - started) / len(records) * 1e6,
    }
    if cpu_before is not None and cpu_after is not None and cpu_after > cpu_before:
        result["records_per_writer_cpu_s"] = len(records) / (cpu_after - cpu_before)
    return result


def _report(name: str, result: dict[str, float]) -> None:
    cpu = result.get("records_per_writer_cpu_s")
    print(
        f"{name:<11} {result['records_per_s']:>9,.0f} records/s"
        f"   submit {result['submit_us']:.2f} µs/record"
        + (f"   {cpu:,.0f} records per writer-thread CPU second" if cpu else "")
    )


def bench_sqlite(records: list[CallRecord], batch_size: int, content_policy: bool) -> None:
    with tempfile.TemporaryDirectory() as directory:
        _report("sqlite", measure(f"sqlite:///{directory}/bench.db", records, batch_size, content_policy))


def bench_postgresql(records: list[CallRecord], batch_size: int, content_policy: bool) -> None:
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        server = make_url(PG_SERVER)
        admin = psycopg.connect(server.set(drivername="postgresql").render_as_string(hide_password=False),
                                autocommit=True, connect_timeout=3)
    except Exception as exc:
        print(f"postgresql  skipped: {exc}")
        return
    name = f"wasteaudit_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = server.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
        _report("postgresql", measure(url, records, batch_size, content_policy))
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--no-content-policy", action="store_true", help="store content as it arrives")
    args = parser.parse_args(argv)

    templates = recorded_templates()
    source = f"{len(templates)} recorded calls from {CASSETTES}" if templates else "a synthetic chat call"
    templates = templates or [synthetic_template()]
    records = build_records(templates, args.records)
    size = sum(len(json.dumps([c.text for c in r.choices]) + json.dumps(r.input_messages, default=str))
               for r in records[: len(templates)]) / len(templates)
    print(f"{args.records:,} call records cloned from {source} (~{size:,.0f} bytes of content each), "
          f"batch size {args.batch_size}, content policy {'off' if args.no_content_policy else 'on'}, "
          f"{os.cpu_count()} CPUs")
    if args.only in (None, "sqlite"):
        bench_sqlite(records, args.batch_size, not args.no_content_policy)
    if args.only in (None, "postgresql"):
        bench_postgresql(records, args.batch_size, not args.no_content_policy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
