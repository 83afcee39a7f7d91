"""Capture overhead: CPU added per call by wasteaudit's instrumentation, against the bare SDK and peers.

One process, interleaved rounds: every round runs each configuration on the same workload, so
machine noise hits all of them alike; figures are medians over rounds of CPU time per call on
the calling thread (the app's request path; exporters and our writer run on their own threads —
the writer's cost is measured by bench_ingest.py). Process CPU is shown beside it for honesty.

Transports: ``inproc`` (httpx2.MockTransport, no server noise) and ``loopback`` (LocalLLMServer on
127.0.0.1). Configurations are switched by snapshotting and restoring the SDK classes, because
some peers (Langfuse's drop-in) patch at import time and cannot be undone.

Run: ``python bench/bench_capture.py [--rounds 15] [--calls 200] [--block 10] [--transport inproc|loopback|both]``.

``--dump FILE`` measures nothing: it makes every workload's call once more (and a few variants:
tool calls, ``n`` choices, a JSON response format, reasoning, a retried attempt, a raw response, a
call inside ``@audit``) through the instrumented SDKs and writes what was recorded — each record's
fields and its span's name, kind, parent and attributes, with ids and timings blanked — as sorted
JSON, so a change to the capture path can be shown to record and export exactly the same
(``diff`` two dumps).
Peers are measured when installed (``pip install langfuse openinference-instrumentation-openai
opentelemetry-instrumentation-openai openinference-instrumentation-anthropic
opentelemetry-instrumentation-anthropic``); OpenLLMetry is the ``opentelemetry-instrumentation-*``
pair. Anthropic's peers run with the SDK's own tracing off, in its place.

wasteaudit finishes calls (reading the result, ending the span, queueing the record) on its
finisher thread; ``--compare-inline`` adds the same instrumentation finishing on the calling thread
(the behaviour before the finisher) as a same-process baseline, and the summary shows the process
CPU added beside the calling thread's. ``--gc`` leaves the garbage collector on while timing (off by
default, so a collection triggered by another configuration's garbage is not charged to this one).
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

import importlib  # noqa: E402


def _sdk_http(sdk: str) -> Any:
    """The HTTP package the installed SDK is built on: httpx2 today, httpx in the oldest supported releases."""
    base = importlib.import_module(f"{sdk}._base_client")
    return getattr(base, "httpx2", None) or base.httpx


try:
    httpx2 = _sdk_http("openai")
except ImportError:  # pragma: no cover - the bench needs openai
    import httpx2  # type: ignore[no-redef]

from wasteaudit.localllm import LocalLLMServer, Reply  # noqa: E402
from wasteaudit.localllm import anthropic_bodies as ab  # noqa: E402
from wasteaudit.localllm import openai_bodies as ob  # noqa: E402

OPENAI_MODULES = [
    "openai._base_client",
    "openai._client",  # OpenInference wraps OpenAI.request here
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
            # the SDKs rename the module of their public classes (openai.OpenAI says "openai")
            if obj.__module__ == module.__name__ or (obj.__module__ in ("openai", "anthropic") and obj not in found):
                found.append(obj)
    return found


# module functions an instrumentation may replace (wasteaudit's Anthropic replace mode hooks these)
MODULE_GLOBALS = {"anthropic._base_client": ("start_api_call_span", "finish_api_call_span")}


def snapshot(classes: list[type]) -> dict[Any, dict[str, Any]]:
    snap: dict[Any, dict[str, Any]] = {cls: dict(vars(cls)) for cls in classes}
    for module_name, names in MODULE_GLOBALS.items():
        module = sys.modules.get(module_name)
        if module is not None:
            snap[module] = {name: vars(module)[name] for name in names if name in vars(module)}
    return snap


def restore(snap: dict[Any, dict[str, Any]]) -> None:
    for cls, attrs in snap.items():
        if not isinstance(cls, type):  # a module: only the listed globals
            for name, value in attrs.items():
                setattr(cls, name, value)
            continue
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
    # runs the workload's call (a reference configuration that wraps the call instead of patching)
    around: Callable[[Callable[[Any], None], Any], None] | None = None
    # switched on before each of its blocks, outside the timed region (e.g. finishing inline)
    setup: Callable[[], None] | None = None


BARE = "bare SDK"
OURS = "wasteaudit"
HAND = "one hand-written span"
A_BARE = "bare SDK (tracing off)"
A_SDK = "SDK built-in tracing"
A_ENRICH = "wasteaudit + SDK tracing (enriched span)"
A_REPLACE = "wasteaudit + SDK tracing (replaced span)"
A_OWN = "wasteaudit (SDK tracing off, own span)"
INLINE = "wasteaudit, finished inline"
A_INLINE = "wasteaudit + SDK tracing, finished inline"
A_REPLACE_INLINE = "wasteaudit + SDK tracing (replaced), finished inline"
# the Anthropic rows of the summary: configuration -> label
ANTHROPIC_ROWS = (
    (A_REPLACE, "replaced span"),
    (A_ENRICH, "enriched span"),
    (A_OWN, "own span"),
    (A_REPLACE_INLINE, "replaced, inline"),
    (A_INLINE, "enriched, inline"),
)


def _finish_inline(inline: bool, sdk_span: str = "replace") -> Callable[[], None]:
    """Whether wasteaudit finishes calls on the calling thread (the pre-finisher behaviour), and
    what it does with the span of an Anthropic client whose own tracing is on (``anthropic_sdk_span``)."""

    def setup() -> None:
        from wasteaudit import config
        from wasteaudit._internal import deferred

        deferred.set_enabled(not inline)
        settings = config.get_settings()
        if settings.anthropic_sdk_span != sdk_span:
            config.set_settings(config.replace(settings, anthropic_sdk_span=sdk_span))

    return setup
OPENAI_PEERS = ("OpenInference", "Langfuse drop-in", "OpenLLMetry")
ANTHROPIC_PEERS = ("OpenInference", "OpenLLMetry")
# workload -> added-CPU target in µs (OpenAI); Anthropic's target is a ratio to the SDK's own tracing
TARGET_US = {"openai chat": 100.0, "openai chat stream (~20 chunks)": 250.0, "openai responses": 100.0}
ANTHROPIC_TARGET_RATIO = 1.10


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


def _hand_span(provider: Any) -> Callable[[Callable[[Any], None], Any], None]:
    """What an app would write by hand: one CLIENT span around the call, five GenAI attributes."""
    from opentelemetry.trace import SpanKind

    tracer = provider.get_tracer("bench.hand")
    start = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}

    def around(call: Callable[[Any], None], client: Any) -> None:
        with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=start) as span:
            call(client)
            span.set_attributes({"gen_ai.usage.input_tokens": 60, "gen_ai.usage.output_tokens": 80})

    return around


def build_openai_configs(classes: list[type], provider: Any, compare_inline: bool = False) -> list[Config]:
    import wasteaudit

    bare = snapshot(classes)
    configs = [Config(BARE, bare, setup=_finish_inline(False)), Config(HAND, bare, around=_hand_span(provider), setup=_finish_inline(False))]
    # Not undone until the end: an undone handle leaves inert pass-through wrappers behind, which
    # would measure nothing. Restoring the bare snapshot removes the wrappers from the classes.
    wasteaudit.instrument_openai()
    configs.append(Config(OURS, snapshot(classes), setup=_finish_inline(False)))
    if compare_inline:
        configs.append(Config(INLINE, configs[-1].snap, setup=_finish_inline(True)))
    restore(bare)
    try:
        from openinference.instrumentation.openai import OpenAIInstrumentor

        instrumentor = OpenAIInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        configs.append(Config(OPENAI_PEERS[0], snapshot(classes), setup=_finish_inline(False)))
        restore(bare)
    except ImportError:
        print("  (OpenInference not installed: skipped)")
    try:
        os.environ.setdefault("LANGFUSE_PUBLIC_KEY", "pk-lf-bench")
        os.environ.setdefault("LANGFUSE_SECRET_KEY", "sk-lf-bench")
        os.environ.setdefault("LANGFUSE_HOST", "http://127.0.0.1:9")
        os.environ.setdefault("LANGFUSE_BASE_URL", "http://127.0.0.1:9")
        from langfuse import Langfuse
        from opentelemetry.sdk.trace import TracerProvider

        # Its own (non-exporting) provider: on the global one its span processor would run for
        # every span of every configuration in this process, ours and the hand-written one too.
        Langfuse(tracer_provider=TracerProvider())
        import langfuse.openai  # noqa: F401  (patches at import)

        configs.append(Config(OPENAI_PEERS[1], snapshot(classes), setup=_finish_inline(False)))
        restore(bare)
    except ImportError:
        print("  (Langfuse not installed: skipped)")
    try:
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetryOpenAI

        OpenLLMetryOpenAI().instrument(tracer_provider=provider)
        configs.append(Config(OPENAI_PEERS[2], snapshot(classes), setup=_finish_inline(False)))
        restore(bare)
    except ImportError:
        print("  (OpenLLMetry not installed: skipped)")
    return configs


def build_anthropic_configs(classes: list[type], provider: Any, compare_inline: bool = False) -> list[Config]:
    import wasteaudit

    bare = snapshot(classes)
    on = _finish_inline(False)
    configs = [
        Config(A_BARE, bare, {"open_telemetry": False}, setup=on),
        Config(A_SDK, bare, {"open_telemetry": {"tracer_provider": provider}}, setup=on),
    ]
    wasteaudit.instrument_anthropic()
    snap = snapshot(classes)
    restore(bare)
    traced = {"open_telemetry": {"tracer_provider": provider}}
    configs.append(Config(A_REPLACE, snap, traced, setup=_finish_inline(False, "replace")))
    configs.append(Config(A_ENRICH, snap, traced, setup=_finish_inline(False, "enrich")))
    configs.append(Config(A_OWN, snap, {"open_telemetry": False}, setup=on))
    if compare_inline:
        configs.append(Config(A_REPLACE_INLINE, snap, traced, setup=_finish_inline(True, "replace")))
        configs.append(Config(A_INLINE, snap, traced, setup=_finish_inline(True, "enrich")))
    # Peers instead of the SDK's own tracing (each would be used in its place).
    for peer, module in zip(ANTHROPIC_PEERS, ("openinference.instrumentation.anthropic", "opentelemetry.instrumentation.anthropic")):
        try:
            importlib.import_module(module).AnthropicInstrumentor().instrument(tracer_provider=provider)
        except ImportError:
            print(f"  ({peer} for Anthropic not installed: skipped)")
            continue
        configs.append(Config(peer, snapshot(classes), {"open_telemetry": False}, setup=on))
        restore(bare)
    return configs


# --------------------------------------------------------------------------------------------- measurement
def measure(
    make_client: Callable[[Config], Any],
    configs: list[Config],
    call: Callable[[Any], None],
    rounds: int,
    calls: int,
    block: int = 10,
    keep_gc: bool = False,
) -> dict[str, dict[str, list[float]]]:
    """Per configuration, per round: CPU µs per call on this thread and for the whole process.

    Within a round the configurations take turns in blocks of ``block`` calls (rotating the
    order), so a noisy moment of the shared machine hits all of them alike; the patches are
    swapped between blocks, outside the timed region. Figures are compared round by round.
    """
    thread: dict[str, list[float]] = {c.name: [] for c in configs}
    process: dict[str, list[float]] = {c.name: [] for c in configs}
    block = max(1, min(block, calls))
    for round_no in range(rounds):
        clients: dict[str, Any] = {}
        runs: dict[str, Callable[[Any], None]] = {}
        for config in configs:
            restore(config.snap)
            if config.setup is not None:
                config.setup()
            clients[config.name] = client = make_client(config)
            run = runs[config.name] = (lambda c, around=config.around: around(call, c)) if config.around is not None else call
            for _ in range(5):
                run(client)
        spent = {c.name: [0, 0] for c in configs}
        gc.collect()
        for block_no in range(calls // block):
            shift = (round_no + block_no) % len(configs)
            for config in configs[shift:] + configs[:shift]:
                restore(config.snap)
                if config.setup is not None:
                    config.setup()
                client, run = clients[config.name], runs[config.name]
                if not keep_gc:
                    gc.disable()
                t0, p0 = time.thread_time_ns(), time.process_time_ns()
                for _ in range(block):
                    run(client)
                t1, p1 = time.thread_time_ns(), time.process_time_ns()
                gc.enable()
                spent[config.name][0] += t1 - t0
                spent[config.name][1] += p1 - p0
        done = (calls // block) * block
        for config in configs:
            thread[config.name].append(spent[config.name][0] / done / 1000)
            process[config.name].append(spent[config.name][1] / done / 1000)
            clients[config.name].close()
    return {name: {"thread_us": thread[name], "process_us": process[name]} for name in thread}


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def added(results: dict[str, dict[str, list[float]]], name: str, baseline: str) -> dict[str, float]:
    """Added CPU of ``name`` over ``baseline``, round by round: median and interquartile range."""
    diffs = [a - b for a, b in zip(results[name]["thread_us"], results[baseline]["thread_us"])]
    q1, median, q3 = _quartiles(diffs)
    process = statistics.median(a - b for a, b in zip(results[name]["process_us"], results[baseline]["process_us"]))
    return {
        "added_us": median,
        "added_q1": q1,
        "added_q3": q3,
        "cpu_us": statistics.median(results[name]["thread_us"]),
        "process_us": statistics.median(results[name]["process_us"]),
        "added_process_us": process,
    }


def detail(title: str, results: dict[str, dict[str, list[float]]], baseline: str) -> dict[str, Any]:
    print(f"\n  {title}")
    print(f"    {'configuration':44s} {'CPU/call µs':>11s} {'added µs (median, IQR)':>26s} {'process µs':>11s}")
    out = {}
    for name in results:
        fig = added(results, name, baseline)
        spread = f"{fig['added_us']:+7.1f} ({fig['added_q1']:+.0f}..{fig['added_q3']:+.0f})"
        print(f"    {name:44s} {fig['cpu_us']:11.1f} {spread:>26s} {fig['process_us']:11.1f}")
        out[name] = fig
    return out


def _ratio(results: dict[str, dict[str, list[float]]], name: str) -> dict[str, float]:
    """(config - bare) / (SDK tracing - bare), round by round."""
    bare, sdk, ours = results[A_BARE]["thread_us"], results[A_SDK]["thread_us"], results[name]["thread_us"]
    ratios = [(o - b) / (s - b) for o, s, b in zip(ours, sdk, bare) if s - b > 0]
    if not ratios:
        return {"ratio": float("nan"), "ratio_q1": float("nan"), "ratio_q3": float("nan")}
    q1, median, q3 = _quartiles(ratios)
    return {"ratio": median, "ratio_q1": q1, "ratio_q3": q3}


def summary(transport: str, figures: dict[str, Any]) -> None:
    """The one table to read: per workload, bare cost, our added cost, the target and the references."""
    peers = [p for p in OPENAI_PEERS if any(p in f for f in figures.values())]
    print(f"\n[{transport}] summary: added CPU per call on the calling thread (median of interleaved rounds, IQR in brackets)")
    head = f"  {'workload':34s} {'bare µs':>8s} {'wasteaudit added µs':>22s} {'target':>9s} {'/target':>8s} {'hand span':>10s}"
    print(head + "".join(f" {p:>17s}" for p in peers) + f" {'process added':>14s}  verdict")
    for workload, target in TARGET_US.items():
        fig = figures.get(workload)
        if fig is None:
            continue
        ours = fig[OURS]
        cells = [f" {fig[p]['added_us']:+17.0f}" if p in fig else f" {'-':>17s}" for p in peers]
        lightest = min((fig[p]["added_us"] for p in peers if p in fig), default=None)
        ok = ours["added_us"] <= target and (lightest is None or ours["added_us"] < lightest)
        spread = f"{ours['added_us']:+.0f} ({ours['added_q1']:+.0f}..{ours['added_q3']:+.0f})"
        print(
            f"  {workload:34s} {fig[BARE]['cpu_us']:8.0f} {spread:>22s} {'<=' + format(target, '.0f'):>9s} {ours['added_us'] / target:8.2f} {fig[HAND]['added_us']:+10.0f}"
            + "".join(cells)
            + f" {ours['added_process_us']:+14.0f}"
            + ("  ok" if ok else "  MISSED")
        )
        if INLINE in fig:
            inline = fig[INLINE]
            print(f"    {'(finished inline, same run)':32s} {'':8s} {inline['added_us']:+22.0f} {'':9s} {inline['added_us'] / target:8.2f} {'':10s}" + " " * (18 * len(peers)) + f" {inline['added_process_us']:+14.0f}")
    for workload, short in (("anthropic messages", "anthropic messages"), ("anthropic messages stream", "anthropic stream")):
        fig = figures.get(workload)
        if fig is None:
            continue
        sdk = fig[A_SDK]["added_us"]
        found = [p for p in ANTHROPIC_PEERS if p in fig]
        lightest = min((fig[p]["added_us"] for p in found), default=None)
        peers_text = "; ".join(f"{p} {fig[p]['added_us']:+.0f} µs" for p in found)
        for name, label in ANTHROPIC_ROWS:
            if name not in fig:
                continue
            r = fig[name]
            spread = f"{r['added_us']:+.0f} ({r['added_q1']:+.0f}..{r['added_q3']:+.0f})"
            ok = r["ratio"] <= ANTHROPIC_TARGET_RATIO and (lightest is None or r["added_us"] < lightest)
            print(
                f"  {short + ' (' + label + ')':34s} {fig[A_BARE]['cpu_us']:8.0f} {spread:>22s} {'<=1.10x':>9s} {r['ratio']:7.2f}x"
                f"  SDK tracing alone {sdk:+.0f} µs; ratio IQR {r['ratio_q1']:.2f}..{r['ratio_q3']:.2f}; process added {r['added_process_us']:+.0f} µs"
                + (f"; peers: {peers_text}" if peers_text else "")
                + ("  ok" if ok else "  MISSED")
            )


# --------------------------------------------------------------------------------------------- record dump
_VOLATILE = {"id", "started_at", "ended_at", "duration_s", "time_to_first_chunk_s", "trace_id", "span_id", "run_id"}
_VOLATILE_ATTRS = {"wasteaudit.call.id", "wasteaudit.run.id", "gen_ai.response.time_to_first_chunk"}


def _plain(value: Any) -> Any:
    """A record's field as JSON-able data (dataclasses as dicts, the SDK's models dumped)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            out[f.name] = ("<set>" if item is not None else None) if f.name in _VOLATILE else _plain(item)
        return out
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "model_dump"):
        return _plain(value.model_dump())
    if isinstance(value, type):
        return f"<class {value.__name__}>"
    return value if value is None or isinstance(value, (str, int, float, bool)) else repr(value)


