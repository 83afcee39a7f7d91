"""A real backend: spans exported to a local Arize Phoenix and read back through its REST API.

Phoenix runs from its own virtual environment (``tests/support/phoenix_env.sh``, reused across
runs), bound to 127.0.0.1 on free ports, with telemetry and external resources off and its working
directory (SQLite database included) in a temporary folder. The app runs in a subprocess so it
sets up its global OpenTelemetry providers exactly as a user's would, through
``wasteaudit.configure(export="otlp")``. Every wait is bounded and the server is stopped at the end.
Phoenix ingests traces only (no OTLP metrics or logs): those are covered by test_export_otlp.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from export_support import REPO, run_app

pytestmark = pytest.mark.slow

PROJECT = "wasteaudit-it"
INSTALL_TIMEOUT_S = 1500
START_TIMEOUT_S = 240
REQUIRE = os.environ.get("WASTEAUDIT_REQUIRE_SERVICES") == "1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - 127.0.0.1 only
        return json.loads(response.read() or b"null") if "json" in (response.headers.get("Content-Type") or "") else response.read()


def _unavailable(message: str) -> None:
    if REQUIRE:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory) -> Iterator[str]:
    script = REPO / "tests" / "support" / "phoenix_env.sh"
    try:
        made = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _unavailable("installing Arize Phoenix took too long")
    if made.returncode != 0:
        _unavailable(f"could not install Arize Phoenix: {made.stderr[-2000:]}")
    python = Path(made.stdout.strip().splitlines()[-1])
    workdir = tmp_path_factory.mktemp("phoenix")
    port, grpc_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_", "WASTEAUDIT_"))}
    env.update(
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(grpc_port),
        PHOENIX_WORKING_DIR=str(workdir),
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
    )
    log = open(workdir / "phoenix.log", "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen([str(python), "-m", "phoenix.server.main", "serve"], env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                _unavailable(f"Phoenix exited with {proc.returncode}: {(workdir / 'phoenix.log').read_text(errors='replace')[-3000:]}")
            try:
                if _get(f"{url}/healthz", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                _unavailable(f"Phoenix did not become healthy in {START_TIMEOUT_S}s: {(workdir / 'phoenix.log').read_text(errors='replace')[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: the server and anything it spawned
                proc.wait(timeout=10)
        log.close()


APP = """
import json, sys
import openai
import wasteaudit
from wasteaudit.localllm import LocalLLMServer, Reply
from wasteaudit.localllm import openai_bodies as ob
from wasteaudit.testing import capture

wasteaudit.configure(export="otlp", export_metrics=False, export_logs=False, storage=False)  # Phoenix takes traces only
wasteaudit.instrument_openai()

with LocalLLMServer() as server, capture() as sink:
    server.enqueue(
        Reply(json=ob.chat_completion("Paris.", prompt_tokens=11, completion_tokens=2)),
        Reply(json=ob.chat_completion("Lyon", prompt_tokens=7, completion_tokens=1, finish_reason="length")),
    )
    client = openai.OpenAI(base_url=server.openai_base_url, api_key="sk-test-not-a-real-key", max_retries=0)

    @wasteaudit.audit(name="geo_quiz")
    def quiz():
        first = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Capital of France?"}], temperature=0.2, max_tokens=30)
        second = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Second city?"}], max_tokens=1)
        return first.choices[0].message.content + second.choices[0].message.content

    quiz()
    calls = [{"id": c.id, "trace_id": c.trace_id, "span_id": c.span_id, "run_id": c.run_id} for c in sink.calls]

from wasteaudit.export.otlp import current_handle
assert current_handle().force_flush(20)
print(json.dumps({"calls": calls, "export": wasteaudit.status()["export"]["traces"]}))
"""


def test_spans_reach_phoenix_with_gen_ai_and_wasteaudit_attributes_intact(phoenix):
    env = {"WASTEAUDIT_OTLP_ENDPOINT": phoenix, "OTEL_SERVICE_NAME": "quiz-app", "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={PROJECT}"}
    out = run_app(APP, env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["export"]["failed_batches"] == 0 and result["export"]["exported_items"] >= 3
    first, second = result["calls"]

    def fetch() -> list[dict[str, Any]]:
        try:
            return _get(f"{phoenix}/v1/projects/{PROJECT}/spans?limit=100")["data"]
        except (urllib.error.URLError, OSError, KeyError, TypeError):
            return []

    deadline = time.monotonic() + 60  # Phoenix inserts spans asynchronously
    spans = fetch()
    while len(spans) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
        spans = fetch()
    by_id = {s["context"]["span_id"]: s for s in spans}
    assert first["span_id"] in by_id and second["span_id"] in by_id, spans

    run = next(s for s in spans if s["name"] == "audit geo_quiz")
    a, b = by_id[first["span_id"]], by_id[second["span_id"]]
    assert a["context"]["trace_id"] == first["trace_id"] == run["context"]["trace_id"]
    assert a["parent_id"] == run["context"]["span_id"] and a["name"] == "chat gpt-4o-mini"

    attrs = a["attributes"]
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 30,
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 2,
        "gen_ai.response.finish_reasons": ["stop"],
        "server.address": "127.0.0.1",
        "wasteaudit.call.id": first["id"],
        "wasteaudit.run.id": first["run_id"],
        "wasteaudit.run.name": "geo_quiz",
        "wasteaudit.usage_source": "provider",
        "wasteaudit.finish.category": "stop",
        "wasteaudit.attempts": 1,
    }
    assert {k: attrs.get(k) for k in expected} == expected
    assert b["attributes"]["gen_ai.response.finish_reasons"] == ["length"]
    assert b["attributes"]["wasteaudit.finish.category"] == "length"
    assert run["attributes"]["wasteaudit.run.status"] == "ok"
