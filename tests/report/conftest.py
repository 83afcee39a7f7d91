"""Report fixtures: each dataset is written once per module, on SQLite and on PostgreSQL.

PostgreSQL reuses the storage tests' session database (``tests/storage/conftest.py``:
``pg_database``, created fresh per session and dropped after; skipped when unreachable
unless ``WASTEAUDIT_REQUIRE_SERVICES=1``); each module gets its own schema in it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from storage.conftest import REQUIRE_SERVICES, _pg_url, pg_database  # noqa: F401 - fixture reuse

__all__ = ["backend_url", "pg_database", "chromium"]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database URL for one test module, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('report') / 'audit.db'}"
        return
    import psycopg

    database = request.getfixturevalue("pg_database")
    schema = f"r_{uuid.uuid4().hex[:12]}"
    admin_url = _pg_url(database).replace("+psycopg", "")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield _pg_url(database, options=f"-csearch_path={schema}")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless Chromium binary (``apt-get install -y chromium``)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    message = "Chromium not installed (apt-get install -y chromium)"
    if REQUIRE_SERVICES or os.environ.get("WASTEAUDIT_REQUIRE_CHROMIUM") == "1":
        pytest.fail(message)
    pytest.skip(message)


def approx(value: Any, rel: float = 1e-9) -> Any:
    return pytest.approx(value, rel=rel, abs=1e-12)
