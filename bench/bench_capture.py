"""Capture overhead: CPU added per call by wasteaudit's instrumentation, against the bare SDK and peers.

One process, interleaved rounds: every round runs each configuration on the same workload, so
machine noise hits all of them alike; figures are medians over rounds of CPU time per call on
the calling thread (the app's request path; exporters and our writer run on their own threads —
the writer's cost is measured by bench_ingest.py). Process CPU is shown beside it for honesty.

Transports: ``inproc`` (httpx2.MockTransport, no server noise) and ``loopback`` (LocalLLMServer on
127.0.0.1). Configurations are switched by snapshotting and restoring the SDK classes, because
some peers (Langfuse's drop-in) patch at import time and cannot be undone.

Run: ``python bench/bench_capture.py [--rounds 15] [--calls 200] [--transport inproc|loopback|both]``.
Peers are measured when installed (``pip install langfuse openinference-instrumentation-openai``).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx2  # noqa: E402

from wasteaudit.localllm import LocalLLMServer, Reply  # noqa: E402
from wasteaudit.localllm import anthropic_bodies as ab  # noqa: E402
from wasteaudit.localllm import openai_bodies as ob  # noqa: E402

OPENAI_MODULES = [
    "openai._base_client",
    "openai._streaming",
    "openai._legacy_response",
    "openai._response",
    "openai.resources.chat.completions.completions",
    "openai.resources.completions",
    "openai.resources.responses.responses",
    "openai.lib.streaming.chat._completions",
    "openai.lib.streaming.responses._responses",
]
ANTHROPIC_MODULES = [
    "anthropic._base_client",
    "anthropic._streaming",
    "anthropic.resources.messages.messages",
    "anthropic.resources.beta.messages.messages",
    "anthropic.lib.streaming._messages",
    "anthropic.lib.streaming._beta_messages",
]

LOREM = (
    "To reset your password, open Settings, choose Security, and select Reset password. "
    "You will receive an email with a link that is valid for thirty minutes. "
)


# --------------------------------------------------------------------------------------------- patch snapshots
def _classes(modules: list[str]) -> list[type]:
    found: list[type] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module.__name__:
                found.append(obj)
    return found


def snapshot(classes: list[type]) -> dict[type, dict[str, Any]]:
    return {cls: dict(vars(cls)) for cls in classes}


def restore(snap: dict[type, dict[str, Any]]) -> None:
    for cls, attrs in snap.items():
        current = dict(vars(cls))
        for name, value in attrs.items():
            if current.get(name) is not value and name not in ("__dict__", "__weakref__", "__doc__"):
                try:
                    setattr(cls, name, value)
                except (AttributeError, TypeError):
                    pass
        for name in set(current) - set(attrs):
            try:
                delattr(cls, name)
            except (AttributeError, TypeError):
                pass


# --------------------------------------------------------------------------------------------- transports
def _sse_bytes(events: list[str]) -> bytes:
    return "".join(e.rstrip("\n") + "\n\n" for e in events).encode()


@dataclass
class Canned:
    """A prebuilt HTTP response, served by the in-process transport or the loopback server."""

    body: bytes
    sse: bool
    headers: dict[str, str] = field(default_factory=dict)

    def httpx(self, request: httpx2.Request) -> httpx2.Response:
        ctype = "text/event-stream; charset=utf-8" if self.sse else "application/json"
        return httpx2.Response(200, content=self.body, headers={"content-type": ctype, **self.headers}, request=request)

    def reply(self) -> Reply:
        if self.sse:
            return Reply(sse=[e for e in self.body.decode().split("\n\n") if e.strip()], headers=self.headers)
        return Reply(body=self.body, headers=self.headers)


# --------------------------------------------------------------------------------------------- workloads
def openai_workloads() -> dict[str, tuple[Canned, Callable[[Any], None]]]:
    text = LOREM * 2
    words = text.split()
    chat = Canned(json.dumps(ob.chat_completion(text, prompt_tokens=60, completion_tokens=80)).encode(), False)
    deltas = [" ".join(words[i : i + 2]) + " " for i in range(0, 40, 2)]  # ~20 content chunks
    stream = Canned(_sse_bytes(ob.chat_chunks(deltas, include_usage=True, usage=ob.chat_usage(60, 40))), True)
    responses = Canned(json.dumps(ob.response(text, input_tokens=60, output_tokens=80)).encode(), False)
    messages = [{"role": "system", "content": "You are a helpful support agent."}, {"role": "user", "content": "How do I reset my password?"}]

    def chat_call(client: Any) -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=200)

    def stream_call(client: Any) -> None:
        for _ in client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}):
            pass

    def responses_call(client: Any) -> None:
        client.responses.create(model="gpt-4o-mini", input="How do I reset my password?", max_output_tokens=200)

    return {"openai chat": (chat, chat_call), "openai chat stream (~20 chunks)": (stream, stream_call), "openai responses": (responses, responses_call)}


def anthropic_workloads() -> dict[str, tuple[Canned, Callable[[Any], None]]]:
    text = LOREM * 2
    msg = ab.message(text, usage=ab.usage(input_tokens=60, output_tokens=80))
    plain = Canned(json.dumps(msg).encode(), False, {"request-id": "req_bench"})
    stream = Canned(_sse_bytes(ab.stream_events(msg, chunk_chars=12)), True, {"request-id": "req_bench"})
    messages = [{"role": "user", "content": "How do I reset my password?"}]

    def create_call(client: Any) -> None:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=200, messages=messages)

    def stream_call(client: Any) -> None:
        for _ in client.messages.create(model="claude-sonnet-4-6", max_tokens=200, messages=messages, stream=True):
            pass

    return {"anthropic messages": (plain, create_call), "anthropic messages stream": (stream, stream_call)}


# --------------------------------------------------------------------------------------------- configurations
@dataclass
class Config:
    name: str
    snap: dict[type, dict[str, Any]]
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    enter: Callable[[], None] | None = None
    exit: Callable[[], None] | None = None


def _tracer_provider() -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=100_000))
    trace.set_tracer_provider(provider)
    return provider


def build_openai_configs(classes: list[type], provider: Any) -> list[Config]:
    import wasteaudit

    bare = snapshot(classes)
    configs = [Config("bare SDK", bare)]
    handle = wasteaudit.instrument_openai()
    configs.append(Config("wasteaudit", snapshot(classes)))
    handle.undo()
    restore(bare)
    try:
        from openinference.instrumentation.openai import OpenAIInstrumentor

        instrumentor = OpenAIInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        configs.append(Config("OpenInference", snapshot(classes)))
        instrumentor.uninstrument()
        restore(bare)
    except ImportError:
        print("  (OpenInference not installed: skipped)")
    try:
        os.environ.setdefault("LANGFUSE_PUBLIC_KEY", "pk-lf-bench")
        os.environ.setdefault("LANGFUSE_SECRET_KEY", "sk-lf-bench")
        os.environ.setdefault("LANGFUSE_HOST", "http://127.0.0.1:9")
        os.environ.setdefault("LANGFUSE_BASE_URL", "http://127.0.0.1:9")
        import langfuse.openai  # noqa: F401  (patches at import)

        configs.append(Config("Langfuse drop-in", snapshot(classes)))
        restore(bare)
    except ImportError:
        print("  (Langfuse not installed: skipped)")
    return configs


def build_anthropic_configs(classes: list[type], provider: Any) -> list[Config]:
    import wasteaudit

    bare = snapshot(classes)
    configs = [
        Config("bare SDK (tracing off)", bare, {"open_telemetry": False}),
        Config("SDK built-in tracing", bare, {"open_telemetry": {"tracer_provider": provider}}),
    ]
    handle = wasteaudit.instrument_anthropic()
    snap = snapshot(classes)
    handle.undo()
    restore(bare)
    configs.append(Config("wasteaudit + SDK tracing (enriched span)", snap, {"open_telemetry": {"tracer_provider": provider}}))
    configs.append(Config("wasteaudit (SDK tracing off, own span)", snap, {"open_telemetry": False}))
    return configs


# --------------------------------------------------------------------------------------------- measurement
def measure(make_client: Callable[[Config], Any], configs: list[Config], call: Callable[[Any], None], rounds: int, calls: int) -> dict[str, dict[str, float]]:
    thread: dict[str, list[float]] = {c.name: [] for c in configs}
    process: dict[str, list[float]] = {c.name: [] for c in configs}
    for round_no in range(rounds):
        order = configs[round_no % len(configs) :] + configs[: round_no % len(configs)]
        for config in order:
            restore(config.snap)
            client = make_client(config)
            for _ in range(5):
                call(client)
            gc.collect()
            gc.disable()
            t0, p0 = time.thread_time_ns(), time.process_time_ns()
            for _ in range(calls):
                call(client)
            t1, p1 = time.thread_time_ns(), time.process_time_ns()
            gc.enable()
            thread[config.name].append((t1 - t0) / calls / 1000)
            process[config.name].append((p1 - p0) / calls / 1000)
            client.close()
    return {name: {"thread_us": statistics.median(thread[name]), "process_us": statistics.median(process[name])} for name in thread}


def report(title: str, results: dict[str, dict[str, float]], baseline: str) -> dict[str, Any]:
    base = results[baseline]["thread_us"]
    print(f"\n{title}")
    print(f"  {'configuration':44s} {'CPU/call µs':>12s} {'added µs':>10s} {'ratio':>7s} {'process µs':>11s}")
    out = {}
    for name, figures in results.items():
        added = figures["thread_us"] - base
        print(f"  {name:44s} {figures['thread_us']:12.1f} {added:10.1f} {figures['thread_us'] / base:7.2f} {figures['process_us']:11.1f}")
        out[name] = {**figures, "added_us": added}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--transport", choices=["inproc", "loopback", "both"], default="both")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    import warnings

    warnings.simplefilter("ignore")
    os.environ["WASTEAUDIT_RAISE_INTERNAL"] = "0"

    import anthropic
    import openai

    import wasteaudit

    tmp = tempfile.mkdtemp(prefix="wasteaudit-bench-")
    wasteaudit.configure(database_url=f"sqlite:///{tmp}/capture.db", content_mode="full")
    provider = _tracer_provider()
    openai_classes = _classes(OPENAI_MODULES)
    anthropic_classes = _classes(ANTHROPIC_MODULES)
    openai_configs = build_openai_configs(openai_classes, provider)
    anthropic_configs = build_anthropic_configs(anthropic_classes, provider)
    bare_openai = openai_configs[0].snap
    bare_anthropic = anthropic_configs[0].snap
    print(f"openai {openai.__version__}, anthropic {anthropic.__version__}, python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print(f"rounds={args.rounds} calls/round={args.calls}; CPU time on the calling thread, median over rounds")

    figures: dict[str, Any] = {}
    transports = ["inproc", "loopback"] if args.transport == "both" else [args.transport]
    for transport in transports:
        server = LocalLLMServer().start() if transport == "loopback" else None
        for title, (canned, call) in openai_workloads().items():

            def make_openai(config: Config, canned: Canned = canned) -> Any:
                if server is not None:
                    server.handler = lambda _req, canned=canned: canned.reply()
                    return openai.OpenAI(base_url=server.openai_base_url, api_key="sk-bench", max_retries=0)
                return openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-bench", max_retries=0, http_client=httpx2.Client(transport=httpx2.MockTransport(canned.httpx)))

            figures[f"{transport}: {title}"] = report(f"[{transport}] {title}", measure(make_openai, openai_configs, call, args.rounds, args.calls), "bare SDK")
        restore(bare_openai)
        for title, (canned, call) in anthropic_workloads().items():

            def make_anthropic(config: Config, canned: Canned = canned) -> Any:
                if server is not None:
                    server.handler = lambda _req, canned=canned: canned.reply()
                    return anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="sk-ant-bench", max_retries=0, **config.client_kwargs)
                return anthropic.Anthropic(
                    base_url="http://127.0.0.1:9", api_key="sk-ant-bench", max_retries=0, http_client=httpx2.Client(transport=httpx2.MockTransport(canned.httpx)), **config.client_kwargs
                )

            result = report(f"[{transport}] {title}", measure(make_anthropic, anthropic_configs, call, args.rounds, args.calls), "bare SDK (tracing off)")
            sdk = result["SDK built-in tracing"]["added_us"]
            for name in ("wasteaudit + SDK tracing (enriched span)", "wasteaudit (SDK tracing off, own span)"):
                ratio = result[name]["added_us"] / sdk if sdk > 0 else float("nan")
                print(f"  {name}: added cost = {ratio:.2f} x the SDK's own tracing (target <= 1.10)")
                result[name]["vs_sdk_tracing"] = ratio
            figures[f"{transport}: {title}"] = result
        restore(bare_anthropic)
        if server is not None:
            server.stop()
    wasteaudit.shutdown()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
