"""Secrets never leave the app through wasteaudit: canary keys, content modes, database passwords, SQL.

A unique key shaped like a real one is planted everywhere an app may put it (the client's
``api_key``, so the Authorization / x-api-key headers; the base URL's query string; a default
header; per-request extra headers and query; a user message; an error body that echoes it, as
OpenAI's 401 does). Calls then run under each content mode with spans (content on) exported over
OTLP to an in-process receiver and every log record captured at DEBUG; the SQLite file (and its
WAL), every exported byte and the log text are scanned for it.
"""

from __future__ import annotations

import ast
import inspect
import json
import logging
import os
import secrets
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import anthropic
import openai
import pytest

import wasteaudit
from wasteaudit import config
from wasteaudit._internal import pipeline
from wasteaudit.instrumentation import active_instrumentations, instrument_anthropic, instrument_openai
from wasteaudit.localllm import LocalLLMServer, Reply
from wasteaudit.localllm import anthropic_bodies as ab
from wasteaudit.localllm import openai_bodies as ob

REPO = Path(__file__).resolve().parents[2]
OPENAI_HTTP = getattr(openai._base_client, "httpx2", None) or openai._base_client.httpx  # type: ignore[attr-defined]
ANTHROPIC_HTTP = getattr(anthropic._base_client, "httpx2", None) or anthropic._base_client.httpx  # type: ignore[attr-defined]

# Shaped like real keys (the scrubber's patterns must recognise them); unique per test run.
CANARY = "sk-proj-" + secrets.token_hex(20)
CANARY_ANT = "sk-ant-api03-" + secrets.token_hex(20)
# Ordinary text (no key shape): what content mode `none` and `hashed` must not store.
PROMPT_MARK = "prompt-marker-" + secrets.token_hex(8)
OUTPUT_MARK = "output-marker-" + secrets.token_hex(8)
HOOK_MARK = "hooked-" + secrets.token_hex(4)


def _needles() -> list[bytes]:
    # The random part alone too: a key cut short or re-encoded must not slip through.
    return [CANARY.encode(), CANARY_ANT.encode(), CANARY[8:].encode(), CANARY_ANT[13:].encode()]


def _scan(blob: bytes, needles: list[bytes]) -> list[bytes]:
    return [n for n in needles if n in blob]


def _db_bytes(db_path: Path) -> bytes:
    """The database file and its WAL / shared-memory files, as stored on disk."""
    return b"".join(p.read_bytes() for p in sorted(db_path.parent.glob(db_path.name + "*")))


