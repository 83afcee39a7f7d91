"""wasteaudit: how many of the LLM tokens you pay for are wasted, and why.

    import wasteaudit
    wasteaudit.configure(database_url="sqlite:///audit.db")
    wasteaudit.instrument()

    @wasteaudit.audit
    def answer(question: str) -> str: ...

Importing this package is light: no SDK, SQLAlchemy, torch or sentence-transformers is loaded
until it is needed (and the heavy ones never on the app's request path).
"""

from __future__ import annotations

import atexit
from typing import TYPE_CHECKING, Any

from wasteaudit._version import __version__
from wasteaudit.audit import audit, current_run_id, mark_used, score
from wasteaudit.exceptions import ConfigError, WasteAuditError
from wasteaudit.instrumentation import instrument, instrument_anthropic, instrument_openai

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "__version__",
    "audit",
    "build_report",
    "configure",
    "ConfigError",
    "current_run_id",
    "flush",
    "instrument",
    "instrument_anthropic",
    "instrument_openai",
    "mark_used",
    "score",
    "shutdown",
    "status",
    "track_json",
    "WasteAuditError",
]


def configure(
    *,
    database_url: str | None = None,
    content_mode: str | None = None,
    enabled: bool | None = None,
    redact: "Callable[[str], str] | None" = None,
    **options: Any,
) -> None:
    """Set options (each also readable from its ``WASTEAUDIT_*`` variable); validates eagerly.

    A wrong value raises :class:`ConfigError` here, at start-up, never later in a request.
    Other options: see ``wasteaudit.config.OPTIONS`` (``max_output_bytes``, ``queue_size``,
    ``price_overrides``, ``storage``, ``auto_migrate``, ...).
    """
    from wasteaudit._internal import pipeline
    from wasteaudit.config import set_settings, settings_from_env

    settings = settings_from_env(
        database_url=database_url,
        content_mode=content_mode,
        enabled=enabled,
        redact=redact,
        _explicit=True,
        **options,
    )
    if settings.storage and settings.enabled:
        # Fail fast on a malformed URL or a missing driver, without connecting: a database that is
        # down now may be up later, and the writer buffers until it is (fail-open).
        from wasteaudit.storage.engine import create_engine_for, resolve_url

        create_engine_for(resolve_url(settings.database_url)).dispose()
    pipeline.reset_writer()
    set_settings(settings)
    from wasteaudit.export import apply_settings as apply_export_settings

    apply_export_settings(settings)  # export="otlp": OTLP set up (or plugged in) now; else a no-op


def flush(timeout: float | None = None) -> bool:
    """Write everything recorded so far; True when nothing is left pending."""
    from wasteaudit._internal import pipeline

    return pipeline.flush(timeout)


def shutdown(timeout: float | None = 5.0) -> None:
    """Flush and stop the background writer (also runs at interpreter exit)."""
    from wasteaudit._internal import pipeline

    pipeline.reset_writer(timeout)


def status() -> dict[str, Any]:
    """Writer counters: submitted, written, dropped (by cause), pending, last error; ``export``:
    OTLP export counters per signal (exported / failed batches, last error)."""
    from wasteaudit._internal import pipeline
    from wasteaudit._internal.safety import internal_error_counts

    info = pipeline.stats()
    info["internal_errors"] = internal_error_counts()
    from wasteaudit.export import export_status

    info["export"] = export_status()
    return info


def track_json(value: Any) -> Any:
    """Wrap parsed JSON so the fields the app reads are recorded; unread fields count as unused output."""
    from wasteaudit.scoring.jsonuse import track_json as _track

    return _track(value)


def build_report(*args: Any, **kwargs: Any) -> Any:
    """The weekly report data the CLI renders (see ``wasteaudit.report``)."""
    from wasteaudit.report import build_report as _build

    return _build(*args, **kwargs)


atexit.register(shutdown, 5.0)
