"""Fixtures and helpers shared by the OpenAI instrumentation tests.

Import the fixtures into a test module with ``from openai_support import *``. Every test that
uses ``oai`` / ``aoai`` runs with the OpenAI SDK instrumented, and the patch is undone afterwards
so nothing leaks into other tests. ``bare()`` temporarily undoes it to run the same scripted
exchange through the untouched SDK, for "the app sees exactly the same" comparisons.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Any, Callable, Iterator

import openai
import pytest

from wasteaudit import config
from wasteaudit.instrumentation import active_instrumentations, instrument_openai
from wasteaudit.localllm import LocalLLMServer

# The HTTP package the installed SDK is built on: httpx2 today, httpx in older releases (the
# oldest-SDK CI job runs these tests too).
httpx2 = getattr(openai._base_client, "httpx2", None) or openai._base_client.httpx  # type: ignore[attr-defined]

__all__ = ["llm_server", "_shared_llm_server", "instrumented", "oai", "aoai", "bare", "outcome", "aoutcome", "dump", "set_settings", "collect", "only_call"]


@pytest.fixture(scope="session")
def _shared_llm_server() -> Iterator[LocalLLMServer]:
    # One server for all OpenAI tests: stopping a ThreadingHTTPServer costs ~0.5 s (its poll interval).
    with LocalLLMServer() as server:
        # Clients that drop a keep-alive connection (early exits, cut streams) are normal here;
        # socketserver would print a traceback for each.
        server._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        yield server


@pytest.fixture
def llm_server(_shared_llm_server: LocalLLMServer) -> Iterator[LocalLLMServer]:
    """Overrides the conftest fixture in the OpenAI test modules: the shared server, reset."""
    server = _shared_llm_server
    server.clear()
    server.handler = None
    yield server
    server.clear()
    server.handler = None


@pytest.fixture
def instrumented(records) -> Iterator[Any]:
    handle = instrument_openai()
    try:
        yield handle
    finally:
        current = active_instrumentations().get("openai")
        if current is not None:
            current.undo()


def _client(server: LocalLLMServer, cls: type, **options: Any) -> Any:
    options.setdefault("max_retries", 0)
    if "http_client" not in options:
        # Plain-HTTP loopback: skip loading the CA bundle, which costs ~25-80 ms per client.
        http = httpx2.AsyncClient(verify=False) if cls is openai.AsyncOpenAI else httpx2.Client(verify=False)
        options["http_client"] = http
    return cls(base_url=server.openai_base_url, api_key="sk-test-not-a-real-key", **options)


@pytest.fixture
def oai(llm_server, instrumented) -> Callable[..., openai.OpenAI]:
    """A factory: ``oai()`` -> a sync client on the local server (``oai(max_retries=2)``)."""
    return lambda **options: _client(llm_server, openai.OpenAI, **options)


@pytest.fixture
def aoai(llm_server, instrumented) -> Callable[..., openai.AsyncOpenAI]:
    return lambda **options: _client(llm_server, openai.AsyncOpenAI, **options)


@contextlib.contextmanager
def bare() -> Iterator[None]:
    """Run a block with the OpenAI SDK uninstrumented, then instrument it again."""
    current = active_instrumentations().get("openai")
    if current is not None:
        current.undo()
    try:
        yield
    finally:
        instrument_openai()


def dump(value: Any) -> Any:
    """A comparable form of what the SDK handed the app."""
    if isinstance(value, list):
        return [dump(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", warnings=False)
    return value


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", dumped result) or ("raised", (type, message, status, body)) of one call."""
    try:
        return "ok", dump(fn())
    except Exception as exc:  # noqa: BLE001 - the point is to compare whatever happened
        return "raised", (type(exc), str(exc), getattr(exc, "status_code", None), getattr(exc, "body", None))


async def aoutcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", dump(await fn())
    except Exception as exc:  # noqa: BLE001
        return "raised", (type(exc), str(exc), getattr(exc, "status_code", None), getattr(exc, "body", None))


def set_settings(**changes: Any) -> None:
    config.set_settings(config.replace(config.get_settings(), **changes))


def collect() -> None:
    """Release cycles too (an abandoned stream is usually finalized by refcounting alone)."""
    gc.collect()


def only_call(records: Any) -> Any:
    calls = records.calls
    assert len(calls) == 1, calls
    return calls[0]
