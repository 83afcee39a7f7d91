"""Benchmark: the weekly JSON report on 1,000,000 calls over 4 weeks, on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_report.py                       # both backends, 1M calls
    .venv/bin/python bench/bench_report.py --calls 200000 --backends sqlite
    .venv/bin/python bench/bench_report.py --sqlite /tmp/bench.db --reuse   # keep and reuse a built DB

The database is built with the project's own tables (SQLAlchemy Core ``insert`` on the
models' tables, schema created by the project's migrations), deterministic (numpy seed):

* 4 ISO weeks (2026-W44..W47), 250k calls a week; 20 functions, 7 models on 2 providers
  (one unpriced), about 2.5 calls per run (re-asks and multi-step runs), 2% run-less calls,
  1% LLM-judge calls; realistic content per call (system prompt, user message, output text).
* 80% of runs have a quality score, 5% a validator verdict, 2% raised.
* 95% of calls scored; 45% of them with findings (1-2 each, 85% confirmed tier).

Each measurement runs in a fresh subprocess: the report for 2026-W47 (with W46 as the
previous period) is built and rendered as JSON three times; the first (cold process, warm OS
cache) and the best of the other two are printed with their CPU time (both threads), then the
process's peak RSS and the peak of Python allocations (tracemalloc, in one extra run). A second measurement over the whole
4 weeks (4x the calls) shows how memory scales.

Figures and how they were taken (A/B rounds against the previous code on a loaded machine,
CPU medians; the quiet-machine baseline): docs/report.md §13.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WEEKS = ("2026-W44", "2026-W45", "2026-W46", "2026-W47")
FUNCTIONS = [f"svc{i:02d}.{name}" for i, name in enumerate(
    ["answer", "summarize", "classify", "extract", "translate", "rewrite", "plan", "route", "draft", "review",
     "search", "tag", "title", "reply", "qa", "sql", "code", "critique", "outline", "label"]
)]
# provider, model, input $/M, cached input $/M, output $/M (None: not in the price table)
MODELS = [
    ("openai", "gpt-4o", 2.5, 1.25, 10.0),
    ("openai", "gpt-4o-mini", 0.15, 0.075, 0.6),
    ("openai", "o3-mini", 1.1, 0.55, 4.4),
    ("openai", "gpt-4.1", 2.0, 0.5, 8.0),
    ("anthropic", "claude-sonnet-4-20250514", 3.0, 0.3, 15.0),
    ("anthropic", "claude-3-5-haiku-20241022", 0.8, 0.08, 4.0),
    ("openai", "acme-finetune-v2", None, None, None),
]
SUBKINDS = [
    ("failed", "truncated"), ("failed", "invalid_output"), ("failed", "discarded_retry"), ("failed", "refusal"),
    ("unused", "not_in_result"), ("unused", "extra_choice"), ("redundant", "repetition"), ("redundant", "prompt_echo"),
    ("redundant", "filler"), ("redundant", "duplicate_call"),
]
TEAMS = ["cx", "growth", "data", "platform"]


def monday(week: str) -> datetime:
    from datetime import date

    year, w = week.split("-W")
    return datetime.combine(date.fromisocalendar(int(year), int(w), 1), datetime.min.time(), timezone.utc)


# --- building ---------------------------------------------------------------------------------------


class _Inserter:
    """Core ``insert()`` of a model's table, compiled once, executed with the driver's executemany.

    Rows come pre-encoded (JSON as text, timestamps in the driver's form), as the project's
    writer does: SQLAlchemy's per-row bind processing would cost more than the database.
    """

    def __init__(self, table: Any, dialect: Any) -> None:
        import sqlalchemy as sa

        # The findings id is the database's own autoincrement.
        self.columns = [c.name for c in table.columns if not (table.name == "wasteaudit_findings" and c.name == "id")]
        compiled = sa.insert(table).compile(dialect=dialect, column_keys=self.columns)
        self.sql = compiled.string
        self.positional = dialect.positional
        self.order = list(compiled.positiontup) if dialect.positional else None
        self.json = {c.name for c in table.columns if isinstance(c.type, sa.JSON)}
        self.times = {c.name for c in table.columns if c.type.__class__.__name__ == "UTCDateTime"}
        self.sqlite = dialect.name == "sqlite"

    def encode(self, row: dict[str, Any]) -> Any:
        for name in self.json:
            value = row.get(name)
            if value is not None and not isinstance(value, str):  # a str is JSON encoded already
                row[name] = json.dumps(value, separators=(",", ":"))
        for name in self.times:
            value = row.get(name)
            if value is not None:
                moment = datetime.fromtimestamp(value, timezone.utc)
                row[name] = moment.replace(tzinfo=None).isoformat(" ", "microseconds") if self.sqlite else moment
        if self.positional:
            return tuple(row.get(name) for name in self.order)
        return {name: row.get(name) for name in self.columns}


def build(url: str, calls_total: int, seed: int = 7) -> dict[str, Any]:
    import numpy as np
    import sqlalchemy as sa

    from wasteaudit.storage.engine import create_engine_for
    from wasteaudit.storage.models import CallRow, FindingRow, RunRow, ScoreRow
    from wasteaudit.storage.schema import upgrade

    rng = np.random.default_rng(seed)
    engine = create_engine_for(url)
    upgrade(engine)
    dialect = engine.dialect
    ins = {name: _Inserter(t.__table__, dialect) for name, t in (("runs", RunRow), ("calls", CallRow), ("scores", ScoreRow), ("findings", FindingRow))}
    systems = [("You are the " + f + " service. " + "Follow the policy carefully and answer in the house style. " * 30) for f in FUNCTIONS]
    outputs = ["Here is the result. " + "The item meets the requirement and is listed below with its details. " * int(6 + 8 * (i % 5)) for i in range(50)]
    # Pre-encoded JSON for the repeated parts (the per-call user message is spliced in).
    system_json = [json.dumps({"role": "system", "content": text}, separators=(",", ":")) for text in systems]
    choices_json = [json.dumps([{"index": 0, "text": text, "finish_reason": "stop"}], separators=(",", ":")) for text in outputs]
    tags_json = [json.dumps({"team": team}) for team in TEAMS]
    evidence_json = {sub: json.dumps({"rule": sub, "similarity": 0.93, "segment": "The item meets the requirement"}) for _, sub in SUBKINDS}
    params_json = json.dumps({"temperature": 0.2, "max_tokens": 1500})
    start = monday(WEEKS[0]).timestamp()
    span = 7 * 24 * 3600 * len(WEEKS)
    counts = {"calls": 0, "runs": 0, "scores": 0, "findings": 0}
    t0 = time.perf_counter()
    call_id = run_id = score_id = 0
    batches: dict[str, list[Any]] = {"runs": [], "calls": [], "scores": [], "findings": []}

    def flush(conn: Any) -> None:
        for name in ("runs", "calls", "scores", "findings"):
            rows = batches[name]
            if rows:
                conn.exec_driver_sql(ins[name].sql, rows)
                rows.clear()

    with engine.begin() as conn:
        while call_id < calls_total:
            ts = start + float(rng.random()) * span
            fn_index = int(rng.integers(0, len(FUNCTIONS)))
            roll = rng.random()
            kind = "judge" if roll < 0.01 else ("none" if roll < 0.03 else "run")
            n_calls = 1 if kind != "run" else int(rng.choice([1, 2, 3, 4, 5, 6, 8], p=[0.4, 0.25, 0.15, 0.08, 0.06, 0.03, 0.03]))
            model_index = (fn_index % 6) if rng.random() < 0.7 else int(rng.integers(0, 6))
            if rng.random() < 0.01:
                model_index = 6
            rid = None
            function = None if kind == "none" else ("wasteaudit.judge" if kind == "judge" else FUNCTIONS[fn_index])
            if kind == "run":
                run_id += 1
                rid = f"{run_id:032x}"
                status = "failed" if rng.random() < 0.02 else "ok"
                observable = rng.random() < 0.7
                batches["runs"].append(ins["runs"].encode({
                    "id": rid, "parent_id": None, "name": function, "tags": tags_json[fn_index % 4],
                    "started_at": ts, "ended_at": ts + 5, "status": status, "error_type": "ValueError" if status == "failed" else None,
                    "validation": bool(rng.random() < 0.8) if rng.random() < 0.05 else None,
                    "return_value": outputs[fn_index][:300] if observable else None, "return_truncated": False,
                    "used_values": None, "trace_id": f"{run_id:032x}", "span_id": f"{run_id:016x}",
                }))
                if rng.random() < 0.8:
                    score_id += 1
                    batches["scores"].append(ins["scores"].encode({
                        "id": f"{score_id:032x}", "run_id": rid, "name": "quality", "value": float(np.clip(rng.normal(0.72, 0.18), 0, 1)),
                        "source": "api", "created_at": ts + 60, "raw_value": None,
                    }))
            provider, model, p_in, p_cached, p_out = MODELS[model_index]
            for j in range(n_calls):
                if call_id >= calls_total:
                    break
                call_id += 1
                cid = f"{call_id:032x}"
                t = ts + j * 2.0
                inp = int(rng.integers(300, 4000))
                cached = int(inp * 0.5) if rng.random() < 0.3 else 0
                out = int(rng.integers(20, 1200))
                reasoning = int(out * 0.4) if model == "o3-mini" else (0 if provider == "openai" else None)
                cost = None if p_in is None else ((inp - cached) * p_in + cached * p_cached + out * p_out) / 1e6
                scored = rng.random() < 0.95
                batches["calls"].append(ins["calls"].encode({
                    "id": cid, "provider": provider, "operation": "chat", "api": "chat.completions" if provider == "openai" else "messages",
                    "started_at": t, "run_id": rid, "function": function, "method": "create", "request_model": model, "response_model": model,
                    "response_id": f"resp_{call_id}", "server_address": "api.example.com", "server_port": 443, "stream": bool(j % 2),
                    "ended_at": t + 1.5, "duration_s": 1.5, "time_to_first_chunk_s": 0.3, "request_params": params_json,
                    "output_type": "text", "usage_source": "provider", "input_tokens": inp, "input_cache_read_tokens": cached,
                    "input_cache_write_tokens": None, "output_tokens": out, "output_reasoning_tokens": reasoning, "usage_details": None,
                    "service_tier": "default", "finish_reasons": '["stop"]', "finish_category": "stop", "stream_state": None, "chunks": None,
                    "status_code": 200, "error_type": None, "error_message": None, "attempts": 2 if rng.random() < 0.03 else 1,
                    "input_messages": f'[{system_json[fn_index]},{{"role":"user","content":"Request {call_id}: please handle the attached item."}}]',
                    "system_instructions": None,
                    "choices": choices_json[int(rng.integers(0, 50))],
                    "tool_definitions": None, "response_format": None, "content_mode": "full", "content_truncated": False,
                    "trace_id": f"{call_id:032x}", "span_id": f"{call_id:016x}", "gaps": "[]", "cost_usd": cost,
                    "price_version": "bench", "priced": "unpriced" if cost is None else "priced",
                    "scored_version": 1 if scored else None, "claimed_by": None, "lease_until": None, "score_error": None,
                }))
                if scored and rng.random() < 0.45:
                    for _ in range(1 if rng.random() < 0.75 else 2):
                        k, sub = SUBKINDS[int(rng.integers(0, len(SUBKINDS)))]
                        tokens = int(out * (1.0 if k == "failed" else float(rng.uniform(0.05, 0.3))) / 2)
                        batches["findings"].append(ins["findings"].encode({
                            "call_id": cid, "run_id": rid, "scorer_version": 1, "kind": k, "subkind": sub,
                            "tier": "confirmed" if rng.random() < 0.85 else "possible", "tokens": tokens,
                            "cost_usd": None if p_out is None else tokens * p_out / 1e6, "confidence": 0.9, "choice_index": 0,
                            "segment_start": None, "segment_end": None,
                            "evidence": evidence_json[sub], "created_at": t + 120,
                        }))
                        counts["findings"] += 1
            if len(batches["calls"]) >= 5000:
                flush(conn)
                if call_id % 100_000 < 5000:
                    rate = call_id / (time.perf_counter() - t0)
                    print(f"  {call_id:,} calls ({rate:,.0f}/s)", file=sys.stderr, flush=True)
        flush(conn)
    counts.update(calls=call_id, runs=run_id, scores=score_id, build_s=round(time.perf_counter() - t0, 1))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
    else:
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE"))
            conn.commit()
    engine.dispose()
    return counts


# --- the schema (the report's indexes come with the migrations) -------------------------------------


def upgrade_schema(url: str) -> float | None:
    """Bring a reused database to the current schema (``wasteaudit db upgrade``): the report's
    indexes and rollup tables and triggers (which mark every existing day dirty)."""
    from wasteaudit.storage.engine import create_engine_for
    from wasteaudit.storage.schema import current_revision, head_revision, upgrade

    engine = create_engine_for(url)
    try:
        if current_revision(engine) == head_revision():
            return None  # nothing to do
        t0 = time.perf_counter()
        upgrade(engine)
        return round(time.perf_counter() - t0, 1)
    finally:
        engine.dispose()


def backfill(url: str) -> dict[str, Any]:
    """Aggregate every dirty day into the rollups (what the first report after the migration
    does for its span): a one-off, timed apart from the reports. Then ANALYZE."""
    import resource

    from wasteaudit.report.rollups import refresh
    from wasteaudit.storage.engine import create_engine_for

    engine = create_engine_for(url)
    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    try:
        days = refresh(engine)
        wall = time.perf_counter() - t0
        c1 = resource.getrusage(resource.RUSAGE_SELF)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE")
    finally:
        engine.dispose()
    return {"days": days, "wall_s": round(wall, 1), "client_cpu_s": round(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime, 1)}


# --- measuring (in a fresh process) ------------------------------------------------------------------


def measure(url: str, repeats: int, since: str | None, until: str | None, base: bool = False) -> dict[str, Any]:
    import resource
    import tracemalloc

    from wasteaudit.report import build_report, open_report_engine, render

    if base:  # the same report read from the base tables only (no rollups): the comparison
        from wasteaudit.report.build import build
        from wasteaudit.report.period import resolve_period

        def build_report(engine: Any, now: datetime, **kw: Any) -> dict[str, Any]:  # type: ignore[no-redef]
            return build(engine, resolve_period(now=now, **kw), now=now, use_rollups=False)

    engine = open_report_engine(url)
    backends: list[int] = []
    if engine.dialect.name == "postgresql":
        # The server's CPU for the report: the backends of this process's connections (same host).
        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _backend_pid(dbapi_conn: Any, _record: Any) -> None:
            backends.append(int(dbapi_conn.info.backend_pid))  # psycopg 3: no query, no transaction opened

    def server_cpu() -> float:
        total = 0.0
        for pid in backends:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    kwargs: dict[str, Any] = {"week": "2026-W47"} if since is None else {"since": since, "until": until}
    times = []
    cpu = []
    server = []
    report: dict[str, Any] = {}
    now = monday("2026-W48") + timedelta(days=1)
    for _ in range(repeats):
        t0 = time.perf_counter()
        c0 = resource.getrusage(resource.RUSAGE_SELF)
        s0 = server_cpu()
        report = build_report(engine=engine, now=now, **kwargs)
        text = render(report, "json")
        times.append(time.perf_counter() - t0)
        c1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
        server.append(server_cpu() - s0)
    # One more run under tracemalloc (which slows Python down) for the allocation peak only.
    tracemalloc.start()
    build_report(engine=engine, now=now, **kwargs)
    peak_py = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    engine.dispose()
    return {
        "first_s": round(times[0], 3),
        "best_s": round(min(times[1:] or times), 3),
        "cpu_s": round(min(cpu[1:] or cpu), 3),  # both threads: CPU can exceed wall time
        "server_cpu_s": round(min(server[1:] or server), 3) if backends else None,  # PostgreSQL backends
        "load_average": round(os.getloadavg()[0], 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_python_alloc_mb": round(peak_py / 2**20, 1),
        "calls_in_period": report["totals"]["calls"],
        "runs_in_period": report["totals"]["runs"],
        "json_bytes": len(text),
    }


def _measure_subprocess(url: str, repeats: int, since: str | None = None, until: str | None = None, base: bool = False) -> dict[str, Any]:
    command = [sys.executable, __file__, "--measure", url, "--repeats", str(repeats)] + (["--base"] if base else [])
    if since:
        command += ["--since", since, "--until", until or ""]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _pg_database(server: str, name: str, *, create: bool) -> str:
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(server)
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        if create:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        else:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return base.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--sqlite", default="/tmp/wasteaudit-bench-report.db")
    parser.add_argument("--postgres", default=os.environ.get("WASTEAUDIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--reuse", action="store_true", help="reuse an already built database (SQLite file / PostgreSQL database)")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--build-only", action="store_true", help="build the database(s) and stop")
    parser.add_argument("--base", action="store_true", help="also time the weekly report read from the base tables (no rollups)")
    parser.add_argument("--pg-name", default="wasteaudit_bench_report", help="PostgreSQL database name")
    parser.add_argument("--measure", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--since", help=argparse.SUPPRESS)
    parser.add_argument("--until", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        print(json.dumps(measure(args.measure, args.repeats, args.since, args.until, args.base)))
        return 0

    results = {}
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        pg_name = args.pg_name
        if backend == "sqlite":
            url = f"sqlite:///{args.sqlite}"
            if not (args.reuse and os.path.exists(args.sqlite)):
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(args.sqlite + suffix):
                        os.remove(args.sqlite + suffix)
                print(f"building {args.calls:,} calls in {url} ...", file=sys.stderr)
                print(json.dumps(build(url, args.calls)), file=sys.stderr)
        else:
            if args.reuse:
                from sqlalchemy.engine import make_url

                url = make_url(args.postgres).set(drivername="postgresql+psycopg", database=pg_name).render_as_string(hide_password=False)
            else:
                url = _pg_database(args.postgres, pg_name, create=True)
                print(f"building {args.calls:,} calls in PostgreSQL database {pg_name} ...", file=sys.stderr)
                print(json.dumps(build(url, args.calls)), file=sys.stderr)
        if args.build_only:
            continue
        migration_s = upgrade_schema(url) if args.reuse else None
        if migration_s is not None:
            print(f"{backend}: schema upgrade (migration) of the reused database: {migration_s} s", file=sys.stderr)
        filled = backfill(url)
        if migration_s is None and args.reuse:
            print(f"{backend}: the reused database is at the current schema already", file=sys.stderr)
        print(f"{backend}: rollup backfill (one-off): {filled['days']} days in {filled['wall_s']} s "
              f"(client CPU {filled['client_cpu_s']} s)", file=sys.stderr)
        week = _measure_subprocess(url, args.repeats)
        whole = _measure_subprocess(url, 2, since="2026-10-26", until="2026-11-23")
        results[backend] = {"migration_s": migration_s, "backfill": filled, "weekly_report": week, "four_week_report": whole}
        if args.base:
            base = results[backend]["weekly_report_base_tables"] = _measure_subprocess(url, 2, base=True)
            server = "" if base["server_cpu_s"] is None else f", server {base['server_cpu_s']} s"
            print(f"{backend}: weekly JSON report from the base tables (no rollups): {base['first_s']} s cold process, "
                  f"{base['best_s']} s warm (CPU: report process {base['cpu_s']} s{server}; load average {base['load_average']})",
                  file=sys.stderr)
        server = "" if week["server_cpu_s"] is None else f", server {week['server_cpu_s']} s"
        print(f"{backend}: weekly JSON report {week['first_s']} s cold process, {week['best_s']} s warm "
              f"(CPU: report process {week['cpu_s']} s{server}; load average {week['load_average']}); "
              f"{week['calls_in_period']:,} calls / {week['runs_in_period']:,} runs in the week (+ the previous week read for "
              f"comparison); peak RSS {week['peak_rss_mb']} MB, peak Python allocations {week['peak_python_alloc_mb']} MB | "
              f"4-week report: {whole['first_s']} s cold, {whole['best_s']} s warm, {whole['calls_in_period']:,} calls, "
              f"peak RSS {whole['peak_rss_mb']} MB, Python {whole['peak_python_alloc_mb']} MB",
              file=sys.stderr)
        if backend == "postgresql" and not args.keep and not args.reuse:
            _pg_database(args.postgres, pg_name, create=False)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
