"""The report as terminal text: rich tables.

Every string that came from a model or a user (function and model names, evidence) goes in
as a ``rich.text.Text``, so square brackets in it are shown, never read as rich markup.
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from wasteaudit.report import _format as f

__all__ = ("render_text", "print_report")


def _table(title: str, columns: list[str], rows: list[list[str]], *, numeric_from: int = 1) -> Table:
    table = Table(title=Text(title, style="bold"), title_justify="left", show_lines=False, pad_edge=False)
    for i, name in enumerate(columns):
        table.add_column(Text(name), justify="right" if i >= numeric_from else "left", overflow="fold")
    for row in rows:
        table.add_row(*[Text(cell) for cell in row])
    return table


def _alarm_style(kind: str) -> str:
    return "bold red" if kind in ("quality_down_efficiency_up", "cheaper_but_worse", "shorter_more_failures", "drops") else "yellow"


def print_report(report: dict[str, Any], console: Console) -> None:
    console.print(Text(f.title(report), style="bold"))
    console.print()
    console.print(_table("Summary", ["figure", "this period", "previous", "change"], [list(r) for r in f.headline_rows(report)]))
    console.print(
        Text(
            "Efficiency is quality-weighted and always shown beside quality and its coverage; "
            "a — means the figure cannot be computed (never 0).",
            style="dim",
        )
    )
    console.print()

    alarms = report.get("alarms", [])
    if alarms:
        table = Table(title=Text("Alarms", style="bold"), title_justify="left")
        for name in ("kind", "scope", "subject", "message"):
            table.add_column(name, overflow="fold")
        for a in alarms:
            table.add_row(Text(a["kind"], style=_alarm_style(a["kind"])), Text(a["scope"]), Text(a["subject"]), Text(a["message"]))
        console.print(table)
    else:
        console.print(Text("No alarms.", style="green"))
    console.print()

    label, rows = f.breakdown_title(report)
    console.print(_table(label, f.breakdown_columns, f.breakdown_rows(rows)))
    if label != "By model":
        console.print(_table("By model", f.breakdown_columns, f.breakdown_rows(report["by_model"])))
    console.print()

    table = report.get("value_per_dollar_by_model") or {}
    console.print(_table("Value per dollar by model (gated)", f.model_columns, f.model_rows(table), numeric_from=3))
    reference = table.get("reference")
    note = table.get("gate", "")
    if reference:
        note = f"reference: {reference['provider']}/{reference['model']} ({reference['reason']}). " + note
    console.print(Text(note, style="dim"))
    console.print()

    waste_rows = f.subkind_rows(report)
    if waste_rows:
        console.print(_table("Waste by kind (this period)", ["kind", "subkind", "tier", "tokens", "cost", "share of output"], waste_rows, numeric_from=3))
        console.print()

    findings = f.finding_rows(report)
    if findings:
        console.print(
            _table(
                "Top findings (worst calls)",
                ["function", "model", "waste / output tok", "waste $", "findings", "trace id", "call id", "evidence"],
                findings,
                numeric_from=99,
            )
        )
        console.print()
    for line in f.side_lines(report):
        console.print(Text(line))


def render_text(report: dict[str, Any], *, width: int = 160) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, highlight=False, emoji=False)
    print_report(report, console)
    return buffer.getvalue()
