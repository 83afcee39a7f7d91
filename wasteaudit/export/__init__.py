"""OpenTelemetry export: OTLP setup, GenAI and waste metrics, waste findings as events.

* :func:`setup_export` (``wasteaudit.configure(export="otlp")``) — OTLP/HTTP export of spans,
  metrics and events, plugged into the app's providers when it has them (``otlp.py``).
* :func:`record_findings` / :func:`emit_findings` / :func:`export_findings` — for the scorer: waste
  counters, and one ``wasteaudit.waste.finding`` event per finding linked to the call's span.
* The GenAI client metrics are recorded per finished call by the call lifecycle (``_hook.py``).

Importing this package is light (standard library only): the OpenTelemetry SDK and exporters are
loaded by the functions that need them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wasteaudit.export.otlp import ExportHandle

__all__ = [
    "apply_settings",
    "emit_findings",
    "export_findings",
    "export_status",
    "record_findings",
    "record_score",
    "setup_export",
    "shutdown_export",
    "use_meter_provider",
]


def setup_export(**options: Any) -> "ExportHandle":
    """See :func:`wasteaudit.export.otlp.setup_export`."""
    from wasteaudit.export.otlp import setup_export as _setup

    return _setup(**options)


def shutdown_export(timeout_s: float = 5.0) -> None:
    from wasteaudit.export.otlp import shutdown_export as _shutdown

    _shutdown(timeout_s)


def apply_settings(settings: Any) -> Any:
    """Called by ``wasteaudit.configure()``. With export off (the default) and nothing set up
    before, it returns at once and imports nothing."""
    import sys

    from wasteaudit.export import _state

    mode = (getattr(settings, "export", "") or "").strip().lower()
    if mode in ("", "none"):
        otlp = sys.modules.get("wasteaudit.export.otlp")
        has_handle = otlp is not None and otlp.current_handle() is not None
        metrics_off = not settings.enabled or not getattr(settings, "export_metrics", True)
        if not has_handle and not (metrics_off and _state.recorder is not None):
            return None
    from wasteaudit.export.otlp import apply_settings as _apply

    return _apply(settings)


def export_status() -> dict[str, Any]:
    """Counters for ``wasteaudit.status()["export"]`` (cheap; loads nothing)."""
    import sys

    from wasteaudit.export import _state

    module = sys.modules.get("wasteaudit.export.otlp")
    if module is not None:
        return module.export_status()
    info = _state.snapshot()
    info["configured"] = False
    info["endpoints"] = {}
    return info


def record_findings(findings: Iterable[Any], calls_by_id: Mapping[str, Any]) -> int:
    from wasteaudit.export.metrics import record_findings as _record

    return _record(findings, calls_by_id)


def record_score(score: Any, run_name: str | None = None) -> None:
    from wasteaudit.export.metrics import record_score as _record

    _record(score, run_name)


def emit_findings(call: Any, findings: Iterable[Any], **options: Any) -> int:
    from wasteaudit.export.events import emit_findings as _emit

    return _emit(call, findings, **options)


def use_meter_provider(meter_provider: Any) -> Any:
    from wasteaudit.export.metrics import use_meter_provider as _use

    return _use(meter_provider)


def export_findings(findings: Iterable[Any], calls_by_id: Mapping[str, Any]) -> None:
    """One call for the scorer runner: waste counters for all findings, and one event per finding
    on its call's span. Call it once per newly written finding; never raises."""
    try:
        findings = list(findings)
        if not findings:
            return
        record_findings(findings, calls_by_id)
        by_call: dict[str, list[Any]] = {}
        for finding in findings:
            call_id = finding.get("call_id") if isinstance(finding, Mapping) else getattr(finding, "call_id", None)
            by_call.setdefault(call_id, []).append(finding)
        for call_id, group in by_call.items():
            call = calls_by_id.get(call_id)
            emit_findings(call if call is not None else {"id": call_id}, group)
    except Exception as exc:
        from wasteaudit._internal.safety import internal_error

        internal_error("export.export_findings", exc)
