"""The records wasteaudit captures: one per run, per LLM call, per HTTP attempt, per score.

These plain dataclasses are the contract between the request path (which fills them),
the writer (which stores them), exporters and the in-memory test kit. They hold no
behaviour and import nothing heavy, so building one costs a few microseconds.

Token fields follow one normalization for every provider (DESIGN §2):
``input_tokens`` includes cached input, ``output_tokens`` includes reasoning; detail
fields a provider did not report are ``None``, never 0.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal

UsageSource = Literal["provider", "estimated", "missing"]
FinishCategory = Literal["stop", "length", "tool", "filter", "refusal", "error"]
StreamState = Literal["completed", "abandoned", "error"]


_random = random.Random(os.urandom(32))
_time_ns = time.time_ns
_MILLIS_MASK = (1 << 48) - 1
# A forked child must not replay its parent's sequence of ids.
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))


def new_id() -> str:
    """A 128-bit id as 32 hex digits, time-ordered: 48 bits of Unix milliseconds, then 80 random bits.

    Unique across processes and hosts without coordination (80 random bits within a millisecond).
    Time-ordered, as UUIDv7 is, so that the primary-key and run-id indexes grow at their right
    edge: a random id lands on a random page of each index, a page read and a page written per
    row once the table outgrows the cache (``bench/bench_ingest.py``). The random bits come from
    a per-process generator seeded from the OS: unlike ``uuid4`` it makes no system call on the
    request path (which also released the GIL to the writer thread mid-call).
    """
    return "%012x%020x" % ((_time_ns() // 1_000_000) & _MILLIS_MASK, _random.getrandbits(80))


@dataclass(slots=True)
class AttemptRecord:
    """One HTTP attempt made by the SDK on behalf of one call (retries are attempts)."""

    index: int
    started_at: float
    duration_s: float | None = None
    status_code: int | None = None
    error_type: str | None = None
    request_id: str | None = None


@dataclass(slots=True)
class ChoiceContent:
    """What one returned choice (or the single Anthropic/Responses output) contained."""

    index: int
    text: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    reasoning_text: str | None = None


@dataclass(slots=True)
class CallRecord:
    """One SDK call (one logical request, however many HTTP attempts it took)."""

    id: str
    provider: str
    operation: str
    api: str
    started_at: float
    run_id: str | None = None
    function: str | None = None
    method: str = "create"
    request_model: str | None = None
    response_model: str | None = None
    response_id: str | None = None
    server_address: str | None = None
    server_port: int | None = None
    stream: bool = False
    ended_at: float | None = None
    duration_s: float | None = None
    time_to_first_chunk_s: float | None = None
    # arrival times (perf_counter) of a stream's chunks, kept only while OpenTelemetry metrics are
    # recorded (``gen_ai.client.operation.time_per_output_chunk``); never stored
    chunk_times: list[float] | None = None
    # request parameters that matter for waste and duplicate detection (max_tokens, n, temperature, ...)
    request_params: dict[str, Any] = field(default_factory=dict)
    output_type: str | None = None
    # usage, normalized
    usage_source: UsageSource = "missing"
    input_tokens: int | None = None
    input_cache_read_tokens: int | None = None
    input_cache_write_tokens: int | None = None
    output_tokens: int | None = None
    output_reasoning_tokens: int | None = None
    usage_details: dict[str, Any] | None = None
    service_tier: str | None = None
    # outcome
    finish_reasons: list[str | None] = field(default_factory=list)
    finish_category: FinishCategory | None = None
    stream_state: StreamState | None = None
    chunks: int | None = None
    status_code: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    # content (already filtered by the content mode before the record is queued)
    input_messages: Any = None
    system_instructions: Any = None
    choices: list[ChoiceContent] = field(default_factory=list)
    tool_definitions: Any = None
    response_format: Any = None
    content_mode: str = "full"
    content_truncated: bool = False
    # telemetry correlation
    trace_id: str | None = None
    span_id: str | None = None
    # explanations for anything we could not measure ("usage missing: stream cut", ...)
    gaps: list[str] = field(default_factory=list)
    # filled by the writer
    cost_usd: float | None = None
    price_version: str | None = None
    # set once the content policy (scrubbing, caps, content mode) has been applied
    policy_applied: bool = False

    @property
    def attempt_count(self) -> int:
        return max(1, len(self.attempts))


@dataclass(slots=True)
class RunRecord:
    """One execution of an ``@audit``-ed function (the unit quality and use attach to)."""

    id: str
    name: str
    started_at: float
    parent_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    ended_at: float | None = None
    status: Literal["running", "ok", "failed"] = "running"
    error_type: str | None = None
    validation: bool | None = None
    return_value: str | None = None
    return_truncated: bool = False
    used_values: list[str] = field(default_factory=list)
    trace_id: str | None = None
    span_id: str | None = None


@dataclass(slots=True)
class ScoreRecord:
    """A quality signal attached to a run: explicit score, feedback, validator or judge."""

    id: str
    run_id: str
    name: str
    value: float
    source: str = "api"
    created_at: float = field(default_factory=time.time)
    raw_value: Any = None
