"""Database URLs and engines: one place that knows SQLite and PostgreSQL quirks.

``resolve_url`` is pure string work (no SQLAlchemy import), so the facade can resolve and log
the URL at configure time without loading SQLAlchemy into the app's request path. Everything
that needs SQLAlchemy imports it inside the function.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from wasteaudit.exceptions import ConfigError, MissingExtraError, StorageError
from wasteaudit.storage.convert import json_default

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

__all__ = (
    "DEFAULT_URL",
    "ENV_VAR",
    "resolve_url",
    "safe_url",
    "create_engine_for",
    "tune_for_bulk_writes",
    "check_connection",
)

ENV_VAR = "WASTEAUDIT_DATABASE_URL"
DEFAULT_URL = "sqlite:///wasteaudit.db"
SQLITE_BUSY_TIMEOUT_MS = 5000
# The writer's SQLite connections: a page cache that holds the indexes' hot pages (the default is
# 2 MiB), and a WAL checkpointed every 16 MiB instead of every 4 MiB (each checkpoint syncs the
# database file). Together about a fifth less CPU per stored call (docs/reliability.md).
SQLITE_WRITER_PRAGMAS = ("PRAGMA cache_size=-8192", "PRAGMA wal_autocheckpoint=4000")
PG_CONNECT_TIMEOUT_S = 5

_PG_SCHEMES = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg"}
_SUPPORTED_BACKENDS = ("sqlite", "postgresql")


def resolve_url(url: str | None = None) -> str:
    """The URL to use: ``url``, else ``$WASTEAUDIT_DATABASE_URL``, else ``sqlite:///wasteaudit.db``.

    ``postgres://`` and ``postgresql://`` map to the psycopg 3 driver; a relative SQLite path is
    made absolute against the current directory now, so a later ``chdir`` cannot move the database.
    """
    if url is None:
        url = os.environ.get(ENV_VAR) or None
    url = (url or DEFAULT_URL).strip()
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        # Never echo the value: it may be a DSN with a password in it.
        raise ConfigError(
            "database URL has no scheme; expected e.g. sqlite:///path/to/wasteaudit.db "
            "or postgresql://user@host/dbname"
        )
    scheme = scheme.lower()
    scheme = _PG_SCHEMES.get(scheme, scheme)
    if scheme.split("+", 1)[0] == "sqlite":
        rest = _absolute_sqlite_rest(rest)
    return f"{scheme}://{rest}"


def _absolute_sqlite_rest(rest: str) -> str:
    # rest is "/path?query" for sqlite:///path, "" for sqlite:// (in memory).
    if not rest.startswith("/"):
        return rest
    path, qmark, query = rest[1:].partition("?")
    if not path or path == ":memory:" or path.startswith("file:") or "uri=true" in query.lower():
        return rest
    return "/" + os.path.abspath(os.path.expanduser(path)) + qmark + query


def safe_url(url: str | URL) -> str:
    """The URL as text with any password masked, for messages and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def create_engine_for(url: str | None = None, *, verify: bool = False, **engine_kwargs: Any) -> Engine:
    """An engine tuned for wasteaudit's workload on SQLite or PostgreSQL.

    SQLite gets WAL, a 5 s busy timeout, ``synchronous=NORMAL`` and foreign keys on every
    connection (many processes append to one file); PostgreSQL gets ``pool_pre_ping`` and a
    connect timeout. Raises ``ConfigError`` for an unsupported scheme or unknown driver,
    ``MissingExtraError`` when the driver is not installed, and, with ``verify=True``,
    ``StorageError`` when the database cannot be reached. Messages never contain the password.
    """
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    resolved = resolve_url(url)
    try:
        parsed = make_url(resolved)
    except (ArgumentError, ValueError):
        raise ConfigError(
            f"cannot parse database URL starting with {resolved.partition('://')[0]!r}://; "
            "expected e.g. sqlite:///path/to/wasteaudit.db or postgresql://user@host/dbname"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend not in _SUPPORTED_BACKENDS:
        raise ConfigError(f"unsupported database {shown}: wasteaudit stores to SQLite or PostgreSQL")

    kwargs: dict[str, Any] = {"json_serializer": _json_dumps}
    if backend == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        kwargs["pool_pre_ping"] = True
        if parsed.get_driver_name() == "psycopg":
            kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "wasteaudit"}
    kwargs.update(engine_kwargs)
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError:
        raise ConfigError(f"unknown database driver in {shown}; use sqlite:/// or postgresql://") from None
    except ImportError as exc:
        raise MissingExtraError(
            f"the driver for {shown} is not installed ({exc}); "
            "for PostgreSQL install it with: pip install 'wasteaudit[postgres]'"
        ) from None

    if backend == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        event.listen(engine, "connect", _sqlite_on_connect(in_memory))
    if verify:
        check_connection(engine)
    return engine


def _json_dumps(value: Any) -> str:
    # Content is JSON-cleaned in convert.py; this keeps an odd object (a set, an SDK model)
    # from failing the whole batch.
    return json.dumps(value, default=json_default)


def _sqlite_on_connect(in_memory: bool) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock another process may hold.
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    return on_connect


def tune_for_bulk_writes(engine: Engine) -> None:
    """Per-connection settings for an engine that only appends batches (the writer's own).

    Call before the engine's first connection. SQLite only; nothing here trades durability
    (``synchronous`` stays NORMAL, as for every connection).
    """
    if engine.dialect.name != "sqlite":
        return
    from sqlalchemy import event

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for statement in SQLITE_WRITER_PRAGMAS:
                cursor.execute(statement)
        finally:
            cursor.close()

    event.listen(engine, "connect", on_connect)


def check_connection(engine: Engine) -> None:
    """Open one connection, raising ``StorageError`` (password hidden) if that fails."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise StorageError(
            f"cannot connect to {safe_url(engine.url)}: {describe_error(exc, engine.url.password)}"
        ) from None


def describe_error(exc: BaseException, password: object = None) -> str:
    """A one-line description of a database error, without SQL, parameters or credentials."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    first = lines[0] if lines else ""
    if password:
        first = first.replace(str(password), "***")
    return f"{type(orig).__name__}: {first}"[:500]
