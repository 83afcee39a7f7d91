"""OTLP export against an in-process OTLP/HTTP receiver (protobuf decoded with opentelemetry-proto)."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from typing import Any, Iterator

import pytest
from export_support import run_app
from otlp_receiver import OTLPReceiver

import wasteaudit
from wasteaudit.exceptions import ConfigError
from wasteaudit.export import _state, otlp
from wasteaudit.export import metrics as wm
from wasteaudit.localllm import Reply
from wasteaudit.localllm import openai_bodies as ob
from wasteaudit.scoring.findings import Finding

MESSAGES = [{"role": "user", "content": "Say hi"}]


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as rx:
        yield rx


class Providers:
    """Fresh SDK providers (never global) for one test."""

    def __init__(self) -> None:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        resource = Resource.create({"service.name": "export-test"})
        self.tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.meter_provider = MeterProvider(resource=resource, shutdown_on_exit=False)
        self.logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)

    def kwargs(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider, "logger_provider": self.logger_provider}

    def shutdown(self) -> None:
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            provider.shutdown()


@pytest.fixture
def providers() -> Iterator[Providers]:
    made = Providers()
    try:
        yield made
    finally:
        otlp.shutdown_export(timeout_s=2)
        made.shutdown()
        _state.reset_counters()


def _setup(rx: OTLPReceiver, providers: Providers, **options: Any) -> Any:
    options.setdefault("metric_export_interval_s", 3600)  # exported by force_flush in the tests
    return wasteaudit.export.setup_export(endpoint=rx.endpoint, **providers.kwargs(), **options)


def test_spans_metrics_and_finding_events_arrive_decoded_and_linked(receiver, providers, oai, llm_server, records):
    handle = _setup(receiver, providers, timeout=5)
    assert handle.endpoints == {k: f"{receiver.endpoint}/v1/{k}" for k in ("traces", "metrics", "logs")}
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi there! Hi there!", prompt_tokens=12, completion_tokens=6)))

    @wasteaudit.audit(name="greet")
    def greet() -> str:
        answer = oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20).choices[0].message.content
        wasteaudit.score(0.8)
        return answer

    greet()
    call = records.calls[0]
    finding = Finding(call_id=call.id, run_id=call.run_id, kind="redundant", subkind="repetition", tier="confirmed", tokens=3, confidence=0.9)
    wasteaudit.export.export_findings([finding], {call.id: call})
    assert handle.force_flush(10)

    # spans: the call under its run, with the GenAI and wasteaudit attributes
    spans = {s["name"]: s for s in receiver.spans()}
    chat, run = spans["chat gpt-4o-mini"], spans["audit greet"]
    assert chat["trace_id"] == run["trace_id"] == call.trace_id and chat["span_id"] == call.span_id
    assert chat["resource"]["service.name"] == "export-test" and chat["scope"] == "wasteaudit"
    attrs = chat["attributes"]
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini" and attrs["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (12, 6)
    assert attrs["gen_ai.request.max_tokens"] == 20 and attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["wasteaudit.call.id"] == call.id and attrs["wasteaudit.run.name"] == "greet"
    assert attrs["wasteaudit.usage_source"] == "provider" and attrs["wasteaudit.finish.category"] == "stop"
    assert attrs["server.address"] == "127.0.0.1"

    # metrics: names, units, buckets, attributes
    metrics = receiver.metrics()
    usage = metrics["gen_ai.client.token.usage"][-1]
    assert usage["unit"] == "{token}" and usage["type"] == "histogram"
    by_type = {p["attributes"]["gen_ai.token.type"]: p for p in usage["points"]}
    assert (by_type["input"]["sum"], by_type["output"]["sum"]) == (12, 6)
    assert tuple(by_type["input"]["bounds"]) == wm.TOKEN_BUCKETS
    duration = metrics["gen_ai.client.operation.duration"][-1]
    assert duration["unit"] == "s" and tuple(duration["points"][0]["bounds"]) == wm.DURATION_BUCKETS
    waste = metrics["wasteaudit.waste.tokens"][-1]
    assert waste["type"] == "sum" and waste["monotonic"]
    assert waste["points"][0]["value"] == 3 and waste["points"][0]["attributes"]["wasteaudit.waste.subkind"] == "repetition"
    assert metrics["wasteaudit.waste.cost"][-1]["points"][0]["value"] > 0
    quality = metrics["wasteaudit.quality.score"][-1]["points"][0]
    assert quality["sum"] == 0.8 and quality["attributes"]["wasteaudit.run.name"] == "greet"
    assert metrics["wasteaudit.records.dropped"][-1]["monotonic"]
    streamed_only = {wm.TIME_TO_FIRST_CHUNK.name, wm.TIME_PER_OUTPUT_CHUNK.name}  # this call is not streamed; test_export_metrics covers them
    assert {name for name in metrics} >= {spec.name for spec in wm.METRICS} - streamed_only
    assert not streamed_only & set(metrics)

    # the finding event, on the call's span
    (event,) = receiver.logs()
    assert event["event_name"] == "wasteaudit.waste.finding"
    assert (event["trace_id"], event["span_id"]) == (call.trace_id, call.span_id)
    assert event["attributes"]["wasteaudit.waste.tokens"] == 3 and event["attributes"]["wasteaudit.waste.kind"] == "redundant"

    status = wasteaudit.status()["export"]
    assert status["configured"] and status["failed_exports"] == 0
    assert status["traces"]["exported_items"] >= 2 and status["logs"]["exported_batches"] == 1


def test_plugs_into_the_apps_tracer_provider_without_replacing_its_exporter(receiver, providers, oai, llm_server):
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    apps_own = InMemorySpanExporter()
    providers.tracer_provider.add_span_processor(SimpleSpanProcessor(apps_own))
    handle = _setup(receiver, providers, metrics=False, logs=False)
    assert handle.tracer_provider is providers.tracer_provider and handle.created == {"traces": False}

    llm_server.enqueue(Reply(json=ob.chat_completion("ok")))
    oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    app_span = providers.tracer_provider.get_tracer("app").start_span("app work")
    app_span.end()
    handle.force_flush(10)
    assert {s.name for s in apps_own.get_finished_spans()} == {"chat gpt-4o-mini", "app work"}
    assert {s["name"] for s in receiver.spans()} == {"chat gpt-4o-mini", "app work"}

    handle.shutdown()  # detaches ours; the app's pipeline goes on
    providers.tracer_provider.get_tracer("app").start_span("after").end()
    assert "after" in {s.name for s in apps_own.get_finished_spans()}
    assert "after" not in {s["name"] for s in receiver.spans()}


def test_failed_exports_are_counted_in_status_and_never_raised(receiver, providers, oai, llm_server, records):
    receiver.status = 400  # not retryable: every export fails at once
    handle = _setup(receiver, providers, timeout=2)
    llm_server.enqueue(Reply(json=ob.chat_completion("ok")))
    oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    call = records.calls[0]
    wasteaudit.export.export_findings([Finding(call_id=call.id, run_id=None, kind="failed", subkind="error", tier="confirmed", tokens=1, confidence=1.0)], {call.id: call})
    handle.force_flush(10)
    status = wasteaudit.status()["export"]
    for signal in ("traces", "metrics", "logs"):
        assert status[signal]["failed_batches"] >= 1, (signal, status)
        assert status[signal]["exported_batches"] == 0
    assert status["failed_exports"] >= 3 and status["traces"]["failed_items"] >= 1
    assert status["traces"]["last_error"]


def test_an_unreachable_collector_is_counted_too(providers, oai, llm_server):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    handle = wasteaudit.export.setup_export(endpoint=dead, timeout=1, metrics=False, logs=False, **{"tracer_provider": providers.tracer_provider})
    llm_server.enqueue(Reply(json=ob.chat_completion("ok")))
    oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    handle.force_flush(10)
    assert wasteaudit.status()["export"]["traces"]["failed_batches"] >= 1


def test_a_slow_collector_never_slows_the_request_path(receiver, providers, oai, llm_server, monkeypatch):
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")  # export (into the slow receiver) while calls run
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "20")
    receiver.delay_s = 2.0
    _setup(receiver, providers, timeout=5, metric_export_interval_s=0.05)
    client = oai()
    durations = []
    for _ in range(6):
        llm_server.enqueue(Reply(json=ob.chat_completion("ok")))
        t0 = time.perf_counter()
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        durations.append(time.perf_counter() - t0)
        time.sleep(0.05)
    assert receiver.wait_for(lambda: receiver.hits, timeout=5)  # exports were under way meanwhile
    assert max(durations) < 1.0, durations
    receiver.delay_s = 0.0  # let the teardown flush quickly


def test_same_arguments_return_the_same_handle_and_new_ones_replace_it(receiver, providers):
    first = _setup(receiver, providers, metrics=False, logs=False)
    assert _setup(receiver, providers, metrics=False, logs=False) is first
    second = _setup(receiver, providers, metrics=False, logs=True)
    assert second is not first and first._closed and first._span_processor.detached
    assert otlp.current_handle() is second


def test_configuration_errors_surface_at_configure_time(monkeypatch):
    from wasteaudit.config import settings_from_env

    with pytest.raises(ConfigError):
        settings_from_env({"WASTEAUDIT_EXPORT": "kafka"})
    with pytest.raises(ConfigError):
        settings_from_env({"WASTEAUDIT_OTLP_ENDPOINT": "collector:4318"})
    settings = settings_from_env({"WASTEAUDIT_EXPORT": "otlp", "OTEL_SERVICE_NAME": "svc", "WASTEAUDIT_EXPORT_METRICS": "0"})
    assert (settings.export, settings.service_name, settings.export_metrics) == ("otlp", "svc", False)
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)  # extra not installed
    with pytest.raises(ConfigError, match=r"wasteaudit\[otlp\]"):
        otlp.setup_export(endpoint="http://127.0.0.1:9")


APP = """
    import json, os, sys
    import openai
    import wasteaudit
    from opentelemetry import trace, metrics, _logs
    from wasteaudit.localllm import LocalLLMServer, Reply
    from wasteaudit.localllm import openai_bodies as ob
    from wasteaudit.scoring.findings import Finding
    from wasteaudit.testing import capture
    {prelude}
    wasteaudit.configure(export="otlp", storage=False)
    wasteaudit.instrument_openai()
    with LocalLLMServer() as server, capture() as sink:
        server.enqueue(Reply(json=ob.chat_completion("Hello!", prompt_tokens=5, completion_tokens=2)))
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="sk-test", max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "hi"}}])
        call = sink.calls[0]
    wasteaudit.export.export_findings([Finding(call_id=call.id, run_id=None, kind="failed", subkind="truncated",
                                                tier="confirmed", tokens=2, confidence=1.0)], {{call.id: call}})
    from wasteaudit.export.otlp import current_handle
    handle = current_handle()
    handle.force_flush(10)
    print(json.dumps({{
        "call": [call.trace_id, call.span_id],
        "created": handle.created,
        "global_tracer_provider_is_ours": trace.get_tracer_provider() is handle.tracer_provider,
        "global_meter_provider_is_ours": metrics.get_meter_provider() is handle.meter_provider,
        "status": wasteaudit.status()["export"],
        "extra": {extra},
    }}))
