"""Storage: SQL tables, migrations, pricing and the background writer.

Nothing is imported eagerly: ``import wasteaudit.storage`` must not load SQLAlchemy (the
request path may import this package), so names are resolved on first attribute access.

Public names:
    ``Writer``                                           background batch writer (writer.py)
    ``resolve_url``, ``create_engine_for``               database URLs and engines (engine.py)
    ``upgrade``, ``ensure_schema``, ``current_revision``, ``head_revision``   migrations (schema.py)
    ``price_call``                                       pricing of one call (pricing.py)
    ``metadata``, ``RunRow``, ``CallRow``, ``AttemptRow``, ``FindingRow``, ``ScoreRow``   tables (models.py)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wasteaudit.storage.engine import create_engine_for, resolve_url
    from wasteaudit.storage.models import AttemptRow, CallRow, FindingRow, RunRow, ScoreRow, metadata
    from wasteaudit.storage.pricing import price_call
    from wasteaudit.storage.schema import current_revision, ensure_schema, head_revision, upgrade
    from wasteaudit.storage.writer import Writer

_LOCATIONS = {
    "Writer": "writer",
    "resolve_url": "engine",
    "create_engine_for": "engine",
    "upgrade": "schema",
    "ensure_schema": "schema",
    "current_revision": "schema",
    "head_revision": "schema",
    "price_call": "pricing",
    "metadata": "models",
    "RunRow": "models",
    "CallRow": "models",
    "AttemptRow": "models",
    "FindingRow": "models",
    "ScoreRow": "models",
}

__all__ = tuple(_LOCATIONS)


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted((*globals(), *__all__))
