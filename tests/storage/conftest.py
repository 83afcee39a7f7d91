"""Storage fixtures: every database test runs on SQLite (a temp file) and on PostgreSQL.

PostgreSQL: one fresh database per test session (``CREATE DATABASE`` on the server at
``$WASTEAUDIT_TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``),
dropped at the end; each test gets its own schema in it (through ``search_path``), so tests
start empty and never see each other. If the server is unreachable the PostgreSQL cases are
skipped, unless ``WASTEAUDIT_REQUIRE_SERVICES=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from wasteaudit.records import AttemptRecord, CallRecord, ChoiceContent, RunRecord, ScoreRecord, new_id

PG_SERVER_URL = os.environ.get("WASTEAUDIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("WASTEAUDIT_REQUIRE_SERVICES") == "1"


def _pg_url(database: str | None = None, *, driver: str = "postgresql+psycopg", **query: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(PG_SERVER_URL).set(drivername=driver)
    if database is not None:
        url = url.set(database=database)
    if query:
        url = url.update_query_dict(query)
    return url.render_as_string(hide_password=False)


def _connect(database: str | None = None) -> Any:
    """A psycopg connection (autocommit) to the server's database, or to ``database`` on it."""
    import psycopg

    return psycopg.connect(_pg_url(database, driver="postgresql"), autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The name of a fresh database for this session; dropped afterwards."""
    try:
        admin = _connect()
    except Exception as exc:
        message = f"PostgreSQL not reachable at {PG_SERVER_URL}: {exc}"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    name = f"wasteaudit_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    """A URL whose connections see only a new, empty schema of the session database."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with _connect(pg_database) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield _pg_url(pg_database, options=f"-csearch_path={schema}")
    with _connect(pg_database) as conn:
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """An empty database, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'wasteaudit.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[Any]:
    from wasteaudit.storage.engine import create_engine_for

    engine = create_engine_for(db_url)
    yield engine
    engine.dispose()


# --- record factories --------------------------------------------------------------------------


def make_call(**fields: Any) -> CallRecord:
    """A realistic finished chat call (OpenAI, priced model, one attempt, content captured)."""
    now = time.time()
    values: dict[str, Any] = {
        "id": new_id(),
        "provider": "openai",
        "operation": "chat",
        "api": "chat.completions",
        "started_at": now - 1.0,
        "run_id": None,
        "function": "summarize",
        "request_model": "gpt-4o",
        "response_model": "gpt-4o-2024-08-06",
        "response_id": "chatcmpl-123",
        "server_address": "api.openai.com",
        "server_port": 443,
        "ended_at": now,
        "duration_s": 1.0,
        "request_params": {"max_tokens": 200, "temperature": 0.2},
        "usage_source": "provider",
        "input_tokens": 1000,
        "input_cache_read_tokens": 200,
        "output_tokens": 500,
        "output_reasoning_tokens": 0,
        "finish_reasons": ["stop"],
        "finish_category": "stop",
        "status_code": 200,
        "input_messages": [{"role": "user", "content": "Summarize the report."}],
        "choices": [ChoiceContent(index=0, text="The report says sales grew.", finish_reason="stop")],
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
    }
    values.update(fields)
    if "attempts" not in fields:
        values["attempts"] = [AttemptRecord(index=0, started_at=values["started_at"], duration_s=1.0, status_code=200)]
    return CallRecord(**values)


def make_run(**fields: Any) -> RunRecord:
    values: dict[str, Any] = {"id": new_id(), "name": "summarize", "started_at": time.time() - 2.0}
    values.update(fields)
    return RunRecord(**values)


def make_score(run_id: str, **fields: Any) -> ScoreRecord:
    values: dict[str, Any] = {"id": new_id(), "run_id": run_id, "name": "quality", "value": 0.8}
    values.update(fields)
    return ScoreRecord(**values)


@pytest.fixture
def call() -> Any:
    """Factory: ``call(**fields)`` builds a CallRecord."""
    return make_call


@pytest.fixture
def run() -> Any:
    """Factory: ``run(**fields)`` builds a RunRecord."""
    return make_run


@pytest.fixture
def score() -> Any:
    """Factory: ``score(run_id, **fields)`` builds a ScoreRecord."""
    return make_score