"""


def test_configure_export_otlp_with_the_standard_otel_variables(receiver):
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_HEADERS": "x-team=waste",
        "OTEL_SERVICE_NAME": "checkout",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        "OTEL_METRIC_EXPORT_INTERVAL": "3600000",
    }
    out = run_app(textwrap.dedent(APP).format(prelude="", extra="None"), env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["created"] == {"traces": True, "metrics": True, "logs": True}
    assert result["global_tracer_provider_is_ours"] and result["global_meter_provider_is_ours"]
    assert result["status"]["endpoints"]["traces"] == f"{receiver.endpoint}/v1/traces"
    assert result["status"]["failed_exports"] == 0
    (span,) = receiver.spans()
    assert span["resource"]["service.name"] == "checkout" and span["resource"]["deployment.environment"] == "test"
    assert [span["trace_id"], span["span_id"]] == result["call"]
    assert "gen_ai.client.token.usage" in receiver.metrics()
    (event,) = receiver.logs()
    assert [event["trace_id"], event["span_id"]] == result["call"]
    assert all(h.get("x-team") == "waste" for h in receiver.headers)


def test_an_app_that_already_set_a_tracer_provider_keeps_it_and_its_exporter(receiver):
    prelude = """
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    apps_exporter = InMemorySpanExporter()
    apps_provider = TracerProvider()
    apps_provider.add_span_processor(SimpleSpanProcessor(apps_exporter))
    trace.set_tracer_provider(apps_provider)
    """
    extra = '{"still_the_apps": trace.get_tracer_provider() is apps_provider, "apps_spans": [s.name for s in apps_exporter.get_finished_spans()]}'
    out = run_app(textwrap.dedent(APP).format(prelude=textwrap.dedent(prelude), extra=extra), {"WASTEAUDIT_OTLP_ENDPOINT": receiver.endpoint})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["created"]["traces"] is False and result["extra"]["still_the_apps"]
    assert result["extra"]["apps_spans"] == ["chat gpt-4o-mini"]
    assert [s["name"] for s in receiver.spans()] == ["chat gpt-4o-mini"]
