"""Findings as OpenTelemetry events linked to the call's span."""

from __future__ import annotations

from export_support import points

import wasteaudit
from wasteaudit.export import events
from wasteaudit.localllm import Reply
from wasteaudit.localllm import openai_bodies as ob
from wasteaudit.scoring.findings import Finding


def _records(exporter):
    return [getattr(item, "log_record", item) for item in exporter.get_finished_logs()]


def test_each_finding_becomes_an_event_on_the_span_of_its_call(oai, llm_server, spans, log_exporter, records, metric_reader):
    llm_server.enqueue(Reply(json=ob.chat_completion("Paris. Paris is the capital. Paris.", prompt_tokens=9, completion_tokens=12)))

    @wasteaudit.audit(name="capital")
    def capital() -> str:
        return oai().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Capital of France?"}]).choices[0].message.content

    capital()
    call = records.calls[0]
    (span,) = [s for s in spans.spans if s.name == "chat gpt-4o-mini"]
    assert call.trace_id == format(span.context.trace_id, "032x") and call.span_id == format(span.context.span_id, "016x")

    findings = [
        Finding(call_id=call.id, run_id=call.run_id, kind="redundant", subkind="repetition", tier="confirmed", tokens=4, confidence=0.93,
                choice_index=0, segment_start=29, segment_end=35, evidence={"reason": "exact repeat of an earlier segment", "similarity": 1.0}),
        Finding(call_id=call.id, run_id=call.run_id, kind="redundant", subkind="filler", tier="possible", tokens=2, confidence=0.4),
    ]
    assert wasteaudit.export.emit_findings(call, findings) == 2

    first, second = _records(log_exporter)
    assert first.event_name == events.EVENT_NAME == "wasteaudit.waste.finding"
    assert first.trace_id == span.context.trace_id and first.span_id == span.context.span_id
    attrs = dict(first.attributes)
    assert attrs["wasteaudit.waste.kind"] == "redundant" and attrs["wasteaudit.waste.subkind"] == "repetition"
    assert attrs["wasteaudit.waste.tier"] == "confirmed" and attrs["wasteaudit.waste.tokens"] == 4
    assert attrs["wasteaudit.waste.confidence"] == 0.93
    assert attrs["wasteaudit.waste.cost.usd"] > 0
    assert attrs["wasteaudit.call.id"] == call.id and attrs["wasteaudit.run.id"] == call.run_id
    assert attrs["wasteaudit.run.name"] == "capital" and attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["wasteaudit.waste.reason"] == "exact repeat of an earlier segment"
    assert (attrs["wasteaudit.waste.segment.start"], attrs["wasteaudit.waste.segment.end"]) == (29, 35)
    assert "redundant/repetition (confirmed): 4 output tokens wasted" in first.body
    assert dict(second.attributes)["wasteaudit.waste.tier"] == "possible"
    assert second.span_id == span.context.span_id
    assert wasteaudit.status()["export"]["findings_emitted"] == 2


def test_export_findings_records_metrics_and_events_grouped_by_call(log_exporter, metric_reader):
    calls = {
        "a": {"id": "a", "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331", "function": "f", "request_model": "m"},
        "b": {"id": "b", "trace_id": None, "span_id": None, "function": "g", "request_model": "m"},
    }
    findings = [
        {"call_id": "a", "kind": "failed", "subkind": "truncated", "tier": "confirmed", "tokens": 100, "confidence": 1.0, "cost_usd": 0.01},
        {"call_id": "b", "kind": "unused", "subkind": "extra_choice", "tier": "confirmed", "tokens": 50, "confidence": 1.0},
    ]
    wasteaudit.export.export_findings(findings, calls)
    logged = {dict(r.attributes)["wasteaudit.call.id"]: r for r in _records(log_exporter)}
    assert format(logged["a"].trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(logged["a"].span_id, "016x") == "b7ad6b7169203331"
    assert not logged["b"].trace_id  # no stored ids: emitted, not linked
    tokens = {p.attributes["wasteaudit.waste.subkind"]: p.value for p in points(metric_reader, "wasteaudit.waste.tokens")}
    assert tokens == {"truncated": 100, "extra_choice": 50}


def test_without_a_logger_provider_emitting_is_a_no_op():
    finding = Finding(call_id="a", run_id=None, kind="failed", subkind="error", tier="confirmed", tokens=1, confidence=1.0)
    assert wasteaudit.export.emit_findings({"id": "a"}, [finding]) == 0


def test_malformed_ids_do_not_break_emission(log_exporter):
    finding = Finding(call_id="a", run_id=None, kind="failed", subkind="error", tier="confirmed", tokens=1, confidence=1.0)
    assert wasteaudit.export.emit_findings({"id": "a", "trace_id": "not-hex", "span_id": "zz"}, [finding]) == 1
    (record,) = _records(log_exporter)
    assert not record.trace_id