class _Records(logging.Handler):
    """Every log record of any logger, formatted with its traceback (what a log file would hold)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("wasteaudit"):
            self.lines.append(self.format(record))


@pytest.fixture
def debug_logs() -> Iterator[_Records]:
    handler = _Records()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


@pytest.fixture
def server() -> Iterator[LocalLLMServer]:
    with LocalLLMServer() as srv:
        srv._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        yield srv


@pytest.fixture
def instrumented() -> Iterator[None]:
    handles = [instrument_openai(), instrument_anthropic()]
    try:
        yield
    finally:
        for handle in handles:
            handle.undo()
        for handle in list(active_instrumentations().values()):
            handle.undo()


def _settings(db_path: Path, mode: str, **extra: Any) -> None:
    pipeline.reset_writer()
    redact = (lambda text: text.replace(PROMPT_MARK, HOOK_MARK).replace(OUTPUT_MARK, HOOK_MARK)) if mode == "redacted" else None
    options: dict[str, Any] = {"capture_content_on_spans": True, "flush_interval": 0.01, "hash_key": "canary-test", **extra}
    config.set_settings(config.settings_from_env(database_url=f"sqlite:///{db_path}", storage=True, content_mode=mode, redact=redact, _explicit=True, **options))


def _app_traffic(server: LocalLLMServer, tracer_provider: Any) -> None:
    """What an app does with the canary in every place it can go; outcomes as the bare SDK gives them."""
    message = [{"role": "user", "content": f"{PROMPT_MARK} my key is {CANARY} and {CANARY_ANT}; api_key={CANARY}"}]
    oai = openai.OpenAI(
        api_key=CANARY,
        base_url=server.openai_base_url,
        default_headers={"X-Custom-Auth": CANARY},
        default_query={"key": CANARY},
        max_retries=0,
        http_client=OPENAI_HTTP.Client(verify=False),
    )
    server.enqueue(
        Reply(json=ob.chat_completion(f"{OUTPUT_MARK} noted")),
        Reply(sse=ob.chat_chunks((OUTPUT_MARK, " streamed"), include_usage=True)),
        ob.error_reply(401, f"Incorrect API key provided: {CANARY}. You can find your API key at https://platform.openai.com/account/api-keys.", type="invalid_request_error", code="invalid_api_key", retry_after_ms=None),
    )
    extra = {"extra_headers": {"X-Extra": CANARY}, "extra_query": {"token": CANARY}}
    oai.chat.completions.create(model="gpt-4o-mini", messages=message, **extra)
    list(oai.chat.completions.create(model="gpt-4o-mini", messages=message, stream=True, stream_options={"include_usage": True}, **extra))
    with pytest.raises(openai.AuthenticationError):
        oai.chat.completions.create(model="gpt-4o-mini", messages=message, **extra)

    options: dict[str, Any] = {}
    if "tracer_provider" in inspect.signature(anthropic.Anthropic).parameters:
        options["tracer_provider"] = tracer_provider  # the call span (the SDK's, replaced or enriched by ours) is exported too
    ant = anthropic.Anthropic(
        api_key=CANARY_ANT,
        base_url=server.anthropic_base_url + f"?key={CANARY_ANT}",
        default_headers={"X-Custom-Auth": CANARY_ANT},
        max_retries=0,
        http_client=ANTHROPIC_HTTP.Client(verify=False),
        **options,
    )
    server.enqueue(
        ab.reply_message(ab.message(f"{OUTPUT_MARK} understood")),
        ab.reply_stream(ab.message(f"{OUTPUT_MARK} streamed back")),
        ab.reply_error(401, "authentication_error", f"invalid x-api-key: {CANARY_ANT}"),
    )
    ant.messages.create(model="claude-wasteaudit-test", max_tokens=64, messages=message, extra_headers={"X-Extra": CANARY_ANT})
    with ant.messages.stream(model="claude-wasteaudit-test", max_tokens=64, messages=message) as stream:
        stream.get_final_message()
    with pytest.raises(anthropic.AuthenticationError):
        ant.messages.create(model="claude-wasteaudit-test", max_tokens=64, messages=message)
    # the keys really were sent: the scan below is not vacuous
    sent = b"".join(json.dumps(r.headers).encode() + r.path.encode() + r.body for r in server.requests)
    assert CANARY.encode() in sent and CANARY_ANT.encode() in sent


@pytest.mark.parametrize("mode", ["full", "redacted", "hashed", "none"])
def test_canary_keys_reach_no_database_export_or_log(mode: str, tmp_path: Path, server: LocalLLMServer, instrumented: None, debug_logs: _Records) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    sys.path.insert(0, str(REPO / "tests" / "export"))
    try:
        from otlp_receiver import OTLPReceiver
    finally:
        sys.path.remove(str(REPO / "tests" / "export"))
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from wasteaudit.export import _state, otlp

    db_path = tmp_path / "canary.db"
    previous = config.get_settings()
    providers = (TracerProvider(shutdown_on_exit=False), MeterProvider(shutdown_on_exit=False), LoggerProvider(shutdown_on_exit=False))
    with OTLPReceiver() as receiver:
        try:
            _settings(db_path, mode)
            handle = wasteaudit.export.setup_export(
                endpoint=receiver.endpoint, tracer_provider=providers[0], meter_provider=providers[1], logger_provider=providers[2], metric_export_interval_s=3600, timeout=5
            )
            _app_traffic(server, providers[0])
            assert pipeline.flush(timeout=10)
            assert handle.force_flush(10)
            stats = pipeline.stats()
            assert sum(v for k, v in stats.items() if k.startswith("dropped_")) == 0
        finally:
            pipeline.reset_writer()
            otlp.shutdown_export(timeout_s=2)
            for provider in providers:
                provider.shutdown()
            _state.reset_counters()
            config.set_settings(previous)
        exported = b"".join(m.SerializeToString() for path in ("/v1/traces", "/v1/metrics", "/v1/logs") for m in receiver._messages(path))
        span_names = {s["name"] for s in receiver.spans()}

    stored = _db_bytes(db_path)
    assert b"wasteaudit_calls" in stored and len(span_names) >= 2  # something was stored and exported
    logs = "\n".join(debug_logs.lines).encode("utf-8", "surrogatepass")
    assert _scan(stored, _needles()) == []
    assert _scan(exported, _needles()) == []
    assert _scan(logs, _needles()) == []

    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT input_messages, choices, error_message, content_mode FROM wasteaudit_calls").fetchall()
    assert len(rows) == 6 and {r[3] for r in rows} == {mode}
    errors = [r[2] for r in rows if r[2]]
    assert len(errors) == 2 and all("[REDACTED]" in e for e in errors)  # the echoed key, scrubbed in every mode
    marks = [PROMPT_MARK.encode(), OUTPUT_MARK.encode()]
    if mode == "full":
        # The scan works: ordinary content is there, the keys inside it were replaced.
        assert _scan(stored, marks) == marks and _scan(exported, marks) == marks
        assert all("[REDACTED]" in (r[0] or "") for r in rows)
    elif mode == "redacted":
        # The hook ran before storage and before export.
        assert _scan(stored, marks) == [] and _scan(exported, marks) == []
        assert HOOK_MARK.encode() in stored and HOOK_MARK.encode() in exported
    else:
        # hashed / none: no prompt or output text at all, in the file or on the wire.
        assert _scan(stored, marks) == [] and _scan(exported, marks) == []


# -- the database URL's password ---------------------------------------------------------------------

PG_SERVER_URL = os.environ.get("WASTEAUDIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PASSWORD = "pw-" + secrets.token_hex(8)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WASTEAUDIT_")}
    full["PYTHONPATH"] = os.pathsep.join([str(REPO), full.get("PYTHONPATH", "")])
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "wasteaudit", *args], env=full, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def pg_with_password() -> Iterator[str]:
    """A fresh PostgreSQL database, reached through a URL that carries a password (trust auth ignores it)."""
    from sqlalchemy.engine import make_url

    try:
        import psycopg

        admin = psycopg.connect(make_url(PG_SERVER_URL).set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True, connect_timeout=3)
    except Exception as exc:
        if os.environ.get("WASTEAUDIT_REQUIRE_SERVICES") == "1":
            pytest.fail(f"PostgreSQL not reachable at {PG_SERVER_URL}: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    name = f"wasteaudit_sec_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(PG_SERVER_URL).set(drivername="postgresql", database=name, password=PASSWORD)
        yield url.render_as_string(hide_password=False)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_cli_never_prints_the_database_password(pg_with_password: str) -> None:
    assert PASSWORD in pg_with_password
    upgraded = _cli("--database-url", pg_with_password, "db", "upgrade")
    status = _cli("status", env={"WASTEAUDIT_DATABASE_URL": pg_with_password})
    assert upgraded.returncode == 0 and status.returncode == 0, (upgraded.stderr, status.stderr)
    assert "***" in upgraded.stdout + status.stdout  # the URL is shown, masked
    wrong_db = pg_with_password.rsplit("/", 1)[0] + "/no_such_database_here"
    refused_port = pg_with_password.replace(":5432/", ":1/")
    failures = [_cli("--database-url", url, *cmd) for url, cmd in ((wrong_db, ("status",)), (refused_port, ("db", "upgrade")), (refused_port, ("report",)))]
    assert all(r.returncode != 0 for r in failures)
    for result in (upgraded, status, *failures):
        assert PASSWORD not in result.stdout + result.stderr, result


def test_writer_logs_about_an_unreachable_database_without_its_password(debug_logs: _Records) -> None:
    from wasteaudit.records import CallRecord, new_id
    from wasteaudit.storage.writer import Writer

    url = f"postgresql://wasteaudit:{PASSWORD}@127.0.0.1:1/nowhere"
    writer = Writer(url, flush_interval=0.01)
    try:
        writer.submit(CallRecord(id=new_id(), provider="openai", operation="chat", api="chat.completions", started_at=0.0))
        deadline = time.monotonic() + 30
        while writer.stats()["last_error"] is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the database is down: buffered, retried, reported
    finally:
        writer.shutdown(timeout=0.5)
    text = "\n".join(debug_logs.lines)
    assert "nowhere" in text and "***" in text, text  # it did complain, naming the database, password masked
    assert PASSWORD not in text and PASSWORD not in json.dumps(writer.stats(), default=str)
    with pytest.raises(wasteaudit.ConfigError) as error:
        wasteaudit.configure(database_url=f"mysql+nodriver://u:{PASSWORD}@h/db")
    assert PASSWORD not in str(error.value)


# -- SQL only through bound parameters -------------------------------------------------------------

INJECTION = "x'); DROP TABLE wasteaudit_calls; --\"; DELETE FROM wasteaudit_runs; --"


def test_hostile_names_round_trip_and_the_tables_survive(tmp_path: Path, server: LocalLLMServer, instrumented: None) -> None:
    db_path = tmp_path / "inject.db"
    previous = config.get_settings()
    try:
        _settings(db_path, "full", capture_content_on_spans=False)
        client = openai.OpenAI(api_key="sk-test", base_url=server.openai_base_url, max_retries=0, http_client=OPENAI_HTTP.Client(verify=False))
        server.enqueue(Reply(json=ob.chat_completion(INJECTION, model=INJECTION)))

        @wasteaudit.audit(name=INJECTION, tags={"team": INJECTION, INJECTION: "k"})
        def hostile() -> str:
            return client.chat.completions.create(model=INJECTION, messages=[{"role": "user", "content": INJECTION}]).choices[0].message.content

        assert hostile() == INJECTION
        assert pipeline.flush(timeout=10)
    finally:
        pipeline.reset_writer()
        config.set_settings(previous)
    with sqlite3.connect(db_path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        call = conn.execute("SELECT function, request_model, response_model, choices FROM wasteaudit_calls").fetchone()
        run = conn.execute("SELECT name, tags FROM wasteaudit_runs").fetchone()
    assert {"wasteaudit_calls", "wasteaudit_runs", "wasteaudit_attempts", "wasteaudit_scores", "wasteaudit_findings"} <= tables
    assert call[:3] == (INJECTION, INJECTION, INJECTION) and json.loads(call[3])[0]["text"] == INJECTION
    assert run[0] == INJECTION and json.loads(run[1]) == {"team": INJECTION, INJECTION: "k"}
    # The CLI's queries over the same rows (report grouped by tag and function, status) run fine too.
    for args in (("status",), ("report", "--since", "2000-01-01", "--until", "2100-01-01", "--by", "tag", "--format", "json"), ("calls",)):
        result = _cli("--database-url", f"sqlite:///{db_path}", *args)
        assert result.returncode == 0, (args, result.stderr)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM wasteaudit_calls").fetchone()[0] == 1


# SQL text built from Python values at run time; each entry is (file, source text of the call) and
# formats in nothing but a constant or an identifier.
SQL_FORMAT_ALLOWED = {
    ("wasteaudit/storage/engine.py", 'cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")'),
}
_SQL_CALLS = {"text", "execute", "exec_driver_sql", "executescript", "executemany", "literal_column"}


def _formatted(node: ast.AST) -> bool:
    """An f-string, ``"..." % x``, ``"..." + x`` or ``"...".format(...)``."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"


