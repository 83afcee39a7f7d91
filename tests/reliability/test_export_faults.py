"""OTLP export against a collector that is down (connection refused) or hangs (accepts, never answers).

The app's calls must return what the provider sent, as fast as with export off (the export runs on
the SDK's background threads), failures must be counted in ``wasteaudit.status()["export"]``, and
shutting export down must return within its timeout instead of waiting on the dead collector.
Real OTLP/HTTP exporters and real sockets on 127.0.0.1; only the collector's behaviour is staged.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

# The loopback LLM server and the instrumented OpenAI client are the instrumentation suite's own.
from instrumentation.openai_support import _shared_llm_server, instrumented, llm_server, oai  # noqa: F401

import wasteaudit
from wasteaudit.export import _state, otlp
from wasteaudit.localllm import Reply
from wasteaudit.localllm import openai_bodies as ob
from wasteaudit.scoring.findings import Finding

MESSAGES = [{"role": "user", "content": "Say hi"}]
N_CALLS = 20
EXPORT_TIMEOUT_S = 1.0  # each export request gives up after this
SHUTDOWN_TIMEOUT_S = 2.0


class HangingCollector:
    """A TCP server on 127.0.0.1 that accepts connections, reads nothing and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="hanging-collector", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def _dead_endpoint() -> str:
    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class ThreadRecordingExporter:
    """Wraps a real OTLP exporter and records which threads it exported from."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.threads: set[str] = set()

    def export(self, *args: Any, **kwargs: Any) -> Any:
        self.threads.add(threading.current_thread().name)
        return self.inner.export(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def providers(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Private SDK providers; batch processors that export every 20 ms (while the calls run)."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "20")
    made = {
        "tracer_provider": TracerProvider(shutdown_on_exit=False),
        "meter_provider": MeterProvider(shutdown_on_exit=False),
        "logger_provider": LoggerProvider(shutdown_on_exit=False),
    }
    try:
        yield made
    finally:
        otlp.shutdown_export(timeout_s=1)
        for provider in made.values():
            provider.shutdown()
        _state.reset_counters()


def _calls(client: Any, llm_server: Any, n: int) -> tuple[float, list[str]]:
    """Make ``n`` calls; the wall time and what the app got back."""
    answers = []
    started = time.perf_counter()
    for i in range(n):
        llm_server.enqueue(Reply(json=ob.chat_completion(f"answer {i}", prompt_tokens=5, completion_tokens=2)))
        answers.append(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content)
    return time.perf_counter() - started, answers


def _run_against(endpoint: str, providers: dict[str, Any], oai: Any, llm_server: Any, records: Any) -> dict[str, Any]:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    client = oai()
    _calls(client, llm_server, 3)  # warm-up (connections, lazy imports)
    base_s, base_answers = _calls(client, llm_server, N_CALLS)

    spans = ThreadRecordingExporter(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=EXPORT_TIMEOUT_S))
    handle = wasteaudit.export.setup_export(
        endpoint=endpoint, timeout=EXPORT_TIMEOUT_S, span_exporter=spans, metric_export_interval_s=0.05, **providers
    )
    export_s, answers = _calls(client, llm_server, N_CALLS)
    call = records.calls[-1]
    wasteaudit.export.export_findings(
        [Finding(call_id=call.id, run_id=None, kind="failed", subkind="error", tier="confirmed", tokens=1, confidence=1.0)], {call.id: call}
    )
    deadline = time.monotonic() + 30
    status = wasteaudit.status()["export"]
    while time.monotonic() < deadline and not all(status[s]["failed_batches"] for s in ("traces", "metrics", "logs")):
        time.sleep(0.1)
        status = wasteaudit.status()["export"]

    threads = set(spans.threads)  # while the app ran (a flush at shutdown runs on the caller's thread, by design)
    started = time.perf_counter()
    otlp.shutdown_export(timeout_s=SHUTDOWN_TIMEOUT_S)
    shutdown_s = time.perf_counter() - started
    assert handle._closed
    return {"base_s": base_s, "export_s": export_s, "answers": answers, "base_answers": base_answers, "status": status,
            "shutdown_s": shutdown_s, "export_threads": threads}


def _check(result: dict[str, Any]) -> None:
    expected = [f"answer {i}" for i in range(N_CALLS)]
    assert result["answers"] == expected and result["base_answers"] == expected  # the app's results are unchanged
    # Exports ran on the SDK's background threads only, never on the app's thread ...
    assert result["export_threads"] and threading.current_thread().name not in result["export_threads"]
    # ... so the calls took about as long as with export off (a generous bound: a shared CI machine).
    assert result["export_s"] < 3 * result["base_s"] + 1.0, (result["export_s"], result["base_s"])
    status = result["status"]
    for signal in ("traces", "metrics", "logs"):
        assert status[signal]["failed_batches"] >= 1 and status[signal]["exported_batches"] == 0, (signal, status)
    assert status["failed_exports"] >= 3 and status["traces"]["last_error"]
    # The flush of all three signals shares the timeout; an export already in flight may add its own timeout.
    assert result["shutdown_s"] < SHUTDOWN_TIMEOUT_S + EXPORT_TIMEOUT_S + 1.0, result["shutdown_s"]


def test_a_collector_that_is_down_costs_the_app_nothing_and_is_counted(providers, oai, llm_server, records):
    result = _run_against(_dead_endpoint(), providers, oai, llm_server, records)
    _check(result)
    print(f"\ncollector down: {N_CALLS} calls {result['export_s'] * 1000:.0f} ms with export vs {result['base_s'] * 1000:.0f} ms without; "
          f"shutdown {result['shutdown_s']:.2f} s")


def test_a_collector_that_hangs_costs_the_app_nothing_and_shutdown_is_bounded(providers, oai, llm_server, records):
    collector = HangingCollector()
    try:
        result = _run_against(collector.endpoint, providers, oai, llm_server, records)
        assert collector.accepted  # the exporters did connect, and got no answer
        _check(result)
    finally:
        collector.close()
    print(f"\ncollector hangs: {N_CALLS} calls {result['export_s'] * 1000:.0f} ms with export vs {result['base_s'] * 1000:.0f} ms without; "
          f"shutdown {result['shutdown_s']:.2f} s")