def _dump_variants() -> list[tuple[str, str, Callable[[Any], None], list[Canned]]]:
    """(name, sdk, call, replies served in turn) for every workload and a few variants."""
    text = LOREM
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
    messages = [{"role": "system", "content": "You are a helpful support agent."}, {"role": "user", "content": "How do I reset my password?"}]
    body = lambda b: Canned(json.dumps(b).encode(), False)  # noqa: E731
    chat_tools = body(ob.chat_completion(None, tool_calls=[ob.tool_call("lookup", {"q": "reset"})], finish_reason="tool_calls", prompt_tokens=30, completion_tokens=12))
    chat_tools.headers["x-request-id"] = "req_dump"
    chat_n = body(ob.chat_completion([text, text[:40]], finish_reason=["stop", "length"], usage=ob.chat_usage(50, 90, cached_tokens=32, reasoning_tokens=20)))
    reasoning = body(ob.response(None, output=[ob.reasoning_item(["think"]), ob.message_item(text)], usage=ob.responses_usage(40, 70, cached_tokens=16, reasoning_tokens=30)))
    failed = Canned(json.dumps(ob.error_body("Server error", type="server_error")).encode(), False)
    variants: list[tuple[str, str, Callable[[Any], None], list[Canned]]] = []
    for title, (canned, call) in openai_workloads().items():
        variants.append((title, "openai", call, [canned]))
    for title, (canned, call) in anthropic_workloads().items():
        variants.append((title, "anthropic", call, [canned]))
    variants += [
        ("openai chat, tool call", "openai", lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools, temperature=0.2, stop=["END"]), [chat_tools]),
        ("openai chat, n=2, json format", "openai", lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=messages, n=2, response_format={"type": "json_object"}, max_completion_tokens=90, seed=7), [chat_n]),
        ("openai chat, retried once", "openai", lambda c: c.with_options(max_retries=1).chat.completions.create(model="gpt-4o-mini", messages=messages), [failed, openai_workloads()["openai chat"][0]]),
        ("openai chat, raw response", "openai", lambda c: c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages).parse(), [openai_workloads()["openai chat"][0]]),
        ("openai chat stream, usage asked for the app", "openai", lambda c: [None for _ in c.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)], [openai_workloads()["openai chat stream (~20 chunks)"][0]]),
        ("openai responses, reasoning and instructions", "openai", lambda c: c.responses.create(model="o4-mini", input=messages, instructions="Be brief.", reasoning={"effort": "low"}), [reasoning]),
    ]
    return variants


