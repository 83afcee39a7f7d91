"""Implementations of the CLI subcommands (imported only when the CLI runs)."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from datetime import datetime, timezone
from typing import Any

from wasteaudit.exceptions import ConfigError, StorageError


def _console() -> Any:
    from rich.console import Console

    # Piped output (CI logs, files) gets a readable width instead of rich's 80-column default.
    return Console(width=None if sys.stdout.isatty() else 140)


def _open(args: argparse.Namespace, *, must_exist: bool = True) -> Any:
    """An engine for the resolved URL; a missing SQLite file is an error, never silently created."""
    from wasteaudit.storage.engine import create_engine_for, resolve_url

    url = resolve_url(args.database_url)
    if must_exist and url.startswith("sqlite") and "/" in url:
        path = url.split(":///", 1)[-1].split("?", 1)[0]
        if path and path != ":memory:" and not os.path.exists(path):
            raise StorageError(f"no audit database at {path} (set --database-url or WASTEAUDIT_DATABASE_URL)")
    return create_engine_for(url, verify=True)


def db(args: argparse.Namespace) -> int:
    from wasteaudit.storage.engine import safe_url
    from wasteaudit.storage.schema import current_revision, upgrade

    if args.db_command == "upgrade":
        engine = _open(args, must_exist=False)
        upgrade(engine)
        print(f"wasteaudit schema at {current_revision(engine)} in {safe_url(engine.url)}")
        return 0
    if args.db_command == "current":
        engine = _open(args)
        print(current_revision(engine) or "(no wasteaudit schema)")
        return 0
    if args.db_command == "prune":
        return prune(args)
    print("usage: wasteaudit db {upgrade,current,prune}")
    return 2


def prune(args: argparse.Namespace) -> int:
    from wasteaudit.storage.retention import parse_age, parse_tags, prune_content

    age = parse_age(args.older_than) if args.older_than is not None else None
    tags = parse_tags(args.tag)
    if age is None and not args.run and not tags:  # a usage error, like a missing argument
        print("wasteaudit db prune: needs --older-than AGE, --run RUN_ID or --tag KEY=VALUE", file=sys.stderr)
        return 2
    engine = _open(args)
    result = prune_content(engine, age, run_ids=args.run, tags=tags, batch_size=args.batch_size, dry_run=args.dry_run)
    verb = "would prune" if result.dry_run else "pruned"
    chosen = [f"older than {result.cutoff.isoformat(timespec='seconds')}"] if result.cutoff is not None else []
    chosen += [f"of run {run_id}" for run_id in args.run or ()]
    chosen += [f"tagged {key}={value}" for key, value in tags.items()]
    print(
        f"{verb} content {', '.join(chosen)}: {result.calls} calls, "
        f"{result.runs} runs, {result.findings} findings' evidence, {result.scores} scores' raw values"
        + ("" if result.dry_run else f" ({result.batches} batches); tokens, cost and findings kept")
    )
    return 0


def status(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from wasteaudit.storage.engine import safe_url
    from wasteaudit.storage.models import CallRow, FindingRow, RunRow
    from wasteaudit.storage.schema import current_revision

    engine = _open(args)
    revision = current_revision(engine)
    console = _console()
    console.print(f"database        {safe_url(engine.url)}")
    console.print(f"schema          {revision or '(none: run wasteaudit db upgrade)'}")
    if revision is None:
        return 1
    with engine.connect() as conn:
        calls = conn.execute(select(func.count()).select_from(CallRow)).scalar_one()
        runs = conn.execute(select(func.count()).select_from(RunRow)).scalar_one()
        unscored = conn.execute(
            select(func.count()).select_from(CallRow).where(CallRow.scored_version.is_(None), CallRow.score_error.is_(None))
        ).scalar_one()
        unpriced = conn.execute(select(func.count()).select_from(CallRow).where(CallRow.priced != "priced")).scalar_one()
        findings = conn.execute(select(func.count()).select_from(FindingRow)).scalar_one()
        last = conn.execute(select(func.max(CallRow.started_at))).scalar_one()
    console.print(f"runs            {runs}")
    console.print(f"calls           {calls} ({unscored} unscored, {unpriced} unpriced or partly priced)")
    from rich.markup import escape

    from wasteaudit.scoring.runner import score_errors

    failed, recent = score_errors(engine, limit=3)
    console.print(f"score errors    {failed} calls could not be scored (not retried; `wasteaudit score --rescore` tries again)" if failed else "score errors    0")
    for call_id, reason in recent:
        console.print(f"  {call_id}  {escape(reason.splitlines()[0][:110] if reason else '')}")
    console.print(f"findings        {findings}")
    console.print(f"last call       {last.isoformat() if last else '-'}")
    return 0


def calls(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from wasteaudit.storage.models import CallRow

    engine = _open(args)
    with engine.connect() as conn:
        rows = conn.execute(select(CallRow).order_by(CallRow.started_at.desc()).limit(args.limit)).all()
    print_calls(list(reversed(rows)))
    return 0


def print_calls(rows: list[Any], title: str = "Captured LLM calls") -> None:
    """A compact table of calls: what the app paid for, per call."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", expand=False, pad_edge=False)
    table.add_column("function", overflow="ellipsis", max_width=22, no_wrap=True)
    table.add_column("model", overflow="ellipsis", max_width=18, no_wrap=True)
    for name in ("in", "cached", "out"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("finish", overflow="ellipsis", max_width=12, no_wrap=True)
    table.add_column("tries", justify="right")
    table.add_column("cost $", justify="right", no_wrap=True)
    table.add_column("usage", overflow="ellipsis", max_width=8, no_wrap=True)

    def num(value: Any) -> str:
        return "-" if value is None else f"{value:,}"

    for row in rows:
        reasons = [r if r is not None else "cut" for r in (row.finish_reasons or [])]
        finish = ",".join(reasons) or (row.error_type or "-")
        if row.stream_state == "abandoned":
            finish = "abandoned"
        table.add_row(
            row.function or "(none)",
            row.response_model or row.request_model or "-",
            num(row.input_tokens),
            num(row.input_cache_read_tokens),
            num(row.output_tokens),
            finish,
            str(row.attempts),
            "-" if row.cost_usd is None else f"{row.cost_usd:.5f}",
            row.usage_source,
        )
    _console().print(table)


def score(args: argparse.Namespace) -> int:
    from wasteaudit.scoring.runner import score_pending

    engine = _open(args)
    if args.rescore:
        from sqlalchemy import update

        from wasteaudit.storage.models import CallRow

        with engine.begin() as conn:
            conn.execute(
                update(CallRow)
                .where(CallRow.content_mode != "pruned")  # their text is gone: their findings stay as scored
                .values(scored_version=None, claimed_by=None, lease_until=None, score_error=None, score_attempts=None)
            )
    from rich.progress import Progress

    from wasteaudit.scoring.runner import unscored

    with Progress(console=_console(), transient=True) as bar:
        task = bar.add_task("scoring calls", total=unscored(engine))
        count = score_pending(engine, batch_size=args.batch_size, progress=lambda done: bar.update(task, completed=done), scorer=_scorer(args))
    print(f"scored {count} calls")
    from wasteaudit.scoring import Scorer
    from wasteaudit.scoring.runner import scored_elsewise

    stale = scored_elsewise(engine, Scorer().fingerprint)
    if stale:
        print(f"{stale} calls were scored under other settings (scorer version, thresholds or model); `wasteaudit score --rescore` rescores them")
    return 0


def _scorer(args: argparse.Namespace) -> Any:
    """A rules-only scorer for ``--rules-only``; None lets the runner load the default (with embeddings)."""
    if not getattr(args, "rules_only", False):
        return None
    from wasteaudit.scoring.engine import Scorer

    return Scorer(embedder=None)


def worker(args: argparse.Namespace) -> int:
    import signal

    from wasteaudit.scoring.runner import run_worker

    engine = _open(args)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    count = run_worker(engine, stop_event=stop, poll_s=args.poll, batch_size=args.batch_size, lease_s=args.lease, scorer=_scorer(args))
    print(f"worker stopped: scored {count} calls", flush=True)
    return 0


def demo(args: argparse.Namespace) -> int:
    from wasteaudit.demo import run_demo

    if args.live and not (os.environ.get("OPENAI_API_KEY") or os.environ.get("ANTHROPIC_API_KEY")):
        raise ConfigError("--live needs OPENAI_API_KEY or ANTHROPIC_API_KEY; without --live the demo uses its local endpoint")
    return run_demo(database_url=args.database_url, live=args.live, output=args.output)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
