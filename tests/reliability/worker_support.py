"""Helpers for the worker, prune and export-fault tests: realistic short records, a database to
fill, and ``wasteaudit worker`` subprocesses.

Imported by module name (``tests/`` is on ``sys.path``), so no conftest is needed here; the
``db_url`` / ``pg_url`` fixtures are the storage suite's own, re-exported by the test modules.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from wasteaudit.records import AttemptRecord, CallRecord, ChoiceContent, RunRecord, ScoreRecord, new_id

REPO = Path(__file__).resolve().parents[2]

__all__ = ("REPO", "Workers", "build_workload", "store", "wait_until")

_ANSWERS = (
    "Paris is the capital of France.",
    "The invoice total is 1,240 EUR, due on the 30th.",
    "Use an index on (customer_id, created_at) to speed up that query.",
    "Sure! The meeting moved to Thursday at 10:00. I hope this helps!",
    '{"sentiment": "positive", "score": 0.91}',
    "Step 1: open the settings. Step 2: choose Billing. Step 3: download the PDF.",
)
_PROMPTS = (
    "What is the capital of France?",
    "Summarize this invoice in one sentence.",
    "How do I make this SQL query faster?",
    "When is the meeting now?",
    "Classify the sentiment of this review as JSON.",
    "How do I download my bill?",
)


def build_workload(n_calls: int, *, start: float, calls_per_run: int = 5, runless_every: int = 5) -> list[Any]:
    """``n_calls`` finished chat calls with short, varied content: most in ended ``@audit`` runs
    (with return values, so use is observable, and a quality score), every ``runless_every``-th
    run-less; some truncated, some repeated answers. Records are in submission order (runs first)."""
    records: list[Any] = []
    at = start
    i = 0
    while i < n_calls:
        run: RunRecord | None = None
        size = 1 if (i // calls_per_run) % runless_every == runless_every - 1 else calls_per_run
        runless = size == 1
        if not runless:
            run = RunRecord(id=new_id(), name=f"app.task{i % 7}", started_at=at, ended_at=at + 5.0, status="ok")
        answers: list[str] = []
        for _ in range(min(size, n_calls - i)):
            k = i % len(_ANSWERS)
            text = _ANSWERS[k]
            truncated = i % 37 == 0
            if i % 11 == 0:
                text = f"{text} {text}"  # a repeated answer
            call = CallRecord(
                id=new_id(),
                provider="openai",
                operation="chat",
                api="chat.completions",
                started_at=at,
                ended_at=at + 0.8,
                duration_s=0.8,
                run_id=run.id if run else None,
                function=run.name if run else None,
                request_model="gpt-4o-mini",
                response_model="gpt-4o-mini-2024-07-18",
                request_params={"max_tokens": 64, "temperature": 0.2},
                usage_source="provider",
                input_tokens=40 + k,
                output_tokens=max(1, len(text) // 4),
                output_reasoning_tokens=0,
                finish_reasons=["length" if truncated else "stop"],
                finish_category="length" if truncated else "stop",
                status_code=200,
                input_messages=[{"role": "user", "content": f"{_PROMPTS[k]} (ticket {i})"}],
                choices=[ChoiceContent(index=0, text=text, finish_reason="length" if truncated else "stop")],
                attempts=[AttemptRecord(index=0, started_at=at, duration_s=0.8, status_code=200)],
            )
            answers.append(text)
            records.append(call)
            i += 1
            at += 0.5
        if run is not None:
            run.return_value = answers[0]
            records.append(run)
            records.append(ScoreRecord(id=new_id(), run_id=run.id, name="quality", value=0.8, created_at=at))
    return records


def store(url: str, records: Iterable[Any], *, timeout: float = 120.0) -> None:
    """Write records through the real background writer (pricing, content policy) and wait."""
    from wasteaudit.storage.writer import Writer

    writer = Writer(url, flush_interval=0.01, batch_size=1000, queue_size=50_000)
    try:
        for record in records:
            assert writer.submit(record)
        assert writer.flush(timeout=timeout)
        stats = writer.stats()
        assert not any(v for k, v in stats.items() if k.startswith("dropped_")), stats
    finally:
        writer.shutdown(timeout=10)


def wait_until(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.25) -> Any:
    """Poll ``predicate`` until it is truthy (returned) or ``timeout`` passes (returns the last value)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


class Workers:
    """``wasteaudit worker`` subprocesses against one database (rules-only unless asked; output to files)."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, name: str, *extra: str, rules_only: bool = True) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "WASTEAUDIT_"))}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        env["HF_HUB_OFFLINE"] = "1"
        cmd = [sys.executable, "-m", "wasteaudit", "--database-url", self.url, "worker", "--poll", "0.2", *extra]
        if rules_only:
            cmd.append("--rules-only")
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=self.tmp)
        self.procs[name] = proc
        return proc

    def output(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(10)

    def stop_all(self, timeout: float = 30.0) -> dict[str, int | None]:
        """SIGTERM each worker (they finish their batch and exit 0); returns the exit codes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait(10)
        return codes