def dump_records(path: str) -> None:
    """Record every workload and variant once through the instrumented SDKs; write the records and spans."""
    import anthropic
    import openai

    import wasteaudit
    from wasteaudit._internal import tracing
    from wasteaudit.testing import capture, capture_spans

    anthropic_http = _sdk_http("anthropic")
    wasteaudit.instrument()
    out: dict[str, Any] = {}
    for name, sdk, call, replies in _dump_variants():
        served = iter(replies * 2)
        if sdk == "openai":

            def send(request: Any, served: Any = served, replies: list[Canned] = replies) -> Any:
                # a span made inside the call (as an HTTP client instrumentation would) must be our span's child
                with tracing.tracer().start_as_current_span("transport send"):
                    return next(served).httpx(request) if len(replies) == 1 else _status_first(next(served), request)

            client: Any = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-bench", max_retries=0, http_client=httpx2.Client(transport=httpx2.MockTransport(send)))
        else:
            client = anthropic.Anthropic(base_url="http://127.0.0.1:9", api_key="sk-ant-bench", max_retries=0, http_client=anthropic_http.Client(transport=anthropic_http.MockTransport(lambda r: next(served).httpx(r))))
        for audited in (False, True) if name == "openai chat" else (False,):
            with capture() as records, capture_spans() as spans:
                if audited:
                    wasteaudit.audit(name="dump_run")(lambda: call(client))()
                else:
                    call(client)
                calls = [r for r in records.calls]
                finished = spans.spans
            key = name + (" (inside @audit)" if audited else "")
            span_ids = {s.context.span_id: s.name for s in finished}
            out[key] = {
                "records": [_plain(r) for r in calls],
                "spans": [
                    {
                        "name": s.name,
                        "kind": str(s.kind),
                        "parent": span_ids.get(s.parent.span_id, "(outside)") if s.parent is not None else None,
                        "status": str(s.status.status_code),
                        "attributes": {k: _plain(v) for k, v in sorted(s.attributes.items()) if k not in _VOLATILE_ATTRS},
                        "volatile attributes present": sorted(k for k in s.attributes if k in _VOLATILE_ATTRS),
                    }
                    for s in finished
                ],
            }
        client.close()
    Path(path).write_text(json.dumps(out, indent=1, sort_keys=True, default=repr))
    print(f"dumped {len(out)} workloads to {path}")