def test_sql_is_never_formatted_from_values() -> None:
    found: set[tuple[str, str]] = set()
    for path in sorted((REPO / "wasteaudit").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name in _SQL_CALLS and _formatted(node.args[0]):
                found.add((str(path.relative_to(REPO)), ast.get_source_segment(source, node) or ""))
    assert found - SQL_FORMAT_ALLOWED == set()
    assert SQL_FORMAT_ALLOWED <= found  # the allow-list stays current


# -- what a run returned and marked used ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "redacted", "hashed", "none"])
def test_what_a_run_returned_or_marked_used_follows_the_content_mode(mode: str, tmp_path: Path, server: LocalLLMServer, instrumented: None) -> None:
    """The return value, ``mark_used`` texts and feedback text hold model output: they are
    scrubbed, redacted, line-hashed or dropped like the call's own content. Hashed mode still
    sees which output lines the app returned."""
    from sqlalchemy import select

    from wasteaudit.records import ScoreRecord, new_id
    from wasteaudit.scoring.engine import Scorer
    from wasteaudit.scoring.runner import score_pending
    from wasteaudit.storage.engine import create_engine_for
    from wasteaudit.storage.models import FindingRow

    db_path = tmp_path / "runs.db"
    previous = config.get_settings()
    answer = f"{OUTPUT_MARK} first line\nsecond line of the answer\nthird line nobody reads"
    client = openai.OpenAI(api_key="sk-test", base_url=server.openai_base_url, max_retries=0, http_client=OPENAI_HTTP.Client())

    @wasteaudit.audit
    def task() -> dict[str, str]:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        lines = (reply.choices[0].message.content or "").splitlines()
        wasteaudit.mark_used(f"{lines[1]} (key {CANARY})")
        # a judge's score keeps its rationale (model text) as the raw value, as wasteaudit.judge does
        pipeline.emit(ScoreRecord(id=new_id(), run_id=wasteaudit.current_run_id() or "", name="feedback", value=0.9,
                                  source="judge:gpt-4o-mini", raw_value={"rationale": f"liked {OUTPUT_MARK}", "key": CANARY, "score": 9}))
        return {"shown": f"{lines[0]}\n{lines[1]}", "debug": f"api_key={CANARY}"}

    try:
        _settings(db_path, mode)
        server.enqueue(Reply(json=ob.chat_completion(answer)))
        task()
        assert pipeline.flush(timeout=10)
    finally:
        pipeline.reset_writer()
        config.set_settings(previous)

    stored = _db_bytes(db_path)
    assert _scan(stored, _needles()) == []  # the key, in every mode
    with sqlite3.connect(db_path) as conn:
        (returned, used), = conn.execute("SELECT return_value, used_values FROM wasteaudit_runs").fetchall()
        (raw,), = conn.execute("SELECT raw_value FROM wasteaudit_scores WHERE name = 'feedback'").fetchall()
    if mode == "full":
        assert OUTPUT_MARK in returned and "second line" in used and OUTPUT_MARK in raw and "[REDACTED]" in returned
    elif mode == "redacted":
        assert OUTPUT_MARK.encode() not in stored and HOOK_MARK in returned and HOOK_MARK in raw
    elif mode == "hashed":
        assert OUTPUT_MARK.encode() not in stored and "second line".encode() not in stored
        assert json.loads(returned)["lines"] and json.loads(json.loads(used)[0])["lines"]
    else:
        assert OUTPUT_MARK.encode() not in stored and "second line".encode() not in stored
        assert returned is None and used is None and raw is None

    if mode in ("full", "hashed"):
        # The returned lines are found (by text, or by line hash); only the third line is unused.
        assert score_pending(f"sqlite:///{db_path}", scorer=Scorer(embedder=None)) == 1
        with create_engine_for(f"sqlite:///{db_path}").connect() as conn:
            findings = conn.execute(select(FindingRow.subkind, FindingRow.tokens).where(FindingRow.kind == "unused")).all()
        assert findings and all(0 < tokens < 20 for _, tokens in findings), findings
