"""OpenTelemetry metrics: the GenAI client metrics per call, and wasteaudit's waste and quality metrics.

Which metrics exist is declared once, in :data:`METRICS`; the instruments, the docs, the Grafana
dashboard test and the Prometheus name mapping (:func:`prometheus_series`) all read it.

* ``gen_ai.client.token.usage`` and ``gen_ai.client.operation.duration`` are recorded from each
  finished :class:`~wasteaudit.records.CallRecord` (by the call lifecycle hook) with the buckets
  the GenAI conventions recommend. Token usage only when the provider reported it (never an
  estimate); duration always, with ``error.type`` on failures;
  ``gen_ai.client.operation.time_to_first_chunk`` for streamed calls that received a chunk.
* ``wasteaudit.waste.tokens`` / ``wasteaudit.waste.cost`` when findings are produced
  (:func:`record_findings`, called by the scorer), ``wasteaudit.quality.score`` from score records,
  ``wasteaudit.records.dropped`` read from the writer's counters at each collection.

Attributes are low-cardinality only: no call, run, trace or response ids.

Nothing is recorded (and nothing here is even imported) until a real MeterProvider exists: the
app's global one, one passed to :func:`use_meter_provider`, or the one
:func:`wasteaudit.export.setup_export` sets up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wasteaudit._internal import semconv as sc
from wasteaudit.export import _state

__all__ = [
    "METRICS",
    "MetricSpec",
    "MetricsRecorder",
    "TOKEN_BUCKETS",
    "DURATION_BUCKETS",
    "SCORE_BUCKETS",
    "current_recorder",
    "finding_cost",
    "prometheus_series",
    "record_findings",
    "record_score",
    "stop_recording",
    "use_meter_provider",
]

# Attribute names used only by metrics and events.
TOKEN_TYPE = "gen_ai.token.type"
WASTE_KIND = "wasteaudit.waste.kind"
WASTE_SUBKIND = "wasteaudit.waste.subkind"
WASTE_TIER = "wasteaudit.waste.tier"
SCORE_NAME = "wasteaudit.score.name"
SCORE_SOURCE = "wasteaudit.score.source"
DROP_CAUSE = "wasteaudit.drop.cause"
NO_RUN = "(none)"

#: Recommended by the GenAI metric conventions (``gen_ai.client.token.usage``).
TOKEN_BUCKETS: tuple[float, ...] = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
#: Recommended by the GenAI metric conventions (``gen_ai.client.operation.duration``), seconds.
DURATION_BUCKETS: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
#: Streaming latency (``gen_ai.client.operation.time_to_first_chunk``), seconds: the boundaries the
#: GenAI conventions give their time-to-first-token histogram (dense below one second).
FIRST_CHUNK_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: Streaming pace (``gen_ai.client.operation.time_per_output_chunk``), seconds: the boundaries the
#: GenAI conventions give their time-per-output-token histogram.
CHUNK_INTERVAL_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
#: Quality scores live in [0, 1].
SCORE_BUCKETS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class MetricSpec:
    """One emitted metric: the single source for instruments, docs and dashboard checks."""

    name: str
    instrument: str  # histogram | counter | observable_counter
    unit: str
    description: str
    attributes: tuple[str, ...]
    buckets: tuple[float, ...] | None = None


_CALL_ATTRS = (sc.OPERATION, sc.PROVIDER, sc.REQUEST_MODEL, sc.RESPONSE_MODEL, sc.SERVER_ADDRESS, sc.SERVER_PORT)
_WASTE_ATTRS = (WASTE_KIND, WASTE_SUBKIND, WASTE_TIER, sc.WA_RUN_NAME, sc.REQUEST_MODEL)

TOKEN_USAGE = MetricSpec(
    "gen_ai.client.token.usage",
    "histogram",
    "{token}",
    "Number of input and output tokens used (billed usage reported by the provider).",
    (*_CALL_ATTRS[:2], TOKEN_TYPE, *_CALL_ATTRS[2:]),
    TOKEN_BUCKETS,
)
OPERATION_DURATION = MetricSpec(
    "gen_ai.client.operation.duration",
    "histogram",
    "s",
    "GenAI operation duration, all retries included.",
    (*_CALL_ATTRS, sc.ERROR_TYPE),
    DURATION_BUCKETS,
)
TIME_TO_FIRST_CHUNK = MetricSpec(
    "gen_ai.client.operation.time_to_first_chunk",
    "histogram",
    "s",
    "Time from issuing a streamed generation request to receiving its first chunk.",
    _CALL_ATTRS,
    FIRST_CHUNK_BUCKETS,
)
TIME_PER_OUTPUT_CHUNK = MetricSpec(
    "gen_ai.client.operation.time_per_output_chunk",
    "histogram",
    "s",
    "Time between a streamed response's consecutive chunks, for each chunk after the first.",
    _CALL_ATTRS,
    CHUNK_INTERVAL_BUCKETS,
)
WASTE_TOKENS = MetricSpec(
    "wasteaudit.waste.tokens",
    "counter",
    "{token}",
    "Billed output tokens labelled as waste by the scorer.",
    _WASTE_ATTRS,
)
WASTE_COST = MetricSpec(
    "wasteaudit.waste.cost",
    "counter",
    "{USD}",
    "Cost in US dollars of the output tokens labelled as waste (what the call would have cost less).",
    _WASTE_ATTRS,
)
QUALITY_SCORE = MetricSpec(
    "wasteaudit.quality.score",
    "histogram",
    "1",
    "Quality scores attached to runs (explicit scores, validators, feedback), in [0, 1].",
    (SCORE_NAME, SCORE_SOURCE, sc.WA_RUN_NAME),
    SCORE_BUCKETS,
)
RECORDS_DROPPED = MetricSpec(
    "wasteaudit.records.dropped",
    "observable_counter",
    "{record}",
    "Records the storage writer lost (queue full, database error, invalid, after close).",
    (DROP_CAUSE,),
)

METRICS: tuple[MetricSpec, ...] = (TOKEN_USAGE, OPERATION_DURATION, TIME_TO_FIRST_CHUNK, TIME_PER_OUTPUT_CHUNK, WASTE_TOKENS, WASTE_COST, QUALITY_SCORE, RECORDS_DROPPED)

# --- Prometheus names ---------------------------------------------------------------------------

# The OpenTelemetry Collector's (and Prometheus' own OTLP receiver's) unit translation, for the
# units used here and the common ones: annotations in braces are dropped, "1" adds nothing.
_PROM_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "", "%": "percent", "min": "minutes", "h": "hours", "d": "days"}


def _prom_unit(unit: str) -> str:
    import re

    bare = re.sub(r"\{[^}]*\}", "", unit).strip()
    if not bare:
        return ""
    return _PROM_UNITS.get(bare, re.sub(r"[^a-zA-Z0-9_]", "_", bare))


def prometheus_base_name(spec: MetricSpec) -> str:
    """``gen_ai.client.operation.duration`` (unit s) -> ``gen_ai_client_operation_duration_seconds``."""
    import re

    name = re.sub(r"[^a-zA-Z0-9_:]", "_", spec.name)
    unit = _prom_unit(spec.unit)
    if unit and not name.endswith("_" + unit):
        name = f"{name}_{unit}"
    if spec.instrument in ("counter", "observable_counter"):
        name += "_total"
    return name


def prometheus_series(specs: Iterable[MetricSpec] = METRICS) -> dict[str, MetricSpec]:
    """Every Prometheus series name the metrics become (histograms: ``_bucket``, ``_sum``, ``_count``)."""
    out: dict[str, MetricSpec] = {}
    for spec in specs:
        base = prometheus_base_name(spec)
        if spec.instrument == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                out[base + suffix] = spec
        else:
            out[base] = spec
    return out


# --- recording ----------------------------------------------------------------------------------


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


class _DropCounter:
    """Cumulative drops across writer restarts (``configure()`` starts a new writer with new counters)."""

    _CAUSES = ("queue_full", "db_error", "invalid", "closed")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._base = dict.fromkeys(self._CAUSES, 0)
        self._last: dict[str, int] = dict.fromkeys(self._CAUSES, 0)
        self._writer_ref: Any = None

    def totals(self) -> dict[str, int]:
        from wasteaudit._internal import pipeline

        writer = pipeline.current_writer()
        stats = pipeline.stats() if writer is not None else {}
        with self._lock:
            if writer is not self._writer_ref:
                for cause in self._CAUSES:
                    self._base[cause] += self._last[cause]
                    self._last[cause] = 0
                self._writer_ref = writer
            for cause in self._CAUSES:
                value = stats.get("dropped_" + cause)
                if isinstance(value, int) and value >= self._last[cause]:
                    self._last[cause] = value
            return {cause: self._base[cause] + self._last[cause] for cause in self._CAUSES}


class MetricsRecorder:
    """The instruments on one MeterProvider, created once; recording never raises into the app."""

    def __init__(self, meter_provider: Any) -> None:
        from wasteaudit._version import __version__

        self.meter_provider = meter_provider
        meter = meter_provider.get_meter("wasteaudit", __version__)
        self.meter = meter
        self._tokens = self._histogram(meter, TOKEN_USAGE)
        self._duration = self._histogram(meter, OPERATION_DURATION)
        self._first_chunk = self._histogram(meter, TIME_TO_FIRST_CHUNK)
        self._chunk_interval = self._histogram(meter, TIME_PER_OUTPUT_CHUNK)
        self._waste_tokens = meter.create_counter(WASTE_TOKENS.name, unit=WASTE_TOKENS.unit, description=WASTE_TOKENS.description)
        self._waste_cost = meter.create_counter(WASTE_COST.name, unit=WASTE_COST.unit, description=WASTE_COST.description)
        self._quality = self._histogram(meter, QUALITY_SCORE)
        self._drops = _DropCounter()
        self._dropped = meter.create_observable_counter(
            RECORDS_DROPPED.name, callbacks=[self._observe_drops], unit=RECORDS_DROPPED.unit, description=RECORDS_DROPPED.description
        )

    @staticmethod
    def _histogram(meter: Any, spec: MetricSpec) -> Any:
        try:
            return meter.create_histogram(
                spec.name, unit=spec.unit, description=spec.description, explicit_bucket_boundaries_advisory=list(spec.buckets or ())
            )
        except TypeError:  # an API older than the bucket advisory: default buckets
            return meter.create_histogram(spec.name, unit=spec.unit, description=spec.description)

    # -- per call (request path: keep it cheap) ------------------------------------------------
    def record_call(self, record: Any) -> None:
        attrs: dict[str, Any] = {sc.OPERATION: record.operation, sc.PROVIDER: record.provider}
        if record.request_model:
            attrs[sc.REQUEST_MODEL] = record.request_model
        if record.response_model:
            attrs[sc.RESPONSE_MODEL] = record.response_model
        if record.server_address:
            attrs[sc.SERVER_ADDRESS] = record.server_address
        if record.server_port:
            attrs[sc.SERVER_PORT] = record.server_port
        if record.duration_s is not None:
            if record.error_type:
                self._duration.record(record.duration_s, {**attrs, sc.ERROR_TYPE: record.error_type})
            else:
                self._duration.record(record.duration_s, attrs)
        first_chunk = getattr(record, "time_to_first_chunk_s", None)
        if first_chunk is not None:  # streamed calls that received a chunk
            self._first_chunk.record(first_chunk, attrs)
        times = getattr(record, "chunk_times", None)
        if times and len(times) > 1:  # each chunk after the first: the time since the one before
            interval = self._chunk_interval.record
            previous = times[0]
            for at in times[1:]:
                interval(at - previous, attrs)
                previous = at
        if record.usage_source == "provider":
            # billed usage only: an estimate or a missing count is not reported (GenAI conventions)
            if record.input_tokens is not None:
                self._tokens.record(record.input_tokens, {**attrs, TOKEN_TYPE: "input"})
            if record.output_tokens is not None:
                self._tokens.record(record.output_tokens, {**attrs, TOKEN_TYPE: "output"})

    # -- off the request path ------------------------------------------------------------------
    def record_findings(self, findings: Iterable[Any], calls_by_id: Mapping[str, Any]) -> int:
        count = 0
        costs: dict[tuple[str, int], float | None] = {}
        for finding in findings:
            call_id = _get(finding, "call_id")
            call = calls_by_id.get(call_id) if call_id is not None else None
            tokens = _get(finding, "tokens") or 0
            attrs: dict[str, Any] = {
                WASTE_KIND: str(_get(finding, "kind")),
                WASTE_SUBKIND: str(_get(finding, "subkind")),
                WASTE_TIER: str(_get(finding, "tier")),
                sc.WA_RUN_NAME: (_get(call, "function") if call is not None else None) or NO_RUN,
            }
            model = _get(call, "request_model") if call is not None else None
            if model:
                attrs[sc.REQUEST_MODEL] = model
            if isinstance(tokens, int) and tokens > 0:
                self._waste_tokens.add(tokens, attrs)
            cost = finding_cost(finding, call, _cache=costs)
            if cost is not None and cost > 0:
                self._waste_cost.add(cost, attrs)
            count += 1
        return count

    def record_score(self, score: Any, run_name: str | None = None) -> None:
        value = _get(score, "value")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        attrs = {SCORE_NAME: str(_get(score, "name") or "quality"), SCORE_SOURCE: str(_get(score, "source") or "api"), sc.WA_RUN_NAME: run_name or NO_RUN}
        self._quality.record(float(value), attrs)

    def _observe_drops(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        try:
            totals = self._drops.totals()
        except Exception:  # a broken writer must not break the collection cycle
            return []
        return [Observation(value, {DROP_CAUSE: cause}) for cause, value in totals.items()]


# --- cost of a finding --------------------------------------------------------------------------


def _as_call_record(call: Any) -> Any:
    from wasteaudit.records import CallRecord

    if isinstance(call, CallRecord):
        return call
    started = _get(call, "started_at")
    if isinstance(started, datetime):
        started = started.timestamp()
    return CallRecord(
        id=str(_get(call, "id") or ""),
        provider=_get(call, "provider") or "",
        operation=_get(call, "operation") or "chat",
        api=_get(call, "api") or "",
        started_at=float(started or 0.0),
        request_model=_get(call, "request_model"),
        response_model=_get(call, "response_model"),
        usage_source=_get(call, "usage_source") or "missing",
        input_tokens=_get(call, "input_tokens"),
        input_cache_read_tokens=_get(call, "input_cache_read_tokens"),
        input_cache_write_tokens=_get(call, "input_cache_write_tokens"),
        output_tokens=_get(call, "output_tokens"),
        output_reasoning_tokens=_get(call, "output_reasoning_tokens"),
        usage_details=_get(call, "usage_details"),
        service_tier=_get(call, "service_tier"),
    )


def finding_cost(finding: Any, call: Any, *, _cache: dict[Any, Any] | None = None) -> float | None:
    """USD of a finding's tokens: its own ``cost_usd`` when the scorer or storage set one, else what
    the call would have cost less without them (priced with the same table and overrides as the
    writer). ``None`` when the call is unpriced or its usage unknown: never a silent $0."""
    own = _get(finding, "cost_usd")
    if isinstance(own, (int, float)) and not isinstance(own, bool):
        return float(own)
    evidence = _get(finding, "evidence")
    if isinstance(evidence, Mapping):
        value = evidence.get("cost_usd")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    tokens = _get(finding, "tokens")
    if call is None or not isinstance(tokens, int) or tokens <= 0:
        return None
    output = _get(call, "output_tokens")
    if not isinstance(output, int) or output <= 0:
        return None
    import dataclasses

    from wasteaudit.config import get_settings
    from wasteaudit.storage.pricing import price_call

    overrides = get_settings().price_overrides
    record = _as_call_record(call)
    key = (record.id or str(id(call)), tokens)
    if _cache is not None and key in _cache:
        return _cache[key]
    full, _, status = price_call(record, overrides)
    result: float | None = None
    if full is not None and status != "unpriced":
        reasoning = record.output_reasoning_tokens
        reduced = dataclasses.replace(
            record,
            output_tokens=max(0, output - tokens),
            output_reasoning_tokens=None if reasoning is None else min(reasoning, max(0, output - tokens)),
        )
        less, _, _ = price_call(reduced, overrides)
        if less is not None:
            result = max(0.0, full - less)
    if _cache is not None:
        _cache[key] = result
    return result


# --- the active recorder ------------------------------------------------------------------------

_lock = threading.Lock()
_score_sink: Any = None


class _ScoreSink:
    """Pipeline sink: quality scores go to the histogram as they are emitted."""

    def submit(self, record: Any) -> bool:
        from wasteaudit.records import ScoreRecord

        if isinstance(record, ScoreRecord):
            recorder = _state.recorder
            if recorder is not None:
                recorder.record_score(record, _run_name(record.run_id))
        return True


def _run_name(run_id: str | None) -> str | None:
    """The run's name when the score is given inside that run (ScoreRecord carries only the id)."""
    if run_id is None:
        return None
    try:
        from wasteaudit._internal.runs import current_run

        run = current_run()
        while run is not None:
            if run.id == run_id:
                return run.name
            run = run.parent
    except Exception:
        return None
    return None


