"""Reliability test helpers: the real openai SDK against the loopback server, wasteaudit configured
for a database the test can break (a TCP proxy it cuts and restores, a lock, a full disk).

Every call carries a unique marker that the server echoes as the response id, so a test can
count exactly which calls were stored (``response_id``) and compare what the app got.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from storage.conftest import REQUIRE_SERVICES, _pg_url, make_call, pg_database, pg_url  # noqa: F401 - fixture reuse
from wasteaudit import config
from wasteaudit._internal import pipeline
from wasteaudit.localllm import LocalLLMServer, Reply
from wasteaudit.localllm.openai_bodies import chat_completion

ANSWER = "The report says sales grew by four percent."


def _reply(request: Any) -> Reply:
    body = chat_completion(ANSWER, prompt_tokens=40, completion_tokens=12)
    body["id"] = request.json["messages"][-1]["content"].rsplit(" ", 1)[-1]  # the call's marker
    return Reply(json=body)


@pytest.fixture(scope="module")
def echo_server() -> Iterator[LocalLLMServer]:
    """A loopback OpenAI-compatible server answering every call, its marker as the response id."""
    with LocalLLMServer(handler=_reply) as server:
        server._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        server._server.socket.listen(1024)  # socketserver's backlog of 5 resets bursts of new connections
        yield server


@pytest.fixture
def audited(echo_server: LocalLLMServer) -> Iterator[Callable[..., None]]:
    """``audited(database_url=..., **options)``: wasteaudit configured and the openai SDK instrumented.

    Settings and instrumentation are restored afterwards; the writer is shut down (bounded).
    """
    from wasteaudit.instrumentation import active_instrumentations, instrument_openai

    previous = config.get_settings()
    handles: list[Any] = []

    def configure(**options: Any) -> None:
        import wasteaudit

        options.setdefault("flush_interval", 0.05)
        wasteaudit.configure(**options)
        if "openai" not in active_instrumentations():
            handles.append(instrument_openai())

    yield configure
    for handle in handles:
        handle.undo()
    pipeline.reset_writer(timeout=2)
    config.set_settings(previous)


def openai_client(server: LocalLLMServer, *, asynchronous: bool = False) -> Any:
    import httpx2
    import openai

    if asynchronous:
        return openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="sk-test-not-a-real-key",
                                  max_retries=0, http_client=httpx2.AsyncClient(verify=False))
    return openai.OpenAI(base_url=server.openai_base_url, api_key="sk-test-not-a-real-key", max_retries=0,
                         http_client=httpx2.Client(verify=False))


def ask(client: Any, marker: str) -> Any:
    """One chat call whose response id is ``marker``."""
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"Summarize the report. {marker}"}]
    )


def check_answer(response: Any, marker: str) -> None:
    """What the app got is exactly what the server sent, whatever happened to the database."""
    assert response.id == marker
    assert response.choices[0].message.content == ANSWER
    assert response.usage.prompt_tokens == 40


def stored_markers(url: str) -> list[str]:
    """The response ids of every stored call (a list: duplicates would show)."""
    import sqlalchemy as sa

    from wasteaudit.storage.engine import create_engine_for
    from wasteaudit.storage.models import CallRow

    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            return [row[0] for row in connection.execute(sa.select(CallRow.response_id))]
    finally:
        engine.dispose()


def wait_for(condition: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


class TcpProxy:
    """A loopback TCP proxy to a database that a test can cut (a network outage) and restore.

    Cut: every open connection is closed and new ones are accepted then closed at once, as a
    server going away looks to a client. Bounded: only relays to the one loopback upstream.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        threading.Thread(target=self._accept, name="test-proxy", daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            sockets, self._open = self._open, set()
        for sock in sockets:
            _close(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                cut = self._cut
            if cut:
                _close(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, server))
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with self._lock:
                    self._open.discard(sock)
                _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


@pytest.fixture
def pg_proxy_url(pg_url: str) -> Iterator[tuple[str, TcpProxy]]:
    """``(url through a cuttable proxy, proxy)`` for a fresh PostgreSQL schema."""
    from sqlalchemy.engine import make_url

    url = make_url(pg_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    try:
        yield url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), proxy
    finally:
        proxy.close()
