"""Ingest benchmark: how many call records per second the storage Writer stores.

The Writer is fed pre-built ``CallRecord``s, so only the writer's own cost is measured (not the
SDK's, not capture's). The records are built from the real recorded provider traffic in
``../shared/cassettes`` (``$WASTEAUDIT_CASSETTES``): each recorded call's models, normalized
usage, finish reasons, status, request messages and response text (for non-streamed JSON
replies). Without the cassettes, a realistic synthetic chat call is used instead. Records are
cloned round-robin with fresh ids, spread over runs of 4 calls, and built before the clock starts.
``--content`` decides which texts the clones share: by default (``realistic``) every message and
response is new text and only system prompts and tool definitions are shared objects, as with an
app's constants; ``repeated`` keeps the recorded texts' objects (a best case for the writer's cache
of long texts), ``distinct`` shares nothing.

The Writer runs as deployed, including the configured content policy (secret scrubbing, size
caps; ``--no-content-policy`` leaves it out). Measured per database: wall-clock records/s from
the first ``submit`` until ``flush`` returns,
the caller's cost per ``submit``, and records per CPU-second of the writer thread (a steadier
figure on a shared machine). Warm-up first: schema migrated, price table loaded.

    PYTHONPATH=. .venv/bin/python bench/bench_ingest.py [--records 50000] [--only sqlite|postgresql] [--e2e-calls 2000 --threads 8]

PostgreSQL: a fresh database is created on ``$WASTEAUDIT_BENCH_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) and dropped afterwards; skipped if unreachable.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
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
CASSETTES = Path(os.environ.get("WASTEAUDIT_CASSETTES") or next(
    (p for p in (ROOT.parent / "shared" / "cassettes", ROOT.parents[1] / "shared" / "cassettes") if p.is_dir()),
    ROOT.parent / "shared" / "cassettes"))
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


def _distinct(value: Any, tag: str) -> Any:
    """``value`` with every string of 16+ characters made different (``tag`` in front)."""
    if isinstance(value, str):
        return f"{tag} {value}" if len(value) >= 16 else value
    if isinstance(value, dict):
        return {key: _distinct(item, tag) for key, item in value.items()}
    if isinstance(value, list):
        return [_distinct(item, tag) for item in value]
    return value


def make_content_distinct(records: list[CallRecord]) -> None:
    """Give every record its own texts (in place): no two records share a message, a response,
    a system prompt or a tool definition, so nothing the writer remembers from one call helps
    with the next. Real traffic lies in between: system prompts, tool definitions and the history
    re-sent with each turn repeat; a response's text never does."""
    for i, record in enumerate(records):
        tag = f"[{i:07d}]"
        record.input_messages = _distinct(record.input_messages, tag)
        record.system_instructions = _distinct(record.system_instructions, tag)
        record.tool_definitions = _distinct(record.tool_definitions, tag)
        for choice in record.choices:
            choice.text = _distinct(choice.text, tag)


def make_content_realistic(records: list[CallRecord]) -> None:
    """What an app's traffic shares (in place): the system prompt and the tool definitions are the
    app's own constants, the same objects call after call; every user, assistant and tool message
    and every response is new text."""
    for i, record in enumerate(records):
        tag = f"[{i:07d}]"
        messages = record.input_messages
        if isinstance(messages, list):
            record.input_messages = [m if isinstance(m, dict) and m.get("role") in ("system", "developer") else _distinct(m, tag) for m in messages]
        else:
            record.input_messages = _distinct(messages, tag)
        for choice in record.choices:
            choice.text = _distinct(choice.text, tag)


# --- measurement -------------------------------------------------------------------------------


def _server_cpu_s(admin: Any, database: str | None) -> float:
    """CPU seconds used so far by the PostgreSQL backends serving ``database`` (0 for SQLite)."""
    if admin is None or database is None:
        return 0.0
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for (pid,) in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)).fetchall():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            pass  # another host, or the backend ended
    return total


