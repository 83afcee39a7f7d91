"""Metrics: GenAI client metrics from real SDK calls, waste / quality / drop metrics, cost when idle."""

from __future__ import annotations

import time

import openai
import pytest
from export_support import metric, points, run_app

import wasteaudit
from wasteaudit.export import _hook, _state
from wasteaudit.export import metrics as wm
from wasteaudit.localllm import Reply
from wasteaudit.localllm import openai_bodies as ob
from wasteaudit.records import CallRecord, ScoreRecord
from wasteaudit.scoring.findings import Finding

MESSAGES = [{"role": "user", "content": "Say hi"}]


def _by_type(data_points, token_type):
    return [p for p in data_points if p.attributes.get("gen_ai.token.type") == token_type]


def test_a_real_call_records_token_usage_and_duration_with_the_recommended_buckets(oai, llm_server, metric_reader, records):
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi there!", prompt_tokens=12, completion_tokens=3)))
    oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    usage = metric(metric_reader, "gen_ai.client.token.usage")
    assert usage.unit == "{token}"
    (inp,) = _by_type(usage.data.data_points, "input")
    (out,) = _by_type(usage.data.data_points, "output")
    assert (inp.sum, inp.count, out.sum, out.count) == (12, 1, 3, 1)
    assert tuple(inp.explicit_bounds) == wm.TOKEN_BUCKETS
    call = records.calls[0]
    assert dict(inp.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.token.type": "input",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "server.address": "127.0.0.1",
        "server.port": call.server_port,
    }

    duration = metric(metric_reader, "gen_ai.client.operation.duration")
    assert duration.unit == "s"
    (point,) = duration.data.data_points
    assert tuple(point.explicit_bounds) == wm.DURATION_BUCKETS
    assert point.count == 1 and 0 < point.sum < 5
    assert "error.type" not in point.attributes
    assert point.sum == pytest.approx(call.duration_s)


def test_a_stream_records_time_to_first_chunk_and_a_plain_call_does_not(oai, llm_server, metric_reader, records):
    llm_server.enqueue(Reply(json=ob.chat_completion("Plain")))
    oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert points(metric_reader, "gen_ai.client.operation.time_to_first_chunk") == []

    llm_server.enqueue(Reply(sse=ob.chat_chunks(["Hel", "lo", "!"])))
    text = "".join(c.choices[0].delta.content or "" for c in oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True) if c.choices)
    assert text == "Hello!"
    metric_ = metric(metric_reader, "gen_ai.client.operation.time_to_first_chunk")
    (point,) = metric_.data.data_points
    stream_call = records.calls[-1]
    assert metric_.unit == "s" and tuple(point.explicit_bounds) == wm.FIRST_CHUNK_BUCKETS
    assert point.count == 1 and point.sum == pytest.approx(stream_call.time_to_first_chunk_s)
    assert 0 < stream_call.time_to_first_chunk_s <= stream_call.duration_s
    assert point.attributes["gen_ai.operation.name"] == "chat" and point.attributes["gen_ai.request.model"] == "gpt-4o-mini"


