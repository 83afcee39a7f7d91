"""The schema: migrations equal the models, stay inside wasteaudit_* tables, migrate once under a lock.

Also the engine factory: URL resolution, SQLite pragmas, and error messages without passwords.
"""

from __future__ import annotations

import json
import multiprocessing
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from wasteaudit.exceptions import ConfigError, SchemaVersionError, StorageError
from wasteaudit.storage import engine as engine_module
from wasteaudit.storage.engine import create_engine_for, resolve_url
from wasteaudit.storage.models import CallRow, metadata
from wasteaudit.storage.schema import (
    VERSION_TABLE,
    alembic_config,
    current_revision,
    ensure_schema,
    head_revision,
    include_name,
    include_object,
    migrations_dir,
    upgrade,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _diffs(engine: sa.Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "include_name": include_name,
                "include_object": include_object,
                "version_table": VERSION_TABLE,
            },
        )
        return compare_metadata(context, metadata)


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


# --- migrations ----------------------------------------------------------------------------------


def test_upgrade_from_empty_gives_exactly_the_models_schema(engine: sa.Engine) -> None:
    upgrade(engine)

    assert _diffs(engine) == []
    assert _tables(engine) == {
        "wasteaudit_runs",
        "wasteaudit_calls",
        "wasteaudit_attempts",
        "wasteaudit_findings",
        "wasteaudit_scores",
        "wasteaudit_writer_state",
        "wasteaudit_drops",
        "wasteaudit_rollup_dirty",
        "wasteaudit_rollup_calls",
        "wasteaudit_rollup_waste",
        "wasteaudit_rollup_runs",
        "wasteaudit_rollup_top",
        VERSION_TABLE,
    }
    indexes = {index["name"] for index in sa.inspect(engine).get_indexes("wasteaudit_calls")}
    assert {
        "ix_wasteaudit_calls_report",
        "ix_wasteaudit_calls_run_id",
        "ix_wasteaudit_calls_function_started_at",
        "ix_wasteaudit_calls_request_model",
        "ix_wasteaudit_calls_unscored",
    } <= indexes


def test_revisions_have_one_head_and_release_tied_file_names() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())

    assert len(scripts.get_heads()) == 1
    assert scripts.get_current_head() == head_revision()
    for script in scripts.walk_revisions():
        assert script.path is not None
        assert re.fullmatch(r"v\d+_\d+_\d+_\d{2}_[a-z0-9_]+\.py", Path(script.path).name), script.path
        assert Path(script.path).name.startswith(script.revision)


def test_version_is_recorded_in_wasteaudits_own_version_table(engine: sa.Engine) -> None:
    assert current_revision(engine) is None

    upgrade(engine)

    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        rows = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
    assert rows == [(head_revision(),)]
    assert "alembic_version" not in _tables(engine)


def test_an_apps_own_tables_and_alembic_history_are_untouched(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE app_users (id INTEGER PRIMARY KEY, email VARCHAR(100))"))
        connection.execute(sa.text("INSERT INTO app_users (id, email) VALUES (1, 'a@example.com')"))
        connection.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        connection.execute(sa.text("INSERT INTO alembic_version VALUES ('app_rev_42')"))

    upgrade(engine)

    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT id, email FROM app_users")).all() == [(1, "a@example.com")]
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).all() == [("app_rev_42",)]
    assert _diffs(engine) == []  # the app's tables are invisible to our autogenerate, not "to be dropped"

    from alembic import command

    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        connection.commit()
    assert _tables(engine) == {"app_users", "alembic_version", VERSION_TABLE}


def test_ensure_schema_migrates_on_first_use_and_then_is_a_no_op(engine: sa.Engine) -> None:
    ensure_schema(engine)
    ensure_schema(engine)

    assert current_revision(engine) == head_revision()


def test_ensure_schema_without_auto_migrate_names_the_cli_fix(engine: sa.Engine) -> None:
    with pytest.raises(SchemaVersionError, match="wasteaudit db upgrade"):
        ensure_schema(engine, auto_migrate=False)
    assert current_revision(engine) is None


def test_a_database_newer_than_the_package_is_refused(engine: sa.Engine) -> None:
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = 'v9_9_9_99'"))
    fresh = create_engine_for(engine.url.render_as_string(hide_password=False))
    try:
        with pytest.raises(SchemaVersionError, match="newer"):
            ensure_schema(fresh)
    finally:
        fresh.dispose()


def _ensure_in_child(url: str, barrier: Any) -> None:
    engine = create_engine_for(url)
    barrier.wait()
    ensure_schema(engine)
    engine.dispose()


