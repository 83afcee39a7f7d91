"""The deployable configuration in integrations/: the Collector config is wired consistently, and the
Grafana dashboard queries only metrics (and labels) wasteaudit really emits.

The emitted names come from ``wasteaudit.export.metrics.METRICS`` mapped to Prometheus names the way
the Collector's Prometheus exporter does (dots -> underscores, unit suffix, ``_total`` for counters,
``_bucket/_sum/_count`` for histograms), so renaming a metric without fixing the dashboard fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from wasteaudit.export.metrics import METRICS, prometheus_series

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR = ROOT / "integrations" / "otel-collector" / "config.yaml"
DASHBOARD = ROOT / "integrations" / "grafana" / "wasteaudit-dashboard.json"

# --- OpenTelemetry Collector ----------------------------------------------------------------------

SECTIONS = {"receivers": "receivers", "processors": "processors", "exporters": "exporters"}


def _type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


@pytest.fixture(scope="module")
def collector() -> dict:
    return yaml.safe_load(COLLECTOR.read_text())


def test_collector_config_parses_and_every_pipeline_reference_is_defined(collector):
    pipelines = collector["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    used: dict[str, set[str]] = {section: set() for section in SECTIONS}
    for name, pipeline in pipelines.items():
        for section in SECTIONS:
            refs = pipeline.get(section) or []
            if section != "processors":
                assert refs, f"pipeline {name} has no {section}"
            for ref in refs:
                assert ref in (collector.get(section) or {}), f"pipeline {name} uses undefined {section[:-1]} {ref!r}"
                used[section].add(ref)
        assert (pipeline.get("processors") or ["memory_limiter"])[0] == "memory_limiter", f"{name}: memory_limiter must come first"
    for section in SECTIONS:
        unused = set(collector.get(section) or {}) - used[section]
        assert not unused, f"defined but not in any pipeline: {unused}"
    for extension in collector["service"].get("extensions", []):
        assert extension in collector["extensions"]


def test_collector_receives_wasteaudits_otlp_http_and_fans_out_to_prometheus_and_tempo_style_backends(collector):
    otlp = collector["receivers"]["otlp"]["protocols"]
    assert otlp["http"]["endpoint"].endswith(":4318")  # wasteaudit exports OTLP/HTTP
    pipelines = collector["service"]["pipelines"]
    for pipeline in pipelines.values():
        assert "otlp" in pipeline["receivers"]
    assert {_type(e) for e in pipelines["metrics"]["exporters"]} & {"prometheus", "prometheusremotewrite"}
    assert {_type(e) for e in pipelines["traces"]["exporters"]} & {"otlp", "otlp_grpc", "otlphttp", "otlp_http"}
    assert {_type(e) for e in pipelines["logs"]["exporters"]} & {"otlp", "otlp_grpc", "otlphttp", "otlp_http", "loki"}
    prometheus = [v for k, v in collector["exporters"].items() if _type(k) == "prometheus"]
    for exporter in prometheus:  # the dashboard relies on the default suffixes and no namespace prefix
        assert not exporter.get("namespace")
        assert exporter.get("add_metric_suffixes", True) is True


# --- Grafana dashboard ----------------------------------------------------------------------------

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless", "inf", "nan"}
FUNCTIONS = {
    "sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile", "stddev", "stdvar", "count_values", "group",
    "rate", "irate", "increase", "delta", "idelta", "histogram_quantile", "sort", "sort_desc", "abs", "ceil", "floor", "round",
    "clamp", "clamp_min", "clamp_max", "label_replace", "label_join", "vector", "scalar", "time", "avg_over_time", "sum_over_time",
    "max_over_time", "min_over_time", "last_over_time", "absent", "absent_over_time", "changes", "resets", "deriv", "predict_linear",
}
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def parse_promql(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) used in one PromQL expression (the subset this dashboard uses)."""
    labels: set[str] = set()
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, $variables inside them
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors ($__range, $__rate_interval, 5m)
    for body in re.findall(r"\{([^}]*)\}", text):
        labels.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", body))
    text = re.sub(r"\{[^}]*\}", " ", text)
    for body in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        labels.update(name.strip() for name in body.split(",") if name.strip())
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    metrics: set[str] = set()
    for match in IDENT.finditer(text):
        name = match.group(0)
        rest = text[match.end():].lstrip()
        if rest.startswith("("):
            assert name in FUNCTIONS, f"unknown PromQL function {name!r} in {expr}"
            continue
        if name.lower() in KEYWORDS:
            continue
        metrics.add(name)
    return metrics, labels


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels") or [])
    return out


def _queries(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if variable.get("type") == "query" and query:
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert m, f"unsupported variable query {query!r}"
            exprs.append(f"{m.group(1)}{{{m.group(2)}!=\"\"}}")
    return exprs


def test_promql_parser_sees_metrics_and_labels():
    metrics, labels = parse_promql(
        'histogram_quantile(0.95, sum by (le, gen_ai_request_model) (rate(gen_ai_client_operation_duration_seconds_bucket{error_type!="", x=~"$m"}[$__rate_interval])))'
    )
    assert metrics == {"gen_ai_client_operation_duration_seconds_bucket"}
    assert labels == {"le", "gen_ai_request_model", "error_type", "x"}


def test_dashboard_queries_only_metrics_wasteaudit_emits(dashboard):
    emitted = set(prometheus_series())
    used: set[str] = set()
    for expr in _queries(dashboard):
        metrics, _ = parse_promql(expr)
        assert metrics, f"no metric in {expr}"
        unknown = metrics - emitted
        assert not unknown, f"{expr} names metrics wasteaudit does not emit: {unknown} (emitted: {sorted(emitted)})"
        used |= metrics
    # the waste metrics are what the dashboard is for
    assert {"wasteaudit_waste_tokens_total", "wasteaudit_waste_cost_total"} <= used


def test_dashboard_labels_are_attributes_of_the_metrics_they_filter(dashboard):
    attributes = {name.replace(".", "_") for spec in METRICS for name in spec.attributes}
    allowed = attributes | {"le", "job", "instance"}
    for expr in _queries(dashboard):
        _, labels = parse_promql(expr)
        assert labels <= allowed, f"{expr} uses labels no metric carries: {labels - allowed}"


def test_dashboard_is_well_formed(dashboard):
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in names
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"] and all(t["refId"] for t in panel["targets"])
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
        for target in panel["targets"]:
            for var in re.findall(r"\$(\w+)", target["expr"]):
                assert var.startswith("__") or var in names, f"undefined variable ${var} in {target['expr']}"


def test_guides_exist_for_each_integration():
    for folder in ("otel-collector", "grafana"):
        text = (ROOT / "integrations" / folder / "README.md").read_text()
        assert "wasteaudit" in text
    assert "wasteaudit.waste.tokens" in (ROOT / "docs" / "otel-export.md").read_text()
