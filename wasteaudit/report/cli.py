"""``wasteaudit report``: the weekly waste report as text, Markdown, JSON or HTML.

    wasteaudit report                          # last full ISO week (UTC), text, by function
    wasteaudit report --week 2026-W47 --by model --format html -o report.html
    wasteaudit report --since 2026-11-01 --until 2026-11-15 --format json

Exit codes: 0 ok, 1 failure (missing database, unreachable server), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

__all__ = ("add_parser", "run")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "report",
        help="weekly waste report: waste, quality and quality-weighted efficiency",
        description="Waste, quality and quality-weighted efficiency for one period (default: the last full ISO week, UTC).",
    )
    when = parser.add_argument_group("period (UTC, end excluded)")
    when.add_argument("--week", metavar="YYYY-Www", help="an ISO week, e.g. 2026-W47")
    when.add_argument("--since", metavar="DATE", help="start, e.g. 2026-11-16 or 2026-11-16T08:00:00Z")
    when.add_argument("--until", metavar="DATE", help="end (excluded); default now when --since is given")
    parser.add_argument(
        "--by", default="function", metavar="DIM",
        help="lead breakdown: function (default), model, provider, tag or tag:KEY",
    )
    parser.add_argument("--format", default="text", choices=("text", "md", "json", "html"), help="output format (default text)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    from wasteaudit.report.deliver import add_arguments

    add_arguments(parser)  # --post-to URL and its options
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Build and render the report; returns the exit code."""
    from wasteaudit.exceptions import ConfigError, WasteAuditError
    from wasteaudit.report import build_report, render

    if args.week and (args.since or args.until):
        print("wasteaudit report: use either --week or --since/--until", file=sys.stderr)
        return 2
    try:
        report = build_report(
            getattr(args, "database_url", None),
            week=args.week,
            since=args.since,
            until=args.until,
            by=args.by,
        )
    except ConfigError as exc:
        print(f"wasteaudit report: {exc}", file=sys.stderr)
        return 2
    except WasteAuditError as exc:
        print(f"wasteaudit: {exc}", file=sys.stderr)
        return 1

    post_to = getattr(args, "post_to", None)
    if post_to and args.output is None:
        from wasteaudit.report.deliver import deliver

        return deliver(args, report)  # posting replaces printing; add -o FILE to also keep the report
    if args.output is None and args.format == "text" and sys.stdout.isatty():
        from rich.console import Console

        from wasteaudit.report.render_text import print_report

        print_report(report, Console())
        return 0
    text = render(report, args.format)
    if args.output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    try:
        _write_atomically(args.output, text)
    except OSError as exc:
        print(f"wasteaudit: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.format} report for {report['period']['label']} to {os.path.abspath(args.output)}", file=sys.stderr)
    if post_to:
        from wasteaudit.report.deliver import deliver

        return deliver(args, report)
    return 0


def _write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".wasteaudit-report-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
