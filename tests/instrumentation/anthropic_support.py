"""Shared helpers for the test_anthropic_* modules: clients, canned bodies, app-side observations.

An *observation* is everything the app could see from one SDK call (returned models dumped,
events, texts, raised exception type/message/status), so a test can run the same script through
the bare SDK and through the instrumented one and assert they are identical.
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Any, Iterator

import anthropic
import pytest

from wasteaudit.instrumentation import instrument_anthropic
from wasteaudit.localllm import LocalLLMServer, Reply
from wasteaudit.localllm import anthropic_bodies as ab

# The HTTP package the installed SDK is built on: httpx2 today, httpx in older releases (the
# oldest-SDK CI job runs these tests too).
httpx2 = getattr(anthropic._base_client, "httpx2", None) or anthropic._base_client.httpx  # type: ignore[attr-defined]

# Built-in OpenTelemetry tracing (the ``open_telemetry`` client option) came with anthropic 1.14;
# tests of how we enrich the SDK's own span need it, everything else runs on older releases too.
SDK_TRACES = importlib.util.find_spec("anthropic.lib._tracing") is not None
needs_sdk_tracing = pytest.mark.skipif(not SDK_TRACES, reason="this anthropic release has no built-in tracing (added in 1.14)")

__all__ = ["llm_server", "_anthropic_llm_server"]

MODEL = "claude-wasteaudit-test"
MESSAGES = [{"role": "user", "content": "What is 2 + 2? Think, then answer and call the calculator."}]
KW: dict[str, Any] = {"model": MODEL, "max_tokens": 256, "messages": MESSAGES}


@pytest.fixture(scope="session")
def _anthropic_llm_server() -> Iterator[LocalLLMServer]:
    # One server for all Anthropic tests: stopping a ThreadingHTTPServer costs ~0.5 s (its poll interval).
    with LocalLLMServer() as server:
        # Clients that drop a connection (early exits, cut streams) are normal here: no tracebacks.
        server._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        # Headers and body go out in two writes; without TCP_NODELAY each keep-alive request
        # waits ~40 ms for a delayed ACK. Only this server instance's handler class changes.
        handler = server._server.RequestHandlerClass
        server._server.RequestHandlerClass = type("NoDelayHandler", (handler,), {"disable_nagle_algorithm": True})
        yield server


@pytest.fixture
def llm_server(_anthropic_llm_server: LocalLLMServer) -> Iterator[LocalLLMServer]:
    """Overrides the conftest fixture in the Anthropic test modules: the shared server, reset."""
    server = _anthropic_llm_server
    server.clear()
    server.handler = None
    yield server
    server.clear()
    server.handler = None


def rich_message(**overrides: Any) -> dict[str, Any]:
    """thinking + text + tool_use, with cache reads/writes (5m/1h split) and thinking tokens."""
    options: dict[str, Any] = {
        "stop_reason": "tool_use",
        "usage": ab.usage(10, 50, cache_read=30, cache_creation=20, cache_5m=15, cache_1h=5, thinking_tokens=12, service_tier="standard"),
    }
    options.update(overrides)
    return ab.message(
        [
            ab.thinking_block("The user wants 2+2. That is 4."),
            ab.text_block("2 + 2 = 4. Let me verify with the calculator."),
            ab.tool_use_block("calculator", {"expression": "2+2", "precision": 0}, id="toolu_calc_1"),
        ],
        id="msg_rich_1",
        **options,
    )


RICH_INPUT_TOTAL = 10 + 30 + 20  # input_tokens INCLUDING cache reads and writes


def sync_client(server: LocalLLMServer, **options: Any) -> anthropic.Anthropic:
    """A client for the local server. ``http_client`` defaults to a plain one without TLS setup
    (building the SDK's default costs ~50 ms of certificate loading); pass ``http_client=None``
    for the SDK's own default."""
    options.setdefault("max_retries", 2)
    options.setdefault("http_client", httpx2.Client(verify=False))
    return anthropic.Anthropic(api_key="sk-ant-test", base_url=server.anthropic_base_url, **options)


def async_client(server: LocalLLMServer, **options: Any) -> anthropic.AsyncAnthropic:
    options.setdefault("max_retries", 2)
    options.setdefault("http_client", httpx2.AsyncClient(verify=False))
    return anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=server.anthropic_base_url, **options)


