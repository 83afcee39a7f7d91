"""The report as Markdown (GitHub tables).

Cells are HTML-escaped (Markdown renderers pass raw HTML through) and pipes, backticks and
line breaks neutralised, so a model's output or a function name cannot break the table or
inject markup.
"""

from __future__ import annotations

import html
from typing import Any

from wasteaudit.report import _format as f

__all__ = ("render_md",)


def _cell(text: Any) -> str:
    value = html.escape(str(text), quote=False)
    value = value.replace("|", "\\|").replace("`", "&#96;").replace("*", "\\*").replace("_", "\\_")
    value = value.replace("[", "\\[").replace("]", "\\]")
    return " ".join(value.split())


def _table(columns: list[str], rows: list[list[str]], numeric_from: int = 1) -> list[str]:
    head = "| " + " | ".join(_cell(c) for c in columns) + " |"
    align = "|" + "|".join("---:" if i >= numeric_from else ":---" for i in range(len(columns))) + "|"
    lines = [head, align]
    for row in rows:
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return lines


def render_md(report: dict[str, Any]) -> str:
    out: list[str] = [f"# {_cell(f.title(report))}", ""]
    out += ["## Summary", ""]
    out += _table(["figure", "this period", "previous", "change"], [list(r) for r in f.headline_rows(report)])
    out += ["", "_Efficiency is quality-weighted and always shown beside quality and its coverage; — means the figure cannot be computed (never 0)._", ""]

    out += ["## Alarms", ""]
    alarms = report.get("alarms", [])
    if alarms:
        out += _table(["kind", "scope", "subject", "message"], [[a["kind"], a["scope"], a["subject"], a["message"]] for a in alarms], numeric_from=99)
    else:
        out.append("No alarms.")
    out.append("")

    label, rows = f.breakdown_title(report)
    out += [f"## {label}", ""]
    out += _table(f.breakdown_columns, f.breakdown_rows(rows))
    out.append("")
    if label != "By model":
        out += ["## By model", ""]
        out += _table(f.breakdown_columns, f.breakdown_rows(report["by_model"]))
        out.append("")

    table = report.get("value_per_dollar_by_model") or {}
    out += ["## Value per dollar by model (gated)", ""]
    out += _table(f.model_columns, f.model_rows(table), numeric_from=3)
    reference = table.get("reference")
    note = table.get("gate", "")
    if reference:
        note = f"Reference: {reference['provider']}/{reference['model']} ({reference['reason']}). " + note
    out += ["", _cell(note), ""]

    waste_rows = f.subkind_rows(report)
    if waste_rows:
        out += ["## Waste by kind", ""]
        out += _table(["kind", "subkind", "tier", "tokens", "cost", "share of output"], waste_rows, numeric_from=3)
        out.append("")

    findings = f.finding_rows(report)
    if findings:
        out += ["## Top findings (worst calls)", ""]
        out += _table(
            ["function", "model", "waste / output tok", "waste $", "findings", "trace id", "call id", "evidence"],
            findings,
            numeric_from=99,
        )
        out.append("")

    out += ["## Notes", ""]
    out += [f"- {_cell(line)}" for line in f.side_lines(report)]
    out.append("")
    return "\n".join(out)
