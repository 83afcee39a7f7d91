"""Load: many threads, tasks and processes calling through the instrumented openai SDK; every
call is stored exactly once (counted by the marker each call carries), and memory stays bounded
while the database is down. Bounded in count and time, loopback only."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import wasteaudit
from reliability_support import ask, check_answer, openai_client, stored_markers

pytestmark = pytest.mark.slow


def _assert_each_once(stored: list[str], expected: list[str]) -> None:
    assert len(stored) == len(expected), f"{len(stored)} stored, {len(expected)} made"
    assert sorted(stored) == sorted(expected)


def test_32_threads_calling_at_once_are_each_recorded_once(echo_server: Any, audited: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'threads.db'}"
    audited(database_url=url, batch_size=100)
    per_thread = 25
    errors: list[BaseException] = []

    def work(slot: int) -> None:
        client = openai_client(echo_server)
        try:
            for i in range(per_thread):
                marker = f"t{slot}-{i}"
                check_answer(ask(client, marker), marker)
        except BaseException as exc:  # surfaced below: a thread's assertion must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[:3]
    assert wasteaudit.flush(60)
    _assert_each_once(stored_markers(url), [f"t{s}-{i}" for s in range(32) for i in range(per_thread)])
    status = wasteaudit.status()
    assert status["written"] == 32 * per_thread and status["dropped_queue_full"] == 0


def test_1000_concurrent_asyncio_tasks_are_each_recorded_once(echo_server: Any, audited: Any, tmp_path: Path) -> None:
    import httpx2
    import openai

    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    audited(database_url=url, batch_size=250)
    markers = [f"task-{i}" for i in range(1000)]

    async def main() -> None:
        # One client, as an app has: up to 100 connections, the other tasks wait for one.
        http = httpx2.AsyncClient(verify=False, limits=httpx2.Limits(max_connections=100, max_keepalive_connections=100))
        client = openai.AsyncOpenAI(base_url=echo_server.openai_base_url, api_key="sk-test-not-a-real-key",
                                    max_retries=0, http_client=http, timeout=120)
        try:
            async def one(marker: str) -> None:
                response = await client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"Summarize the report. {marker}"}]
                )
                check_answer(response, marker)

            await asyncio.wait_for(asyncio.gather(*(one(marker) for marker in markers)), 180)
        finally:
            await http.aclose()

    asyncio.run(main())
    assert wasteaudit.flush(60)
    _assert_each_once(stored_markers(url), markers)


_CHILD = textwrap.dedent("""
    import sys
    import httpx2, openai, wasteaudit
    url, base_url, prefix, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    wasteaudit.configure(database_url=url, flush_interval=0.05, batch_size=50)
    wasteaudit.instrument_openai()
    client = openai.OpenAI(base_url=base_url, api_key="sk-test-not-a-real-key", max_retries=0,
                           http_client=httpx2.Client(verify=False))
    for i in range(calls):
        marker = f"{prefix}-{i}"
        response = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"Summarize the report. {marker}"}])
        assert response.id == marker
    assert wasteaudit.flush(60), wasteaudit.status()
    status = wasteaudit.status()
    assert status["written"] == calls, status
""")


def _run_processes(url: str, base_url: str, processes: int, calls: int) -> list[str]:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "WASTEAUDIT_RAISE_INTERNAL": "1"}
    children = [
        subprocess.Popen([sys.executable, "-c", _CHILD, url, base_url, f"p{k}", str(calls)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in range(processes)
    ]
    for child in children:
        _, stderr = child.communicate(timeout=180)
        assert child.returncode == 0, stderr[-2000:]
    return [f"p{k}-{i}" for k in range(processes) for i in range(calls)]


def test_four_processes_writing_one_sqlite_file_are_each_recorded_once(echo_server: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    expected = _run_processes(url, echo_server.openai_base_url, 4, 100)
    _assert_each_once(stored_markers(url), expected)


@pytest.mark.postgres
def test_eight_processes_writing_one_postgresql_database_are_each_recorded_once(echo_server: Any, pg_url: str) -> None:
    expected = _run_processes(pg_url, echo_server.openai_base_url, 8, 40)
    _assert_each_once(stored_markers(pg_url), expected)


def test_memory_stays_bounded_while_the_database_is_down(audited: Any, tmp_path: Path) -> None:
    """100,000 calls of ~4 KB content each against a database that is down: the buffer keeps
    at most queue_size records, the rest are counted as dropped, memory does not grow with them."""
    from storage.conftest import make_call
    from wasteaudit._internal import pipeline

    queue_size = 1_000
    audited(database_url=f"sqlite:///{tmp_path / 'missing-dir' / 'a.db'}", queue_size=queue_size, batch_size=100)
    text = "Summarize the quarterly report please. " * 100

    def push(count: int) -> None:
        for i in range(count):  # each call's own ~4 KB of content, as real calls have
            pipeline.emit(make_call(input_messages=[{"role": "user", "content": f"{text}{i}"}]))

    push(queue_size)  # the buffer fills; the writer is retrying
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        push(99_000)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    status = wasteaudit.status()
    assert status["pending"] <= queue_size
    assert status["dropped_queue_full"] >= 99_000
    assert status["submitted"] + status["dropped_queue_full"] == 100_000
    assert status["written"] == 0
    # 99,000 records of ~4.5 KB would be ~450 MB if they were kept; the bound allows a few MB of noise.
    assert after - before < 5_000_000, after - before
    assert peak - before < 10_000_000, peak - before