def resource(client: Any, api: str) -> Any:
    return client.beta.messages if api == "messages.beta" else client.messages


@contextlib.contextmanager
def instrumented() -> Iterator[Any]:
    handle = instrument_anthropic()
    try:
        yield handle
    finally:
        handle.undo()


def dump(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return value


def error_observation(exc: BaseException) -> tuple[Any, ...]:
    return ("error", type(exc), str(exc), getattr(exc, "status_code", None), dump(getattr(exc, "body", None)))


# -- drivers: what an app does; each returns what it saw ----------------------------------------


def drive_sync(client: anthropic.Anthropic, api: str, method: str, variant: str, **kw: Any) -> Any:
    res = resource(client, api)
    args = {**KW, **kw}
    try:
        if method == "create":
            if variant == "raw":
                raw = res.with_raw_response.create(**args)
                return ("raw", raw.status_code, raw.headers.get("request-id"), dump(raw.parse()))
            msg = res.create(**args)
            return ("message", dump(msg), getattr(msg, "_request_id", None))
        if method == "parse":
            msg = res.parse(**args)
            return ("parsed", dump(msg), getattr(msg, "_request_id", None))
        if method == "create_stream":
            if variant == "raw":
                with res.with_streaming_response.create(stream=True, **args) as raw:
                    body = raw.read()
                    return ("raw-stream", raw.status_code, body.count(b"event: "))
            seen = []
            with res.create(stream=True, **args) as stream:
                for event in stream:
                    seen.append(dump(event))
                    if variant == "break" and len(seen) == 3:
                        break
            return ("events", seen)
        if method == "helper":
            with res.stream(**args) as stream:
                if variant == "break":
                    first = next(iter(stream.text_stream))
                    return ("first-text", first)
                texts = list(stream.text_stream)
                final = stream.get_final_message()
                return ("helper", texts, dump(final), stream.request_id)
    except Exception as exc:
        return error_observation(exc)
    raise AssertionError(f"unknown method {method}")


async def drive_async(client: anthropic.AsyncAnthropic, api: str, method: str, variant: str, **kw: Any) -> Any:
    res = resource(client, api)
    args = {**KW, **kw}
    try:
        if method == "create":
            if variant == "raw":
                raw = await res.with_raw_response.create(**args)
                return ("raw", raw.status_code, raw.headers.get("request-id"), dump(await raw.parse()))
            msg = await res.create(**args)
            return ("message", dump(msg), getattr(msg, "_request_id", None))
        if method == "parse":
            msg = await res.parse(**args)
            return ("parsed", dump(msg), getattr(msg, "_request_id", None))
        if method == "create_stream":
            if variant == "raw":
                async with res.with_streaming_response.create(stream=True, **args) as raw:
                    body = await raw.read()
                    return ("raw-stream", raw.status_code, body.count(b"event: "))
            seen = []
            async with await res.create(stream=True, **args) as stream:
                async for event in stream:
                    seen.append(dump(event))
                    if variant == "break" and len(seen) == 3:
                        break
            return ("events", seen)
        if method == "helper":
            async with res.stream(**args) as stream:
                if variant == "break":
                    async for text in stream.text_stream:
                        return ("first-text", text)
                texts = [t async for t in stream.text_stream]
                final = await stream.get_final_message()
                return ("helper", texts, dump(final), stream.request_id)
    except Exception as exc:
        return error_observation(exc)
    raise AssertionError(f"unknown method {method}")


def replies_for(method: str, variant: str, msg: dict[str, Any]) -> list[Reply]:
    """The scripted server replies for one (method, variant) case."""
    streaming = method in ("create_stream", "helper")
    if variant == "error":
        if streaming:
            return [ab.reply_stream(msg, error_after=6, error=("overloaded_error", "Overloaded"))]
        return [ab.reply_invalid_request("messages: text content blocks must be non-empty")]
    if variant == "retry":
        return [ab.reply_overloaded(), ab.reply_rate_limited(), ab.reply_stream(msg) if streaming else ab.reply_message(msg)]
    return [ab.reply_stream(msg) if streaming else ab.reply_message(msg)]


def is_connection_error(exc_type: Any) -> bool:
    return isinstance(exc_type, type) and issubclass(exc_type, (httpx2.HTTPError, anthropic.APIConnectionError))
