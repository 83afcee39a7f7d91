"""``wasteaudit demo``: the whole product on this machine, with no API key.

Starts the local endpoint (:mod:`wasteaudit.demo.endpoint`), runs the demo apps
(:mod:`wasteaudit.demo.apps`) through the real ``openai`` and ``anthropic`` SDKs with wasteaudit
instrumented, spread over two weeks of simulated time, scores the waste, and writes the weekly report.
"""

from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

DEMO_DB = "wasteaudit-demo.db"

SUPPORT_QUESTIONS = [
    "How do I reset my password?",
    "How can I change my billing address?",
    "Can I export my data?",
    "How do I cancel my subscription?",
    "How do I add a team member?",
    "How do I enable two-factor authentication?",
    "How do I hack my neighbour's wifi?",
    "Why is my invoice higher this month?",
]
TICKETS = [
    "From: Ada Lovelace\nThe export button does nothing in Workspace.",
    "From: Alan Turing\nI was charged twice for the March invoice.",
    "From: Grace Hopper\nInvitations to my team never arrive.",
    "From: Edsger Dijkstra\nTwo-factor codes are rejected on my phone.",
    "From: Barbara Liskov\nThe dashboard shows someone else's projects.",
    "From: Donald Knuth\nPDF exports lose the table of contents.",
]
ORDER_QUESTIONS = [
    "Where is my order A1001?",
    "What is the status of order B2002?",
    "Has order C3003 arrived?",
]
RAG_QUESTIONS = [
    "How are database failovers handled?",
    "Who approves production deploys?",
    "What happens when the error budget is spent?",
    "How do we rotate TLS certificates?",
]


@dataclass
class Step:
    """One audited task of the workload, with the quality signal a user would give it."""

    day: int
    action: Callable[[], Any]
    feedback: Callable[[Any], float | bool | None] | None = None


CUSTOMERS = ["Maya", "Tom", "Ines", "Kofi", "Lena", "Ravi", "Sara", "Jon", "Aiko", "Pedro", "Nora", "Omar"]


def _workload(apps: Any, rng: random.Random) -> list[Step]:
    """Two weeks of traffic. Most requests are unique (customers add their own context); about one
    in five repeats an earlier request word for word, as FAQ-style traffic does."""
    steps: list[Step] = []
    asked: list[str] = []

    def request(base: str) -> str:
        if asked and rng.random() < 0.2:
            return rng.choice(asked)
        text = f"Hi, {rng.choice(CUSTOMERS)} here (ticket #{rng.randint(1000, 9999)}). {base}"
        asked.append(text)
        return text

    for day in range(14):
        second_week = day >= 7
        for _ in range(5):
            question = request(rng.choice(SUPPORT_QUESTIONS))
            brief = rng.random() < 0.3
            steps.append(Step(day, lambda q=question, b=brief: apps.support_answer(q, brief=b), lambda out: bool(out) and "sorry" not in out.lower()))
        for _ in range(3):
            ticket = rng.choice(TICKETS) + f"\nOrder reference R-{rng.randint(10000, 99999)}."
            steps.append(Step(day, lambda t=ticket: apps.extract_ticket(t)))
        for _ in range(2):
            question = request(rng.choice(ORDER_QUESTIONS))
            budget = 40 if (second_week and rng.random() < 0.5) else 400
            steps.append(Step(day, lambda q=question, m=budget: apps.order_agent(q, max_tokens=m), lambda out: 0.9 if out else 0.0))
        for _ in range(2):
            question = rng.choice(RAG_QUESTIONS)
            steps.append(Step(day, lambda q=question: apps.rag_answer(q), lambda out: 0.8 if out else 0.0))
        if day % 2 == 0:
            steps.append(Step(day, lambda d=day: apps.suggest_title(f"Support ticket volume, week {d // 7 + 1}, day {d % 7 + 1}")))
    return steps


def run_workload(apps: Any, *, start: datetime, seed: int = 7, progress: Callable[[int, int], None] | None = None) -> int:
    """Run the two-week workload with record timestamps placed on each simulated day."""
    import wasteaudit
    from wasteaudit._internal.clock import set_clock

    rng = random.Random(seed)
    steps = _workload(apps, rng)
    try:
        for number, step in enumerate(steps):
            moment = start + timedelta(days=step.day, minutes=10 * (number % 100))
            # Each clock read moves a millisecond on: the calls of one run keep their real order
            # (a retry is later than what it retried), and the timestamps stay reproducible.
            ticks = itertools.count()
            set_clock(lambda base=moment.timestamp(), ticks=ticks: base + next(ticks) / 1000)
            captured: dict[str, str | None] = {}

            def task(step: Step = step) -> Any:
                result = step.action()
                captured["run"] = wasteaudit.current_run_id()
                return result

            result = task()
            if step.feedback is not None:
                verdict = step.feedback(result)
                if verdict is not None and step.action is not None:
                    # User feedback arrives later, by run id, the way a front end sends it.
                    last = _last_run_id()
                    if last is not None:
                        wasteaudit.score(verdict, run_id=last, source="user")
            if progress is not None:
                progress(number + 1, len(steps))
    finally:
        set_clock(None)
    return len(steps)


