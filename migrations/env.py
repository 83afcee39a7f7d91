"""Alembic environment for wasteaudit's own tables.

Run from code by ``wasteaudit.storage.schema`` (there is no alembic.ini): the caller passes an
open connection in ``config.attributes["connection"]``, or a URL as ``sqlalchemy.url``.
Everything is confined to ``wasteaudit_*`` tables and the ``wasteaudit_alembic_version``
version table, so an app's own schema and its own Alembic history are never touched.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from wasteaudit.storage.models import metadata
from wasteaudit.storage.schema import VERSION_TABLE, include_name, include_object

config = context.config


def _options() -> dict[str, object]:
    return {
        "target_metadata": metadata,
        "version_table": VERSION_TABLE,
        "include_name": include_name,
        "include_object": include_object,
        "compare_type": True,
    }


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        **_options(),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from wasteaudit.storage.engine import create_engine_for

    engine = create_engine_for(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **_options())
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
