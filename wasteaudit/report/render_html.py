"""The report as one self-contained HTML file, with charts.

No network at view time: plotly.js is embedded inline (``plotly.offline.get_plotlyjs()``,
once), the report data travels in the page as JSON, and the charts are drawn from it.

Safety: everything that came from a model or a user — function and model names, tag values,
evidence, messages — is ``html.escape``-d in the page, and escaped again inside chart labels
(plotly renders a few HTML tags in labels; escaped, they show as text). JSON inside
``<script>`` has ``<``, ``>``, ``&`` and the line separators written as ``\\uXXXX``
escapes, so neither ``</script>`` nor ``<!--`` can appear in it.
"""

from __future__ import annotations

import functools
import html
import json
from datetime import date
from typing import Any

from wasteaudit.report import _format as f

__all__ = ("render_html", "script_json")

KIND_COLORS = {"redundant": "#e45756", "unused": "#f58518", "failed": "#4c78a8"}
VERDICT_COLORS = {
    "reference": "#2ca02c",
    "non_inferior": "#2ca02c",
    "cheaper_but_worse": "#d62728",
    "worse": "#9467bd",
    "inconclusive": "#17becf",
    "not_comparable": "#7f7f7f",
    "insufficient_data": "#bcbd22",
}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1b1b1b;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
p.sub{color:#555;margin:0 0 16px;font-size:13px}
table{border-collapse:collapse;font-size:12px;margin:4px 0 8px}
th,td{border:1px solid #e2e2e2;padding:3px 6px;vertical-align:top}
th{background:#f4f4f4;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.alarm{color:#b00020;font-weight:600}.warn{color:#8a6d00;font-weight:600}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.chart{height:340px;border:1px solid #eee}
.wide{grid-column:1 / span 2}
.note{color:#555;font-size:12px}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:11px;word-break:break-all}
.evidence{max-width:520px;white-space:pre-wrap;word-break:break-word}
"""

_SCRIPT = """
(function () {
  var report = JSON.parse(document.getElementById('wasteaudit-data').textContent);
  var charts = JSON.parse(document.getElementById('wasteaudit-charts').textContent);
  var config = {displayModeBar: false, responsive: true, staticPlot: false};
  charts.forEach(function (chart) {
    var node = document.getElementById(chart.id);
    if (node && window.Plotly) { Plotly.newPlot(node, chart.data, chart.layout, config); }
  });
  window.wasteauditReport = report;
})();
"""


def script_json(value: Any) -> str:
    """JSON safe to place inside ``<script>``: no ``</``, ``<!--``, ``&`` or line separators."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


@functools.lru_cache(maxsize=1)
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    # Defensive: the bundle contains neither today, but never let it close our <script>.
    return get_plotlyjs().replace("</script", "<\\/script").replace("<!--", "<\\!--")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _label(value: Any) -> str:
    """A chart label: escaped so plotly shows any markup as text."""
    return html.escape(str(value), quote=True)


def _table(columns: list[str], rows: list[list[str]], numeric_from: int = 1, *, classes: dict[int, str] | None = None) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = (classes or {}).get(i) or ("n" if i >= numeric_from else "")
            cells.append(f'<td class="{cls}">{_e(cell)}</td>' if cls else f"<td>{_e(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _charts(report: dict[str, Any]) -> list[dict[str, Any]]:
    base_layout = {
        "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
        "barmode": "stack",
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "font": {"size": 11},
        "legend": {"orientation": "h", "y": -0.2},
    }
    charts: list[dict[str, Any]] = []

    # 1. Waste by kind over the days of the period.
    days = report.get("daily", [])
    x = [_day_label(d["date"]) for d in days]
    data = [
        {"type": "bar", "name": kind, "x": x, "y": [d["waste"].get(kind, 0) for d in days], "marker": {"color": KIND_COLORS[kind]}}
        for kind in ("failed", "unused", "redundant")
    ]
    data.append(
        {
            "type": "bar",
            "name": "possible (not in headline)",
            "x": x,
            "y": [d.get("possible_tokens", 0) for d in days],
            "marker": {"color": "#bab0ac", "pattern": {"shape": "/"}},
        }
    )
    charts.append(
        {
            "id": "chart-waste-daily",
            "data": data,
            "layout": {**base_layout, "title": {"text": "Waste tokens by kind, per day (confirmed; possible apart)"}, "yaxis": {"title": {"text": "tokens"}}},
        }
    )

    # 2. Waste by function (top 15 by confirmed waste tokens).
    rows = sorted(report["by_function"], key=lambda r: -r["waste"]["tokens"])[:15]
    rows = [r for r in rows if r["waste"]["tokens"] or r["waste"]["possible"]["tokens"]] or rows
    names = [_label(r["name"]) for r in rows][::-1]
    data = [
        {
            "type": "bar",
            "orientation": "h",
            "name": kind,
            "y": names,
            "x": [r["waste"]["by_kind"].get(kind, {}).get("tokens", 0) for r in rows][::-1],
            "marker": {"color": KIND_COLORS[kind]},
        }
        for kind in ("failed", "unused", "redundant")
    ]
    charts.append(
        {
            "id": "chart-waste-function",
            "data": data,
            "layout": {
                **base_layout,
                "title": {"text": "Confirmed waste tokens by function"},
                "margin": {"l": 160, "r": 20, "t": 40, "b": 50},
                "xaxis": {"title": {"text": "tokens"}},
            },
        }
    )

    # 3. Cost vs quality per model (gated verdict as colour).
    table = report.get("value_per_dollar_by_model") or {}
    points = [r for r in table.get("rows", []) if r["quality"]["mean"] is not None and r["cost_per_run"] is not None]
    max_runs = max([r["runs"] for r in points] or [1])
    data = []
    for verdict in VERDICT_COLORS:
        group = [r for r in points if r["verdict"] == verdict]
        if not group:
            continue
        data.append(
            {
                "type": "scatter",
                "mode": "markers+text",
                "name": f.VERDICT_LABELS.get(verdict, verdict),
                "x": [r["cost_per_run"] for r in group],
                "y": [r["quality"]["mean"] for r in group],
                "text": [_label(f"{r['provider']}/{r['model']}") for r in group],
                "textposition": "top center",
                "cliponaxis": False,
                "marker": {"size": [12 + 28 * (r["runs"] / max_runs) ** 0.5 for r in group], "color": VERDICT_COLORS[verdict], "opacity": 0.8},
            }
        )
    charts.append(
        {
            "id": "chart-cost-quality",
            "data": data,
            "layout": {
                **base_layout,
                "title": {"text": "Cost per run vs mean quality, per model (size: runs)"},
                "xaxis": {"title": {"text": "cost per run (USD)"}, "rangemode": "tozero"},
                "yaxis": {"title": {"text": "mean quality q"}, "range": [0, 1.15]},
            },
        }
    )
    return charts


def _day_label(text: str) -> str:
    try:
        return date.fromisoformat(text).strftime("%a %d %b")
    except ValueError:
        return text


def render_html(report: dict[str, Any]) -> str:
    period = report["period"]
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>wasteaudit report {_e(period['label'])}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_plotly_js()}</script>",
        "</head><body>",
        f"<h1>wasteaudit report {_e(period['label'])}</h1>",
        f'<p class="sub">{_e(f.title(report))}. Efficiency is quality-weighted and always shown beside quality and its coverage; '
        "— means the figure cannot be computed (never 0).</p>",
    ]

    alarms = report.get("alarms", [])
    parts.append("<h2>Alarms</h2>")
    if alarms:
        rows = "".join(
            f'<tr><td class="{"alarm" if a["kind"] != "coverage_down" and a["kind"] != "unpriced_up" else "warn"}">{_e(a["kind"])}</td>'
            f"<td>{_e(a['scope'])}</td><td>{_e(a['subject'])}</td><td>{_e(a['message'])}</td></tr>"
            for a in alarms
        )
        parts.append(f"<table><thead><tr><th>kind</th><th>scope</th><th>subject</th><th>message</th></tr></thead><tbody>{rows}</tbody></table>")
    else:
        parts.append('<p class="note">No alarms.</p>')

    parts.append("<h2>Charts</h2>")
    parts.append(
        '<div class="charts">'
        '<div id="chart-waste-daily" class="chart wide"></div>'
        '<div id="chart-waste-function" class="chart"></div>'
        '<div id="chart-cost-quality" class="chart"></div>'
        "</div>"
    )

    parts.append("<h2>Summary</h2>")
    parts.append(_table(["figure", "this period", "previous", "change"], [list(r) for r in f.headline_rows(report)]))

    label, rows = f.breakdown_title(report)
    parts.append(f"<h2>{_e(label)}</h2>")
    parts.append(_table(f.breakdown_columns, f.breakdown_rows(rows)))
    if label != "By model":
        parts.append("<h2>By model</h2>")
        parts.append(_table(f.breakdown_columns, f.breakdown_rows(report["by_model"])))

    table = report.get("value_per_dollar_by_model") or {}
    parts.append("<h2>Value per dollar by model (gated)</h2>")
    parts.append(_table(f.model_columns, f.model_rows(table), numeric_from=3))
    reference = table.get("reference")
    note = table.get("gate", "")
    if reference:
        note = f"Reference: {reference['provider']}/{reference['model']} ({reference['reason']}). " + note
    parts.append(f'<p class="note">{_e(note)}</p>')

    waste_rows = f.subkind_rows(report)
    if waste_rows:
        parts.append("<h2>Waste by kind</h2>")
        parts.append(_table(["kind", "subkind", "tier", "tokens", "cost", "share of output"], waste_rows, numeric_from=3))

    findings = f.finding_rows(report)
    if findings:
        parts.append("<h2>Top findings (worst calls)</h2>")
        parts.append(
            _table(
                ["function", "model", "waste / output tok", "waste $", "findings", "trace id", "call id", "evidence"],
                findings,
                numeric_from=99,
                classes={5: "mono", 6: "mono", 7: "evidence"},
            )
        )

    parts.append("<h2>Notes</h2><ul>")
    parts.extend(f"<li>{_e(line)}</li>" for line in f.side_lines(report))
    parts.append("</ul>")
    parts.append(f'<p class="note">wasteaudit {_e(report.get("wasteaudit_version"))}, schema {_e(report.get("schema"))}, generated {_e(report.get("generated_at"))}.</p>')

    parts.append(f'<script type="application/json" id="wasteaudit-data">{script_json(report)}</script>')
    parts.append(f'<script type="application/json" id="wasteaudit-charts">{script_json(_charts(report))}</script>')
    parts.append(f"<script>{_SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts)