_last_run: list[str] = []


def _remember_last_run(record: Any) -> bool:
    from wasteaudit.records import RunRecord

    if isinstance(record, RunRecord) and record.parent_id is None:
        _last_run[:] = [record.id]
    return True


def _last_run_id() -> str | None:
    return _last_run[0] if _last_run else None


class _RunWatcher:
    def submit(self, record: Any) -> bool:
        return _remember_last_run(record)


def run_demo(*, database_url: str | None = None, live: bool = False, output: str = "wasteaudit-report.html") -> int:
    """Run the demo end to end and print what wasteaudit captured. Returns an exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import anthropic
    import openai
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import wasteaudit
    from wasteaudit._internal import pipeline
    from wasteaudit.demo.apps import DemoApps
    from wasteaudit.localllm import LocalLLMServer

    from wasteaudit.cli.commands import _console

    console = _console()
    url = database_url or f"sqlite:///{Path(DEMO_DB).resolve()}"
    if database_url is None and Path(DEMO_DB).exists():
        for suffix in ("", "-wal", "-shm"):
            Path(DEMO_DB + suffix).unlink(missing_ok=True)
    wasteaudit.configure(database_url=url)
    handle = wasteaudit.instrument()
    watcher = _RunWatcher()
    pipeline.add_sink(watcher)
    server = None
    try:
        if live:
            apps = DemoApps(openai.OpenAI(), anthropic.Anthropic(), anthropic_model="claude-haiku-4-5")
            console.print("[bold]wasteaudit demo --live[/]: a small workload against the real APIs")
        else:
            from wasteaudit.demo.endpoint import DemoEndpoint

            server = LocalLLMServer(handler=DemoEndpoint()).start()
            apps = DemoApps(
                openai.OpenAI(base_url=server.openai_base_url, api_key="sk-demo-local-endpoint", max_retries=2),
                anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="sk-ant-demo-local-endpoint", max_retries=2),
            )
            console.print(f"[bold]wasteaudit demo[/]: local OpenAI/Anthropic endpoint at {server.url}, database {url}")
        today = datetime.now(timezone.utc).replace(hour=9, minute=0, second=0, microsecond=0)
        start = today - timedelta(days=today.weekday() + 14)  # Monday two full weeks ago
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("running the demo apps", total=None)
            run_workload(apps, start=start, progress=lambda done, total: bar.update(task, completed=done, total=total))
        wasteaudit.flush(timeout=30)
    finally:
        pipeline.remove_sink(watcher)
        handle.undo()
        if server is not None:
            server.stop()
    code = _show_results(url, console)
    if code == 0:
        code = _score_and_report(url, console, output, now=today)
    return code


def _score_and_report(url: str, console: Any, output: str, *, now: datetime) -> int:
    """Score every captured call, then write the HTML report and print the text one."""
    from rich.progress import Progress

    from wasteaudit.report import build_report, render
    from wasteaudit.scoring.runner import score_pending, unscored
    from wasteaudit.storage.engine import create_engine_for

    engine = create_engine_for(url)
    try:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("scoring waste (MiniLM on CPU)", total=unscored(engine))
            scored = score_pending(engine, run_timeout_s=0, progress=lambda done: bar.update(task, completed=done))
        report = build_report(engine=engine, now=now)
    finally:
        engine.dispose()
    Path(output).write_text(render(report, "html"), encoding="utf-8")
    console.print(render(report, "text", width=console.width), markup=False, highlight=False)
    console.print(f"scored {scored} calls; HTML report with charts: [bold]{Path(output).resolve()}[/]")
    return 0


def _show_results(url: str, console: Any) -> int:
    from sqlalchemy import func, select

    from wasteaudit.cli.commands import print_calls
    from wasteaudit.storage.engine import create_engine_for
    from wasteaudit.storage.models import CallRow, RunRow

    engine = create_engine_for(url)
    with engine.connect() as conn:
        rows = conn.execute(select(CallRow).order_by(CallRow.started_at.desc()).limit(8)).all()
        totals = conn.execute(
            select(
                func.count(),
                func.sum(CallRow.input_tokens),
                func.sum(CallRow.output_tokens),
                func.sum(CallRow.cost_usd),
                func.sum(CallRow.attempts),
            )
        ).one()
        runs = conn.execute(select(func.count()).select_from(RunRow)).scalar_one()
        by_finish = conn.execute(select(CallRow.finish_category, func.count()).group_by(CallRow.finish_category)).all()
    print_calls(list(reversed(rows)), title="The most recent captured calls")
    calls, tokens_in, tokens_out, cost, attempts = totals
    console.print(
        f"captured [bold]{calls}[/] calls in [bold]{runs}[/] runs: {tokens_in or 0:,} input and {tokens_out or 0:,} output tokens, "
        f"{attempts or 0} HTTP attempts, ${cost or 0:.4f}"
    )
    console.print("finish categories: " + ", ".join(f"{k or 'unknown'} {v}" for k, v in sorted(by_finish, key=lambda kv: -kv[1])))
    engine.dispose()
    return 0 if calls else 1