def test_many_processes_starting_at_once_migrate_exactly_once(db_url: str) -> None:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    children = [context.Process(target=_ensure_in_child, args=(db_url, barrier)) for _ in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0, 0, 0, 0]

    engine = create_engine_for(db_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            assert connection.execute(sa.text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar_one() == 1
        assert _diffs(engine) == []
    finally:
        engine.dispose()


def test_migrations_are_found_in_the_source_checkout() -> None:
    assert migrations_dir() == REPO_ROOT / "migrations"
    assert (migrations_dir() / "versions").is_dir()


def test_timestamps_read_back_as_aware_utc(engine: sa.Engine, call: Any) -> None:
    from wasteaudit.storage.writer import Writer

    record = call(started_at=1_700_000_000.25)
    writer = Writer(engine.url.render_as_string(hide_password=False), flush_interval=0.01)
    writer.submit(record)
    assert writer.flush(10)
    writer.shutdown()

    with engine.connect() as connection:
        started = connection.execute(sa.select(CallRow.started_at)).scalar_one()
        # SQL comparisons against a bound datetime agree with what the writer stored
        found = connection.execute(
            sa.select(sa.func.count()).select_from(CallRow).where(
                CallRow.started_at >= datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
            )
        ).scalar_one()
    assert started == datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=timezone.utc)
    assert found == 1


# --- engine ------------------------------------------------------------------------------------


def test_resolve_url_defaults_to_an_absolute_sqlite_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WASTEAUDIT_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)

    assert resolve_url(None) == f"sqlite:///{tmp_path}/wasteaudit.db"
    assert resolve_url("sqlite:///data/a.db?timeout=3") == f"sqlite:///{tmp_path}/data/a.db?timeout=3"
    assert resolve_url("sqlite:////abs/a.db") == "sqlite:////abs/a.db"
    assert resolve_url("sqlite://") == "sqlite://"
    assert resolve_url("sqlite:///:memory:") == "sqlite:///:memory:"


def test_resolve_url_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASTEAUDIT_DATABASE_URL", "postgres://u:p@db.internal/audit")
    assert resolve_url(None) == "postgresql+psycopg://u:p@db.internal/audit"
    assert resolve_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert resolve_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        with engine.connect() as connection:
            pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
            assert pragma("journal_mode") == "wal"
            assert pragma("busy_timeout") == 5000
            assert pragma("synchronous") == 1  # NORMAL
            assert pragma("foreign_keys") == 1
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "error", "message"),
    [
        ("mysql://admin:s3cret-pw@db.example.com/app", ConfigError, "unsupported database"),
        ("postgresql+nodriver://admin:s3cret-pw@db.example.com/app", ConfigError, "unknown database driver"),
        ("admin:s3cret-pw@db.example.com/app", ConfigError, "no scheme"),
    ],
)
def test_wrong_urls_raise_config_errors_without_the_password(url: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message) as caught:
        create_engine_for(url)
    assert "s3cret-pw" not in str(caught.value)


def test_unreachable_database_raises_storage_error_without_the_password() -> None:
    with pytest.raises(StorageError, match="cannot connect") as caught:
        create_engine_for("postgresql://admin:s3cret-pw@127.0.0.1:1/app", verify=True)
    assert "s3cret-pw" not in str(caught.value)
    assert "***" in str(caught.value)


def test_describe_error_masks_a_password_echoed_by_the_driver() -> None:
    assert "hunter2" not in engine_module.describe_error(RuntimeError("auth failed for hunter2"), "hunter2")


@pytest.mark.postgres
def test_call_content_is_compressed_with_lz4_where_the_server_has_it(pg_url: str) -> None:
    engine = create_engine_for(pg_url)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            has_lz4 = connection.exec_driver_sql(
                "SELECT count(*) FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
            ).scalar()
            methods = dict(
                connection.exec_driver_sql(
                    "SELECT attname, attcompression FROM pg_attribute "
                    "WHERE attrelid = 'wasteaudit_calls'::regclass AND attnum > 0 AND NOT attisdropped"
                ).all()
            )
    finally:
        engine.dispose()
    content = ("input_messages", "system_instructions", "choices", "tool_definitions", "response_format", "error_message")
    assert {methods[name] for name in content} == ({"l"} if has_lz4 else {""})
    assert methods["id"] == ""  # everything else keeps the server's default


@pytest.mark.postgres
def test_call_content_moves_from_jsonb_to_json_and_back_with_its_values(pg_url: str) -> None:
    """Migration v0_3_0_04: the content columns become JSON (kept as written, not rebuilt as
    JSONB on every insert); calls stored before read back the same, after it and after its downgrade."""
    from alembic import command

    messages = [{"role": "user", "content": 'é 😀 "quoted"\nline', "n": 1, "ok": True, "none": None}]
    engine = create_engine_for(pg_url)

    def stored() -> tuple[Any, str]:
        with engine.connect() as connection:
            value, sql_type = connection.exec_driver_sql(
                "SELECT input_messages, pg_typeof(input_messages)::text FROM wasteaudit_calls WHERE id = 'c1'"
            ).one()
        return value, sql_type

    try:
        upgrade(engine, "v0_3_0_03")
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO wasteaudit_calls (id, provider, operation, api, started_at, method, stream, usage_source,"
                " attempts, content_mode, content_truncated, priced, input_messages)"
                " VALUES ('c1', 'openai', 'chat', 'chat.completions', now(), 'create', false, 'provider', 1, 'full',"
                " false, 'priced', %(messages)s::jsonb)",
                {"messages": json.dumps(messages)},
            )
        assert stored() == (messages, "jsonb")
        upgrade(engine)
        assert stored() == (messages, "json")
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "v0_3_0_03")
        assert stored() == (messages, "jsonb")
    finally:
        engine.dispose()
