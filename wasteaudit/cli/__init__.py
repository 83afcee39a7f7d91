"""The ``wasteaudit`` command: ``db``, ``status``, ``calls``, ``score``, ``worker``, ``report``, ``demo``.

Exit codes: 0 ok, 1 failure, 2 usage. ``main(argv)`` returns the code instead of exiting so
tests can call it directly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from wasteaudit.exceptions import WasteAuditError


def build_parser() -> argparse.ArgumentParser:
    from wasteaudit._version import __version__

    parser = argparse.ArgumentParser(prog="wasteaudit", description="How many of the LLM tokens you pay for are wasted, and why.")
    parser.add_argument("--version", action="version", version=f"wasteaudit {__version__}")
    parser.add_argument("--database-url", default=None, help="audit database (default: $WASTEAUDIT_DATABASE_URL or sqlite:///wasteaudit.db)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what wasteaudit does")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    db = sub.add_parser("db", help="manage the audit database schema")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION")
    db_sub.add_parser("upgrade", help="create or upgrade wasteaudit's tables (wasteaudit_*) to this version")
    db_sub.add_parser("current", help="print the schema revision of the database")
    prune = db_sub.add_parser(
        "prune",
        help="delete the content (messages, outputs) of old calls or of chosen runs; keep tokens, cost and findings",
        description="Every selector given must hold. At least one of --older-than, --run, --tag is required.",
    )
    prune.add_argument("--older-than", metavar="AGE", help="age such as 90d, 12w or 36h")
    prune.add_argument("--run", action="append", metavar="RUN_ID", help="a run (and its child runs); repeat for several")
    prune.add_argument("--tag", action="append", metavar="KEY=VALUE", help="runs carrying this tag (and their child runs); repeat: all must match")
    prune.add_argument("--dry-run", action="store_true", help="count what would be pruned, change nothing")
    prune.add_argument("--batch-size", type=int, default=1000, help="rows per transaction (default 1000)")

    sub.add_parser("status", help="database, schema, counts of calls, unscored and unpriced calls, last write")

    calls = sub.add_parser("calls", help="list the most recent captured calls")
    calls.add_argument("--limit", type=int, default=20)

    score = sub.add_parser("score", help="score every unscored call once (one pass)")
    score.add_argument("--batch-size", type=int, default=200)
    score.add_argument("--rescore", action="store_true", help="score again calls scored by an older scorer version or thresholds")
    score.add_argument("--rules-only", action="store_true", help="score without the embedding model (cheaper; fewer redundant/unused findings)")

    worker = sub.add_parser("worker", help="score continuously; several workers share the work through row locks")
    worker.add_argument("--poll", type=float, default=2.0, help="seconds between polls when idle")
    worker.add_argument("--batch-size", type=int, default=200)
    worker.add_argument("--lease", type=float, default=300.0, help="seconds a batch stays leased; a dead worker's calls are taken over after it")
    worker.add_argument("--rules-only", action="store_true", help="score without the embedding model (cheaper; fewer redundant/unused findings)")

    demo = sub.add_parser("demo", help="run a realistic workload against a local endpoint and show what wasteaudit finds")
    demo.add_argument("--live", action="store_true", help="use the real OpenAI/Anthropic APIs (needs OPENAI_API_KEY or ANTHROPIC_API_KEY)")
    demo.add_argument("--output", "-o", default="wasteaudit-report.html", help="HTML report path")

    from wasteaudit.report import cli as report_cli

    report_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    from wasteaudit.cli import commands
    from wasteaudit.report import cli as report_cli

    handler = {
        "db": commands.db,
        "status": commands.status,
        "calls": commands.calls,
        "score": commands.score,
        "worker": commands.worker,
        "demo": commands.demo,
        "report": report_cli.run,
    }[args.command]
    try:
        return handler(args)
    except WasteAuditError as exc:
        print(f"wasteaudit: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
