"""The FastAPI example service end to end: requests audited without a decorator, feedback by run id,
stored in a real SQLite database, then the week's summary posted to a loopback webhook by
``wasteaudit report --post-to``."""

from __future__ import annotations

import importlib.util
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from instrumentation.openai_support import _shared_llm_server, aoai, instrumented, llm_server, oai  # noqa: E402,F401
from report.builders import monday  # noqa: E402
from report.webhook_receiver import Receiver  # noqa: E402

from wasteaudit import config  # noqa: E402
from wasteaudit._internal import clock, pipeline  # noqa: E402
from wasteaudit.cli import main  # noqa: E402
from wasteaudit.localllm import Reply  # noqa: E402
from wasteaudit.localllm import openai_bodies as ob  # noqa: E402
from wasteaudit.testing import capture  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_middleware" / "app.py"
WEEK = "2026-W46"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("fastapi_middleware_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def stored(tmp_path, instrumented) -> Iterator[str]:
    """Real storage on a fresh SQLite file (after ``instrumented`` set memory-only settings); timestamps inside ``WEEK``."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    previous = config.get_settings()
    pipeline.reset_writer()
    config.set_settings(config.settings_from_env(database_url=url, storage=True, _explicit=True))
    start = (monday(WEEK) + timedelta(days=2, hours=10)).timestamp()
    clock.set_clock(lambda: start + (datetime.now().timestamp() % 60))
    try:
        yield url
    finally:
        clock.set_clock(None)
        pipeline.reset_writer()
        config.set_settings(previous)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_example_service_audits_requests_takes_feedback_and_delivers_the_week(stored, oai, aoai, llm_server, receiver, capsys) -> None:
    app = load_example().create_app(oai(), aoai())
    llm_server.enqueue(
        Reply(json=ob.chat_completion("Use the reset link on the sign-in page.")),
        Reply(json=ob.chat_completion("Open settings, then billing.")),
        Reply(sse=ob.chat_chunks(["Customer ", "cannot ", "log in."], include_usage=True)),
    )
    with capture() as records, TestClient(app) as http:
        first = http.post("/tickets/42/answer", json={"text": "How do I reset my password?"})
        second = http.post("/tickets/7/answer", json={"text": "Where are invoices?"})
        with http.stream("GET", "/tickets/42/summary") as streamed:
            events = "".join(streamed.iter_text())
        assert http.get("/healthz").json() == {"status": "ok"}
        run_id = first.json()["run_id"]
        assert first.headers["x-wasteaudit-run-id"] == run_id
        assert http.post("/api/feedback", json={"run_id": run_id, "score": "up"}).status_code == 202
        assert http.post("/api/feedback", json={"run_id": second.json()["run_id"], "score": 0.2}).status_code == 202
    assert first.json()["answer"] == "Use the reset link on the sign-in page."
    assert "data: Customer \n\n" in events and events.endswith("event: done\ndata: {}\n\n")

    # runs named by route template, not by raw path; no run for /healthz or /api/feedback
    assert sorted(r.name for r in records.runs) == ["/tickets/{ticket_id}/answer", "/tickets/{ticket_id}/answer", "/tickets/{ticket_id}/summary"]
    assert {c.run_id for c in records.calls} == {r.id for r in records.runs}
    assert all(r.tags["service"] == "support-bot" for r in records.runs)
    assert [(s.run_id, s.value) for s in records.scores] == [(run_id, 1.0), (second.json()["run_id"], 0.2)]
    assert pipeline.flush(30)

    # the scheduled job: the week's summary, delivered to the team's webhook
    code = main(["--database-url", stored, "report", "--week", WEEK, "--post-to", receiver.url, "--post-format", "json"])
    assert code == 0, capsys.readouterr().err
    (summary,) = receiver.bodies
    assert summary["period"] == WEEK
    assert summary["totals"]["runs"] == 3 and summary["totals"]["calls"] == 3
    assert summary["totals"]["quality_mean"] == pytest.approx(0.6)  # (1.0 + 0.2) / 2 runs with feedback
    assert "Use the reset link" not in json.dumps(summary)  # no model output unless --post-content


def test_middleware_bench_runs_in_a_tiny_configuration() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "bench" / "bench_middleware.py"), "--rounds", "2", "--requests", "50", "--json"],
                         capture_output=True, text=True, timeout=180, cwd=root)
    assert out.returncode == 0, out.stderr
    results = {r["app"]: r for r in json.loads(out.stdout)["results"]}
    assert {"asgi-raw", "starlette", "wsgi-raw", "wsgi-stream", "flask"} <= set(results)
    assert all(r["bare_us"] > 0 and r["wrapped_us"] > 0 and r["target_us"] == 20.0 for r in results.values())