def _status_first(canned: Canned, request: Any) -> Any:
    """The first reply of a retried call is a 500 (an error body), the next one a success."""
    if b"error" in canned.body[:20]:
        return httpx2.Response(500, content=canned.body, headers={"content-type": "application/json"}, request=request)
    return canned.httpx(request)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--block", type=int, default=10, help="calls per configuration turn within a round")
    parser.add_argument("--transport", choices=["inproc", "loopback", "both"], default="both")
    parser.add_argument("--only", choices=["openai", "anthropic", "all"], default="all")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--compare-inline", action="store_true", help="also measure wasteaudit finishing calls on the calling thread")
    parser.add_argument("--gc", action="store_true", help="leave the garbage collector on while timing")
    parser.add_argument("--dump", help="measure nothing: write every workload's records and span attributes to this file")
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
    if args.dump:
        os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "true"
        wasteaudit.configure(database_url=f"sqlite:///{tmp}/capture.db", content_mode="full")
        dump_records(args.dump)
        wasteaudit.shutdown()
        return
    provider = _tracer_provider()
    openai_classes = _classes(OPENAI_MODULES)
    anthropic_classes = _classes(ANTHROPIC_MODULES)
    openai_configs = build_openai_configs(openai_classes, provider, args.compare_inline)
    anthropic_configs = build_anthropic_configs(anthropic_classes, provider, args.compare_inline)
    bare_openai = openai_configs[0].snap
    bare_anthropic = anthropic_configs[0].snap
    print(f"openai {openai.__version__}, anthropic {anthropic.__version__}, python {sys.version.split()[0]}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(
        f"rounds={args.rounds} calls/round={args.calls}; usage and content capture on (content_mode=full), records queued to SQLite, recording TracerProvider"
        + ("; gc on while timing" if args.gc else "")
    )

    figures: dict[str, Any] = {}
    transports = ["inproc", "loopback"] if args.transport == "both" else [args.transport]
    for transport in transports:
        server = LocalLLMServer().start() if transport == "loopback" else None
        per_transport: dict[str, Any] = {}
        if args.only in ("openai", "all"):
            for title, (canned, call) in openai_workloads().items():

                def make_openai(config: Config, canned: Canned = canned) -> Any:
                    if server is not None:
                        server.handler = lambda _req, canned=canned: canned.reply()
                        return openai.OpenAI(base_url=server.openai_base_url, api_key="sk-bench", max_retries=0)
                    return openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-bench", max_retries=0, http_client=httpx2.Client(transport=httpx2.MockTransport(canned.httpx)))

                per_transport[title] = detail(f"[{transport}] {title}", measure(make_openai, openai_configs, call, args.rounds, args.calls, args.block, args.gc), BARE)
            restore(bare_openai)
        if args.only in ("anthropic", "all"):
            for title, (canned, call) in anthropic_workloads().items():

                def make_anthropic(config: Config, canned: Canned = canned) -> Any:
                    if server is not None:
                        server.handler = lambda _req, canned=canned: canned.reply()
                        return anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="sk-ant-bench", max_retries=0, **config.client_kwargs)
                    return anthropic.Anthropic(
                        base_url="http://127.0.0.1:9", api_key="sk-ant-bench", max_retries=0, http_client=_sdk_http("anthropic").Client(transport=_sdk_http("anthropic").MockTransport(canned.httpx)), **config.client_kwargs
                    )

                results = measure(make_anthropic, anthropic_configs, call, args.rounds, args.calls, args.block, args.gc)
                result = detail(f"[{transport}] {title}", results, A_BARE)
                for name, _ in ANTHROPIC_ROWS:
                    if name in result:
                        result[name].update(_ratio(results, name))
                per_transport[title] = result
            restore(bare_anthropic)
        if server is not None:
            server.stop()
        summary(transport, per_transport)
        figures[transport] = per_transport
    from wasteaudit._internal import pipeline

    pipeline.flush(timeout=60)
    stats = pipeline.stats()
    figures["records"] = {"submitted": stats.get("submitted", 0), "written": stats.get("written", 0)}
    print(f"\nwasteaudit records: {figures['records']['submitted']} queued, {figures['records']['written']} written")
    wasteaudit.shutdown()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
