"""Schema versions: Alembic, run from code, confined to wasteaudit's own tables.

wasteaudit lives inside an app's existing database, so its migrations keep to themselves:
their own version table (``wasteaudit_alembic_version``, never the app's ``alembic_version``)
and a name filter that only ever sees ``wasteaudit_*`` tables. The Alembic ``Config`` is built
in code (no ``alembic.ini``) and the scripts are found at run time: ``wasteaudit/_migrations``
in an installed wheel, else ``migrations/`` at the root of a source checkout.

The schema is brought to head on first use under a lock (``fcntl.flock`` on a file next to
the SQLite database, ``pg_advisory_lock`` on PostgreSQL), so many processes starting at once
migrate exactly once and the rest wait, then find it done.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wasteaudit.exceptions import SchemaVersionError, StorageError
from wasteaudit.storage.engine import create_engine_for, describe_error, safe_url
from wasteaudit.storage.models import TABLE_PREFIX

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection, Engine

__all__ = (
    "VERSION_TABLE",
    "migrations_dir",
    "alembic_config",
    "head_revision",
    "current_revision",
    "upgrade",
    "ensure_schema",
    "include_name",
    "include_object",
)

VERSION_TABLE = "wasteaudit_alembic_version"
# pg_advisory_lock key: b"wasteaud" as a signed 64-bit integer; any constant works if it is ours.
_PG_LOCK_KEY = int.from_bytes(b"wasteaud", "big", signed=True)

_thread_lock = threading.Lock()  # in-process guard; the file/advisory lock covers other processes
_ready: weakref.WeakSet[Engine] = weakref.WeakSet()


def migrations_dir() -> Path:
    """Where the Alembic scripts are: packaged copy first, then the source checkout's root."""
    package = Path(__file__).resolve().parent.parent  # .../wasteaudit
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise StorageError(
        f"wasteaudit's migration scripts are missing (looked in {package / '_migrations'} "
        f"and {package.parent / 'migrations'}); reinstall wasteaudit"
    )


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` for wasteaudit's migrations, built in code."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@functools.lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision this package ships (there is exactly one head)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


@functools.lru_cache(maxsize=1)
def _known_revisions() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    return frozenset(script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions())


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """Alembic reflection filter: only ``wasteaudit_*`` tables (and their columns, indexes...)."""
    if type_ == "schema":
        return name is None  # the connection's default schema only
    if type_ == "table":
        return bool(name) and name.startswith(TABLE_PREFIX) and name != VERSION_TABLE  # type: ignore[union-attr]
    table = parent_names.get("table_name")
    return table is None or table.startswith(TABLE_PREFIX)


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic object filter: the same rule for objects from the models and from the database."""
    if type_ == "table":
        return bool(name) and name.startswith(TABLE_PREFIX) and name != VERSION_TABLE  # type: ignore[union-attr]
    table = getattr(obj, "table", None)
    return table is None or table.name.startswith(TABLE_PREFIX)


def current_revision(engine: Engine) -> str | None:
    """The database's wasteaudit schema revision, or ``None`` if wasteaudit was never installed there.

    Read with one query on the version table (what alembic's ``MigrationContext`` reads), so
    opening a database for a report does not import alembic (a third of a cold start's imports).
    """
    from sqlalchemy import column, inspect, select, table
    from sqlalchemy.exc import SQLAlchemyError

    version = table(VERSION_TABLE, column("version_num"))
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(VERSION_TABLE):
                return None
            rows = connection.execute(select(version.c.version_num)).scalars().all()
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot read the schema version of {safe_url(engine.url)}: {describe_error(exc)}") from None
    if len(rows) > 1:
        raise StorageError(f"{safe_url(engine.url)}: {VERSION_TABLE} has more than one head ({', '.join(sorted(rows))})")
    return rows[0] if rows else None


def upgrade(engine_or_url: Engine | str | None = None, revision: str = "head") -> None:
    """``alembic upgrade <revision>`` on wasteaudit's tables, under the migration lock."""
    from sqlalchemy.exc import SQLAlchemyError

    owned = not hasattr(engine_or_url, "connect")
    engine: Engine = create_engine_for(engine_or_url) if owned else engine_or_url  # type: ignore[arg-type,assignment]
    try:
        with _migration_lock(engine) as connection:
            _upgrade_on(connection, revision)
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot upgrade the schema of {safe_url(engine.url)}: {describe_error(exc)}") from None
    finally:
        if owned:
            engine.dispose()


def ensure_schema(engine: Engine, *, auto_migrate: bool = True) -> None:
    """Make sure the database is at this package's head revision (once per engine).

    Upgrades automatically unless ``auto_migrate=False``; raises ``SchemaVersionError`` when the
    database is behind and may not be migrated, or is ahead of this package.
    """
    from sqlalchemy.exc import SQLAlchemyError

    if engine in _ready:
        return
    head = head_revision()
    current = _read_revision_without_lock(engine)
    if current != head:
        if current is not _UNKNOWN:
            _check_upgradable(engine, current, head, auto_migrate)
        try:
            with _migration_lock(engine) as connection:
                # Another process may have migrated while we waited for the lock.
                from alembic.migration import MigrationContext

                ctx = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
                real = ctx.get_current_revision()
                if real != head:
                    if current is _UNKNOWN:
                        _check_upgradable(engine, real, head, auto_migrate)
                    _upgrade_on(connection, "head")
                else:
                    connection.rollback()
        except SQLAlchemyError as exc:
            raise StorageError(
                f"cannot upgrade the schema of {safe_url(engine.url)}: {describe_error(exc)}"
            ) from None
    _ready.add(engine)


def _read_revision_without_lock(engine: Engine, attempts: int = 5) -> str | None:
    """The fast, lock-free read of the revision. SQLite may answer "database is locked" while
    another process switches a new file to WAL (that switch ignores the busy timeout): retry,
    then report "unknown" so the caller re-reads under the migration lock."""
    import time

    for attempt in range(attempts):
        try:
            return current_revision(engine)
        except StorageError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                if "locked" in str(exc):
                    return _UNKNOWN
                raise
            time.sleep(0.1 * (attempt + 1))
    return _UNKNOWN


_UNKNOWN = "(unknown: database busy)"


def _check_upgradable(engine: Engine, current: str | None, head: str, auto_migrate: bool) -> None:
    shown = safe_url(engine.url)
    if current is not None and current not in _known_revisions():
        raise SchemaVersionError(
            f"{shown} has wasteaudit schema revision {current!r}, newer than this wasteaudit knows "
            f"(head {head!r}); upgrade the wasteaudit package"
        )
    if not auto_migrate:
        raise SchemaVersionError(
            f"{shown} has wasteaudit schema revision {current or 'none'}, this wasteaudit needs {head!r}; "
            "run `wasteaudit db upgrade`"
        )


def _upgrade_on(connection: Connection, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
    connection.commit()


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection held under the cross-process migration lock."""
    with _thread_lock:
        if engine.dialect.name == "postgresql":
            with _pg_advisory_lock(engine) as connection:
                yield connection
        elif engine.dialect.name == "sqlite":
            with _sqlite_file_lock(engine.url.database), engine.connect() as connection:
                yield connection
        else:  # pragma: no cover - create_engine_for only builds the two above
            with engine.connect() as connection:
                yield connection


@contextlib.contextmanager
def _pg_advisory_lock(engine: Engine) -> Iterator[Connection]:
    from sqlalchemy import text

    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
        connection.commit()  # the lock is session-level; leave no transaction open around it
        try:
            yield connection
        finally:
            if connection.in_transaction():
                connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
            connection.commit()


@contextlib.contextmanager
def _sqlite_file_lock(database: str | None) -> Iterator[None]:
    if not database or database == ":memory:" or database.startswith("file:"):
        yield  # in-memory: one process only, the thread lock is enough
        return
    import fcntl

    path = f"{database}.wasteaudit-lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot create the migration lock file {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