def use_meter_provider(meter_provider: Any) -> MetricsRecorder:
    """Record wasteaudit's metrics into ``meter_provider`` from now on (instruments created once)."""
    global _score_sink
    with _lock:
        current = _state.recorder
        if current is not None and current.meter_provider is meter_provider:
            return current
        recorder = MetricsRecorder(meter_provider)
        _state.recorder = recorder
        if _score_sink is None:
            from wasteaudit._internal import pipeline

            _score_sink = _ScoreSink()
            pipeline.add_sink(_score_sink)
        return recorder


def stop_recording() -> None:
    """Stop recording metrics (until a MeterProvider is installed again or found globally)."""
    global _score_sink
    with _lock:
        _state.recorder = None
        _state.noop_provider = None
        if _score_sink is not None:
            from wasteaudit._internal import pipeline

            pipeline.remove_sink(_score_sink)
            _score_sink = None


def current_recorder() -> MetricsRecorder | None:
    """The active recorder, activating on the global MeterProvider if it is a real one."""
    recorder = _state.recorder
    if recorder is None:
        from wasteaudit.export._hook import activate_from_global

        recorder = activate_from_global()
    return recorder


def record_findings(findings: Iterable[Any], calls_by_id: Mapping[str, Any]) -> int:
    """Add findings to ``wasteaudit.waste.tokens`` / ``wasteaudit.waste.cost``; returns how many.

    For the scorer runner: call it once per finding, when the finding is first written (calling
    it again for the same finding counts it twice). ``calls_by_id`` maps call ids to the calls
    (``CallRecord`` or stored rows) for run name, model and pricing. Never raises.
    """
    try:
        recorder = current_recorder()
        if recorder is None:
            return 0
        count = recorder.record_findings(findings, calls_by_id)
        _state.count_event("findings_recorded", count)
        return count
    except Exception as exc:
        from wasteaudit._internal.safety import internal_error

        internal_error("export.record_findings", exc)
        return 0


def record_score(score: Any, run_name: str | None = None) -> None:
    """Record one quality score (a ScoreRecord or a stored score row) into ``wasteaudit.quality.score``."""
    try:
        recorder = current_recorder()
        if recorder is not None:
            recorder.record_score(score, run_name)
    except Exception as exc:
        from wasteaudit._internal.safety import internal_error

        internal_error("export.record_score", exc)
