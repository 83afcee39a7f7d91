"""Weekly waste reports: quality-weighted, Goodhart-resistant (DESIGN §4, §5; docs/report.md).

    from wasteaudit.report import build_report
    data = build_report("sqlite:///wasteaudit.db", week="2026-W47", by="model")

``build_report`` returns the ``wasteaudit.report/v1`` document (a plain dict, JSON-ready);
``render(report, format)`` turns it into text, Markdown, JSON or one self-contained HTML file.
The CLI (``wasteaudit report``) is :mod:`wasteaudit.report.cli`.
"""

from __future__ import annotations

import os
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from wasteaudit.report.efficiency import Settings

__all__ = ("build_report", "render", "open_report_engine", "schema", "FORMATS")

FORMATS = ("text", "md", "json", "html")


def open_report_engine(database_url: str | None = None) -> "Engine":
    """An engine on an *existing* audit database; never creates one.

    A missing SQLite file, or a database without wasteaudit's tables, is a ``StorageError``
    naming the resolved location (password hidden).
    """
    from wasteaudit.exceptions import StorageError
    from wasteaudit.storage.engine import create_engine_for, resolve_url, safe_url
    from wasteaudit.storage.schema import current_revision

    url = resolve_url(database_url)
    if url.startswith("sqlite"):
        rest = url.split("://", 1)[1]
        path = rest[1:].split("?", 1)[0] if rest.startswith("/") else ""
        if not path or path == ":memory:":
            raise StorageError(f"{url}: an in-memory database holds no audit data; point --database-url at the audit database")
        if not path.startswith("file:") and not os.path.isfile(path):
            raise StorageError(
                f"no audit database at {path} (resolved from {'--database-url' if database_url else 'WASTEAUDIT_DATABASE_URL or the default'}); "
                "set --database-url or WASTEAUDIT_DATABASE_URL"
            )
    engine = create_engine_for(url, verify=True)
    try:
        revision = current_revision(engine)
    except Exception:
        engine.dispose()
        raise
    if revision is None:
        engine.dispose()
        raise StorageError(f"{safe_url(url)} has no wasteaudit tables; nothing to report (is this the audit database?)")
    return engine


def build_report(
    database_url: str | None = None,
    *,
    week: str | None = None,
    since: str | date | datetime | None = None,
    until: str | date | datetime | None = None,
    by: str = "function",
    engine: "Engine | None" = None,
    now: datetime | None = None,
    settings: "Settings | None" = None,
    dropped_records: int | None = None,
    price_overrides: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """The report for one period (default: the last full ISO week before ``now``, UTC).

    Args:
        database_url: the audit database (default ``$WASTEAUDIT_DATABASE_URL`` or ``sqlite:///wasteaudit.db``);
            ignored when ``engine`` is given. A missing database is an error, never created.
        week: an ISO week, ``"2026-W47"``; or ``since``/``until`` (dates or datetimes, UTC, half-open).
        by: ``function`` | ``model`` | ``provider`` | ``tag`` | ``tag:KEY`` — which breakdown the
            renderers lead with; ``by_function`` and ``by_model`` are always included.
        now: the clock, for the default period and ``generated_at`` (tests inject it).
        settings: thresholds (:class:`wasteaudit.report.efficiency.Settings`).
        dropped_records: overrides the drop count the report reads from ``wasteaudit_drops``.
        price_overrides: prices for the missed-cache estimate (default: the configured ``price_overrides``).
    """
    from sqlalchemy.exc import SQLAlchemyError

    from wasteaudit.exceptions import StorageError
    from wasteaudit.report.build import build, parse_by
    from wasteaudit.report.period import resolve_period
    from wasteaudit.storage.engine import describe_error, safe_url

    period = resolve_period(week=week, since=since, until=until, now=now)
    dim, tag_key = parse_by(by)
    owned = engine is None
    if engine is None:
        engine = open_report_engine(database_url)
    try:
        return build(
            engine, period, by=dim, tag_key=tag_key, settings=settings, now=now,
            dropped_records=dropped_records, price_overrides=price_overrides,
        )
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot build the report from {safe_url(engine.url)}: {describe_error(exc)}") from None
    finally:
        if owned:
            engine.dispose()


def render(report: dict[str, Any], format: str = "text", *, width: int = 160) -> str:  # noqa: A002
    """The report as ``text`` (rich tables), ``md``, ``json`` or ``html`` (one self-contained file)."""
    if format == "json":
        import json

        return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    if format == "text":
        from wasteaudit.report.render_text import render_text

        return render_text(report, width=width)
    if format == "md":
        from wasteaudit.report.render_md import render_md

        return render_md(report)
    if format == "html":
        from wasteaudit.report.render_html import render_html

        return render_html(report)
    from wasteaudit.exceptions import ConfigError

    raise ConfigError(f"unknown report format {format!r}; use one of {', '.join(FORMATS)}")


def schema() -> dict[str, Any]:
    """The shipped JSON Schema of ``wasteaudit.report/v1``."""
    import json
    from importlib.resources import files

    return json.loads(files("wasteaudit").joinpath("schemas", "report.v1.json").read_text(encoding="utf-8"))