def _thread_cpu_s(thread: threading.Thread | None) -> float:
    """CPU seconds a thread of this process has used (Linux /proc; 0 elsewhere)."""
    if thread is None or thread.native_id is None:
        return 0.0
    try:
        fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


@contextlib.contextmanager
def _frozen_heap() -> Any:
    """Keep the garbage collector from re-scanning the objects built before the clock starts.

    The benchmark holds every record it will submit (tens of thousands, with their content) from
    the start, which an app never does; without this, full collections over those records
    (100–370 ms each here) land at random in the timed window and swamp the writer's own costs.
    Objects created while timed are collected as usual.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _forget_texts() -> None:
    from wasteaudit._internal import content
    from wasteaudit.storage import convert

    for module in (content, convert):
        forget = getattr(module, "forget_texts", None)
        if forget is not None:
            forget()


def measure(url: str, records: list[CallRecord], batch_size: int, content_policy: bool,
            admin: Any = None, database: str | None = None, forget: bool = False) -> dict[str, float]:
    """Records/s through the Writer (submit to committed), and CPU per record, client and server."""
    options: dict[str, Any] = {} if content_policy else {"content_policy": None}
    # Fresh clones: the writer filters records in place (marking them done), so records reused
    # from an earlier measurement would skip the content policy.
    records = build_records(records, len(records))
    writer = Writer(url, queue_size=len(records) + 10, batch_size=batch_size, **options)
    try:
        warm = build_records(records[:50], 50)
        for record in warm:
            writer.submit(record)
        if not writer.flush(120):
            raise RuntimeError(f"warm-up did not finish: {writer.stats()}")
        threads = (writer._converter, writer._thread)
        if forget:  # texts the writer has seen before (warm-up, the baseline) are not remembered
            _forget_texts()
        with _frozen_heap():
            server_before, cpu_before = _server_cpu_s(admin, database), time.process_time()
            threads_before = [_thread_cpu_s(thread) for thread in threads]
            started = time.perf_counter()
            for record in records:
                writer.submit(record)
            submitted = time.perf_counter()
            if not writer.flush(600):
                raise RuntimeError(f"flush did not finish: {writer.stats()}")
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_before
            converter_cpu, db_thread_cpu = (_thread_cpu_s(t) - b for t, b in zip(threads, threads_before))
            server = _server_cpu_s(admin, database) - server_before
        stats = writer.stats()
        if stats["written"] != len(records) + len(warm):
            raise RuntimeError(f"not everything was written: {stats}")
    finally:
        writer.shutdown(timeout=30)
    return {
        "records_per_s": len(records) / elapsed,
        "submit_us": (submitted - started) / len(records) * 1e6,
        "client_cpu_us": cpu / len(records) * 1e6,
        "server_cpu_us": server / len(records) * 1e6,
        "converter_cpu_us": converter_cpu / len(records) * 1e6,
        "db_thread_cpu_us": db_thread_cpu / len(records) * 1e6,
    }


def measure_floor(url: str, records: list[CallRecord], batch_size: int,
                  admin: Any = None, database: str | None = None) -> dict[str, float]:
    """The database alone: the same rows, converted beforehand, inserted by the same statements.

    The baseline for the writer's figure: what the writer adds on top is conversion (content
    policy, pricing, JSON), the rest is the database's own cost on this machine right now.
    """
    from wasteaudit.storage.writer import _Batch

    writer = Writer(url, queue_size=10, batch_size=batch_size)
    writer.shutdown(timeout=0)  # only its statements and engine are used, from this thread
    try:
        engine = writer._connect()
        units = writer._prepare(_Batch(build_records(records, len(records))))
        with _frozen_heap():
            server_before, cpu_before = _server_cpu_s(admin, database), time.process_time()
            started = time.perf_counter()
            for start in range(0, len(units), batch_size):
                writer._insert(engine, units[start:start + batch_size])
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_before
            server = _server_cpu_s(admin, database) - server_before
    finally:
        if writer._engine is not None:
            writer._engine.dispose()
    return {
        "records_per_s": len(units) / elapsed,
        "client_cpu_us": cpu / len(units) * 1e6,
        "server_cpu_us": server / len(units) * 1e6,
    }


def measure_end_to_end(url: str, calls: int, threads: int) -> dict[str, float]:
    """Calls/s from app threads through the instrumented openai SDK to committed rows, against
    the same calls through the bare SDK (the baseline) in this run; loopback server only."""
    import openai

    import wasteaudit
    from wasteaudit.instrumentation import active_instrumentations
    from wasteaudit.localllm import LocalLLMServer, Reply
    from wasteaudit.localllm.openai_bodies import chat_completion

    def reply(request: Any) -> Reply:
        body = chat_completion("A short answer to the question. " * 4, prompt_tokens=120, completion_tokens=40)
        body["id"] = request.json["messages"][-1]["content"].split()[-1]  # the call's marker
        return Reply(json=body)

    def run_calls(base_url: str, prefix: str) -> float:
        import httpx2

        per_thread = calls // threads

        def work(slot: int) -> None:
            client = openai.OpenAI(base_url=base_url, api_key="sk-bench-not-a-key", max_retries=0,
                                   http_client=httpx2.Client(verify=False))
            for i in range(per_thread):
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": f"Summarize ticket {i}. marker {prefix}-{slot}-{i}"}],
                )

        pool = [threading.Thread(target=work, args=(slot,)) for slot in range(threads)]
        started = time.perf_counter()
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        if prefix != "bare" and not wasteaudit.flush(120):
            raise RuntimeError(f"flush did not finish: {wasteaudit.status()}")
        return per_thread * threads / (time.perf_counter() - started)

    with LocalLLMServer(handler=reply) as server:
        server._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        bare = run_calls(server.openai_base_url, "bare")
        server.clear()
        wasteaudit.configure(database_url=url)
        handle = wasteaudit.instrument_openai()
        try:
            run_calls(server.openai_base_url, "warm")  # schema, imports, price table
            server.clear()
            before = wasteaudit.status().get("written", 0)
            instrumented = run_calls(server.openai_base_url, "bench")
            written = wasteaudit.status().get("written", 0) - before
        finally:
            handle.undo()
            wasteaudit.shutdown()
        expected = calls // threads * threads
        if written != expected:
            raise RuntimeError(f"{written} of {expected} calls stored: {wasteaudit.status()}")
    return {"bare_calls_per_s": bare, "calls_per_s": instrumented}


def _report(name: str, result: dict[str, float], floor: dict[str, float] | None) -> None:
    client, server = result["client_cpu_us"], result["server_cpu_us"]
    line = (
        f"{name:<11} writer {result['records_per_s']:>7,.0f} records/s wall"
        f" | CPU per record: {client:,.0f} µs here + {server:,.0f} µs database server"
        f" = {1e6 / (client + server):>7,.0f} records per CPU-second"
        f" | submit {result['submit_us']:.2f} µs"
    )
    print(line)
    print(
        f"{'':<11} per thread: converter {result['converter_cpu_us']:,.0f} µs, database thread"
        f" {result['db_thread_cpu_us']:,.0f} µs CPU per record (they overlap only where C code releases the GIL)"
    )
    if floor is not None:
        fc, fs = floor["client_cpu_us"], floor["server_cpu_us"]
        print(
            f"{'':<11} baseline: database alone (rows converted beforehand) {floor['records_per_s']:>7,.0f} records/s wall,"
            f" {1e6 / (fc + fs):,.0f} per CPU-second ({fc:,.0f} µs here + {fs:,.0f} µs database server per record);"
            f" writer/baseline {result['records_per_s'] / floor['records_per_s']:.2f}x wall"
        )
        print(
            f"{'':<11} target 10,000 records/s wall: {'met' if result['records_per_s'] >= 10_000 else 'not met'}"
            f" ({result['records_per_s'] / 10_000:.2f}x)"
        )


def _report_e2e(name: str, result: dict[str, float], threads: int) -> None:
    print(
        f"{name:<11} end to end, {threads} app threads through the instrumented openai SDK: "
        f"{result['calls_per_s']:,.0f} calls/s stored (bare SDK, same loopback server: {result['bare_calls_per_s']:,.0f} calls/s,"
        f" {result['calls_per_s'] / result['bare_calls_per_s']:.2f}x)"
    )


def _pg_admin() -> Any:
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(PG_SERVER)
    return server, psycopg.connect(server.set(drivername="postgresql").render_as_string(hide_password=False),
                                   autocommit=True, connect_timeout=3)


def bench_sqlite(args: argparse.Namespace, records: list[CallRecord]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        floor = measure_floor(f"sqlite:///{directory}/floor.db", records, args.batch_size)
        result = measure(f"sqlite:///{directory}/bench.db", records, args.batch_size, not args.no_content_policy,
                         forget=args.content != "repeated")
        _report("sqlite", result, floor)
        if args.e2e_calls:
            _report_e2e("sqlite", measure_end_to_end(f"sqlite:///{directory}/e2e.db", args.e2e_calls, args.threads), args.threads)


def bench_postgresql(args: argparse.Namespace, records: list[CallRecord]) -> None:
    try:
        server, admin = _pg_admin()
    except Exception as exc:
        print(f"postgresql  skipped: {exc}")
        return
    name = f"wasteaudit_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    names = [name + suffix for suffix in ("", "_f", "_e")]
    for database in names:
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        def url(database: str) -> str:
            return server.set(drivername="postgresql+psycopg", database=database).render_as_string(hide_password=False)

        floor = measure_floor(url(names[1]), records, args.batch_size, admin, names[1])
        result = measure(url(names[0]), records, args.batch_size, not args.no_content_policy, admin, names[0],
                         forget=args.content != "repeated")
        _report("postgresql", result, floor)
        if args.e2e_calls:
            _report_e2e("postgresql", measure_end_to_end(url(names[2]), args.e2e_calls, args.threads), args.threads)
    finally:
        for database in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--no-content-policy", action="store_true", help="store content as it arrives")
    parser.add_argument("--content", choices=("realistic", "repeated", "distinct"), default="realistic",
                        help="realistic (the default): only system prompts and tool definitions are shared, every "
                        "message and response is new text; repeated: records repeat the recorded calls' texts (the "
                        "same objects, so the writer's cache of long texts always hits: a best case); distinct: no "
                        "two records share a text")
    parser.add_argument("--e2e-calls", type=int, default=2_000, help="instrumented SDK calls end to end (0: skip)")
    parser.add_argument("--threads", type=int, default=8, help="app threads making the end-to-end calls")
    args = parser.parse_args(argv)

    templates = recorded_templates()
    source = f"{len(templates)} recorded calls from {CASSETTES}" if templates else "a synthetic chat call"
    templates = templates or [synthetic_template()]
    records = build_records(templates, args.records)
    if args.content == "distinct":
        make_content_distinct(records)
        source += ", every text made distinct"
    elif args.content == "realistic":
        make_content_realistic(records)
        source += ", messages and responses made distinct (system prompts and tool definitions shared)"
    size = sum(len(json.dumps([c.text for c in r.choices]) + json.dumps(r.input_messages, default=str))
               for r in records[: len(templates)]) / len(templates)
    print(f"{args.records:,} call records cloned from {source} (~{size:,.0f} bytes of content each), "
          f"batch size {args.batch_size}, content policy {'off' if args.no_content_policy else 'on'}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if args.only in (None, "sqlite"):
        bench_sqlite(args, records)
    if args.only in (None, "postgresql"):
        bench_postgresql(args, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