def test_a_stream_records_the_time_between_its_chunks(oai, llm_server, metric_reader, records):
    llm_server.enqueue(Reply(json=ob.chat_completion("Plain")))
    oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert points(metric_reader, "gen_ai.client.operation.time_per_output_chunk") == []

    llm_server.enqueue(Reply(sse=ob.chat_chunks(["Hel", "lo", "!"]), event_delay_s=0.03))
    chunks = list(oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    metric_ = metric(metric_reader, "gen_ai.client.operation.time_per_output_chunk")
    (point,) = metric_.data.data_points
    call = records.calls[-1]
    assert metric_.unit == "s" and tuple(point.explicit_bounds) == wm.CHUNK_INTERVAL_BUCKETS
    assert point.count == len(chunks) - 1 == call.chunks - 1  # every chunk after the first
    assert point.min >= 0.02 and point.sum <= call.duration_s  # the server's 30 ms pace
    assert point.attributes["gen_ai.operation.name"] == "chat" and point.attributes["gen_ai.request.model"] == "gpt-4o-mini"


def test_chunks_are_not_timed_without_metrics(oai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.chat_chunks(["Hel", "lo"])))
    list(oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert records.calls[-1].chunk_times is None


def test_a_failed_call_records_duration_with_error_type_and_no_token_usage(oai, llm_server, metric_reader):
    llm_server.enqueue(Reply(status=400, json={"error": {"message": "bad", "type": "invalid_request_error", "code": None}}))
    with pytest.raises(openai.BadRequestError):
        oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    (point,) = points(metric_reader, "gen_ai.client.operation.duration")
    assert point.attributes["error.type"] == "invalid_request_error"
    assert "gen_ai.response.model" not in point.attributes
    assert points(metric_reader, "gen_ai.client.token.usage") == []


def test_only_provider_reported_usage_is_recorded_as_token_usage(metric_reader):
    base = dict(provider="openai", operation="chat", api="chat.completions", started_at=time.time(), duration_s=0.2, request_model="m")
    _hook.call_finished(CallRecord(id="a", usage_source="estimated", input_tokens=5, output_tokens=5, **base))
    _hook.call_finished(CallRecord(id="b", usage_source="missing", **base))
    assert points(metric_reader, "gen_ai.client.token.usage") == []
    (point,) = points(metric_reader, "gen_ai.client.operation.duration")
    assert point.count == 2


def test_metric_attributes_are_low_cardinality(oai, llm_server, metric_reader):
    for i in range(3):
        llm_server.enqueue(Reply(json=ob.chat_completion(f"answer {i}", id=f"chatcmpl-{i}")))
        oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    wm.record_findings([Finding(call_id="c1", run_id="r1", kind="failed", subkind="truncated", tier="confirmed", tokens=7, confidence=1.0)], {})
    data = metric_reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    assert not [k for k in p.attributes if k.endswith(".id")], (m.name, dict(p.attributes))
    (point,) = _by_type(points(metric_reader, "gen_ai.client.token.usage"), "output")
    assert point.count == 3  # three calls, one series


def _call(**changes):
    values = dict(id="call1", provider="openai", operation="chat", api="chat.completions", started_at=time.time(),
                  function="summarize", request_model="gpt-4o-mini", usage_source="provider", input_tokens=100, output_tokens=50)
    values.update(changes)
    return CallRecord(**values)


def _output_rate(model: str, provider: str = "openai") -> float:
    """USD per output token from the same price table, for a call with no input."""
    from wasteaudit.storage.pricing import price_call

    cost, _, _ = price_call(_call(request_model=model, provider=provider, input_tokens=0, output_tokens=1_000_000))
    return cost / 1_000_000


def test_findings_add_waste_tokens_and_cost_per_kind_subkind_tier_run_and_model(metric_reader):
    call = _call()
    findings = [
        Finding(call_id="call1", run_id="r1", kind="redundant", subkind="repetition", tier="confirmed", tokens=20, confidence=0.9),
        Finding(call_id="call1", run_id="r1", kind="redundant", subkind="filler", tier="possible", tokens=5, confidence=0.5),
        Finding(call_id="call1", run_id="r1", kind="redundant", subkind="repetition", tier="confirmed", tokens=10, confidence=0.9),
    ]
    assert wasteaudit.export.record_findings(findings, {"call1": call}) == 3

    tokens = {(p.attributes["wasteaudit.waste.subkind"], p.attributes["wasteaudit.waste.tier"]): p for p in points(metric_reader, "wasteaudit.waste.tokens")}
    assert tokens[("repetition", "confirmed")].value == 30
    assert tokens[("filler", "possible")].value == 5
    assert dict(tokens[("repetition", "confirmed")].attributes) == {
        "wasteaudit.waste.kind": "redundant",
        "wasteaudit.waste.subkind": "repetition",
        "wasteaudit.waste.tier": "confirmed",
        "wasteaudit.run.name": "summarize",
        "gen_ai.request.model": "gpt-4o-mini",
    }
    cost = {p.attributes["wasteaudit.waste.subkind"]: p.value for p in points(metric_reader, "wasteaudit.waste.cost")}
    rate = _output_rate("gpt-4o-mini")
    assert rate > 0
    assert cost["repetition"] == pytest.approx(30 * rate)
    assert cost["filler"] == pytest.approx(5 * rate)
    assert metric(metric_reader, "wasteaudit.waste.cost").data.is_monotonic
    assert wasteaudit.status()["export"]["findings_recorded"] == 3


def test_finding_cost_prefers_a_stored_cost_and_is_absent_for_unpriced_calls(metric_reader):
    stored = {"call_id": "x", "kind": "failed", "subkind": "truncated", "tier": "confirmed", "tokens": 10, "cost_usd": 0.25, "confidence": 1.0}
    unpriced = Finding(call_id="y", run_id=None, kind="failed", subkind="refusal", tier="confirmed", tokens=10, confidence=1.0)
    calls = {"x": _call(id="x"), "y": _call(id="y", request_model="my-local-llama", function=None)}
    wm.record_findings([stored, unpriced], calls)
    cost = {p.attributes["wasteaudit.waste.subkind"]: p.value for p in points(metric_reader, "wasteaudit.waste.cost")}
    assert cost == {"truncated": 0.25}  # nothing for the unpriced model: never a silent $0
    tokens = {p.attributes["wasteaudit.waste.subkind"]: p for p in points(metric_reader, "wasteaudit.waste.tokens")}
    assert tokens["refusal"].value == 10 and tokens["refusal"].attributes["wasteaudit.run.name"] == "(none)"


def test_finding_cost_of_a_stored_row_uses_its_timestamps_and_the_same_table(metric_reader):
    from datetime import datetime, timezone

    row = {"id": "r", "provider": "openai", "operation": "chat", "api": "chat.completions", "started_at": datetime.now(timezone.utc),
           "request_model": "gpt-4o-mini", "usage_source": "provider", "input_tokens": 10, "output_tokens": 40, "cost_usd": 0.001}
    finding = Finding(call_id="r", run_id=None, kind="unused", subkind="extra_choice", tier="confirmed", tokens=40, confidence=1.0)
    assert wm.finding_cost(finding, row) == pytest.approx(40 * _output_rate("gpt-4o-mini"))


def test_quality_scores_go_to_a_histogram_with_the_run_name(metric_reader, memory_only):
    @wasteaudit.audit(name="classify")
    def classify() -> str:
        wasteaudit.score(0.75)
        wasteaudit.score(True, name="valid")
        return "ok"

    classify()
    series = {p.attributes["wasteaudit.score.name"]: p for p in points(metric_reader, "wasteaudit.quality.score")}
    assert series["quality"].sum == 0.75 and series["quality"].count == 1
    assert series["quality"].attributes["wasteaudit.run.name"] == "classify"
    assert series["valid"].sum == 1.0
    assert tuple(series["quality"].explicit_bounds) == wm.SCORE_BUCKETS
    wm.record_score(ScoreRecord(id="s", run_id="later", name="feedback", value=0.5, source="feedback"), run_name="classify")
    series = {p.attributes["wasteaudit.score.name"]: p for p in points(metric_reader, "wasteaudit.quality.score")}
    assert series["feedback"].attributes["wasteaudit.score.source"] == "feedback"


class _FakeWriter:
    def __init__(self, **stats):
        self.values = {"dropped_queue_full": 0, "dropped_db_error": 0, "dropped_invalid": 0, "dropped_closed": 0, **stats}

    def stats(self):
        return dict(self.values)


def test_records_dropped_reads_the_writer_and_stays_monotonic_across_writer_restarts(metric_reader, monkeypatch):
    from wasteaudit._internal import pipeline

    first = _FakeWriter(dropped_queue_full=3, dropped_db_error=1)
    monkeypatch.setattr(pipeline, "_writer", first)

    def dropped():
        return {p.attributes["wasteaudit.drop.cause"]: p.value for p in points(metric_reader, "wasteaudit.records.dropped")}

    assert dropped() == {"queue_full": 3, "db_error": 1, "invalid": 0, "closed": 0}
    first.values["dropped_queue_full"] = 5
    assert dropped()["queue_full"] == 5
    monkeypatch.setattr(pipeline, "_writer", _FakeWriter(dropped_queue_full=2))  # configure() started a new writer
    assert dropped()["queue_full"] == 7
    assert metric(metric_reader, "wasteaudit.records.dropped").data.is_monotonic


def test_without_a_meter_provider_the_hook_costs_next_to_nothing_and_loads_nothing():
    code = """
        import sys, time
        import wasteaudit
        from wasteaudit.export import _hook
        from wasteaudit.records import CallRecord
        record = CallRecord(id="x", provider="openai", operation="chat", api="chat.completions", started_at=0.0,
                            duration_s=0.1, usage_source="provider", input_tokens=1, output_tokens=1)
        _hook.call_finished(record)
        n = 20000
        t0 = time.perf_counter()
        for _ in range(n):
            _hook.call_finished(record)
        per_call_us = (time.perf_counter() - t0) / n * 1e6
        loaded = [m for m in ("wasteaudit.export.metrics", "wasteaudit.export.otlp", "opentelemetry.sdk") if m in sys.modules]
        print(f"{per_call_us:.3f}", ",".join(loaded))
    """
    out = run_app(code)
    assert out.returncode == 0, out.stderr
    per_call_us, *loaded = out.stdout.split()
    assert loaded == []
    assert float(per_call_us) < 2.0  # typically ~0.4 µs: two attribute reads and a comparison


def test_an_app_meter_provider_set_later_is_picked_up_by_the_hook():
    code = """
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from wasteaudit.export import _hook
        from wasteaudit.records import CallRecord
        record = CallRecord(id="x", provider="openai", operation="chat", api="chat.completions", started_at=0.0,
                            duration_s=0.1, usage_source="provider", input_tokens=4, output_tokens=2)
        _hook.call_finished(record)          # no provider yet: nothing
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _hook.call_finished(record)          # the app's provider now
        names = sorted(m.name for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
        print(",".join(names))
    """
    out = run_app(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1].split(",") == ["gen_ai.client.operation.duration", "gen_ai.client.token.usage", "wasteaudit.records.dropped"]


def test_export_metrics_off_records_nothing(metric_reader):
    from wasteaudit import config

    previous = config.get_settings()
    try:
        config.set_settings(config.replace(previous, export_metrics=False, storage=False))
        wasteaudit.export.apply_settings(config.get_settings())
        assert _state.recorder is None
        _hook.call_finished(_call(duration_s=0.1))
        assert wm.record_findings([Finding(call_id="call1", run_id=None, kind="failed", subkind="error", tier="confirmed", tokens=1, confidence=1.0)], {}) == 0
    finally:
        config.set_settings(previous)


def test_prometheus_names_follow_the_collector_translation():
    series = wm.prometheus_series()
    assert "gen_ai_client_operation_duration_seconds_bucket" in series
    assert "gen_ai_client_token_usage_bucket" in series and "gen_ai_client_token_usage_count" in series
    assert "wasteaudit_waste_tokens_total" in series and "wasteaudit_waste_cost_total" in series
    assert "wasteaudit_quality_score_sum" in series and "wasteaudit_records_dropped_total" in series
    assert "gen_ai_client_operation_time_to_first_chunk_seconds_bucket" in series
    assert "gen_ai_client_operation_time_per_output_chunk_seconds_bucket" in series
    assert len(series) == 3 + 3 + 3 + 3 + 1 + 1 + 3 + 1
