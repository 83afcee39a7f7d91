"""The programs in examples/ run against the local demo endpoint and record what they claim to.

Each script runs as a user would run it (a subprocess with ``--demo``, its own SQLite file); the
FastAPI service runs in-process under ``TestClient``. The assertions read the stored rows, and
score them where the example is about a waste label.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pytest

from wasteaudit import config
from wasteaudit._internal import pipeline

pytestmark = pytest.mark.slow  # each example starts a Python process with the SDKs (still run in CI)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run_example(script: str, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one example script with ``--demo`` against a fresh SQLite file; fails on a non-zero exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "WASTEAUDIT_DATABASE"))}
    env.update(
        WASTEAUDIT_DATABASE_URL=f"sqlite:///{db}",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--demo", *args], env=env, cwd=db.parent, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def score(db: Path) -> dict[tuple[str, str], int]:
    """Score every call of ``db`` once; confirmed waste tokens by (kind, subkind)."""
    from wasteaudit.scoring.runner import score_pending
    from wasteaudit.storage.engine import create_engine_for

    engine = create_engine_for(f"sqlite:///{db}")
    try:
        score_pending(engine, run_timeout_s=0)
    finally:
        engine.dispose()
    found = rows(db, "select kind, subkind, sum(tokens) from wasteaudit_findings where tier = 'confirmed' group by kind, subkind")
    return {(kind, subkind): tokens for kind, subkind, tokens in found}


def test_batch_extraction_records_retries_validation_and_unread_fields(tmp_path: Path) -> None:
    db = tmp_path / "batch.db"
    out = run_example("batch_extraction/extract.py", db)
    assert "8 of 8 tickets extracted" in out.stderr
    runs = rows(db, "select name, status, validation from wasteaudit_runs")
    assert len(runs) == 8 and {r[0] for r in runs} == {"tickets.extract"}
    assert all(r[2] == 1 for r in runs), "every final record passed the validator"
    calls = rows(db, "select run_id, request_model from wasteaudit_calls")
    assert len(calls) > len(runs), "a reply that was not JSON was asked for again, in the same run"
    validations = rows(db, "select count(*) from wasteaudit_scores where name = 'validation' and source = 'validator'")
    assert validations == [(8,)]
    waste = score(db)
    assert waste.get(("failed", "invalid_output"), 0) > 0, waste
    assert waste.get(("unused", "not_in_result"), 0) > 0, "the never-read 'product' fields are unused output"


def test_openai_agent_loop_is_one_run_per_question_with_a_call_per_turn(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    out = run_example("agent_loop/agent_openai.py", db, "Where is B2002?", "Has C3003 arrived?")
    assert "B2002: waiting for the warehouse" in out.stdout
    runs = rows(db, "select id, name from wasteaudit_runs")
    assert len(runs) == 2 and {r[1] for r in runs} == {"agent.orders"}
    calls = rows(db, "select run_id, provider, finish_reasons from wasteaudit_calls order by started_at")
    assert len(calls) == 4 and {c[1] for c in calls} == {"openai"}
    assert sorted(c[2] for c in calls) == sorted(['["tool_calls"]', '["stop"]'] * 2)
    assert {c[0] for c in calls} == {r[0] for r in runs}
    assert rows(db, "select count(*), min(value) from wasteaudit_scores where name = 'quality'") == [(2, 1.0)]


def test_anthropic_agent_loop_is_one_run_per_question_with_a_call_per_turn(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    out = run_example("agent_loop/agent_anthropic.py", db, "Has order C3003 arrived?")
    assert "C3003 delivered yesterday" in out.stdout
    calls = rows(db, "select provider, finish_reasons, attempts from wasteaudit_calls order by started_at")
    assert [(c[0], c[1]) for c in calls] == [("anthropic", '["tool_use"]'), ("anthropic", '["end_turn"]')]
    assert rows(db, "select count(*) from wasteaudit_runs where name = 'agent.orders'") == [(1,)]
    assert rows(db, "select value from wasteaudit_scores where name = 'quality'") == [(1.0,)]


def test_streaming_chat_records_a_stream_abandoned_by_its_reader(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    out = run_example("streaming_chat/chat.py", db, "--read-paragraphs", "1", "How are database failovers handled?")
    assert "operations handbook" in out.stdout
    assert "retired last quarter" not in out.stdout, "the reader left before the third paragraph"
    calls = rows(db, "select stream_state, usage_source, output_tokens from wasteaudit_calls")
    # Left before the usage chunk: usage is recorded as missing, never as a silent 0.
    assert calls == [("abandoned", "missing", None)]
    (returned,) = rows(db, "select return_value from wasteaudit_runs where name = 'chat.stream'")[0]
    assert returned.startswith("Based on the retrieved documents") and "retired" not in returned


@pytest.fixture
def fastapi_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, Path]]:
    """The FastAPI example imported against a local demo endpoint and its own database."""
    pytest.importorskip("fastapi")
    from wasteaudit.demo.endpoint import start_demo_endpoint
    from wasteaudit.instrumentation import _active

    db = tmp_path / "service.db"
    previous = config.get_settings()
    was_instrumented = set(_active)
    server = start_demo_endpoint(set_environment=False)
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-demo-local-endpoint")
    monkeypatch.setenv("WASTEAUDIT_DATABASE_URL", f"sqlite:///{db}")
    spec = importlib.util.spec_from_file_location("fastapi_service_example", EXAMPLES / "fastapi_service" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        yield module, db
    finally:
        server.stop()
        for name, handle in list(_active.items()):
            if name not in was_instrumented:
                handle.undo()
        pipeline.reset_writer()
        config.set_settings(previous)


def test_fastapi_service_returns_run_ids_and_stores_feedback_by_run_id(fastapi_example: tuple[ModuleType, Path]) -> None:
    from fastapi.testclient import TestClient

    import wasteaudit

    module, db = fastapi_example
    with TestClient(module.app) as client:
        answer = client.post("/answer", json={"question": "How do I reset my password?", "compact": True})
        summary = client.post("/summarize", json={"text": "Who approves production deploys?"})
        assert answer.status_code == 200 and summary.status_code == 200
        answer_run, summary_run = answer.json()["run_id"], summary.json()["run_id"]
        assert answer.json()["text"].startswith("To reset your password") and "\n\n" not in answer.json()["text"]
        assert client.post("/feedback", json={"run_id": answer_run, "score": 0.25}).status_code == 200
        assert client.post("/feedback", json={"run_id": summary_run, "score": 1}).status_code == 200
        assert client.post("/feedback", json={"run_id": summary_run, "score": 2}).status_code == 422
    assert wasteaudit.flush(timeout=10)
    runs = dict(rows(db, "select id, name from wasteaudit_runs"))
    assert runs == {answer_run: "support.answer", summary_run: "docs.summarize"}
    calls = rows(db, "select run_id, function from wasteaudit_calls")
    assert sorted(calls) == sorted([(answer_run, "support.answer"), (summary_run, "docs.summarize")])
    feedback = rows(db, "select run_id, value from wasteaudit_scores where source = 'user' and name = 'quality'")
    assert sorted(feedback) == sorted([(answer_run, 0.25), (summary_run, 1.0)])
    waste = score(db)
    # The compact widget showed one paragraph of three: the rest was paid for and never shown.
    assert waste.get(("unused", "not_in_result"), 0) > 0, waste
